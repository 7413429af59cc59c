//! Mounts as snapshotters describe them, and the two operations every
//! consumer needs: mount a list of them on a directory, and undo that.
//!
//! A mount list is applied in order on the same target, so a later entry
//! stacks over an earlier one, as containerd's `mount.All` does.

use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

/// One mount, in the shape containerd's API carries it (`types.Mount`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    /// Filesystem type (`overlay`) or `bind`.
    pub r#type: String,
    /// What is mounted: a directory for binds, the fs name for overlay.
    pub source: String,
    /// Where below the mount point this mount goes (relative); `None` is
    /// the mount point itself.
    pub target: Option<String>,
    /// Options as `mount(8)` takes them: flags (`ro`, `rbind`, `nosuid`)
    /// and data (`lowerdir=...`).
    pub options: Vec<String>,
}

impl Mount {
    /// A recursive bind mount of `source`, read-only when `readonly`.
    pub fn bind(source: &Path, readonly: bool) -> Self {
        let access = if readonly { "ro" } else { "rw" };
        Mount {
            r#type: "bind".into(),
            source: source.display().to_string(),
            target: None,
            options: vec![access.into(), "rbind".into()],
        }
    }

    /// Whether this is a bind mount (by type or by a `bind`/`rbind` option).
    pub fn is_bind(&self) -> bool {
        self.r#type == "bind" || self.options.iter().any(|o| o == "bind" || o == "rbind")
    }

    /// Whether the options ask for a read-only mount.
    pub fn is_readonly(&self) -> bool {
        self.flags_and_data().0.contains(MsFlags::MS_RDONLY)
    }

    /// The value of a `key=value` data option, e.g. `upperdir`.
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options
            .iter()
            .find_map(|o| o.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }

    /// The layer directories of an overlay mount, newest first.
    pub fn lowerdirs(&self) -> Vec<PathBuf> {
        self.option("lowerdir")
            .map(|l| l.split(':').map(PathBuf::from).collect())
            .unwrap_or_default()
    }

    /// Splits the options into mount flags (a later option overrides an
    /// earlier one: `ro,rw` is writable) and the data string.
    fn flags_and_data(&self) -> (MsFlags, String) {
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        for option in &self.options {
            match flag_of(option) {
                Some((flag, true)) => flags |= flag,
                Some((flag, false)) => flags -= flag,
                None => data.push(option.as_str()),
            }
        }
        (flags, data.join(","))
    }

    /// Mounts this on `target`.
    fn mount_on(&self, target: &Path) -> Result<()> {
        let (flags, data) = self.flags_and_data();
        let what = || {
            format!(
                "mount {} ({}) on {}",
                self.source,
                self.r#type,
                target.display()
            )
        };
        if self.is_bind() {
            let bind = MsFlags::MS_BIND | (flags & MsFlags::MS_REC);
            mount(
                Some(self.source.as_str()),
                target,
                None::<&str>,
                bind,
                None::<&str>,
            )
            .map_err(errno_error)
            .with_context(what)?;
            // Bind mounts ignore other flags on the first call: they are
            // applied by a remount of the bind.
            let extra = flags - (MsFlags::MS_BIND | MsFlags::MS_REC);
            if !extra.is_empty() {
                let remount = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | extra;
                let res = mount(None::<&str>, target, None::<&str>, remount, None::<&str>)
                    .map_err(errno_error)
                    .with_context(what);
                if let Err(err) = res {
                    let _ = umount2(target, MntFlags::MNT_DETACH);
                    return Err(err);
                }
            }
            return Ok(());
        }
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(
            Some(self.source.as_str()),
            target,
            Some(self.r#type.as_str()),
            flags,
            data,
        )
        .map_err(errno_error)
        .with_context(what)
    }
}

/// Maps an option to the flag it sets (`true`) or clears (`false`).
fn flag_of(option: &str) -> Option<(MsFlags, bool)> {
    let flag = match option {
        "ro" => (MsFlags::MS_RDONLY, true),
        "rw" => (MsFlags::MS_RDONLY, false),
        "bind" => (MsFlags::MS_BIND, true),
        "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, true),
        "nosuid" => (MsFlags::MS_NOSUID, true),
        "suid" => (MsFlags::MS_NOSUID, false),
        "nodev" => (MsFlags::MS_NODEV, true),
        "dev" => (MsFlags::MS_NODEV, false),
        "noexec" => (MsFlags::MS_NOEXEC, true),
        "exec" => (MsFlags::MS_NOEXEC, false),
        "sync" => (MsFlags::MS_SYNCHRONOUS, true),
        "async" => (MsFlags::MS_SYNCHRONOUS, false),
        "noatime" => (MsFlags::MS_NOATIME, true),
        "atime" => (MsFlags::MS_NOATIME, false),
        "nodiratime" => (MsFlags::MS_NODIRATIME, true),
        "diratime" => (MsFlags::MS_NODIRATIME, false),
        "relatime" => (MsFlags::MS_RELATIME, true),
        "norelatime" => (MsFlags::MS_RELATIME, false),
        "strictatime" => (MsFlags::MS_STRICTATIME, true),
        "remount" => (MsFlags::MS_REMOUNT, true),
        _ => return None,
    };
    Some(flag)
}

fn errno_error(errno: Errno) -> Error {
    Error::from(std::io::Error::from(errno))
}

/// Where a mount goes below `root`: its relative `target`, which may not
/// climb out of `root`.
fn mount_point(root: &Path, mount: &Mount) -> Result<PathBuf> {
    let Some(target) = mount.target.as_deref().filter(|t| !t.is_empty()) else {
        return Ok(root.to_path_buf());
    };
    let relative = Path::new(target.trim_start_matches('/'));
    if relative
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(Error::invalid(format!(
            "mount target {target}: must stay below the mount point"
        )));
    }
    Ok(root.join(relative))
}

