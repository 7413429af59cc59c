//! A container's stdin (`docker run -i`): a fifo in its directory that the
//! shim reads, kept open for writing by berthd for the life of the task,
//! so the process sees its stdin end only when docker says so (an attach
//! with `StdinOnce` closing, or the container stopping), not whenever no
//! client happens to be attached.

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use crate::error::Context;
use crate::{Error, Result};

/// The fifo's name in the container's directory.
pub const FIFO_NAME: &str = "stdin";

/// The write end of a container's stdin.
#[derive(Debug)]
pub struct StdinPipe {
    path: PathBuf,
    sender: tokio::sync::Mutex<Option<pipe::Sender>>,
}

impl StdinPipe {
    /// Makes (or remakes) the fifo at `<dir>/stdin` and opens it for
    /// writing without waiting for a reader.
    pub fn create(dir: &Path) -> Result<StdinPipe> {
        let path = dir.join(FIFO_NAME);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                return Err(Error::from(err).context(format!("removing {}", path.display())))
            }
        }
        nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .map_err(|err| Error::internal(format!("making the fifo {}: {err}", path.display())))?;
        // Read-write: opening does not wait for the shim, and the fifo never
        // reports the end of input while berthd holds it.
        let sender = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&path)
            .context(format!("opening {}", path.display()))?;
        Ok(StdinPipe {
            path,
            sender: tokio::sync::Mutex::new(Some(sender)),
        })
    }

    /// Opens the fifo a running task already reads (after a berthd
    /// restart).
    pub fn reopen(dir: &Path) -> Result<StdinPipe> {
        let path = dir.join(FIFO_NAME);
        let sender = pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&path)
            .context(format!("opening {}", path.display()))?;
        Ok(StdinPipe {
            path,
            sender: tokio::sync::Mutex::new(Some(sender)),
        })
    }

    /// The fifo's path, for the task's stdio.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` to the process's stdin. `FailedPrecondition` once
    /// closed.
    pub async fn write_all(&self, bytes: &[u8]) -> Result<()> {
        let mut sender = self.sender.lock().await;
        let Some(sender) = sender.as_mut() else {
            return Err(Error::precondition("the container's stdin is closed"));
        };
        sender
            .write_all(bytes)
            .await
            .context(format!("writing to {}", self.path.display()))
    }

    /// Closes berthd's end: the shim then drains the fifo and closes the
    /// process's stdin (the caller sends the task CloseIO too, since the
    /// shim may hold the fifo open itself).
    pub async fn close(&self) {
        self.sender.lock().await.take();
    }

    /// Whether [`StdinPipe::close`] was called.
    pub async fn is_closed(&self) -> bool {
        self.sender.lock().await.is_none()
    }
}
