//! OOM notifications for a container's cgroup (v1 eventfd on
//! memory.oom_control, v2 memory.events), watched by a task on the shim's
//! own event loop (no extra thread), reported through a callback.

use crate::error::{Error, Result};
use berth_runtime::cgroups::{self, OomEvent, OomWatcher};
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinHandle;

/// How often a watcher the kernel cannot notify (v2 memory.events outside
/// cgroupfs) is re-read.
const POLL: Duration = Duration::from_secs(1);

/// Stops watching when dropped.
pub struct OomMonitor {
    task: JoinHandle<()>,
}

impl Drop for OomMonitor {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The watcher's epoll fd, for tokio's reactor. It owns the fd it lends.
struct Pollable(OomWatcher);

impl AsRawFd for Pollable {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// Watch the cgroup `pid` is in; `on_oom` runs for every OOM event.
pub fn watch(pid: i32, on_oom: impl Fn() + Send + 'static) -> Result<OomMonitor> {
    let manager =
        cgroups::for_pid(pid).map_err(|e| Error::internal(format!("cgroup of pid {pid}: {e}")))?;
    let watcher = cgroups::oom_watcher(&manager.state())
        .map_err(|e| Error::internal(format!("watching OOM events of pid {pid}: {e}")))?;
    let task = if watcher.is_notified() {
        // `AsyncFd::new` is deprecated because it cannot know that a raw fd
        // stays open; `Pollable` owns its fd for as long as the AsyncFd.
        #[allow(deprecated)]
        let fd = AsyncFd::new(Pollable(watcher))
            .map_err(|e| Error::internal(format!("watching OOM events: {e}")))?;
        tokio::spawn(notified(fd, on_oom))
    } else {
        tokio::spawn(polled(watcher, on_oom))
    };
    Ok(OomMonitor { task })
}

async fn notified(mut fd: AsyncFd<Pollable>, on_oom: impl Fn()) {
    loop {
        let Ok(mut ready) = fd.readable_mut().await else {
            return;
        };
        loop {
            match ready.get_inner_mut().0.wait(Some(Duration::ZERO)) {
                Ok(OomEvent::Oom) => on_oom(),
                Ok(OomEvent::Timeout) => {
                    ready.clear_ready();
                    break;
                }
                Ok(OomEvent::CgroupGone) | Err(_) => return,
            }
        }
    }
}

async fn polled(mut watcher: OomWatcher, on_oom: impl Fn()) {
    let mut tick = tokio::time::interval(POLL);
    loop {
        tick.tick().await;
        match watcher.wait(Some(Duration::ZERO)) {
            Ok(OomEvent::Oom) => on_oom(),
            Ok(OomEvent::Timeout) => {}
            Ok(OomEvent::CgroupGone) | Err(_) => return,
        }
    }
}
