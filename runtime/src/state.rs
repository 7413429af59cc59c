//! The container state store: one directory per container under the
//! runtime root (`--root`, default `/run/berth/runtime`), holding
//! `state.json` (written crash-safe: temp file, fsync, rename, dir fsync) and,
//! between `create` and `start`, the `exec.fifo` the init process waits on.
//!
//! Every command that reads-then-writes a container holds an exclusive
//! `flock` on the container's directory for its whole duration.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::cgroups::CgroupState;
use crate::error::{Context, Error, ErrorKind, Result};
use crate::process_info::ProcessInfo;

/// The default runtime root.
pub const DEFAULT_ROOT: &str = "/run/berth/runtime";

/// Where state goes without `--root`: [`DEFAULT_ROOT`] for root, else
/// `$XDG_RUNTIME_DIR/berth` (or `/tmp/berth-UID`), as runc does rootless.
pub fn default_root() -> PathBuf {
    let uid = nix::unistd::geteuid();
    if uid.is_root() {
        return PathBuf::from(DEFAULT_ROOT);
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("berth"),
        None => PathBuf::from(format!("/tmp/berth-{uid}")),
    }
}
const STATE_FILE: &str = "state.json";
/// The fifo whose opening releases a created container's init.
pub const EXEC_FIFO: &str = "exec.fifo";

/// The OCI status of a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Creating,
    Created,
    Running,
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Creating => "creating",
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// What berth remembers of a container between commands.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ContainerState {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// Host pid of the container's init process.
    pub pid: i32,
    /// Start time of `pid` in clock ticks since boot (from /proc/PID/stat),
    /// to tell our process from a later one that reuses the number.
    pub pid_start_time: u64,
    /// RFC 3339 creation time.
    pub created: String,
    pub owner: String,
    pub cgroup: CgroupState,
    /// The container's config, as it was at create time.
    pub spec: Spec,
    /// Whether the container has a pid namespace of its own: when it does
    /// not, killing init does not kill the rest of its processes.
    pub own_pid_namespace: bool,
}

impl ContainerState {
    pub fn annotations(&self) -> HashMap<String, String> {
        self.spec.annotations().clone().unwrap_or_default()
    }

    /// The container's init process, if it is still the process we started.
    pub fn init_process(&self) -> Option<ProcessInfo> {
        ProcessInfo::read(self.pid).filter(|p| p.start_time == self.pid_start_time && p.is_alive())
    }

    /// The OCI state of this container as seen in `dir`.
    pub fn status(&self, dir: &Path) -> Status {
        if self.init_process().is_none() {
            return Status::Stopped;
        }
        if dir.join(EXEC_FIFO).exists() {
            return Status::Created;
        }
        let frozen = crate::cgroups::from_state(&self.cgroup)
            .is_frozen()
            .unwrap_or(false);
        if frozen {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// The state document of the OCI runtime spec (what `state` prints and
    /// what hooks read on stdin).
    pub fn oci_state(&self, status: Status) -> OciState {
        OciState {
            oci_version: self.spec.version().clone(),
            id: self.id.clone(),
            pid: if status == Status::Stopped {
                0
            } else {
                self.pid
            },
            status,
            bundle: self.bundle.clone(),
            rootfs: self.rootfs.clone(),
            created: self.created.clone(),
            annotations: self.annotations(),
            owner: self.owner.clone(),
        }
    }
}

/// A container's state as the OCI runtime spec defines it, with runc's
/// additions (`rootfs`, `created`, `owner`), fields in runc's order.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: Status,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: String,
    #[serde(default, skip_serializing_if = "HashMap::is_empty")]
    pub annotations: HashMap<String, String>,
    pub owner: String,
}

/// The directory holding every container's state.
#[derive(Debug, Clone)]
pub struct StateStore {
    root: PathBuf,
}

/// A container's directory, locked for the lifetime of this value.
#[derive(Debug)]
pub struct ContainerDir {
    id: String,
    path: PathBuf,
    _lock: Flock<File>,
}

/// Container ids: what runc accepts, so the same ids work everywhere.
pub fn validate_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id != "."
        && id != ".."
        && id.len() <= 1024
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "invalid container id {id:?}: use letters, digits, '_', '+', '-' and '.' only"
        )))
    }
}