/// Mounts `mounts` in order on `target`. On failure, what was already
/// mounted is unmounted again, so the target is left as it was.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    for (done, m) in mounts.iter().enumerate() {
        let result = mount_point(target, m).and_then(|point| m.mount_on(&point));
        if let Err(err) = result {
            for undo in mounts[..done].iter().rev() {
                if let Ok(point) = mount_point(target, undo) {
                    let _ = umount2(&point, MntFlags::MNT_DETACH);
                }
            }
            return Err(err);
        }
    }
    Ok(())
}

/// Unmounts everything stacked on `target` (it is fine if nothing is).
/// Symlinks are not followed, so `target` itself is what gets unmounted.
pub fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match umount2(target, MntFlags::UMOUNT_NOFOLLOW) {
            Ok(()) => continue,
            // EINVAL: not a mount point (any more).
            Err(Errno::EINVAL) => return Ok(()),
            Err(Errno::EBUSY) => {
                // Still used: detach so it goes away once the users do.
                return umount2(target, MntFlags::UMOUNT_NOFOLLOW | MntFlags::MNT_DETACH)
                    .map_err(errno_error)
                    .with_context(|| format!("unmount {}", target.display()));
            }
            Err(errno) => {
                return Err(errno_error(errno))
                    .with_context(|| format!("unmount {}", target.display()))
            }
        }
    }
}

/// A list of mounts mounted on a fresh temporary directory for as long as
/// this value lives; dropped, it unmounts and removes the directory.
#[derive(Debug)]
pub struct TempMount {
    dir: Option<tempfile::TempDir>,
}

impl TempMount {
    /// Mounts `mounts` on a new temporary directory.
    pub fn new(mounts: &[Mount]) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("berth-mount-")
            .tempdir()
            .context("temporary mount point")?;
        mount_all(mounts, dir.path())?;
        Ok(TempMount { dir: Some(dir) })
    }

    /// The mounted directory.
    pub fn path(&self) -> &Path {
        self.dir
            .as_ref()
            .map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// Unmounts and removes the directory, reporting any failure.
    pub fn release(mut self) -> Result<()> {
        self.release_inner()
    }

    fn release_inner(&mut self) -> Result<()> {
        let Some(dir) = self.dir.take() else {
            return Ok(());
        };
        // Never removed recursively: if the unmount failed, what is below is
        // a snapshot's content, not ours to delete.
        let path = dir.keep();
        unmount_all(&path)?;
        std::fs::remove_dir(&path)
            .with_context(|| format!("remove temporary mount point {}", path.display()))
    }
}

impl Drop for TempMount {
    fn drop(&mut self) {
        let _ = self.release_inner();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_mount_point(path: &Path) -> bool {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let path = path.to_str().unwrap();
        mountinfo
            .lines()
            .any(|line| line.split(' ').nth(4) == Some(path))
    }

    #[test]
    fn a_failed_mount_list_leaves_nothing_mounted() {
        let dir = tempfile::tempdir().unwrap();
        let (source, target) = (dir.path().join("src"), dir.path().join("dst"));
        std::fs::create_dir(&source).unwrap();
        std::fs::create_dir(&target).unwrap();
        let bogus = Mount {
            r#type: "no-such-filesystem".into(),
            source: "none".into(),
            target: None,
            options: vec![],
        };
        let err = mount_all(&[Mount::bind(&source, false), bogus], &target).unwrap_err();
        assert!(err.message.contains("no-such-filesystem"), "{err}");
        assert!(!is_mount_point(&target));
        unmount_all(&target).unwrap();
    }

    #[test]
    fn read_only_binds_are_read_only_and_unmount_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("f"), "x").unwrap();
        let mounted = TempMount::new(&[Mount::bind(dir.path(), true)]).unwrap();
        let path = mounted.path().to_path_buf();
        assert!(is_mount_point(&path));
        assert_eq!(std::fs::read_to_string(path.join("f")).unwrap(), "x");
        assert!(std::fs::write(path.join("g"), "y").is_err());
        drop(mounted);
        assert!(
            !path.exists(),
            "dropping unmounts and removes the mount point"
        );
    }

    #[test]
    fn targets_stay_below_the_mount_point() {
        let root = Path::new("/mnt/root");
        let mut m = Mount::bind(Path::new("/src"), false);
        m.target = Some("../escape".into());
        assert_eq!(
            mount_point(root, &m).unwrap_err().kind,
            crate::ErrorKind::InvalidArgument
        );
        m.target = Some("/proc".into());
        assert_eq!(mount_point(root, &m).unwrap(), root.join("proc"));
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let m = Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options: vec![
                "ro".into(),
                "nosuid".into(),
                "lowerdir=/a:/b".into(),
                "index=off".into(),
            ],
        };
        let (flags, data) = m.flags_and_data();
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOSUID);
        assert_eq!(data, "lowerdir=/a:/b,index=off");
        assert_eq!(m.lowerdirs(), [PathBuf::from("/a"), PathBuf::from("/b")]);
        assert_eq!(m.option("index"), Some("off"));
        assert!(m.is_readonly() && !m.is_bind());
        let mut later = m.clone();
        later.options.push("rw".into());
        assert_eq!(later.flags_and_data().0, MsFlags::MS_NOSUID);
        assert!(!later.is_readonly());
    }
}
