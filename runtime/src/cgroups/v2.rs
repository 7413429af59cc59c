//! cgroup v2 (unified) manager: a single directory.
//!
//! Resource writing lives in `v2_apply.rs`; this file handles the
//! directory lifecycle (including delegating controllers through the
//! ancestors' `cgroup.subtree_control`), membership and freezing.

use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use super::error::{Error, Result};
use super::fsutil::{collect_pids, has_file, read_file, remove_tree, wait_until, write_file};
use super::v2_devices::{DeviceFilterInstaller, KernelInstaller};
use super::{CgroupManager, CgroupState};

/// How long `freeze` waits for `cgroup.events` to confirm.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// A v2 cgroup directory.
#[derive(Debug, Clone)]
pub struct V2Manager {
    path: PathBuf,
    devices: Arc<dyn DeviceFilterInstaller>,
}

/// Two managers are equal when they manage the same directory.
impl PartialEq for V2Manager {
    fn eq(&self, other: &Self) -> bool {
        self.path == other.path
    }
}

impl Eq for V2Manager {}

impl V2Manager {
    /// Manager for the absolute cgroup directory `path`, enforcing device
    /// rules with eBPF programs ([`KernelInstaller`]).
    pub fn new(path: PathBuf) -> Self {
        Self::with_device_installer(path, Arc::new(KernelInstaller))
    }

    /// Manager for `path` that puts device filters in force with `devices`.
    pub fn with_device_installer(path: PathBuf, devices: Arc<dyn DeviceFilterInstaller>) -> Self {
        Self { path, devices }
    }

    /// The cgroup directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The top of the cgroup2 filesystem containing `path`: walk up from
    /// the nearest existing ancestor while the parent is still a cgroup
    /// directory (has `cgroup.controllers`).
    fn mount_root(&self) -> PathBuf {
        let mut cur = self.path.as_path();
        while !cur.exists() {
            match cur.parent() {
                Some(p) => cur = p,
                None => break,
            }
        }
        while let Some(parent) = cur.parent() {
            if !has_file(parent, "cgroup.controllers") {
                break;
            }
            cur = parent;
        }
        cur.to_path_buf()
    }
}

/// Enable in `dir`'s `cgroup.subtree_control` every controller listed in
/// its `cgroup.controllers` that isn't enabled yet. Best effort: a cgroup
/// with member processes (other than the root) can't delegate, and some
/// controllers may be refused; apply() reports a missing control file
/// clearly if a needed controller ends up unavailable.
fn delegate_controllers(dir: &Path) {
    let field = "controller delegation";
    let Ok(available) = read_file(dir, "cgroup.controllers", field) else {
        return;
    };
    let enabled = read_file(dir, "cgroup.subtree_control", field).unwrap_or_default();
    let enabled: Vec<&str> = enabled.split_whitespace().collect();
    let missing: Vec<String> = available
        .split_whitespace()
        .filter(|c| !enabled.contains(c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return;
    }
    if write_file(dir, "cgroup.subtree_control", &missing.join(" "), field).is_ok() {
        return;
    }
    for c in &missing {
        if let Err(e) = write_file(dir, "cgroup.subtree_control", c, field) {
            tracing::debug!(error = %e, "could not enable controller");
        }
    }
}

fn events_frozen(dir: &Path) -> Result<Option<bool>> {
    let text = read_file(dir, "cgroup.events", "freezer state")?;
    Ok(text.lines().find_map(|l| match l.split_once(' ') {
        Some(("frozen", v)) => Some(v.trim() == "1"),
        _ => None,
    }))
}

impl CgroupManager for V2Manager {
    fn create(&self) -> Result<()> {
        let root = self.mount_root();
        let Ok(rel) = self.path.strip_prefix(&root) else {
            return Err(Error::InvalidPath {
                path: self.path.display().to_string(),
                reason: format!("not below cgroup2 root {}", root.display()),
            });
        };
        let mut created: Vec<PathBuf> = Vec::new();
        let mut cur = root.clone();
        for c in rel.components() {
            delegate_controllers(&cur);
            cur.push(c);
            match fs::create_dir(&cur) {
                Ok(()) => created.push(cur.clone()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(os) => {
                    for p in created.iter().rev() {
                        let _ = fs::remove_dir(p);
                    }
                    return Err(Error::Create { path: cur, os });
                }
            }
        }
        Ok(())
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        super::v2_apply::apply(&self.path, resources, self.devices.as_ref())
    }

    fn add_task(&self, pid: i32) -> Result<()> {
        write_file(&self.path, "cgroup.procs", &pid.to_string(), "add_task")
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        collect_pids(&self.path, &mut out)?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn destroy(&self) -> Result<()> {
        remove_tree(&self.path)
    }

    fn state(&self) -> CgroupState {
        CgroupState::V2 {
            path: self.path.clone(),
        }
    }

    fn clone_into_fd(&self) -> Option<OwnedFd> {
        super::fsutil::open_dir_path(&self.path)
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        let field = if frozen { "freeze" } else { "thaw" };
        let dir = &self.path;
        if !has_file(dir, "cgroup.freeze") {
            return Err(Error::Unsupported {
                field: field.into(),
                reason: format!("{} is missing", dir.join("cgroup.freeze").display()),
            });
        }
        write_file(dir, "cgroup.freeze", if frozen { "1" } else { "0" }, field)?;
        let done = wait_until(FREEZE_TIMEOUT, || {
            Ok(events_frozen(dir)?.unwrap_or(frozen) == frozen)
        })?;
        if done {
            return Ok(());
        }
        if frozen {
            let _ = write_file(dir, "cgroup.freeze", "0", "thaw after failed freeze");
        }
        Err(Error::FreezeTimeout {
            path: dir.join("cgroup.events"),
            wanted: format!("frozen {}", u8::from(frozen)),
        })
    }

    fn is_frozen(&self) -> Result<bool> {
        if !has_file(&self.path, "cgroup.events") {
            return Ok(false);
        }
        Ok(events_frozen(&self.path)?.unwrap_or(false))
    }

    fn stats(&self) -> Result<super::Stats> {
        super::stats_v2::stats(&self.path)
    }
}
