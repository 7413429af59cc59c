//! A process's stdio as containerd hands it over, and the relays that carry
//! it. containerd names each stream by a fifo path, a `file://` URI or a
//! `binary://` URI (a logging program). The container never gets those
//! directly: it writes into pipes the shim owns (or a pty, in terminal
//! mode), so it keeps running if the reader goes away and the shim decides
//! when a stream ends (CloseIO, exit).

use crate::error::{Context, Error, Result};
use crate::runtime::ProcessStdio;
use command_fds::{CommandFdExt, FdMapping};
use rustix::pipe::{pipe_with, PipeFlags};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The stdio fields of a create or exec request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
}

/// Where one output stream goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Destination {
    Discard,
    Fifo(PathBuf),
    File(PathBuf),
    /// A logging program: path and arguments (from the URI's query).
    Binary(PathBuf, Vec<String>),
}

fn destination(uri: &str) -> Result<Destination> {
    if uri.is_empty() {
        return Ok(Destination::Discard);
    }
    let Some((scheme, rest)) = uri.split_once("://") else {
        return Ok(Destination::Fifo(PathBuf::from(uri)));
    };
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !matches!(scheme, "fifo" | "file" | "binary") {
        return Err(Error::invalid(format!(
            "stdio {uri:?}: unsupported scheme {scheme:?} (want a fifo path, file:// or binary://)"
        )));
    }
    if !path.starts_with('/') {
        return Err(Error::invalid(format!(
            "stdio {uri:?}: the path must be absolute"
        )));
    }
    match scheme {
        "file" => Ok(Destination::File(PathBuf::from(path))),
        "binary" => {
            // containerd turns `?k=v&flag` into the arguments `k v flag`.
            let mut args = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                args.push(percent_decode(k));
                if !v.is_empty() {
                    args.push(percent_decode(v));
                }
            }
            Ok(Destination::Binary(PathBuf::from(path), args))
        }
        _ => Ok(Destination::Fifo(PathBuf::from(path))),
    }
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                out.push(b'%');
            }
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the runtime needs to start the process, and what the shim keeps to
/// finish wiring once it has run.
pub struct Prepared {
    pub stdio: ProcessStdio,
    /// `--console-socket` for terminal mode.
    pub console_socket: Option<PathBuf>,
    pending: Pending,
}

enum Pending {
    Pipes {
        stdin: Option<(PathBuf, OwnedFd)>,
        outputs: Vec<(OwnedFd, Destination)>,
        logger: Option<Logger>,
    },
    Terminal {
        dir: PathBuf,
        accept: JoinHandle<std::io::Result<OwnedFd>>,
        stdin: Option<PathBuf>,
        stdout: Destination,
        /// A `binary://` logger for the terminal's output, and the write
        /// end of its stdout pipe (its stderr pipe is closed: a terminal
        /// has one output).
        logger: Option<(Logger, OwnedFd)>,
    },
}

/// A running binary logger (its exit is reaped by the shim).
struct Logger {
    _pid: u32,
}

/// Set up pipes (or the console socket) for one process.
pub fn prepare(
    paths: &StdioPaths,
    io_owner: Option<(u32, u32)>,
    env: &[(&str, &str)],
) -> Result<Prepared> {
    if paths.terminal {
        return prepare_terminal(paths, env);
    }
    let mut stdio = ProcessStdio {
        stdin: Stdio::null(),
        stdout: Stdio::null(),
        stderr: Stdio::null(),
    };
    let mut stdin = None;
    if !paths.stdin.is_empty() {
        let (r, w) = pipe_with(PipeFlags::CLOEXEC).context("creating the stdin pipe")?;
        chown_io(&r, io_owner)?;
        stdio.stdin = Stdio::from(r);
        stdin = Some((PathBuf::from(&paths.stdin), w));
    }
    let out = destination(&paths.stdout)?;
    let err = destination(&paths.stderr)?;
    let mut outputs = Vec::new();
    let mut logger = None;
    if let Destination::Binary(bin, args) = &out {
        // One logger takes both streams (fd 3 stdout, fd 4 stderr) and
        // closes fd 5 when it is ready.
        let (out_r, out_w) = pipe_with(PipeFlags::CLOEXEC).context("creating the stdout pipe")?;
        let (err_r, err_w) = pipe_with(PipeFlags::CLOEXEC).context("creating the stderr pipe")?;
        chown_io(&out_w, io_owner)?;
        chown_io(&err_w, io_owner)?;
        logger = Some(start_logger(bin, args, out_r, err_r, env)?);
        stdio.stdout = Stdio::from(out_w);
        stdio.stderr = Stdio::from(err_w);
    } else {
        for (dest, slot) in [(out, &mut stdio.stdout), (err, &mut stdio.stderr)] {
            if dest == Destination::Discard {
                continue;
            }
            if matches!(dest, Destination::Binary(..)) {
                return Err(Error::invalid(
                    "stdio: a binary:// logger must take stdout too",
                ));
            }
            let (r, w) = pipe_with(PipeFlags::CLOEXEC).context("creating an output pipe")?;
            chown_io(&w, io_owner)?;
            *slot = Stdio::from(w);
            outputs.push((r, dest));
        }
    }
    Ok(Prepared {
        stdio,
        console_socket: None,
        pending: Pending::Pipes {
            stdin,
            outputs,
            logger,
        },
    })
}

