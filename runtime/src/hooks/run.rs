//! Running a single hook: spawn, feed stdin, capture output, enforce the
//! timeout — all from one thread, multiplexing the pipes with `poll(2)`.

use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use oci_spec::runtime::Hook;

use super::{Error, Failure, HookKind};

/// How much of each of stdout and stderr is kept for error messages.
const CAPTURE_LIMIT: usize = 4096;

/// Longest pause between checks of whether the hook has exited while its
/// pipes are quiet. Pauses start at 1ms and double up to this.
const MAX_BACKOFF: Duration = Duration::from_millis(50);

/// Runs one hook to completion (see the module docs of [`super`]). A hook
/// without `env` gets `absent_env`, or when that is `None` ours.
pub(super) fn run_hook(
    kind: HookKind,
    hook: &Hook,
    state: &[u8],
    absent_env: Option<&[String]>,
) -> Result<(), Error> {
    let fail = |failure| Error {
        kind,
        path: hook.path().clone(),
        failure,
    };
    let timeout = match hook.timeout() {
        None => None,
        Some(secs) if secs > 0 => Some(secs.unsigned_abs()),
        Some(secs) => return Err(fail(Failure::InvalidTimeout(secs))),
    };

    tracing::debug!(hook = %kind, path = %hook.path().display(), "running hook");
    let mut child = command(hook, absent_env)
        .spawn()
        .map_err(|e| fail(Failure::Spawn(e)))?;
    let deadline = timeout.map(|secs| Instant::now() + Duration::from_secs(secs));

    let mut sup = Supervisor::new(&mut child, state);
    let outcome = sup.run(&mut child, deadline);
    let stdout = sup.stdout.text();
    let stderr = sup.stderr.text();
    match outcome {
        Ok(Outcome::Exited(status)) if status.success() => {
            if !stdout.is_empty() {
                tracing::debug!(hook = %kind, path = %hook.path().display(), %stdout, "hook output");
            }
            Ok(())
        }
        Ok(Outcome::Exited(status)) => Err(fail(Failure::Exit {
            status,
            stdout,
            stderr,
        })),
        Ok(Outcome::TimedOut) => Err(fail(Failure::TimedOut {
            timeout: timeout.unwrap_or_default(),
            stdout,
            stderr,
        })),
        Err(e) => {
            kill_and_reap(&mut child);
            Err(fail(Failure::Io(e)))
        }
    }
}

