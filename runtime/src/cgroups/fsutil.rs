//! Small filesystem helpers shared by the v1 and v2 managers: writing and
//! reading control files with descriptive errors, listing pids recursively
//! and removing cgroup trees leaf-first.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::error::{Error, Result};

/// Write `value` to `dir/file` (no create, no truncate semantics beyond
/// what cgroupfs does). `field` names the OCI field for the error message.
pub(crate) fn write_file(dir: &Path, file: &str, value: &str, field: &str) -> Result<()> {
    let path = dir.join(file);
    tracing::debug!(path = %path.display(), value, field, "cgroup write");
    #[cfg(test)]
    test_log::record(&path, value);
    let res = fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut f| f.write_all(value.as_bytes()));
    res.map_err(|os| Error::Write {
        path,
        value: value.to_string(),
        field: field.to_string(),
        os,
    })
}

/// Whether `dir` is a cgroup2 directory (only cgroup2 has
/// `cgroup.controllers`).
pub fn is_cgroup2_dir(dir: &Path) -> bool {
    dir.join("cgroup.controllers").exists()
}

/// An `O_PATH|O_DIRECTORY|O_CLOEXEC` fd of `dir` (for clone3
/// `CLONE_INTO_CGROUP`); None if it can't be opened.
pub fn open_dir_path(dir: &Path) -> Option<std::os::fd::OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir);
    match file {
        Ok(f) => Some(std::os::fd::OwnedFd::from(f)),
        Err(e) => {
            tracing::debug!(path = %dir.display(), error = %e, "open cgroup fd");
            None
        }
    }
}

/// Read `dir/file` as a trimmed string.
pub(crate) fn read_file(dir: &Path, file: &str, field: &str) -> Result<String> {
    let path = dir.join(file);
    match fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_string()),
        Err(os) => Err(Error::Read {
            path,
            field: field.to_string(),
            os,
        }),
    }
}

/// Whether `dir/file` exists.
pub(crate) fn has_file(dir: &Path, file: &str) -> bool {
    dir.join(file).exists()
}

/// Parse the pid list of a `cgroup.procs` file.
fn parse_pids(text: &str) -> Vec<i32> {
    text.lines()
        .filter_map(|l| l.trim().parse::<i32>().ok())
        .collect()
}

/// Append to `out` every pid in `dir`'s `cgroup.procs` and in all
/// descendant cgroups. A missing `dir` contributes nothing.
pub(crate) fn collect_pids(dir: &Path, out: &mut Vec<i32>) -> Result<()> {
    let procs = dir.join("cgroup.procs");
    match fs::read_to_string(&procs) {
        Ok(text) => out.extend(parse_pids(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(os) => {
            return Err(Error::Read {
                path: procs,
                field: "pids".into(),
                os,
            })
        }
    }
    for child in subdirs(dir)? {
        collect_pids(&child, out)?;
    }
    Ok(())
}

/// Subdirectories (child cgroups) of `dir`; empty if `dir` is gone.
fn subdirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(os) => {
            return Err(Error::Read {
                path: dir.to_path_buf(),
                field: "child cgroups".into(),
                os,
            })
        }
    };
    let mut dirs = Vec::new();
    for entry in entries.flatten() {
        if entry.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Total backoff budget for `rmdir` returning EBUSY (processes still
/// exiting). Sleeps 1, 2, 4, ... ms, capped by this total.
const RMDIR_BUSY_BUDGET: Duration = Duration::from_millis(100);

/// Remove the cgroup `dir` and all its descendants, deepest first.
/// A missing directory is not an error. EBUSY is retried briefly.
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    for child in subdirs(dir)? {
        remove_tree(&child)?;
    }
    rmdir_retry(dir)
}

fn rmdir_retry(dir: &Path) -> Result<()> {
    let mut slept = Duration::ZERO;
    let mut delay = Duration::from_millis(1);
    loop {
        match rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && slept < RMDIR_BUSY_BUDGET => {
                std::thread::sleep(delay);
                slept += delay;
                delay = (delay * 2).min(Duration::from_millis(32));
            }
            Err(os) => {
                return Err(Error::Remove {
                    path: dir.to_path_buf(),
                    os,
                })
            }
        }
    }
}

/// `rmdir(2)`. cgroupfs directories disappear with their control files.
#[cfg(not(test))]
fn rmdir(dir: &Path) -> io::Result<()> {
    fs::remove_dir(dir)
}

/// Test build: when `dir` is an ordinary directory posing as cgroupfs
/// (not a real cgroup filesystem), delete its regular files first so the
/// fake control files don't make `rmdir` fail. Real cgroupfs is untouched.
#[cfg(test)]
fn rmdir(dir: &Path) -> io::Result<()> {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
    if let Ok(st) = statfs(dir) {
        let t = st.filesystem_type();
        if t != CGROUP_SUPER_MAGIC && t != CGROUP2_SUPER_MAGIC {
            for entry in fs::read_dir(dir)?.flatten() {
                if entry.file_type().map(|t| t.is_file()).unwrap_or(false) {
                    fs::remove_file(entry.path())?;
                }
            }
        }
    }
    fs::remove_dir(dir)
}

/// Poll `check` until it returns true or `timeout` passes.
pub(crate) fn wait_until(
    timeout: Duration,
    mut check: impl FnMut() -> Result<bool>,
) -> Result<bool> {
    let start = std::time::Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        if check()? {
            return Ok(true);
        }
        if start.elapsed() >= timeout {
            return Ok(false);
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Test build: a per-thread log of every write, so tests can check the
/// order of writes and values overwritten by later writes.
#[cfg(test)]
pub(crate) mod test_log {
    use std::cell::RefCell;
    use std::path::{Path, PathBuf};

    thread_local! {
        static WRITES: RefCell<Vec<(PathBuf, String)>> = const { RefCell::new(Vec::new()) };
    }

    pub(crate) fn record(path: &Path, value: &str) {
        WRITES.with(|w| w.borrow_mut().push((path.to_path_buf(), value.to_string())));
    }

    /// Drain this thread's writes.
    pub(crate) fn take() -> Vec<(PathBuf, String)> {
        WRITES.with(|w| std::mem::take(&mut *w.borrow_mut()))
    }
}
