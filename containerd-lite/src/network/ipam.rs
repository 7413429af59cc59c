//! Housekeeping of host-local's lease files.
//!
//! host-local keeps one directory per network under its `dataDir`, named
//! after the network (berthd names its lists by network id), with one file
//! per leased address whose first line is the container id (and, since
//! plugins 0.9, the interface name on the second). A lease whose container
//! or network berthd no longer knows is stale: its address would never be
//! handed out again.

use std::fs;
use std::io;
use std::net::IpAddr;
use std::path::Path;

use crate::error::Context;
use crate::{Error, Result};

/// Removes the leases under `data_dir` that `keep(network_id, container_id)`
/// rejects, and the whole directory of a network `network_exists` rejects.
/// Returns how many leases went.
pub fn remove_stale_leases(
    data_dir: &Path,
    network_exists: impl Fn(&str) -> bool,
    keep: impl Fn(&str, &str) -> bool,
) -> Result<usize> {
    let networks = match fs::read_dir(data_dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(err) => return Err(Error::from(err).context(data_dir.display())),
    };
    let mut removed = 0;
    for network in networks {
        let network = network.with_context(|| data_dir.display())?;
        let Some(network_id) = network.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        let dir = network.path();
        if !dir.is_dir() {
            continue;
        }
        if !network_exists(&network_id) {
            removed += count_leases(&dir)?;
            remove_network_leases(data_dir, &network_id)?;
            continue;
        }
        for lease in fs::read_dir(&dir).with_context(|| dir.display())? {
            let lease = lease.with_context(|| dir.display())?;
            let is_address = lease
                .file_name()
                .to_str()
                .is_some_and(|name| name.parse::<IpAddr>().is_ok());
            if !is_address {
                continue; // host-local's lock and last_reserved_ip.* files
            }
            let path = lease.path();
            let owner = fs::read_to_string(&path).with_context(|| path.display())?;
            let container_id = owner.lines().next().unwrap_or("").trim();
            if !keep(&network_id, container_id) {
                fs::remove_file(&path)
                    .with_context(|| format!("remove lease {}", path.display()))?;
                removed += 1;
            }
        }
    }
    Ok(removed)
}

/// Removes host-local's directory of one network (on network removal).
pub fn remove_network_leases(data_dir: &Path, network_id: &str) -> Result<()> {
    let dir = data_dir.join(network_id);
    match fs::remove_dir_all(&dir) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            Err(Error::from(err).context(format!("remove IPAM dir {}", dir.display())))
        }
        _ => Ok(()),
    }
}

fn count_leases(dir: &Path) -> Result<usize> {
    let mut count = 0;
    for entry in fs::read_dir(dir).with_context(|| dir.display())? {
        let entry = entry.with_context(|| dir.display())?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.parse::<IpAddr>().is_ok())
        {
            count += 1;
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_leases_and_unknown_networks_go_live_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let net = dir.path().join("net1");
        fs::create_dir_all(&net).unwrap();
        fs::write(net.join("10.1.0.2"), "live\r\neth0").unwrap();
        fs::write(net.join("10.1.0.3"), "dead\r\neth0").unwrap();
        fs::write(net.join("lock"), "").unwrap();
        fs::write(net.join("last_reserved_ip.0"), "10.1.0.3").unwrap();
        let gone = dir.path().join("gone");
        fs::create_dir_all(&gone).unwrap();
        fs::write(gone.join("10.2.0.2"), "x").unwrap();

        let removed = remove_stale_leases(
            dir.path(),
            |network| network == "net1",
            |network, container| network == "net1" && container == "live",
        )
        .unwrap();
        assert_eq!(removed, 2);
        assert!(net.join("10.1.0.2").exists());
        assert!(!net.join("10.1.0.3").exists());
        assert!(net.join("lock").exists());
        assert!(!gone.exists());
        assert_eq!(
            remove_stale_leases(&dir.path().join("none"), |_| true, |_, _| true).unwrap(),
            0
        );
    }
}
