//! Named network namespaces, one per container: `<dir>/<container id>`.
//!
//! A namespace outlives its processes when its nsfs inode is bind-mounted
//! on a file, which is what `ip netns add` and containerd do. The new
//! namespace has to come from a process that unshared it. berthd forbids
//! unsafe code, and unsharing a thread of a multi-threaded daemon is
//! unsafe (and would leave a tokio worker in the wrong namespace), so the
//! namespace is made by util-linux's `unshare --net=<file> ip link set lo
//! up`: the short-lived child unshares, util-linux bind-mounts its
//! `/proc/<pid>/ns/net` on the file, and the child brings `lo` up (what
//! CNI's loopback plugin would do, one program run fewer) and exits. `ip netns add`
//! would do the same but only under `/run/netns` (or `$IP_NETNS_DIR`),
//! and it turns that directory into a shared mount point; `unshare`
//! leaves propagation alone and takes any path.
//!
//! Removal detaches the mount (`umount2(MNT_DETACH)`) and unlinks the
//! file; the namespace itself goes away with its last user.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};
use tokio::process::Command;

use crate::error::Context;
use crate::{Error, Result};

/// Creates and removes the containers' network namespaces in one directory.
#[derive(Debug, Clone)]
pub struct NetnsManager {
    dir: PathBuf,
}

impl NetnsManager {
    /// Namespaces live in `dir` (berthd's: `<state>/netns`).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        NetnsManager { dir: dir.into() }
    }

    /// Where the namespace of `container_id` is (or would be) mounted.
    pub fn path(&self, container_id: &str) -> Result<PathBuf> {
        validate_id(container_id)?;
        Ok(self.dir.join(container_id))
    }

    /// Creates the namespace of `container_id` and returns its path.
    /// `AlreadyExists` if it exists.
    pub async fn create(&self, container_id: &str) -> Result<PathBuf> {
        let path = self.path(container_id)?;
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("netns dir {}", self.dir.display()))?;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("netns {}", path.display()))?;
        // One child does it all: unshare binds the new namespace on the
        // file, then runs `ip` inside it to bring lo up.
        let made = Command::new("unshare")
            .arg(format!("--net={}", path.display()))
            .args(["ip", "link", "set", "lo", "up"])
            .output()
            .await;
        let failure = match made {
            Ok(output) if output.status.success() => return Ok(path),
            Ok(output) => Error::internal(format!(
                "unshare --net: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            )),
            Err(err) => Error::from(err).context("run unshare (util-linux)"),
        };
        let _ = self.remove(container_id);
        Err(failure.context(format!("create netns {}", path.display())))
    }

    /// Unmounts and deletes the namespace of `container_id`; nothing to do
    /// if it is already gone.
    pub fn remove(&self, container_id: &str) -> Result<()> {
        let path = self.path(container_id)?;
        match umount2(&path, MntFlags::MNT_DETACH) {
            // EINVAL: not a mount point (a half-made namespace).
            Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
            Err(errno) => {
                return Err(Error::internal(format!(
                    "unmount netns {}: {errno}",
                    path.display()
                )))
            }
        }
        match fs::remove_file(&path) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                Err(Error::from(err).context(format!("remove netns {}", path.display())))
            }
            _ => Ok(()),
        }
    }

    /// The container ids that have a namespace file here.
    pub fn list(&self) -> Result<Vec<String>> {
        let entries = match fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => {
                return Err(Error::from(err).context(format!("netns dir {}", self.dir.display())))
            }
        };
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.with_context(|| format!("netns dir {}", self.dir.display()))?;
            if let Some(name) = entry.file_name().to_str() {
                ids.push(name.to_owned());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// The directory the namespaces are in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Checks that a container id can name a file in a directory of its own
/// (no `/`, not `.` or `..`, not empty).
pub(crate) fn validate_id(container_id: &str) -> Result<()> {
    let valid = !container_id.is_empty()
        && container_id.len() <= 255
        && container_id != "."
        && container_id != ".."
        && !container_id.contains(['/', '\0']);
    if valid {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "container id {container_id:?}: not usable as a netns file name"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_would_escape_the_directory_are_refused() {
        let manager = NetnsManager::new("/run/berth/netns");
        assert_eq!(
            manager.path("abc").unwrap(),
            PathBuf::from("/run/berth/netns/abc")
        );
        for bad in ["", ".", "..", "a/b", "../x"] {
            let err = manager.path(bad).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn removing_what_is_not_there_is_fine() {
        let dir = tempfile::tempdir().unwrap();
        let manager = NetnsManager::new(dir.path().join("netns"));
        manager.remove("gone").unwrap();
        assert!(manager.list().unwrap().is_empty());
        // A half-made namespace: the file without the mount.
        fs::create_dir_all(manager.dir()).unwrap();
        fs::write(manager.path("half").unwrap(), b"").unwrap();
        assert_eq!(manager.list().unwrap(), ["half"]);
        manager.remove("half").unwrap();
        assert!(manager.list().unwrap().is_empty());
    }
}
