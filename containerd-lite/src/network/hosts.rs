//! The files that give a container its names: `/etc/hosts`,
//! `/etc/resolv.conf` and `/etc/hostname`.
//!
//! Containers on one user-defined network find each other by name through
//! their hosts files: each lists the container itself and every peer it
//! shares a user network with (names and aliases). Docker answers these
//! names from an embedded DNS server; a hosts file gives the same answers
//! for name lookups without a server in every namespace.
//!
//! The files live under berthd's state and are bind-mounted into the
//! container. A bind mount pins the inode it was made from, so a file
//! replaced by rename is not what the container sees: the first write is
//! crash-safe (temp + rename, before any mount exists), later rewrites go
//! into the same inode ([`rewrite_in_place`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::net::IpAddr;
use std::path::Path;

use crate::error::Context;
use crate::{Error, Result};

/// Nameservers used when the host has none a container can reach.
pub const FALLBACK_NAMESERVERS: [&str; 2] = ["8.8.8.8", "8.8.4.4"];

/// One line of a hosts file: an address and the names it answers to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub ip: IpAddr,
    pub names: Vec<String>,
}

/// A hosts file: the loopback and IPv6 multicast entries every container
/// has, then `own` (the container's address and hostname), then `peers`
/// in the order given.
pub fn hosts_file(own: Option<&HostEntry>, peers: &[HostEntry]) -> String {
    let mut text = String::from(
        "127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for entry in own.into_iter().chain(peers) {
        if entry.names.is_empty() {
            continue;
        }
        text.push_str(&format!("{}\t{}\n", entry.ip, entry.names.join(" ")));
    }
    text
}

/// A container's resolv.conf from the host's: nameservers on loopback
/// (a local resolver such as systemd-resolved, unreachable from another
/// network namespace) are dropped; if none is left, Google's public
/// resolvers are used, as docker does. Search domains and options stay.
pub fn resolv_conf(host: &str) -> String {
    let mut text = String::new();
    let mut nameservers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let reachable = words
                .next()
                .and_then(|addr| addr.parse::<IpAddr>().ok())
                .is_some_and(|addr| !addr.is_loopback());
            if !reachable {
                continue;
            }
            nameservers += 1;
        }
        text.push_str(line);
        text.push('\n');
    }
    if nameservers == 0 {
        for server in FALLBACK_NAMESERVERS {
            text.push_str(&format!("nameserver {server}\n"));
        }
    }
    text
}

/// The content of `/etc/hostname`.
pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

/// Writes a new file crash-safely: a temp file beside it, fsync, rename,
/// fsync of the directory. For files not yet bind-mounted anywhere.
pub fn write_atomic(path: &Path, content: &str) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::invalid(format!(
            "{}: not a file path",
            path.display()
        )));
    };
    let temp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut file = File::create(&temp).with_context(|| temp.display())?;
    file.write_all(content.as_bytes())
        .and_then(|()| file.sync_all())
        .with_context(|| temp.display())?;
    drop(file);
    fs::rename(&temp, path).with_context(|| format!("rename to {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}

/// Replaces the content of an existing file without replacing its inode,
/// so a bind mount of it shows the new content. The new bytes are written
/// over the old ones before the file is cut to length, so a reader never
/// sees an empty file. Creates the file (crash-safely) if it is missing.
pub fn rewrite_in_place(path: &Path, content: &str) -> Result<()> {
    let mut file = match OpenOptions::new().write(true).open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return write_atomic(path, content),
        Err(err) => return Err(Error::from(err).context(path.display())),
    };
    file.write_all(content.as_bytes())
        .and_then(|()| file.set_len(content.len() as u64))
        .and_then(|()| file.sync_all())
        .with_context(|| format!("rewrite {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn entry(ip: &str, names: &[&str]) -> HostEntry {
        HostEntry {
            ip: ip.parse().unwrap(),
            names: names.iter().map(|n| n.to_string()).collect(),
        }
    }

    #[test]
    fn hosts_file_lists_self_then_peers_with_aliases() {
        let own = entry("10.5.0.2", &["c0ffee123456", "web"]);
        let peers = [
            entry("10.5.0.3", &["db", "database"]),
            entry("10.5.0.4", &[]),
        ];
        let text = hosts_file(Some(&own), &peers);
        assert!(text.starts_with("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost"));
        assert!(text.ends_with("10.5.0.2\tc0ffee123456 web\n10.5.0.3\tdb database\n"));
        assert!(
            !text.contains("10.5.0.4"),
            "an entry without names is left out"
        );
        assert!(hosts_file(None, &[]).ends_with("ff02::2\tip6-allrouters\n"));
    }

    #[test]
    fn resolv_conf_drops_loopback_nameservers_and_falls_back() {
        let host =
            "# managed\nnameserver 127.0.0.53\nnameserver ::1\nsearch example.org\noptions edns0\n";
        assert_eq!(
            resolv_conf(host),
            "# managed\nsearch example.org\noptions edns0\nnameserver 8.8.8.8\nnameserver 8.8.4.4\n"
        );
        let host = "nameserver 127.0.0.1\nnameserver 10.0.0.2\nnameserver 2001:db8::1\n";
        assert_eq!(
            resolv_conf(host),
            "nameserver 10.0.0.2\nnameserver 2001:db8::1\n"
        );
        assert_eq!(resolv_conf(""), "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }

    #[test]
    fn rewrite_keeps_the_inode_and_cuts_to_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hosts");
        rewrite_in_place(&path, "a much longer first content\n").unwrap();
        let inode = fs::metadata(&path).unwrap().ino();
        rewrite_in_place(&path, "short\n").unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "short\n");
        assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
        assert_eq!(hostname_file("box"), "box\n");
        let err = write_atomic(Path::new("/"), "x").unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::InvalidArgument);
    }
}