fn chown_io(fd: &OwnedFd, owner: Option<(u32, u32)>) -> Result<()> {
    if let Some((uid, gid)) = owner {
        nix::unistd::fchown(fd.as_fd(), Some(uid.into()), Some(gid.into()))
            .context("chown of a stdio pipe")?;
    }
    Ok(())
}

fn start_logger(
    bin: &Path,
    args: &[String],
    out: OwnedFd,
    err: OwnedFd,
    env: &[(&str, &str)],
) -> Result<Logger> {
    let (ready_r, ready_w) =
        pipe_with(PipeFlags::CLOEXEC).context("creating the logger's ready pipe")?;
    let mut cmd = Command::new(bin);
    cmd.args(args).envs(env.iter().copied());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    cmd.fd_mappings(vec![
        FdMapping {
            parent_fd: out,
            child_fd: 3,
        },
        FdMapping {
            parent_fd: err,
            child_fd: 4,
        },
        FdMapping {
            parent_fd: ready_w,
            child_fd: 5,
        },
    ])
    .map_err(|_| Error::internal("logger fd mappings collide"))?;
    let child = cmd
        .spawn()
        .context(format!("starting the logging binary {}", bin.display()))?;
    drop(cmd);
    // Ready when the logger closes fd 5 (or exits).
    let mut buf = [0u8; 1];
    let mut file = std::fs::File::from(ready_r);
    let _ = std::io::Read::read(&mut file, &mut buf);
    Ok(Logger { _pid: child.id() })
}

fn prepare_terminal(paths: &StdioPaths, env: &[(&str, &str)]) -> Result<Prepared> {
    let mut stdout = destination(&paths.stdout)?;
    let logger = match &stdout {
        Destination::Binary(bin, args) => {
            let (out_r, out_w) =
                pipe_with(PipeFlags::CLOEXEC).context("creating the logger's pipe")?;
            let (err_r, err_w) =
                pipe_with(PipeFlags::CLOEXEC).context("creating the logger's pipe")?;
            let logger = start_logger(bin, args, out_r, err_r, env)?;
            drop(err_w);
            stdout = Destination::Discard;
            Some((logger, out_w))
        }
        _ => None,
    };
    let dir = std::env::temp_dir().join(format!(
        "berth-shim-pty-{}-{}",
        std::process::id(),
        unique()
    ));
    std::fs::create_dir(&dir).context(format!("creating {}", dir.display()))?;
    let socket = dir.join("pty.sock");
    let listener = match UnixListener::bind(&socket) {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(Error::from(e).context(format!("binding {}", socket.display())));
        }
    };
    let accept = tokio::task::spawn_blocking(move || receive_master(&listener));
    Ok(Prepared {
        stdio: ProcessStdio {
            stdin: Stdio::null(),
            stdout: Stdio::null(),
            stderr: Stdio::null(),
        },
        console_socket: Some(socket),
        pending: Pending::Terminal {
            dir,
            accept,
            stdin: (!paths.stdin.is_empty()).then(|| PathBuf::from(&paths.stdin)),
            stdout,
            logger,
        },
    })
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// Accept the runtime's connection and take the pty master it sends.
fn receive_master(listener: &UnixListener) -> std::io::Result<OwnedFd> {
    use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let (stream, _) = listener.accept()?;
    let mut data = [0u8; 4096];
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut iov = [std::io::IoSliceMut::new(&mut data)];
    recvmsg(&stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)?;
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::InvalidData,
        "the console socket got no pty master",
    ))
}

