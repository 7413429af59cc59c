//! Control groups: a [`CgroupManager`] trait with v1 (legacy/hybrid) and v2
//! (unified) implementations, using the cgroupfs directly (no systemd).
//!
//! Files:
//! - `detect.rs`: host layout from mountinfo and /proc/self/cgroup
//! - `path.rs`: resolving `linux.cgroupsPath` inside a hierarchy
//! - `convert.rs`: OCI values to cgroup file values
//! - `v1.rs` / `v1_apply.rs`: legacy manager and its resource writers
//! - `v2.rs` / `v2_apply.rs`: unified manager and its resource writers
//! - `v2_devices/`: device rules on v2, an eBPF program per cgroup
//! - `fsutil.rs`: file helpers (write/read with context, rmdir retry)
//! - `stats.rs` / `stats_v1.rs` / `stats_v2.rs`: usage statistics
//!   ([`CgroupManager::stats`], shaped like `runc events --stats`)
//! - `oom.rs`: OOM notifications ([`oom_watcher`])
//!
//! Recommended call order for a new container: [`new_manager`], then
//! [`CgroupManager::create`], [`CgroupManager::apply`], then
//! [`CgroupManager::add_task`] for the init pid (limits are in force
//! before the process runs anything), and save [`CgroupManager::state`].
//! On v2 the fd from [`CgroupManager::clone_into_fd`] may replace
//! `add_task` (clone3 with `CLONE_INTO_CGROUP`) after `create` + `apply`.

mod convert;
pub mod detect;
mod error;
mod fsutil;
mod oom;
mod path;
pub mod stats;
mod stats_v1;
mod stats_v2;
mod v1;
mod v1_apply;
mod v2;
mod v2_apply;
pub mod v2_devices;

#[cfg(test)]
mod tests_common;
#[cfg(test)]
mod tests_host;
#[cfg(test)]
mod tests_stats;
#[cfg(test)]
mod tests_stats_host;
#[cfg(test)]
mod tests_v1;
#[cfg(test)]
mod tests_v2;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub use error::{Error, Result};
pub use oom::{oom_watcher, OomEvent, OomWatcher};
pub use stats::Stats;
pub use v1::V1Manager;
pub use v2::V2Manager;

/// Operations on one container's cgroup, whatever the cgroup version.
pub trait CgroupManager: std::fmt::Debug {
    /// Create the cgroup directory in every hierarchy (`mkdir -p`).
    /// Idempotent. On v1 new cpuset dirs inherit the parent's cpus/mems;
    /// on v2 controllers are enabled in the ancestors' `subtree_control`.
    fn create(&self) -> Result<()>;
    /// Write the limits the spec sets; untouched controllers stay as is.
    fn apply(&self, resources: &oci_spec::runtime::LinuxResources) -> Result<()>;
    /// Move `pid` (a whole process) into the cgroup in every hierarchy.
    fn add_task(&self, pid: i32) -> Result<()>;
    /// Every pid in the cgroup and its descendants (sorted, deduplicated).
    fn pids(&self) -> Result<Vec<i32>>;
    /// Remove the cgroup (and any child cgroups) in every hierarchy,
    /// deepest first. Missing dirs are fine; EBUSY is retried briefly.
    /// Processes must already be gone. All hierarchies are attempted even
    /// if one fails; the first error is returned.
    fn destroy(&self) -> Result<()>;
    /// Serializable description to rebuild the manager with [`from_state`].
    fn state(&self) -> CgroupState;
    /// An `O_PATH|O_DIRECTORY|O_CLOEXEC` fd of the cgroup2 dir, for clone3
    /// `CLONE_INTO_CGROUP`: the cgroup on v2, the unified hierarchy's on a
    /// hybrid host. None on pure v1 or if it can't be opened.
    fn clone_into_fd(&self) -> Option<std::os::fd::OwnedFd>;
    /// After a clone, put `pid` in the hierarchies nothing else did:
    /// `born_in_cgroup` says clone put it in [`Self::clone_into_fd`]'s
    /// cgroup, `child_joined_v1` that the child joined the v1 hierarchies
    /// itself ([`join_v1_self`]).
    fn add_task_after_clone(
        &self,
        pid: i32,
        born_in_cgroup: bool,
        child_joined_v1: bool,
    ) -> Result<()> {
        let _ = child_joined_v1;
        if born_in_cgroup {
            return Ok(());
        }
        self.add_task(pid)
    }
    /// Freeze (`true`) or thaw (`false`) every process, waiting until the
    /// kernel reports the new state.
    fn freeze(&self, frozen: bool) -> Result<()>;
    /// Whether the cgroup is (completely) frozen.
    fn is_frozen(&self) -> Result<bool>;
    /// Resource usage (CPU, memory, pids, block I/O, hugetlb, cpuset),
    /// shaped like runc's `events --stats` data. Controllers or files the
    /// cgroup doesn't have are left at their defaults, not errors.
    fn stats(&self) -> Result<Stats>;
}

