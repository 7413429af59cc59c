//! The container's root filesystem as containerd describes it in
//! `CreateTaskRequest.rootfs` (usually one overlay or bind mount of a
//! snapshot), mounted by the shim on `<bundle>/rootfs` and unmounted when
//! the task is deleted.

use crate::error::{Context, Error, Result};
use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::path::{Path, PathBuf};

/// One mount from the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: String,
    pub source: String,
    pub options: Vec<String>,
}

/// Mount flags and the filesystem-specific data string, as mount(8) reads
/// an option list.
fn parse_options(options: &[String]) -> (MsFlags, bool, String) {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();
    let mut readonly_bind = false;
    for opt in options {
        let (set, clear) = match opt.as_str() {
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
            "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "defaults" => (MsFlags::empty(), MsFlags::empty()),
            _ => {
                data.push(opt.as_str());
                continue;
            }
        };
        flags |= set;
        flags &= !clear;
    }
    if flags.contains(MsFlags::MS_BIND) && flags.contains(MsFlags::MS_RDONLY) {
        readonly_bind = true;
    }
    (flags, readonly_bind, data.join(","))
}

/// Mount `mounts` in order on `target`. On failure, what was mounted is
/// unmounted again.
pub fn mount_all(mounts: &[Mount], target: &Path) -> Result<()> {
    if mounts.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(target).context(format!("creating {}", target.display()))?;
    for (done, m) in mounts.iter().enumerate() {
        if let Err(e) = mount_one(m, target) {
            for _ in 0..done {
                let _ = umount2(target, MntFlags::MNT_DETACH);
            }
            return Err(e);
        }
    }
    Ok(())
}

fn mount_one(m: &Mount, target: &Path) -> Result<()> {
    let (flags, readonly_bind, data) = parse_options(&m.options);
    let fstype = (!flags.contains(MsFlags::MS_BIND)).then_some(m.kind.as_str());
    let data = (!data.is_empty()).then_some(data.as_str());
    let what = || format!("mounting {} {:?} on {}", m.kind, m.source, target.display());
    mount(Some(m.source.as_str()), target, fstype, flags, data)
        .map_err(|e| Error::from(e).context(what()))?;
    if readonly_bind {
        // A bind mount ignores MS_RDONLY until remounted.
        let remount = flags | MsFlags::MS_REMOUNT;
        if let Err(e) = mount(None::<&str>, target, None::<&str>, remount, None::<&str>) {
            let _ = umount2(target, MntFlags::MNT_DETACH);
            return Err(Error::from(e).context(format!("making {} read-only", target.display())));
        }
    }
    Ok(())
}

/// [`unmount_all`] on the blocking pool: the last unmount of an overlay
/// syncs its upper filesystem, which can take long on a busy disk, and the
/// shim's single event loop must keep serving meanwhile.
pub async fn unmount_all_off_loop(target: PathBuf) -> Result<()> {
    tokio::task::spawn_blocking(move || unmount_all(&target))
        .await
        .map_err(|e| Error::internal(format!("unmounting the rootfs: {e}")))?
}

/// Unmount everything stacked on `target`. A target that is not a mount
/// point (or is gone) is fine.
pub fn unmount_all(target: &Path) -> Result<()> {
    for _ in 0..64 {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(Errno::EINVAL) | Err(Errno::ENOENT) => return Ok(()),
            Err(e) => {
                return Err(Error::from(e).context(format!("unmounting {}", target.display())))
            }
        }
    }
    Err(Error::internal(format!(
        "unmounting {}: still mounted after 64 unmounts",
        target.display()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_split_into_flags_and_data() {
        let opts: Vec<String> = ["rbind", "ro", "nosuid", "lowerdir=/a:/b", "index=off"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let (flags, ro_bind, data) = parse_options(&opts);
        assert!(flags.contains(
            MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID
        ));
        assert!(ro_bind);
        assert_eq!(data, "lowerdir=/a:/b,index=off");
        let (flags, _, _) = parse_options(&["ro".into(), "rw".into()]);
        assert!(!flags.contains(MsFlags::MS_RDONLY));
    }

    #[test]
    fn bind_mount_and_unmount_for_real() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let src = tempfile::tempdir().unwrap();
        std::fs::write(src.path().join("marker"), b"x").unwrap();
        let bundle = tempfile::tempdir().unwrap();
        let target = bundle.path().join("rootfs");
        let mounts = vec![Mount {
            kind: "bind".into(),
            source: src.path().to_string_lossy().into_owned(),
            options: vec!["rbind".into(), "ro".into()],
        }];
        mount_all(&mounts, &target).unwrap();
        assert!(target.join("marker").exists());
        assert!(
            std::fs::write(target.join("new"), b"y").is_err(),
            "mount must be read-only"
        );
        unmount_all(&target).unwrap();
        assert!(!target.join("marker").exists());
        unmount_all(&target).unwrap();
    }

    #[test]
    fn failed_mount_names_source_and_leaves_nothing() {
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let bundle = tempfile::tempdir().unwrap();
        let target = bundle.path().join("rootfs");
        let mounts = vec![Mount {
            kind: "bind".into(),
            source: "/nonexistent/berth-shim-test".into(),
            options: vec!["rbind".into()],
        }];
        let err = mount_all(&mounts, &target).unwrap_err();
        assert!(
            err.message.contains("/nonexistent/berth-shim-test"),
            "{}",
            err.message
        );
        assert_eq!(err.kind, crate::error::Kind::NotFound);
    }
}
