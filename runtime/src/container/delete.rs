//! `delete`: stop what is left of a container and remove every trace of it
//! (cgroup, state directory), then run its poststop hooks.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::cgroups;
use crate::error::{Error, ErrorKind, Result};
use crate::hooks::{self, HookKind};
use crate::state::{ContainerDir, ContainerState, StateStore, Status};
use crate::sys;

/// How long a killed container may take to go away.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

pub fn delete(store: &StateStore, id: &str, force: bool) -> Result<()> {
    let dir = match store.get(id) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound && force => return Ok(()),
        Err(e) => return Err(e),
    };
    let state = match dir.load() {
        Ok(s) => s,
        // A directory without state: a create that died half-way.
        Err(e) if e.kind() == ErrorKind::NotFound => {
            dir.remove()?;
            return if force { Ok(()) } else { Err(e) };
        }
        Err(e) => return Err(e),
    };
    match state.status(dir.path()) {
        Status::Stopped => {}
        Status::Created => stop(&state)?,
        _ if force => stop(&state)?,
        status => {
            return Err(Error::precondition(format!(
                "cannot delete container {id:?}: it is {status}; stop it first or use --force"
            )))
        }
    }
    destroy(dir, &state)
}

/// SIGKILL the container and wait until its processes are gone.
pub(crate) fn stop(state: &ContainerState) -> Result<()> {
    let pidfd = sys::pidfd_open(Pid::from_raw(state.pid)).ok();
    if state.own_pid_namespace {
        super::signal_init(state, Signal::SIGKILL)?;
    } else {
        super::kill::signal_all(state, Signal::SIGKILL)?;
    }
    // A frozen (paused) container cannot die until it is thawed.
    let cgroup = cgroups::from_state(&state.cgroup);
    if cgroup.is_frozen().unwrap_or(false) {
        cgroup.freeze(false)?;
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    if let Some(fd) = pidfd.filter(|_| state.init_process().is_some()) {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }
    // The rest of a pid namespace dies with its init, a moment later.
    while cgroup.pids().is_ok_and(|p| !p.is_empty()) {
        if Instant::now() > deadline {
            return Err(Error::internal(format!(
                "container {:?}: processes still running after SIGKILL",
                state.id
            )));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(())
}

/// Remove the cgroup and the state directory; then the poststop hooks.
pub(crate) fn destroy(dir: ContainerDir, state: &ContainerState) -> Result<()> {
    cgroups::from_state(&state.cgroup).destroy()?;
    dir.remove()?;
    let oci = serde_json::to_vec(&state.oci_state(Status::Stopped)).unwrap_or_default();
    hooks::run_hooks_best_effort(
        HookKind::Poststop,
        hooks::hooks_of(state.spec.hooks().as_ref(), HookKind::Poststop),
        &oci,
    );
    Ok(())
}
