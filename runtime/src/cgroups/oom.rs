//! OOM notifications for a container's cgroup.
//!
//! - v1: an eventfd registered through `cgroup.event_control` for
//!   `memory.oom_control`. The kernel signals it on every OOM of the
//!   cgroup, and once more when the cgroup is removed; the two are told
//!   apart by whether the cgroup still exists (a read through our open
//!   `memory.oom_control` fails once it is gone).
//! - v2: `memory.events` is watched for changes and re-read; a rise of its
//!   `oom` or `oom_kill` counter is an OOM. The kernel wakes pollers of a
//!   cgroup2 `*.events` file with `POLLPRI` when it changes (kernfs
//!   notify), which we wait for with epoll. (inotify would work as well but
//!   needs nix's `inotify` feature, which the crate doesn't enable.) If the
//!   file can't be polled (e.g. a plain directory posing as cgroupfs in
//!   tests), it is re-read every [`FALLBACK_POLL`] instead.
//!
//! Either way one epoll fd is exposed through [`OomWatcher::as_fd`]: it
//! is readable when an event may be pending, so callers can poll it next to
//! their own fds and then call [`OomWatcher::wait`] with a zero timeout.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::error::{Error, Result};
use super::fsutil::write_file;
use super::stats::{keyed_get, parse_keyed};
use super::CgroupState;

/// How often `wait` re-checks that the cgroup still exists (the kernel
/// doesn't always wake us when it goes).
const RECHECK: Duration = Duration::from_secs(1);
/// Re-read interval for a v2 `memory.events` that can't be polled.
pub(crate) const FALLBACK_POLL: Duration = Duration::from_millis(100);

const FIELD: &str = "OOM notification";

/// What [`OomWatcher::wait`] saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OomEvent {
    /// The cgroup ran out of memory (at least once since the last event).
    Oom,
    /// The cgroup was removed; no further events will come (every later
    /// `wait` returns this at once).
    CgroupGone,
    /// The timeout passed without an event.
    Timeout,
}

/// Watches one cgroup for OOM events; see the module docs.
pub struct OomWatcher {
    epoll: Epoll,
    kind: Kind,
    /// v1: an OOM and the removal arrived together; report the removal on
    /// the next call.
    pending_gone: bool,
    gone: bool,
}

enum Kind {
    V1 {
        dir: PathBuf,
        efd: EventFd,
        oom_control: File,
    },
    V2 {
        dir: PathBuf,
        /// The watched file (`memory.events`) and its name.
        events: File,
        name: &'static str,
        last: (u64, u64),
        /// `memory.events` could not be added to epoll: re-read on a timer.
        fallback: bool,
    },
}

impl std::fmt::Debug for OomWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (version, dir) = match &self.kind {
            Kind::V1 { dir, .. } => ("v1", dir),
            Kind::V2 { dir, .. } => ("v2", dir),
        };
        f.debug_struct("OomWatcher")
            .field("version", &version)
            .field("dir", dir)
            .field("epoll_fd", &self.epoll.0.as_raw_fd())
            .field("gone", &self.gone)
            .finish()
    }
}

fn notify_err(path: &Path, what: &str, errno: Errno) -> Error {
    Error::Notify {
        path: path.to_path_buf(),
        what: what.to_string(),
        os: io::Error::from(errno),
    }
}

fn open_read(dir: &Path, file: &str) -> Result<File> {
    let path = dir.join(file);
    File::open(&path).map_err(|os| Error::Read {
        path,
        field: FIELD.into(),
        os,
    })
}

/// Re-read a file through an fd we keep open (on kernfs this also re-arms
/// poll notification for that fd).
fn reread(file: &mut File) -> io::Result<String> {
    file.seek(SeekFrom::Start(0))?;
    let mut s = String::new();
    file.read_to_string(&mut s)?;
    Ok(s)
}

/// The `(oom, oom_kill)` counters of a v2 `memory.events` text.
pub(crate) fn oom_counters(text: &str) -> std::result::Result<(u64, u64), String> {
    let pairs = parse_keyed(text)?;
    Ok((
        keyed_get(&pairs, "oom").unwrap_or(0),
        keyed_get(&pairs, "oom_kill").unwrap_or(0),
    ))
}

/// Start watching the cgroup described by `state` for OOM events. v1 needs
/// the memory hierarchy; v2 needs `memory.events` (the memory controller
/// enabled for the cgroup). The cgroup must exist.
pub fn oom_watcher(state: &CgroupState) -> Result<OomWatcher> {
    match state {
        CgroupState::V1 { paths } => {
            let dir = paths
                .get("memory")
                .ok_or_else(|| Error::MissingController {
                    controller: "memory".into(),
                    field: FIELD.into(),
                })?;
            watch_v1(dir)
        }
        CgroupState::V2 { path } => watch_v2(path, "memory.events"),
    }
}

fn new_epoll(dir: &Path) -> Result<Epoll> {
    Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| notify_err(dir, "epoll_create1", e))
}