/// Persistable manager description (for state.json).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, PartialEq)]
pub enum CgroupState {
    /// Legacy/hybrid: absolute directory per controller key ("memory",
    /// "cpu", "name=systemd", "unified", ...). Co-mounted controllers map
    /// to the same directory.
    V1 {
        /// Controller key => absolute cgroup directory.
        paths: BTreeMap<String, PathBuf>,
    },
    /// Unified: the absolute cgroup directory.
    V2 {
        /// The cgroup directory.
        path: PathBuf,
    },
}

/// Whether a new process is completely in `state`'s cgroup once cloned:
/// born there (v2), or born in the unified hierarchy with the v1 ones
/// joined by the child itself (hybrid).
pub fn complete_at_birth(state: &CgroupState, born_in_cgroup: bool, child_joins_v1: bool) -> bool {
    match state {
        CgroupState::V2 { .. } => born_in_cgroup,
        CgroupState::V1 { .. } => born_in_cgroup && child_joins_v1,
    }
}

/// Whether a new process should join `state`'s v1 hierarchies itself
/// ([`join_v1_self`]): only on v1 or hybrid hosts, and only when it keeps
/// the runtime's privileges over the cgroup files (root, no new user
/// namespace).
pub fn child_joins_v1(state: &CgroupState, new_userns: bool) -> bool {
    matches!(state, CgroupState::V1 { .. }) && !new_userns && nix::unistd::geteuid().is_root()
}

/// (In the new process, before it enters any namespace that hides the
/// host's cgroup mounts) joins every v1 hierarchy of `state` by writing
/// `0` to its `tasks` file. A process moving itself, one thread, skips
/// the kernel's global threadgroup lock, whose first writer after a quiet
/// spell waits for an RCU grace period (about 10 ms, paid on every
/// container start when the parent writes the pid to `cgroup.procs`).
/// cgroup2 directories (the unified hierarchy of a hybrid host) are left
/// to clone or the parent.
pub fn join_v1_self(state: &CgroupState) -> Result<()> {
    let CgroupState::V1 { paths } = state else {
        return Ok(());
    };
    let dirs: std::collections::BTreeSet<&PathBuf> = paths.values().collect();
    for dir in dirs {
        if fsutil::is_cgroup2_dir(dir) {
            continue;
        }
        fsutil::write_file(dir, "tasks", "0", "joining the cgroup")?;
    }
    Ok(())
}

/// Rebuild a manager from saved state.
pub fn from_state(state: &CgroupState) -> Box<dyn CgroupManager> {
    match state {
        CgroupState::V1 { paths } => Box::new(V1Manager::new(paths.clone())),
        CgroupState::V2 { path } => Box::new(V2Manager::new(path.clone())),
    }
}