/// How long to wait for the runtime to send the pty master after it ran.
const CONSOLE_TIMEOUT: Duration = Duration::from_secs(10);

impl Prepared {
    /// The stdio to hand the runtime (the shim's copies close with it).
    pub fn take_stdio(&mut self) -> ProcessStdio {
        std::mem::replace(
            &mut self.stdio,
            ProcessStdio {
                stdin: Stdio::null(),
                stdout: Stdio::null(),
                stderr: Stdio::null(),
            },
        )
    }

    /// The runtime ran: start relaying. `Err` leaves nothing running.
    pub async fn finish(self) -> Result<Io> {
        match self.pending {
            Pending::Pipes {
                stdin,
                outputs,
                logger,
            } => {
                let mut io = Io::default();
                io._logger = logger;
                for (read, dest) in outputs {
                    io.outputs.push(tokio::spawn(relay_output(read, dest)));
                }
                if let Some((fifo, write)) = stdin {
                    *io.stdin.get_mut().unwrap_or_else(|p| p.into_inner()) =
                        StdinRelay::pipe(fifo, write);
                }
                Ok(io)
            }
            Pending::Terminal {
                dir,
                accept,
                stdin,
                stdout,
                logger,
            } => {
                let received = tokio::time::timeout(CONSOLE_TIMEOUT, accept).await;
                let _ = std::fs::remove_dir_all(&dir);
                let master = match received {
                    Ok(Ok(Ok(fd))) => fd,
                    Ok(Ok(Err(e))) => return Err(Error::internal(format!("console socket: {e}"))),
                    Ok(Err(e)) => return Err(Error::internal(format!("console socket: {e}"))),
                    Err(_) => {
                        return Err(Error::internal(
                            "console socket: the runtime sent no pty master",
                        ))
                    }
                };
                let master = PtyMaster::new(master);
                let output = master.handle().context("pty master")?;
                let input = match &stdin {
                    Some(fifo) => Some(StdinRelay::spawn(
                        fifo.clone(),
                        master.handle().context("pty master")?,
                    )),
                    None => None,
                };
                let (logger, log_pipe) = match logger {
                    Some((logger, pipe)) => (Some(logger), Some(pipe)),
                    None => (None, None),
                };
                Ok(Io {
                    stdin: Mutex::new(input),
                    outputs: vec![tokio::spawn(relay_pty_output(output, stdout, log_pipe))],
                    console: Some(master),
                    _logger: logger,
                })
            }
        }
    }

