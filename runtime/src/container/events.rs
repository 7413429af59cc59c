//! `events`: a container's resource statistics, once or every interval,
//! and its out-of-memory events as they happen.

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::Pid;
use serde::Serialize;

use crate::cgroups::{self, OomEvent};
use crate::error::{Error, Result};
use crate::state::{StateStore, Status};
use crate::sys;

/// One event, serialized as runc prints it: `{"type":"stats","id":ID,"data":{...}}`
/// or `{"type":"oom","id":ID}`.
#[derive(Debug, Serialize)]
pub struct Event {
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<cgroups::Stats>,
}

impl Event {
    fn oom(id: &str) -> Self {
        Event {
            kind: "oom",
            id: id.to_string(),
            data: None,
        }
    }
}

/// The container's statistics as a `stats` event.
pub fn stats(store: &StateStore, id: &str) -> Result<Event> {
    let (dir, state) = super::read_state(store, id)?;
    if state.status(&dir) == Status::Stopped {
        return Err(Error::precondition(format!("container {id:?} is stopped")));
    }
    let data = cgroups::from_state(&state.cgroup).stats()?;
    Ok(Event {
        kind: "stats",
        id: id.to_string(),
        data: Some(data),
    })
}

/// Emit a stats event every `interval` and an `{"type": "oom"}` event for
/// each OOM kill, until the container stops.
pub fn watch(
    store: &StateStore,
    id: &str,
    interval: Duration,
    mut emit: impl FnMut(&Event),
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
                Ok(event) => emit(&event),
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
                    OomEvent::Oom => emit(&Event::oom(id)),
                    OomEvent::CgroupGone => oom = None,
                    OomEvent::Timeout => {}
                }
            }
        }
        if ready[0] {
            // Init exited: report any last OOM that killed it, then stop.
            if let Some(w) = oom.as_mut() {
                if let Ok(OomEvent::Oom) = w.wait(Some(Duration::ZERO)) {
                    emit(&Event::oom(id));
                }
            }
            return Ok(());
        }
    }
}
