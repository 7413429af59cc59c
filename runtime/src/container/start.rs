//! `start`: release a created container's init through the exec fifo.

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind};
use crate::init::{EXEC_FIFO_FAILED, EXEC_FIFO_MAX_ERROR, EXEC_FIFO_STARTED};
use crate::state::{StateStore, Status};
use crate::sys;

pub fn start(store: &StateStore, id: &str) -> Result<()> {
    let c = super::load(store, id)?;
    if c.status != Status::Created {
        return Err(Error::precondition(format!(
            "cannot start container {id:?}: it is {}, not created",
            c.status
        )));
    }
    let pidfd = sys::pidfd_open(nix::unistd::Pid::from_raw(c.state.pid))
        .with_context(|| format!("watching init (pid {})", c.state.pid))?;
    let fifo_path = c.dir.exec_fifo();
    // Non-blocking: opening never waits, and init's blocked open for
    // writing completes as soon as we are here.
    let mut fifo = File::options()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(&fifo_path)
        .with_context(|| format!("opening {}", fifo_path.display()))?;
    loop {
        let mut fds = [
            PollFd::new(fifo.as_fd(), PollFlags::POLLIN),
            PollFd::new(pidfd.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::internal(format!("waiting for init: {e}"))),
            Ok(_) => {}
        }
        let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
        if ready(0) {
            break;
        }
        if ready(1) {
            return Err(Error::precondition(format!(
                "cannot start container {id:?}: its init exited before start"
            )));
        }
    }
    let mut byte = [0u8; 1];
    let n = fifo.read(&mut byte).context("reading the exec fifo")?;
    match (n, byte[0]) {
        (1, EXEC_FIFO_STARTED) => {}
        (1, EXEC_FIFO_FAILED) => {
            // Init wrote why in one write and exits: read to the end.
            let flags = fcntl(&fifo, FcntlArg::F_GETFL).context("reading the exec fifo")?;
            let blocking = OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK;
            fcntl(&fifo, FcntlArg::F_SETFL(blocking)).context("reading the exec fifo")?;
            let mut why = Vec::new();
            (&mut fifo)
                .take(EXEC_FIFO_MAX_ERROR as u64)
                .read_to_end(&mut why)
                .context("reading the exec fifo")?;
            return Err(Error::internal(format!(
                "cannot start container {id:?}: {}",
                String::from_utf8_lossy(&why)
            )));
        }
        _ => {
            return Err(Error::internal(
                "the container's init closed the exec fifo without starting",
            ))
        }
    }
    std::fs::remove_file(&fifo_path)
        .with_context(|| format!("removing {}", fifo_path.display()))?;
    let state =
        serde_json::to_vec(&c.state.oci_state(Status::Running)).context("encoding the state")?;
    hooks::run_hooks_best_effort(
        HookKind::Poststart,
        hooks::hooks_of(c.state.spec.hooks().as_ref(), HookKind::Poststart),
        &state,
    );
    Ok(())
}