/// Builds the command: `path` (never searched in `$PATH`), `args[0]` as
/// `argv[0]` (the path if `args` is empty), the hook's environment (or the
/// one it inherits) and piped standard streams.
fn command(hook: &Hook, absent_env: Option<&[String]>) -> Command {
    let path = hook.path();
    let mut cmd = Command::new(exec_path(path));
    match hook.args().as_deref() {
        Some([argv0, rest @ ..]) => {
            cmd.arg0(argv0).args(rest);
        }
        _ => {
            cmd.arg0(path);
        }
    }
    // Without either, Command passes our own environment on.
    if let Some(env) = hook.env().as_deref().or(absent_env) {
        cmd.env_clear();
        for entry in env {
            match entry.split_once('=') {
                Some((key, value)) if !key.is_empty() => {
                    cmd.env(key, value);
                }
                _ => {
                    tracing::warn!(path = %path.display(), %entry, "ignoring malformed hook env entry")
                }
            }
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// `execv` semantics: a path without a slash names a file in the current
/// directory, not something to look up in `$PATH` (which `Command` would
/// do).
fn exec_path(path: &Path) -> PathBuf {
    if path.as_os_str().as_encoded_bytes().contains(&b'/') {
        path.to_path_buf()
    } else {
        Path::new(".").join(path)
    }
}

/// Sends `SIGKILL` (if still running) and reaps the child.
fn kill_and_reap(child: &mut Child) {
    // Errors mean the child already exited (and maybe was reaped); there is
    // nothing more to do either way.
    let _ = child.kill();
    let _ = child.wait();
}

/// How supervision ended.
enum Outcome {
    Exited(ExitStatus),
    TimedOut,
}

/// The first [`CAPTURE_LIMIT`] bytes of a stream; the rest is discarded.
#[derive(Default)]
struct Capture {
    data: Vec<u8>,
    truncated: bool,
}

impl Capture {
    fn push(&mut self, bytes: &[u8]) {
        let room = CAPTURE_LIMIT.saturating_sub(self.data.len());
        let take = room.min(bytes.len());
        self.data.extend_from_slice(&bytes[..take]);
        self.truncated |= take < bytes.len();
    }

    fn text(&self) -> String {
        let mut s = String::from_utf8_lossy(&self.data).trim_end().to_string();
        if self.truncated {
            s.push_str(" [...]");
        }
        s
    }
}

/// The parent's ends of the hook's pipes and what has been read from them.
struct Supervisor<'a> {
    stdin: Option<ChildStdin>,
    stdout_pipe: Option<ChildStdout>,
    stderr_pipe: Option<ChildStderr>,
    state: &'a [u8],
    written: usize,
    stdout: Capture,
    stderr: Capture,
}

impl<'a> Supervisor<'a> {
    fn new(child: &mut Child, state: &'a [u8]) -> Self {
        let mut sup = Supervisor {
            stdin: child.stdin.take(),
            stdout_pipe: child.stdout.take(),
            stderr_pipe: child.stderr.take(),
            state,
            written: 0,
            stdout: Capture::default(),
            stderr: Capture::default(),
        };
        if state.is_empty() {
            sup.stdin = None;
        }
        sup
    }

    /// Pumps the pipes until the child exits or the deadline passes (then
    /// the child is killed and reaped).
    fn run(&mut self, child: &mut Child, deadline: Option<Instant>) -> io::Result<Outcome> {
        set_nonblocking(self.stdin.as_ref().map(AsFd::as_fd))?;
        set_nonblocking(self.stdout_pipe.as_ref().map(AsFd::as_fd))?;
        set_nonblocking(self.stderr_pipe.as_ref().map(AsFd::as_fd))?;

        let mut backoff = Duration::from_millis(1);
        loop {
            self.pump();
            if let Some(status) = child.try_wait()? {
                // Collect what is still buffered; a pipe kept open by a
                // grandchild must not keep us here, so no blocking reads.
                self.pump();
                return Ok(Outcome::Exited(status));
            }
            let remaining = match deadline {
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        kill_and_reap(child);
                        self.pump();
                        return Ok(Outcome::TimedOut);
                    }
                    Some(deadline - now)
                }
                None => None,
            };
            if !self.has_pipes() && remaining.is_none() {
                // Nothing left to multiplex and no deadline: just wait.
                return child.wait().map(Outcome::Exited);
            }

            let pause = remaining.map_or(backoff, |r| r.min(backoff));
            if self.wait_for_pipes(pause)? {
                backoff = Duration::from_millis(1);
            } else {
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }

    fn has_pipes(&self) -> bool {
        self.stdin.is_some() || self.stdout_pipe.is_some() || self.stderr_pipe.is_some()
    }

    /// Waits up to `pause` for any pipe to become ready (or just sleeps if
    /// none is open). Returns whether a pipe became ready.
    fn wait_for_pipes(&self, pause: Duration) -> io::Result<bool> {
        let mut fds = Vec::with_capacity(3);
        if let Some(p) = &self.stdin {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLOUT));
        }
        if let Some(p) = &self.stdout_pipe {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if let Some(p) = &self.stderr_pipe {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        if fds.is_empty() {
            std::thread::sleep(pause);
            return Ok(false);
        }
        // Round up so a sub-millisecond remainder does not become a busy
        // poll with a zero timeout.
        let millis = pause.as_micros().div_ceil(1000);
        let timeout = PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, timeout) {
            Ok(n) => Ok(n > 0),
            Err(nix::errno::Errno::EINTR) => Ok(true),
            Err(e) => Err(e.into()),
        }
    }

    /// Moves whatever data can move without blocking: writes the rest of
    /// the state to stdin (closing it when done or when the hook closed its
    /// end), drains stdout and stderr (dropping each at end of file).
    fn pump(&mut self) {
        if let Some(stdin) = &mut self.stdin {
            match write_some(stdin, &self.state[self.written..]) {
                Ok(n) => {
                    self.written += n;
                    if self.written >= self.state.len() {
                        self.stdin = None; // EOF for the hook
                    }
                }
                Err(e) => {
                    // EPIPE: the hook does not read its stdin; that is fine.
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        tracing::debug!("writing state to hook stdin: {e}");
                    }
                    self.stdin = None;
                }
            }
        }
        if let Some(pipe) = &mut self.stdout_pipe {
            if drain(pipe, &mut self.stdout) {
                self.stdout_pipe = None;
            }
        }
        if let Some(pipe) = &mut self.stderr_pipe {
            if drain(pipe, &mut self.stderr) {
                self.stderr_pipe = None;
            }
        }
    }
}

/// Writes as much of `data` as the pipe takes now; `Ok(0)` if it is full.
fn write_some(w: &mut impl Write, data: &[u8]) -> io::Result<usize> {
    let mut done = 0;
    while done < data.len() {
        match w.write(&data[done..]) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads everything available from a non-blocking pipe into `capture`.
/// Returns true when the pipe is finished (end of file or error).
fn drain(r: &mut impl Read, capture: &mut Capture) -> bool {
    let mut buf = [0u8; 8192];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return true,
            Ok(n) => capture.push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => {
                tracing::debug!("reading hook output: {e}");
                return true;
            }
        }
    }
}

/// Sets `O_NONBLOCK` on our end of a pipe (the hook's end, a separate open
/// file description, stays blocking).
fn set_nonblocking(fd: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let Some(fd) = fd else {
        return Ok(());
    };
    let flags = OFlag::from_bits_retain(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}
