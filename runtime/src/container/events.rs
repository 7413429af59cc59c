//! `events`: a container's resource statistics, once or every interval,
//! and its out-of-memory events as they happen.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;
use serde_json::{json, Value};

use crate::cgroups::{self, OomEvent};
use crate::error::{Error, Result};
use crate::state::{StateStore, Status};
use crate::sys;

/// `{"type": "stats", "id": ID, "data": {...}}`, as runc prints it.
pub fn stats(store: &StateStore, id: &str) -> Result<Value> {
    let (dir, state) = super::read_state(store, id)?;
    if state.status(&dir) == Status::Stopped {
        return Err(Error::precondition(format!("container {id:?} is stopped")));
    }
    let data = cgroups::from_state(&state.cgroup).stats()?;
    Ok(json!({"type": "stats", "id": id, "data": data}))
}

/// Emit a stats event every `interval` and an `{"type": "oom"}` event for
/// each OOM kill, until the container stops.
pub fn watch(
    store: &StateStore,
    id: &str,
    interval: Duration,
    mut emit: impl FnMut(Value),
) -> Result<()> {
    let (dir, state) = super::read_state(store, id)?;
    if state.status(&dir) == Status::Stopped {
        return Err(Error::precondition(format!("container {id:?} is stopped")));
    }
    let pidfd = sys::pidfd_open(Pid::from_raw(state.pid))
        .map_err(|e| Error::internal(format!("watching init (pid {}): {e}", state.pid)))?;
    let mut oom = cgroups::oom_watcher(&state.cgroup).ok();
    let mut next = Instant::now();
    loop {
        let now = Instant::now();
        if now >= next {
            match stats(store, id) {
                Ok(event) => emit(event),
                Err(e) if e.kind() == crate::ErrorKind::FailedPrecondition => return Ok(()),
                Err(e) => return Err(e),
            }
            next = now + interval;
        }
        let wait = next.saturating_duration_since(Instant::now());
        let timeout = PollTimeout::try_from(wait).unwrap_or(PollTimeout::MAX);
        let mut fds = vec![PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        if let Some(w) = &oom {
            fds.push(PollFd::new(w.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, timeout) {
            Err(nix::errno::Errno::EINTR) | Ok(0) => continue,
            Err(e) => return Err(Error::internal(format!("waiting for events: {e}"))),
            Ok(_) => {}
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        if ready.get(1) == Some(&true) {
            if let Some(w) = oom.as_mut() {
                match w.wait(Some(Duration::ZERO))? {
                    OomEvent::Oom => emit(json!({"type": "oom", "id": id})),
                    OomEvent::CgroupGone => oom = None,
                    OomEvent::Timeout => {}
                }
            }
        }
        if ready[0] {
            // Init exited: report any last OOM that killed it, then stop.
            if let Some(w) = oom.as_mut() {
                if let Ok(OomEvent::Oom) = w.wait(Some(Duration::ZERO)) {
                    emit(json!({"type": "oom", "id": id}));
                }
            }
            return Ok(());
        }
    }
}