    /// The runtime failed: drop everything prepared.
    pub fn abandon(self) {
        if let Pending::Terminal { dir, accept, .. } = self.pending {
            accept.abort();
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The relay from the client's stdin fifo into the process, and the way to
/// tell it the client is done writing.
struct StdinRelay {
    task: JoinHandle<()>,
    closed: Option<oneshot::Sender<()>>,
}

impl StdinRelay {
    fn spawn(fifo: PathBuf, writer: impl AsyncWrite + Unpin + Send + 'static) -> StdinRelay {
        let (closed, when_closed) = oneshot::channel();
        StdinRelay {
            task: tokio::spawn(relay_input(fifo, writer, when_closed)),
            closed: Some(closed),
        }
    }

    /// A relay into the write end of the process's stdin pipe.
    fn pipe(fifo: PathBuf, write: OwnedFd) -> Option<StdinRelay> {
        match pipe::Sender::from_owned_fd(write) {
            Ok(writer) => Some(StdinRelay::spawn(fifo, writer)),
            Err(e) => {
                crate::log::warn(format!("stdin pipe: {e}"));
                None
            }
        }
    }
}

/// The live relays of one process.
#[derive(Default)]
pub struct Io {
    stdin: Mutex<Option<StdinRelay>>,
    outputs: Vec<JoinHandle<()>>,
    console: Option<PtyMaster>,
    _logger: Option<Logger>,
}

impl Io {
    /// CloseIO: the client wrote all it will. What it wrote is still
    /// delivered (the fifo may hold some); then the process sees end-of-file.
    pub fn close_stdin(&self) {
        let mut stdin = self.stdin.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(closed) = stdin.as_mut().and_then(|relay| relay.closed.take()) {
            let _ = closed.send(());
        }
    }

    /// The process is gone: stop relaying its stdin at once (a drain after
    /// CloseIO too, should the process have left input unread).
    fn stop_stdin(&self) {
        let relay = self.stdin.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(relay) = relay {
            relay.task.abort();
        }
    }

    pub fn resize(&self, width: u32, height: u32) -> Result<()> {
        let Some(master) = &self.console else {
            return Err(Error::precondition("the process has no terminal to resize"));
        };
        master.resize(width, height)
    }

    /// Wait (bounded) until the output streams are drained, then stop every
    /// relay. Output held open by a leftover grandchild is cut at `limit`.
    pub async fn finish(&mut self, limit: Duration) {
        let outputs = std::mem::take(&mut self.outputs);
        let aborts: Vec<_> = outputs.iter().map(|h| h.abort_handle()).collect();
        let _ = tokio::time::timeout(limit, async {
            for h in outputs {
                let _ = h.await;
            }
        })
        .await;
        for a in aborts {
            a.abort();
        }
        self.stop_stdin();
    }
}

impl Drop for Io {
    fn drop(&mut self) {
        self.stop_stdin();
        for h in &self.outputs {
            h.abort();
        }
    }
}

async fn open_output(dest: &Destination) -> std::io::Result<Box<dyn AsyncWrite + Unpin + Send>> {
    match dest {
        // Read-write so a reader that goes away (containerd restarting)
        // never turns into EPIPE for the container.
        Destination::Fifo(path) => Ok(Box::new(
            pipe::OpenOptions::new()
                .read_write(true)
                .open_sender(path)?,
        )),
        Destination::File(path) => {
            if let Some(parent) = path.parent() {
                tokio::fs::create_dir_all(parent).await?;
            }
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await?;
            Ok(Box::new(file))
        }
        Destination::Discard | Destination::Binary(..) => Ok(Box::new(tokio::io::sink())),
    }
}

async fn relay_output(read: OwnedFd, dest: Destination) {
    let Ok(mut reader) = pipe::Receiver::from_owned_fd(read) else {
        return;
    };
    match open_output(&dest).await {
        Ok(mut writer) => {
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
            let _ = writer.flush().await;
        }
        Err(e) => {
            crate::log::warn(format!("opening {dest:?}: {e}; discarding the output"));
            let _ = tokio::io::copy(&mut reader, &mut tokio::io::sink()).await;
        }
    }
}

/// Open the stdin fifo for reading without waiting for a writer. A fifo
/// read end polls as neither readable nor hung up until a writer has come
/// (and, after one came, hung up once every writer left), so the relay sleeps
/// in the reactor until containerd's client opens it, and end-of-file means
/// the client closed its stdin — no thread parked in a blocking open.
async fn open_stdin(fifo: &Path) -> std::io::Result<pipe::Receiver> {
    pipe::OpenOptions::new().open_receiver(fifo)
}

/// Copies the client's stdin fifo into `writer` until the client closes the
/// fifo, or until CloseIO (`closed`) — then whatever the fifo still holds is
/// delivered before `writer` is dropped, which is the process's end-of-file.
async fn relay_input(
    fifo: PathBuf,
    mut writer: impl AsyncWrite + Unpin,
    mut closed: oneshot::Receiver<()>,
) {
    let reader = match open_stdin(&fifo).await {
        Ok(r) => r,
        Err(e) => {
            crate::log::warn(format!("opening stdin {}: {e}", fifo.display()));
            return;
        }
    };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = tokio::select! {
            read = reader.readable() => match read.and_then(|()| reader.try_read(&mut buf)) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => 0,
            },
            _ = &mut closed => {
                drain(&reader, &mut writer, &mut buf).await;
                return;
            }
        };
        if n == 0 || deliver(&mut writer, &buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Delivers what the fifo holds right now, without waiting for more.
///
/// The reads go to the fd itself: tokio's `try_read` trusts the readiness
/// its reactor last saw, and input written just before CloseIO may not
/// have been seen yet, so it would report an empty fifo and lose it.
async fn drain(reader: &pipe::Receiver, writer: &mut (impl AsyncWrite + Unpin), buf: &mut [u8]) {
    // The fd is non-blocking: EAGAIN once the fifo is empty, 0 once it is
    // empty and no writer is left.
    while let Ok(n) = rustix::io::read(reader, &mut *buf) {
        if n == 0 || deliver(writer, &buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn deliver(writer: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    writer.write_all(bytes).await?;
    writer.flush().await
}

/// Copies the terminal's output to `dest`, or into a logger's pipe.
async fn relay_pty_output(
    mut master: tokio::fs::File,
    dest: Destination,
    log_pipe: Option<OwnedFd>,
) {
    let opened: std::io::Result<Box<dyn AsyncWrite + Unpin + Send>> = match log_pipe {
        Some(fd) => pipe::Sender::from_owned_fd(fd).map(|w| Box::new(w) as Box<_>),
        None => open_output(&dest).await,
    };
    let mut writer = match opened {
        Ok(w) => w,
        Err(e) => {
            crate::log::warn(format!("opening {dest:?}: {e}"));
            Box::new(tokio::io::sink())
        }
    };
    let mut buf = vec![0u8; 32 * 1024];
    // EIO once the last slave fd closes: the terminal is done.
    while let Ok(n) = master.read(&mut buf).await {
        if n == 0 || writer.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = writer.flush().await;
}

/// The pty master. Reads and writes go through tokio's blocking pool (one
/// pending read per terminal); resizing uses the fd directly.
pub struct PtyMaster {
    fd: std::fs::File,
}

impl PtyMaster {
    fn new(fd: OwnedFd) -> PtyMaster {
        PtyMaster {
            fd: std::fs::File::from(fd),
        }
    }

    fn handle(&self) -> std::io::Result<tokio::fs::File> {
        Ok(tokio::fs::File::from_std(self.fd.try_clone()?))
    }

    fn resize(&self, width: u32, height: u32) -> Result<()> {
        let size = rustix::termios::Winsize {
            ws_row: u16::try_from(height)
                .map_err(|_| Error::invalid(format!("height {height} is too large")))?,
            ws_col: u16::try_from(width)
                .map_err(|_| Error::invalid(format!("width {width} is too large")))?,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        rustix::termios::tcsetwinsize(&self.fd, size).context("resizing the pty")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert_eq!(destination("").unwrap(), Destination::Discard);
        assert_eq!(
            destination("/run/f/x-stdout").unwrap(),
            Destination::Fifo("/run/f/x-stdout".into())
        );
        assert_eq!(
            destination("file:///var/log/x.log").unwrap(),
            Destination::File("/var/log/x.log".into())
        );
        assert_eq!(
            destination("binary:///usr/bin/logger?id=a%20b&debug").unwrap(),
            Destination::Binary(
                "/usr/bin/logger".into(),
                vec!["id".into(), "a b".into(), "debug".into()]
            )
        );
        assert!(destination("tcp://1.2.3.4:5")
            .unwrap_err()
            .message
            .contains("unsupported scheme"));
        assert!(destination("file://relative")
            .unwrap_err()
            .message
            .contains("absolute"));
    }

    /// CloseIO right after the client wrote its last input, before the
    /// reactor saw the fifo readable: the input still reaches the process.
    #[tokio::test]
    async fn input_written_just_before_closeio_is_delivered() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..200 {
            let fifo = dir.path().join(format!("stdin-{round}"));
            nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
            // The client's end, opened read-write as berthd and ctr do.
            let client = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&fifo)
                .unwrap();
            let (process_end, mut process) = tokio::io::duplex(1 << 16);
            let (close, closed) = oneshot::channel();
            let relay = tokio::spawn(relay_input(fifo, process_end, closed));
            tokio::task::yield_now().await;
            std::io::Write::write_all(&mut &client, b"one\ntwo\nthree\n").unwrap();
            drop(client);
            close.send(()).unwrap();
            relay.await.unwrap();
            let mut got = Vec::new();
            process.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"one\ntwo\nthree\n", "round {round}");
        }
    }
}
