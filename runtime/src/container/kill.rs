//! `kill`: signal a container's init, or with `--all` every process in its
//! cgroup.

use std::os::fd::AsFd;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::error::{Context, Error, Result};
use crate::state::{ContainerState, StateStore, Status};
use crate::{cgroups, sys};

/// Send `signal` (`None`: signal 0, a liveness check) to the container.
pub fn kill(store: &StateStore, id: &str, signal: Option<Signal>, all: bool) -> Result<()> {
    let c = super::load(store, id)?;
    // With --all, a stopped container may still have processes (without a
    // pid namespace of its own), and signalling none is not an error.
    if c.status == Status::Stopped && !all {
        return Err(Error::precondition(format!(
            "container {id:?} is not running"
        )));
    }
    if all {
        signal_all(&c.state, signal)
    } else {
        signal_init(&c.state, signal)
    }
}

/// Signal init through a pidfd, after checking it is still our process.
pub fn signal_init(state: &ContainerState, signal: impl Into<Option<Signal>>) -> Result<()> {
    let signal = signal.into();
    let pid = Pid::from_raw(state.pid);
    let pidfd = match sys::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(nix::errno::Errno::ESRCH) => return Ok(()),
        Err(e) => return Err(Error::internal(format!("opening pid {pid}: {e}"))),
    };
    // The pidfd pins the process: if it is still ours now, it is the one
    // the signal reaches.
    if state.init_process().is_none() {
        return Ok(());
    }
    match sys::pidfd_send_signal(pidfd.as_fd(), signal.map_or(0, |s| s as i32)) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(Error::internal(format!(
            "sending {} to pid {pid}: {e}",
            signal.map_or("signal 0", |s| s.as_str())
        ))),
    }
}

/// Signal every process of the container's cgroup.
pub fn signal_all(state: &ContainerState, signal: impl Into<Option<Signal>>) -> Result<()> {
    let signal = signal.into();
    let cgroup = cgroups::from_state(&state.cgroup);
    for pid in cgroup.pids()? {
        match nix::sys::signal::kill(Pid::from_raw(pid), signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
            Err(e) => {
                return Err(Error::internal(format!(
                    "sending {} to pid {pid}: {e}",
                    signal.map_or("signal 0", |s| s.as_str())
                )))
            }
        }
    }
    // A frozen process cannot die: for SIGKILL the container is thawed so
    // the kill takes effect; other signals stay pending until `resume`.
    if signal == Some(Signal::SIGKILL) && cgroup.is_frozen().unwrap_or(false) {
        cgroup.freeze(false).context("thawing the container")?;
    }
    Ok(())
}