fn watch_v1(dir: &Path) -> Result<OomWatcher> {
    let oom_control = open_read(dir, "memory.oom_control")?;
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|e| notify_err(dir, "eventfd", e))?;
    let line = format!(
        "{} {}",
        efd.as_fd().as_raw_fd(),
        oom_control.as_fd().as_raw_fd()
    );
    write_file(dir, "cgroup.event_control", &line, FIELD)?;
    let epoll = new_epoll(dir)?;
    epoll
        .add(efd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
        .map_err(|e| notify_err(dir, "epoll_ctl (eventfd)", e))?;
    Ok(OomWatcher {
        epoll,
        kind: Kind::V1 {
            dir: dir.to_path_buf(),
            efd,
            oom_control,
        },
        pending_gone: false,
        gone: false,
    })
}

/// Watch `dir/name` (`memory.events`; tests use other `*.events` files
/// to check the kernfs notification on hosts without a v2 memory
/// controller).
pub(crate) fn watch_v2(dir: &Path, name: &'static str) -> Result<OomWatcher> {
    let mut events = open_read(dir, name)?;
    let text = reread(&mut events).map_err(|os| Error::Read {
        path: dir.join(name),
        field: FIELD.into(),
        os,
    })?;
    let last = oom_counters(&text).map_err(|reason| Error::Parse {
        path: dir.join(name),
        field: FIELD.into(),
        reason,
    })?;
    let epoll = new_epoll(dir)?;
    let fallback = match epoll.add(events.as_fd(), EpollEvent::new(EpollFlags::EPOLLPRI, 0)) {
        Ok(()) => false,
        // Regular files can't be polled (not cgroupfs): re-read on a timer.
        Err(Errno::EPERM) => true,
        Err(e) => return Err(notify_err(&dir.join(name), "epoll_ctl", e)),
    };
    Ok(OomWatcher {
        epoll,
        kind: Kind::V2 {
            dir: dir.to_path_buf(),
            events,
            name,
            last,
            fallback,
        },
        pending_gone: false,
        gone: false,
    })
}

impl AsFd for OomWatcher {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.epoll.0.as_fd()
    }
}

impl OomWatcher {
    /// An fd that becomes readable (`POLLIN`) when an event may be pending;
    /// follow up with `wait(Some(Duration::ZERO))`. (For a v2 cgroup whose
    /// `memory.events` can't be polled it never becomes readable.)
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        AsFd::as_fd(self)
    }

    /// Block until an OOM, the cgroup's removal, or `timeout` (`None`:
    /// no timeout). Several OOMs between two calls may be reported as one.
    pub fn wait(&mut self, timeout: Option<Duration>) -> Result<OomEvent> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(ev) = self.check()? {
                return Ok(ev);
            }
            let slice = match &self.kind {
                Kind::V2 { fallback: true, .. } => FALLBACK_POLL,
                _ => RECHECK,
            };
            let slice = match deadline {
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(OomEvent::Timeout);
                    }
                    left.min(slice)
                }
                None => slice,
            };
            let ms = EpollTimeout::try_from(slice).unwrap_or(EpollTimeout::MAX);
            let mut events = [EpollEvent::empty(); 2];
            match self.epoll.wait(&mut events, ms) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err(notify_err(self.dir(), "epoll_wait", e)),
            }
        }
    }

    /// Whether changes are noticed through epoll (false: re-read on a
    /// timer, as for a v2 file that isn't on cgroupfs).
    pub fn is_notified(&self) -> bool {
        !matches!(self.kind, Kind::V2 { fallback: true, .. })
    }

    fn dir(&self) -> &Path {
        match &self.kind {
            Kind::V1 { dir, .. } | Kind::V2 { dir, .. } => dir,
        }
    }

    /// One non-blocking look: `Some` if there is something to report.
    fn check(&mut self) -> Result<Option<OomEvent>> {
        if self.gone {
            return Ok(Some(OomEvent::CgroupGone));
        }
        if self.pending_gone {
            self.gone = true;
            return Ok(Some(OomEvent::CgroupGone));
        }
        let ev = match &mut self.kind {
            Kind::V1 {
                dir,
                efd,
                oom_control,
            } => {
                let count = match efd.read() {
                    Ok(n) => n,
                    Err(Errno::EAGAIN) => 0,
                    Err(e) => return Err(notify_err(dir, "reading the eventfd", e)),
                };
                let gone = reread(oom_control).is_err() || !dir.exists();
                match (count, gone) {
                    (0, false) => None,
                    (_, false) => Some(OomEvent::Oom),
                    // The removal alone signals once; more means OOMs too.
                    (0 | 1, true) => Some(OomEvent::CgroupGone),
                    (_, true) => {
                        self.pending_gone = true;
                        Some(OomEvent::Oom)
                    }
                }
            }
            Kind::V2 {
                dir,
                events,
                name,
                last,
                ..
            } => match reread(events) {
                Ok(text) => {
                    let now = oom_counters(&text).map_err(|reason| Error::Parse {
                        path: dir.join(*name),
                        field: FIELD.into(),
                        reason,
                    })?;
                    if now.0 > last.0 || now.1 > last.1 {
                        *last = now;
                        Some(OomEvent::Oom)
                    } else if !dir.exists() {
                        Some(OomEvent::CgroupGone)
                    } else {
                        None
                    }
                }
                Err(_) if !dir.exists() => Some(OomEvent::CgroupGone),
                Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Some(OomEvent::CgroupGone),
                Err(os) => {
                    return Err(Error::Read {
                        path: dir.join(*name),
                        field: FIELD.into(),
                        os,
                    })
                }
            },
        };
        if ev == Some(OomEvent::CgroupGone) {
            self.gone = true;
        }
        Ok(ev)
    }
}
