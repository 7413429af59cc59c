//! Deleting a network's bridge device.
//!
//! The bridge plugin creates the bridge on the first ADD but never deletes
//! it (other containers may use it), so berthd does when the network is
//! removed. This is one call per network removal, so berthd runs
//! iproute2's `ip link del` rather than carrying an async netlink stack
//! (`rtnetlink`) for it: iproute2 is already a requirement of the host,
//! and the CNI plugins are external programs anyway.

use std::path::Path;

use tokio::process::Command;

use crate::{Error, Result};

/// Whether a network device of that name exists on the host.
pub fn link_exists(name: &str) -> bool {
    !name.is_empty() && !name.contains('/') && Path::new("/sys/class/net").join(name).exists()
}

/// Deletes the network device `name`; nothing to do if it is gone.
pub async fn delete_link(name: &str) -> Result<()> {
    if !link_exists(name) {
        return Ok(());
    }
    let output = Command::new("ip")
        .args(["link", "del", "dev", name])
        .output()
        .await
        .map_err(|err| Error::from(err).context("run ip (iproute2)"))?;
    if output.status.success() || !link_exists(name) {
        return Ok(());
    }
    Err(Error::internal(format!(
        "ip link del {name}: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    )))
}
