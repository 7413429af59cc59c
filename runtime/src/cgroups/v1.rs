//! cgroup v1 (legacy and hybrid) manager: one directory per hierarchy.
//!
//! Resource writing lives in `v1_apply.rs`; this file handles the
//! directory lifecycle, membership and the freezer.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::LinuxResources;

use super::error::{Error, Result};
use super::fsutil::{collect_pids, read_file, remove_tree, wait_until, write_file};
use super::{CgroupManager, CgroupState};

/// How long `freeze` waits for the freezer to settle.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// A v1 cgroup: controller key => absolute directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Manager {
    paths: BTreeMap<String, PathBuf>,
}

impl V1Manager {
    /// Manager over the given per-controller directories (see
    /// [`CgroupState::V1`]).
    pub fn new(paths: BTreeMap<String, PathBuf>) -> Self {
        Self { paths }
    }

    /// Directory for a controller key, if that hierarchy is mounted.
    pub(crate) fn dir(&self, key: &str) -> Option<&Path> {
        self.paths.get(key).map(PathBuf::as_path)
    }

    /// Directory for a controller the spec needs; error naming `field` if
    /// the controller isn't mounted.
    pub(crate) fn need(&self, key: &str, field: &str) -> Result<&Path> {
        self.dir(key).ok_or_else(|| Error::MissingController {
            controller: key.to_string(),
            field: field.to_string(),
        })
    }

    /// Distinct directories (co-mounted controllers share one).
    fn unique_dirs(&self) -> Vec<&Path> {
        let set: BTreeSet<&Path> = self.paths.values().map(PathBuf::as_path).collect();
        set.into_iter().collect()
    }

    /// Create `dir` and any missing ancestors, top-down, recording every
    /// directory we made (so a failed `create` can undo exactly those).
    fn mkdir_all(dir: &Path, created: &mut Vec<PathBuf>) -> Result<()> {
        let mut missing = Vec::new();
        let mut cur = Some(dir);
        while let Some(p) = cur {
            if p.exists() {
                break;
            }
            missing.push(p.to_path_buf());
            cur = p.parent();
        }
        for p in missing.into_iter().rev() {
            match fs::create_dir(&p) {
                Ok(()) => created.push(p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(os) => return Err(Error::Create { path: p, os }),
            }
        }
        Ok(())
    }
}

const CPUSET_FILES: [&str; 2] = ["cpuset.cpus", "cpuset.mems"];

/// A new v1 cpuset cgroup starts with empty `cpuset.cpus`/`cpuset.mems` and
/// can't hold tasks. Walk up from `leaf` to the nearest ancestor whose
/// values are set, then copy them down into every empty directory on the
/// way back (covers both dirs we just made and pre-existing empty ones).
fn inherit_cpuset(leaf: &Path) -> Result<()> {
    let field = "cpuset inheritance";
    let mut chain = Vec::new();
    let mut cur = leaf;
    loop {
        let mut empty = false;
        for file in CPUSET_FILES {
            empty |= read_file(cur, file, field)?.is_empty();
        }
        if !empty {
            break;
        }
        chain.push(cur);
        cur = match cur.parent() {
            Some(p) => p,
            None => break,
        };
    }
    for dir in chain.into_iter().rev() {
        let Some(parent) = dir.parent() else {
            continue;
        };
        for file in CPUSET_FILES {
            if read_file(dir, file, field)?.is_empty() {
                let value = read_file(parent, file, field)?;
                write_file(dir, file, &value, field)?;
            }
        }
    }
    Ok(())
}

impl CgroupManager for V1Manager {
    fn create(&self) -> Result<()> {
        let mut created = Vec::new();
        let mut result = Ok(());
        for dir in self.unique_dirs() {
            result = Self::mkdir_all(dir, &mut created);
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            if let Some(dir) = self.dir("cpuset") {
                result = inherit_cpuset(dir);
            }
        }
        if result.is_err() {
            for p in created.iter().rev() {
                let _ = fs::remove_dir(p);
            }
        }
        result
    }

    fn apply(&self, resources: &LinuxResources) -> Result<()> {
        super::v1_apply::apply(self, resources)
    }

    fn add_task(&self, pid: i32) -> Result<()> {
        for dir in self.unique_dirs() {
            write_file(dir, "cgroup.procs", &pid.to_string(), "add_task")?;
        }
        Ok(())
    }

    fn pids(&self) -> Result<Vec<i32>> {
        let mut out = Vec::new();
        for dir in self.unique_dirs() {
            collect_pids(dir, &mut out)?;
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    fn destroy(&self) -> Result<()> {
        let mut first_err = None;
        for dir in self.unique_dirs() {
            if let Err(e) = remove_tree(dir) {
                tracing::warn!(error = %e, "cgroup destroy");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn state(&self) -> CgroupState {
        CgroupState::V1 {
            paths: self.paths.clone(),
        }
    }

    fn clone_into_fd(&self) -> Option<OwnedFd> {
        let unified = self
            .unique_dirs()
            .into_iter()
            .find(|dir| super::fsutil::is_cgroup2_dir(dir))?;
        super::fsutil::open_dir_path(unified)
    }

    fn add_task_after_clone(
        &self,
        pid: i32,
        born_in_cgroup: bool,
        child_joined_v1: bool,
    ) -> Result<()> {
        for dir in self.unique_dirs() {
            let done = if super::fsutil::is_cgroup2_dir(dir) {
                born_in_cgroup
            } else {
                child_joined_v1
            };
            if !done {
                write_file(dir, "cgroup.procs", &pid.to_string(), "add_task")?;
            }
        }
        Ok(())
    }

    fn freeze(&self, frozen: bool) -> Result<()> {
        let field = if frozen { "freeze" } else { "thaw" };
        let dir = self.need("freezer", field)?;
        let want = if frozen { "FROZEN" } else { "THAWED" };
        let done = wait_until(FREEZE_TIMEOUT, || {
            // Re-writing is harmless and nudges a FREEZING cgroup along.
            write_file(dir, "freezer.state", want, field)?;
            Ok(read_file(dir, "freezer.state", field)? == want)
        })?;
        if done {
            return Ok(());
        }
        if frozen {
            let _ = write_file(dir, "freezer.state", "THAWED", "thaw after failed freeze");
        }
        Err(Error::FreezeTimeout {
            path: dir.join("freezer.state"),
            wanted: want.to_string(),
        })
    }

    fn is_frozen(&self) -> Result<bool> {
        match self.dir("freezer") {
            Some(dir) => Ok(read_file(dir, "freezer.state", "is_frozen")? == "FROZEN"),
            None => Ok(false),
        }
    }

    fn stats(&self) -> Result<super::Stats> {
        super::stats_v1::stats(self)
    }
}
