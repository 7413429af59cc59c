//! The task's stdio, as ctr wires it: fifos in a private directory that the
//! shim opens by path, relayed to and from berthctl's own stdio.
//!
//! Output fifos are opened for reading before the task exists: a fifo read
//! end polls neither readable nor hung up until a writer has come, so each
//! relay sleeps in the reactor until the shim opens its end and ends at the
//! shim's close. Stdin is read by a plain thread (a blocking read of a
//! terminal must never hold up the runtime's shutdown) and written into the
//! stdin fifo; its end-of-file closes the fifo.

use std::io::Read;
use std::path::{Path, PathBuf};

use nix::sys::stat::Mode;
use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The fifos of one task, removed (with their directory) on drop.
pub(crate) struct Fifos {
    /// Held for its drop, which removes the fifos.
    _dir: tempfile::TempDir,
    pub(crate) stdin: PathBuf,
    pub(crate) stdout: PathBuf,
    /// None with a terminal: one stream carries both.
    pub(crate) stderr: Option<PathBuf>,
}

impl Fifos {
    /// Makes the fifos for task `id` in a new 0700 directory.
    pub(crate) fn new(id: &str, terminal: bool) -> Result<Fifos, String> {
        let dir = tempfile::Builder::new()
            .prefix("berthctl-fifo-")
            .tempdir()
            .map_err(|e| format!("creating a directory for the stdio fifos: {e}"))?;
        let make = |stream: &str| -> Result<PathBuf, String> {
            let path = dir.path().join(format!("{id}-{stream}"));
            nix::unistd::mkfifo(&path, Mode::S_IRUSR | Mode::S_IWUSR)
                .map_err(|e| format!("creating fifo {}: {e}", path.display()))?;
            Ok(path)
        };
        let stdin = make("stdin")?;
        let stdout = make("stdout")?;
        let stderr = if terminal {
            None
        } else {
            Some(make("stderr")?)
        };
        Ok(Fifos {
            _dir: dir,
            stdin,
            stdout,
            stderr,
        })
    }

    /// Starts copying the output fifos to berthctl's stdout and stderr.
    pub(crate) fn relay_outputs(&self) -> Result<Outputs, String> {
        let mut copies = vec![copy_out(&self.stdout, Output::Stdout)?];
        if let Some(stderr) = &self.stderr {
            copies.push(copy_out(stderr, Output::Stderr)?);
        }
        Ok(Outputs { copies })
    }

    /// Opens the stdin fifo for writing. Read-write, so the open needs no
    /// reader yet; the shim's reader sees end-of-file once this is dropped.
    pub(crate) fn open_stdin(&self) -> Result<pipe::Sender, String> {
        pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(&self.stdin)
            .map_err(|e| format!("opening {}: {e}", self.stdin.display()))
    }
}

#[derive(Clone, Copy)]
enum Output {
    Stdout,
    Stderr,
}

fn copy_out(fifo: &Path, to: Output) -> Result<JoinHandle<()>, String> {
    let mut reader = pipe::OpenOptions::new()
        .open_receiver(fifo)
        .map_err(|e| format!("opening {}: {e}", fifo.display()))?;
    Ok(tokio::spawn(async move {
        // An error means our own stdout or stderr is gone (a closed pipe):
        // there is nobody left to tell.
        let _ = match to {
            Output::Stdout => copy_flushing(&mut reader, &mut tokio::io::stdout()).await,
            Output::Stderr => copy_flushing(&mut reader, &mut tokio::io::stderr()).await,
        };
    }))
}

/// Copies until end-of-file, flushing each chunk (a terminal session must
/// see output as it comes, not when a buffer fills).
async fn copy_flushing(
    reader: &mut pipe::Receiver,
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> std::io::Result<()> {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            return writer.flush().await;
        }
        writer.write_all(&buf[..n]).await?;
        writer.flush().await?;
    }
}

/// The running output relays.
pub(crate) struct Outputs {
    copies: Vec<JoinHandle<()>>,
}

impl Outputs {
    /// Waits until the shim has closed every output stream and all of it
    /// is written out.
    pub(crate) async fn drained(self) {
        for copy in self.copies {
            let _ = copy.await;
        }
    }

    /// Stops relaying (the task never ran).
    pub(crate) fn abort(self) {
        for copy in self.copies {
            copy.abort();
        }
    }
}

/// Copies berthctl's stdin into `fifo` until end-of-file, then closes it;
/// the handle finishes then (the moment to send CloseIO).
pub(crate) fn relay_stdin(mut fifo: pipe::Sender) -> tokio::task::JoinHandle<()> {
    let (chunks, mut received) = mpsc::channel::<Vec<u8>>(4);
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if chunks.blocking_send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    });
    tokio::spawn(async move {
        while let Some(chunk) = received.recv().await {
            if fifo.write_all(&chunk).await.is_err() {
                return;
            }
        }
    })
}
