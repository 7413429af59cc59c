//! Terminals: a pty allocated inside the container (on its own devpts) with
//! the master end handed to the caller over a unix socket (SCM_RIGHTS), the
//! contract runc established with `--console-socket`.

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

use crate::error::{Context, Result};
use crate::sys;

/// A freshly allocated pseudo-terminal.
#[derive(Debug)]
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
    pub slave_path: PathBuf,
}

/// Allocate a pty from the devpts visible at /dev/ptmx.
pub fn open_pty() -> Result<Pty> {
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .context("opening /dev/ptmx")?;
    grantpt(&master).context("grantpt")?;
    unlockpt(&master).context("unlockpt")?;
    let name = ptsname_r(&master).context("ptsname")?;
    let slave = std::fs::File::options()
        .read(true)
        .write(true)
        .custom_flags_noctty()
        .open(&name)
        .with_context(|| format!("opening {name}"))?;
    let master = OwnedFd::from(master);
    Ok(Pty {
        master,
        slave: slave.into(),
        slave_path: PathBuf::from(name),
    })
}

trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}

impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
    }
}

/// Send one fd with `name` as payload over a connected unix socket.
pub fn send_fd(sock: BorrowedFd<'_>, fd: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
    let fds = [fd.as_raw_fd()];
    let iov = [IoSlice::new(name.as_bytes())];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map(drop)
}

/// Start a new session with `slave` as its controlling terminal and as
/// this process's stdio.
pub fn become_tty_session(slave: &OwnedFd) -> Result<()> {
    nix::unistd::setsid().context("setsid")?;
    sys::set_controlling_tty(slave.as_fd()).context("setting the controlling terminal")?;
    nix::unistd::dup2_stdin(slave).context("duplicating the pty onto stdin")?;
    nix::unistd::dup2_stdout(slave).context("duplicating the pty onto stdout")?;
    nix::unistd::dup2_stderr(slave).context("duplicating the pty onto stderr")?;
    Ok(())
}

/// Apply `process.consoleSize` to the pty.
pub fn set_size(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<()> {
    sys::set_winsize(fd, rows, cols).context("setting the console size")
}

/// Receive one fd sent with [`send_fd`].
pub fn recv_fd(sock: &UnixStream) -> nix::Result<OwnedFd> {
    sys::recv_fd(sock.as_fd())
}

/// Where the container process's pty goes: `(for the process, our end)`.
/// With a console socket, the process gets a connection to it; without one
/// (foreground `run`/`exec`), it gets one end of a socketpair and we keep
/// the other to receive the master and relay it. No terminal: neither.
pub fn connect(
    console_socket: Option<&Path>,
    terminal: bool,
) -> Result<(Option<UnixStream>, Option<UnixStream>)> {
    match (console_socket, terminal) {
        (Some(path), true) => {
            let stream = UnixStream::connect(path)
                .with_context(|| format!("connecting to the console socket {}", path.display()))?;
            Ok((Some(stream), None))
        }
        (None, true) => {
            let (a, b) = UnixStream::pair().context("creating the console socketpair")?;
            Ok((Some(a), Some(b)))
        }
        _ => Ok((None, None)),
    }
}