impl StateStore {
    /// Open the store at `root`, creating it (mode 0700) if needed.
    pub fn open(root: &Path) -> Result<Self> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .with_context(|| format!("creating runtime root {}", root.display()))?;
        Ok(Self {
            root: root.to_path_buf(),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reserve `id`: create its directory and lock it. Fails if it exists.
    pub fn create(&self, id: &str) -> Result<ContainerDir> {
        validate_id(id)?;
        let path = self.root.join(id);
        match fs::DirBuilder::new().mode(0o711).create(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(Error::new(
                    ErrorKind::AlreadyExists,
                    format!("container {id:?} already exists"),
                ))
            }
            Err(e) => return Err(Error::internal(format!("creating {}: {e}", path.display()))),
        }
        match lock_dir(&path) {
            Ok(lock) => Ok(ContainerDir {
                id: id.to_string(),
                path,
                _lock: lock,
            }),
            Err(e) => {
                let _ = fs::remove_dir_all(&path);
                Err(e)
            }
        }
    }

    /// Lock the directory of an existing container.
    pub fn get(&self, id: &str) -> Result<ContainerDir> {
        validate_id(id)?;
        let path = self.root.join(id);
        if !path.is_dir() {
            return Err(Error::not_found(id));
        }
        let lock = lock_dir(&path).map_err(|e| {
            if path.exists() {
                e
            } else {
                Error::not_found(id)
            }
        })?;
        Ok(ContainerDir {
            id: id.to_string(),
            path,
            _lock: lock,
        })
    }

    /// The ids of every container directory, sorted.
    pub fn ids(&self) -> Result<Vec<String>> {
        let mut ids: Vec<String> = fs::read_dir(&self.root)
            .with_context(|| format!("reading {}", self.root.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }
}

fn lock_dir(path: &Path) -> Result<Flock<File>> {
    let dir = File::options()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))?;
    Flock::lock(dir, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::internal(format!("locking {}: {e}", path.display())))
}

impl ContainerDir {
    pub fn id(&self) -> &str {
        &self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The raw descriptor of the lock, so a forked child can close its copy.
    pub fn lock_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self._lock.as_raw_fd()
    }

    pub fn exec_fifo(&self) -> PathBuf {
        self.path.join(EXEC_FIFO)
    }

    /// Read state.json. A directory without it is a create that never
    /// finished (or is still running): reported as NotFound.
    pub fn load(&self) -> Result<ContainerState> {
        let file = self.path.join(STATE_FILE);
        let text = match fs::read(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::not_found(&self.id))
            }
            Err(e) => return Err(Error::internal(format!("reading {}: {e}", file.display()))),
        };
        serde_json::from_slice(&text)
            .map_err(|e| Error::internal(format!("{}: corrupt state: {e}", file.display())))
    }

    /// Write state.json crash-safe.
    pub fn save(&self, state: &ContainerState) -> Result<()> {
        let data = serde_json::to_vec(state).context("encoding state")?;
        write_atomic(&self.path.join(STATE_FILE), &data, 0o600)
    }

    /// Remove the container's directory and everything in it.
    pub fn remove(self) -> Result<()> {
        match fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::internal(format!(
                "removing {}: {e}",
                self.path.display()
            ))),
        }
    }
}

/// Write `data` to `path` so that a crash leaves either the old or the new
/// content: a temp file in the same directory, fsync, rename, fsync the dir.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| Error::invalid(format!("{}: no parent directory", path.display())))?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut f = File::options()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .custom_flags(libc::O_CLOEXEC)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(dir)?.sync_all()
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        Error::internal(format!("writing {}: {e}", path.display()))
    })
}

/// Write `pid` to the caller's `--pid-file` (crash-safe, as containerd
/// reads it while we may still be writing).
pub fn write_pid_file(path: &Path, pid: i32) -> Result<()> {
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    write_atomic(&path, pid.to_string().as_bytes(), 0o644).map_err(|e| e.context("--pid-file"))
}

/// Now, as RFC 3339 in UTC with nanoseconds (what runc prints).
pub fn now_rfc3339() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        now.subsec_nanos()
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        for ok in ["a", "abc-1.2_3+x", "A9"] {
            validate_id(ok).unwrap();
        }
        for bad in ["", ".", "..", "a/b", "../x", "a b", "x\n"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert!(now_rfc3339().ends_with('Z'));
    }

    #[test]
    fn create_twice_is_already_exists_and_get_missing_is_not_found() {
        let root = tempfile::tempdir().unwrap();
        let store = StateStore::open(root.path()).unwrap();
        let dir = store.create("c1").unwrap();
        drop(dir);
        let err = store.create("c1").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AlreadyExists);
        let err = store.get("nope").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        let dir = store.get("c1").unwrap();
        assert_eq!(dir.load().unwrap_err().kind(), ErrorKind::NotFound);
        dir.remove().unwrap();
        assert!(store.ids().unwrap().is_empty());
    }

    #[test]
    fn atomic_write_replaces() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("f");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(fs::read_dir(d.path()).unwrap().count(), 1);
    }
}
