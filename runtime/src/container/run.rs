//! `run`: create and start in one process; in the foreground, forward
//! signals to the container, relay its terminal, wait for it, clean up and
//! pass its exit status through.

use std::io::{IsTerminal, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::termios::{self, SetArg, Termios};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::create::{create, CreateOptions, Created, Launch};
use crate::channel::{FromChild, FromParent};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::hooks::{self, HookKind};
use crate::state::{StateStore, Status};
use crate::sys;

/// Signals `run` passes on to the container instead of dying of them.
const FORWARDED: &[Signal] = &[
    Signal::SIGHUP,
    Signal::SIGINT,
    Signal::SIGQUIT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
    Signal::SIGCONT,
    Signal::SIGTSTP,
];

/// Run a container; returns its exit status (0 when detached). With
/// `keep`, a container that exits is left stopped instead of deleted.
pub fn run(store: &StateStore, opts: &CreateOptions, detach: bool, keep: bool) -> Result<i32> {
    if detach && opts.console_socket.is_none() {
        let bundle = crate::spec::Bundle::load(&opts.bundle)?;
        if bundle
            .spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false)
        {
            return Err(Error::invalid(
                "process.terminal is set: --detach needs a --console-socket to hand the terminal to",
            ));
        }
    }
    // Block the forwarded signals before init exists, so none is lost;
    // init resets its mask before exec.
    let signals = if detach {
        None
    } else {
        Some(Forwarder::new()?)
    };
    let Created {
        dir,
        state,
        channel,
        console_master,
    } = create(store, opts, Launch::Now)?;
    let started = channel
        .ok_or_else(|| Error::internal("no sync channel for run"))
        .and_then(|channel| {
            channel
                .send(&FromParent::Start)
                .context("starting the container")?;
            // `Started`; or `Failed` when what follows the start failed
            // (a startContainer hook, the credentials); or end-of-file
            // when init died otherwise (it says why on the container's
            // stderr and exits 127, which the supervision below reports).
            match channel.recv::<FromChild>() {
                Ok(Some(FromChild::Failed(failure))) => Err(Error::internal(format!(
                    "cannot start container {:?}: {}",
                    opts.id, failure.message
                ))),
                _ => Ok(()),
            }
        });
    if let Err(e) = started {
        // Nothing may stay behind: kill what was created and remove it.
        let _ = super::delete::stop(&state);
        let _ = super::delete::destroy(dir, &state);
        return Err(e);
    }
    let oci = serde_json::to_vec(&state.oci_state(Status::Running)).unwrap_or_default();
    hooks::run_hooks_best_effort(
        HookKind::Poststart,
        hooks::hooks_of(state.spec.hooks().as_ref(), HookKind::Poststart),
        &oci,
    );
    // Let kill, state and delete in other processes see the container.
    drop(dir);
    let Some(signals) = signals else {
        return Ok(0);
    };
    let supervised = signals.supervise(Pid::from_raw(state.pid), console_master.as_ref());
    let code = match supervised {
        Ok(code) => code,
        Err(e) => {
            if let Ok(dir) = store.get(&state.id) {
                let _ = super::delete::stop(&state);
                let _ = super::delete::destroy(dir, &state);
            }
            return Err(e);
        }
    };
    if keep {
        return Ok(code);
    }
    // Clean up as delete would; another process may have deleted it already.
    match store.get(&state.id) {
        Ok(dir) => {
            if !state.own_pid_namespace {
                super::delete::stop(&state)?;
            }
            super::delete::destroy(dir, &state)?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    Ok(code)
}

/// Signals blocked and read from a signalfd while we wait for a child.
pub(crate) struct Forwarder {
    mask: SigSet,
    fd: SignalFd,
}

impl Forwarder {
    /// Block SIGCHLD and the forwarded signals; undone on drop.
    pub(crate) fn new() -> Result<Self> {
        let mut mask = SigSet::empty();
        mask.add(Signal::SIGCHLD);
        for s in FORWARDED {
            mask.add(*s);
        }
        mask.thread_block().context("blocking signals")?;
        let fd =
            SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC).context("creating a signalfd")?;
        Ok(Self { mask, fd })
    }

    /// Wait for `child`, forwarding signals to it and relaying `console`
    /// (a pty master) to our stdio; returns its exit status.
    pub(crate) fn supervise(&self, child: Pid, console: Option<&OwnedFd>) -> Result<i32> {
        supervise(child, &self.fd, console)
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        let _ = self.mask.thread_unblock();
    }
}

/// Wait for the child, forwarding signals and relaying the terminal.
fn supervise(child: Pid, signals: &SignalFd, console: Option<&OwnedFd>) -> Result<i32> {
    let stdin = std::io::stdin();
    let raw = console
        .filter(|_| stdin.is_terminal())
        .and_then(|_| RawMode::enter(stdin.as_fd()));
    if let Some(master) = console {
        copy_winsize(stdin.as_fd(), master.as_fd());
    }
    let mut stdin_open = console.is_some();
    let mut buf = [0u8; 8192];
    let result = loop {
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(master) = console {
            fds.push(PollFd::new(master.as_fd(), PollFlags::POLLIN));
            if stdin_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
        }
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => break Err(Error::internal(format!("waiting for the container: {e}"))),
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if let Some(master) = console {
            if ready.get(1) == Some(&true) {
                // EIO once the container side of the pty is closed.
                match nix::unistd::read(master, &mut buf) {
                    Ok(n) if n > 0 => {
                        let mut out = std::io::stdout();
                        let _ = out.write_all(&buf[..n]);
                        let _ = out.flush();
                    }
                    _ => {}
                }
            }
            if stdin_open && ready.get(2) == Some(&true) {
                match std::io::stdin().read(&mut buf) {
                    Ok(n) if n > 0 => {
                        let _ = nix::unistd::write(master, &buf[..n]);
                    }
                    _ => stdin_open = false,
                }
            }
        }
        if ready[0] {
            let Ok(Some(info)) = signals.read_signal() else {
                continue;
            };
            let Ok(sig) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            match sig {
                Signal::SIGCHLD => match reap(child) {
                    Some(code) => break Ok(code),
                    None => continue,
                },
                Signal::SIGWINCH => {
                    if let Some(master) = console {
                        copy_winsize(stdin.as_fd(), master.as_fd());
                    }
                }
                other => {
                    let _ = nix::sys::signal::kill(child, other);
                }
            }
        }
    };
    if let Some(master) = console {
        drain(master, &mut buf);
    }
    drop(raw);
    result
}

/// Reap init if it exited; its exit status the way a shell reports it.
fn reap(child: Pid) -> Option<i32> {
    loop {
        match waitpid(child, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Some(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Some(128 + sig as i32),
            Ok(WaitStatus::StillAlive) => return None,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Some(255),
        }
    }
}

/// Copy what the container wrote before exiting.
fn drain(master: &OwnedFd, buf: &mut [u8]) {
    loop {
        let mut fds = [PollFd::new(master.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, PollTimeout::ZERO), Ok(n) if n > 0) {
            return;
        }
        match nix::unistd::read(master, buf) {
            Ok(n) if n > 0 => {
                let _ = std::io::stdout().write_all(&buf[..n]);
            }
            _ => return,
        }
    }
}

fn copy_winsize(from: BorrowedFd<'_>, to: BorrowedFd<'_>) {
    if let Ok((rows, cols)) = sys::get_winsize(from) {
        let _ = sys::set_winsize(to, rows, cols);
    }
}

/// The caller's terminal in raw mode, restored on drop.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(fd: BorrowedFd<'a>) -> Option<Self> {
        let saved = termios::tcgetattr(fd).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(fd, SetArg::TCSANOW, &raw).ok()?;
        Some(Self { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(self.fd, SetArg::TCSANOW, &self.saved);
    }
}
