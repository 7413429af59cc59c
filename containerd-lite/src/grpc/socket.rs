//! The daemon's unix socket: created so that only root (and root's group)
//! can talk to the daemon, and removed when the daemon stops.

use std::fs::{self, DirBuilder, Permissions};
use std::io;
use std::os::unix::fs::{chown, DirBuilderExt, FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

use crate::error::Context;
use crate::{Error, Result};

/// Mode of the directories created above the socket: others may traverse
/// (to reach sockets they are allowed to use) but not list.
const PARENT_MODE: u32 = 0o711;
/// Mode of the socket: root and its group only.
const SOCKET_MODE: u32 = 0o660;

/// A bound socket; dropping it removes the socket file.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    listener: Option<UnixListener>,
}

impl BoundSocket {
    /// Binds `path`: creates missing parent directories (0711), removes a
    /// stale socket left by a daemon that died, refuses a socket some live
    /// daemon still answers on or a path that is not a socket, and sets
    /// the new socket to 0660 owned by root.
    pub fn bind(path: &Path) -> Result<Self> {
        let what = || format!("socket {}", path.display());
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(PARENT_MODE)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        remove_stale(path).with_context(what)?;
        let listener = UnixListener::bind(path).with_context(what)?;
        // From here on, drop removes the file whatever fails next.
        let bound = BoundSocket {
            path: path.to_path_buf(),
            listener: Some(listener),
        };
        chown(path, Some(0), Some(0)).with_context(what)?;
        fs::set_permissions(path, Permissions::from_mode(SOCKET_MODE)).with_context(what)?;
        Ok(bound)
    }

    /// The listener to serve on (once).
    pub fn take_listener(&mut self) -> Option<UnixListener> {
        self.listener.take()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if let Err(err) = fs::remove_file(&self.path) {
            if err.kind() != io::ErrorKind::NotFound {
                tracing::warn!(socket = %self.path.display(), "removing the socket: {err}");
            }
        }
    }
}

/// Removes a socket nobody answers on; refuses a live one or a non-socket.
fn remove_stale(path: &Path) -> Result<()> {
    let metadata = match fs::symlink_metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err.into()),
    };
    if !metadata.file_type().is_socket() {
        return Err(Error::already_exists("exists and is not a socket"));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Error::unavailable(
            "another daemon is serving on it (stop it or choose another --address)",
        ));
    }
    fs::remove_file(path)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;
    use std::os::unix::fs::MetadataExt;

    #[tokio::test]
    async fn creates_parents_and_a_root_only_socket_then_removes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/berth/berthd.sock");
        let socket = BoundSocket::bind(&path).unwrap();
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_socket());
        assert_eq!(meta.mode() & 0o777, SOCKET_MODE);
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
        let parent = fs::metadata(dir.path().join("run/berth")).unwrap();
        assert_eq!(parent.mode() & 0o777, PARENT_MODE);
        drop(socket);
        assert!(!path.exists());
    }

    #[tokio::test]
    async fn replaces_a_stale_socket_but_not_a_live_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("d.sock");
        // A socket file whose listener is gone: stale.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let live = BoundSocket::bind(&path).unwrap();
        let err = BoundSocket::bind(&path).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Unavailable);
        assert!(err.message.contains("d.sock"), "{}", err.message);
        drop(live);
    }

    #[tokio::test]
    async fn refuses_to_remove_what_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("precious");
        fs::write(&path, b"data").unwrap();
        let err = BoundSocket::bind(&path).unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&path).unwrap(), b"data");
    }
}
