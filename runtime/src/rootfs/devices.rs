//! Device nodes in the container's /dev: the default set every container
//! gets, the spec's `linux.devices`, and the usual /dev symlinks.

use std::os::unix::fs::symlink;
use std::path::Path;

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{chown, Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::mounts::{ensure_file, mkdir_all};
use super::path::secure_join;
use crate::error::{Context, Error, Result};

/// The devices every container gets (type, major, minor, path).
const DEFAULT_DEVICES: &[(&str, u64, u64)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

const DEV_SYMLINKS: &[(&str, &str)] = &[
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
];

/// Create the default devices, the spec's devices and the /dev symlinks
/// (in a /dev of the container's own: the caller skips a bind-mounted one).
pub fn create_devices(rootfs: &Path, spec_devices: &[LinuxDevice]) -> Result<()> {
    for (path, major, minor) in DEFAULT_DEVICES {
        make_node(
            rootfs,
            Path::new(path),
            SFlag::S_IFCHR,
            *major,
            *minor,
            0o666,
            0,
            0,
        )?;
    }
    for (i, dev) in spec_devices.iter().enumerate() {
        make_spec_device(rootfs, dev).map_err(|e| e.context(format!("linux.devices[{i}]")))?;
    }
    for (target, link) in DEV_SYMLINKS {
        make_symlink(rootfs, target, link)?;
    }
    if Path::new("/proc/kcore").exists() {
        make_symlink(rootfs, "/proc/kcore", "/dev/core")?;
    }
    // /dev/ptmx must be the container's own devpts instance's.
    let ptmx = secure_join(rootfs, Path::new("/dev/ptmx"))?;
    if std::fs::symlink_metadata(&ptmx).is_ok() {
        std::fs::remove_file(&ptmx).with_context(|| format!("removing {}", ptmx.display()))?;
    }
    symlink("pts/ptmx", &ptmx).with_context(|| format!("linking {}", ptmx.display()))?;
    Ok(())
}

fn make_spec_device(rootfs: &Path, dev: &LinuxDevice) -> Result<()> {
    if !dev.path().is_absolute() || !dev.path().starts_with("/dev") {
        return Err(Error::invalid(format!(
            "path {}: devices must be under /dev",
            dev.path().display()
        )));
    }
    let kind = match dev.typ() {
        LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
        LinuxDeviceType::B => SFlag::S_IFBLK,
        LinuxDeviceType::P => SFlag::S_IFIFO,
        LinuxDeviceType::A => {
            return Err(Error::invalid(format!(
                "type of {}: \"a\" is not a device type",
                dev.path().display()
            )))
        }
    };
    let major = u64::try_from(dev.major()).map_err(|_| Error::invalid("major: negative"))?;
    let minor = u64::try_from(dev.minor()).map_err(|_| Error::invalid("minor: negative"))?;
    make_node(
        rootfs,
        dev.path(),
        kind,
        major,
        minor,
        dev.file_mode().unwrap_or(0o666) & 0o7777,
        dev.uid().unwrap_or(0),
        dev.gid().unwrap_or(0),
    )
}

#[allow(clippy::too_many_arguments)]
fn make_node(
    rootfs: &Path,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let dest = secure_join(rootfs, path)?;
    if let Some(parent) = dest.parent() {
        mkdir_all(parent)?;
    }
    if std::fs::symlink_metadata(&dest).is_ok() {
        std::fs::remove_file(&dest).with_context(|| format!("replacing {}", dest.display()))?;
    }
    let perm = Mode::from_bits_truncate(mode);
    match mknod(&dest, kind, perm, makedev(major, minor)) {
        Ok(()) => {}
        // Not allowed to create device nodes: bind the host's node instead.
        Err(nix::errno::Errno::EPERM) if kind != SFlag::S_IFIFO => {
            ensure_file(&dest)?;
            nix::mount::mount(
                Some(path),
                &dest,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("bind-mounting {} on {}", path.display(), dest.display()))?;
            return Ok(());
        }
        Err(e) => return Err(Error::internal(format!("mknod {}: {e}", dest.display()))),
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {}", dest.display()))?;
    chown(&dest, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .with_context(|| format!("chown {}", dest.display()))
}

fn make_symlink(rootfs: &Path, target: &str, link: &str) -> Result<()> {
    let dest = secure_join(rootfs, Path::new(link))?;
    match symlink(target, &dest) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::internal(format!("linking {}: {e}", dest.display()))),
    }
}
