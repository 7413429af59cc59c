//! OOM notifications for a container's cgroup (v1 eventfd on
//! memory.oom_control, v2 memory.events), watched on a plain thread so the
//! async runtime never blocks, reported through a callback.

use crate::error::{Error, Result};
use berth_runtime::cgroups::{self, OomEvent};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the watcher thread checks whether it should stop.
const STOP_CHECK: Duration = Duration::from_secs(2);

/// Stops watching when dropped.
pub struct OomMonitor {
    stop: Arc<AtomicBool>,
}

impl Drop for OomMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Watch the cgroup `pid` is in; `on_oom` runs for every OOM event.
pub fn watch(pid: i32, on_oom: impl Fn() + Send + 'static) -> Result<OomMonitor> {
    let manager =
        cgroups::for_pid(pid).map_err(|e| Error::internal(format!("cgroup of pid {pid}: {e}")))?;
    let mut watcher = cgroups::oom_watcher(&manager.state())
        .map_err(|e| Error::internal(format!("watching OOM events of pid {pid}: {e}")))?;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = stop.clone();
    std::thread::Builder::new()
        .name("oom".into())
        .spawn(move || {
            while !stopped.load(Ordering::Relaxed) {
                match watcher.wait(Some(STOP_CHECK)) {
                    Ok(OomEvent::Oom) => on_oom(),
                    Ok(OomEvent::Timeout) => {}
                    Ok(OomEvent::CgroupGone) | Err(_) => break,
                }
            }
        })
        .map_err(|e| Error::internal(format!("starting the OOM watcher: {e}")))?;
    Ok(OomMonitor { stop })
}