/// Where cgroup filesystems are conventionally mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Resolve a container's cgroup on this host. `cgroups_path` is
/// `linux.cgroupsPath`; `None` (or empty) uses the container id as a
/// relative path. Relative paths are below this process's own cgroup in
/// each hierarchy, absolute ones below the hierarchy root. Paths with `..`
/// or resolving to the root/our own cgroup are refused.
///
/// Only the cgroupfs driver is implemented: a systemd-style
/// `slice:prefix:name` is treated as a plain (relative) directory name.
pub fn new_manager(cgroups_path: Option<&str>, id: &str) -> Result<Box<dyn CgroupManager>> {
    let read = |p: &str| {
        std::fs::read_to_string(p).map_err(|os| Error::Read {
            path: PathBuf::from(p),
            field: "cgroup detection".into(),
            os,
        })
    };
    let mountinfo = read("/proc/self/mountinfo")?;
    let proc_cgroup = read("/proc/self/cgroup")?;
    let layout = detect::detect(&mountinfo, &proc_cgroup, Path::new(CGROUP_ROOT))?;
    manager_for_layout(&layout, cgroups_path, id)
}

/// The cgroup that process `pid` is in, in every hierarchy of this host:
/// what a supervisor (the shim) uses for stats and OOM events of a
/// container whose runtime may not be berth. Fails if the process is gone
/// or sits in a hierarchy's root cgroup.
pub fn for_pid(pid: i32) -> Result<Box<dyn CgroupManager>> {
    let read = |p: String| {
        std::fs::read_to_string(&p).map_err(|os| Error::Read {
            path: PathBuf::from(p),
            field: "cgroup detection".into(),
            os,
        })
    };
    let mountinfo = read("/proc/self/mountinfo".into())?;
    let proc_cgroup = read(format!("/proc/{pid}/cgroup"))?;
    let layout = detect::detect(&mountinfo, &proc_cgroup, Path::new(CGROUP_ROOT))?;
    manager_for_process_layout(&layout)
}

/// The manager for the cgroups a layout's `own` paths name (the process
/// whose `/proc/PID/cgroup` was detected), as absolute paths.
pub fn manager_for_process_layout(layout: &detect::Layout) -> Result<Box<dyn CgroupManager>> {
    let absolute = |mount: &detect::Mount, own: Option<&str>| {
        let own = own.map(|o| path::own_relative(mount, o)).unwrap_or("/");
        path::resolve(mount, None, own)
    };
    match layout {
        detect::Layout::V2 { mount, own } => {
            Ok(Box::new(V2Manager::new(absolute(mount, own.as_deref())?)))
        }
        detect::Layout::V1 { mounts, own } => {
            let mut paths = BTreeMap::new();
            for (key, mount) in mounts {
                // A hierarchy where the process sits at the root (say a
                // hybrid host's controller-less cgroup2) has nothing of its own.
                if let Some(Ok(dir)) = own.get(key).map(|o| absolute(mount, Some(o))) {
                    paths.insert(key.clone(), dir);
                }
            }
            Ok(Box::new(V1Manager::new(paths)))
        }
    }
}

/// Build a manager for an already detected layout (injectable for tests).
pub fn manager_for_layout(
    layout: &detect::Layout,
    cgroups_path: Option<&str>,
    id: &str,
) -> Result<Box<dyn CgroupManager>> {
    let wanted = path::requested(cgroups_path, id)?;
    match layout {
        detect::Layout::V2 { mount, own } => {
            let dir = path::resolve(mount, own.as_deref(), wanted)?;
            Ok(Box::new(V2Manager::new(dir)))
        }
        detect::Layout::V1 { mounts, own } => {
            let mut paths = BTreeMap::new();
            for (key, mount) in mounts {
                let dir = path::resolve(mount, own.get(key).map(String::as_str), wanted)?;
                paths.insert(key.clone(), dir);
            }
            Ok(Box::new(V1Manager::new(paths)))
        }
    }
}
