//! Device nodes: the default set every container gets in its /dev, the
//! spec's `linux.devices` (wherever they say), and the usual /dev symlinks.

use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fstat, makedev, mknodat, Mode, SFlag};
use nix::unistd::{fchownat, symlinkat, unlinkat, Gid, Uid, UnlinkatFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};

use super::path::{Resolver, Target};
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
/// Every node is created with the *at() system calls in a directory
/// resolved inside the rootfs by `rootfs`, so a symlink in the image (or
/// one swapped in meanwhile) cannot make us create or chmod anything on
/// the host.
pub fn create_devices(rootfs: &Resolver, spec_devices: &[LinuxDevice]) -> Result<()> {
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
    let (dev, name) = rootfs.parent_and_name(Path::new("/dev/ptmx"))?;
    remove_non_dir(&dev, &name, "/dev/ptmx")?;
    symlinkat("pts/ptmx", &dev.fd, name.as_os_str()).context("linking /dev/ptmx to pts/ptmx")?;
    Ok(())
}

/// Remove what is at `name` in `dir` (not following a symlink there),
/// unless it is a directory or nothing.
fn remove_non_dir(dir: &Target, name: &OsStr, shown: &str) -> Result<()> {
    match unlinkat(&dir.fd, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) | Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::internal(format!("replacing {shown}: {e}"))),
    }
}

fn make_spec_device(rootfs: &Resolver, dev: &LinuxDevice) -> Result<()> {
    // Anywhere in the container, as under runc and crun: the node is
    // created inside the rootfs whatever its path.
    if !dev.path().is_absolute() {
        return Err(Error::invalid(format!(
            "path {}: must be an absolute path",
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

/// Create the node `path` (of the container) as `kind` major:minor, with
/// `mode` and owner `uid`:`gid`, replacing whatever non-directory is
/// there. Where mknod is not allowed (a user namespace), the host's node
/// of the same path is bind-mounted onto an empty file instead.
#[allow(clippy::too_many_arguments)]
fn make_node(
    rootfs: &Resolver,
    path: &Path,
    kind: SFlag,
    major: u64,
    minor: u64,
    mode: u32,
    uid: u32,
    gid: u32,
) -> Result<()> {
    let shown = path.display().to_string();
    let (dir, name) = rootfs.parent_and_name(path)?;
    remove_non_dir(&dir, &name, &shown)?;
    let perm = Mode::from_bits_truncate(mode);
    match mknodat(&dir.fd, name.as_os_str(), kind, perm, makedev(major, minor)) {
        Ok(()) => {}
        // Not allowed to create device nodes: bind the host's node instead.
        Err(Errno::EPERM) if kind != SFlag::S_IFIFO => {
            openat(
                &dir.fd,
                name.as_os_str(),
                OFlag::O_CREAT
                    | OFlag::O_EXCL
                    | OFlag::O_NOFOLLOW
                    | OFlag::O_WRONLY
                    | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o644),
            )
            .with_context(|| format!("creating {shown} to bind the host's node on"))?;
            let file = open_created(&dir, &name, SFlag::S_IFREG, &shown)?;
            return nix::mount::mount(
                Some(path),
                &file.path,
                None::<&str>,
                nix::mount::MsFlags::MS_BIND,
                None::<&str>,
            )
            .with_context(|| format!("bind-mounting the host's {shown} on the container's"));
        }
        Err(e) => return Err(Error::internal(format!("mknod {shown}: {e}"))),
    }
    let node = open_created(&dir, &name, kind, &shown)?;
    // The umask may have trimmed the mode; chmod through the descriptor
    // (fchmod refuses O_PATH ones, its /proc/self/fd link does not).
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&node.path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {shown}"))?;
    fchownat(
        node.fd.as_fd(),
        "",
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::AT_EMPTY_PATH,
    )
    .with_context(|| format!("chown {shown}"))
}

/// Open (O_PATH, not following a symlink) what we have just created at
/// `name` in `dir`, and check it is still of the `kind` we made.
fn open_created(dir: &Target, name: &OsStr, kind: SFlag, shown: &str) -> Result<Target> {
    let fd = openat(
        &dir.fd,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("opening {shown}"))?;
    let st = fstat(&fd).with_context(|| format!("inspecting {shown}"))?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != kind {
        return Err(Error::internal(format!(
            "{shown}: replaced by something else while it was being created"
        )));
    }
    use std::os::fd::AsRawFd;
    let path = format!("/proc/self/fd/{}", fd.as_raw_fd()).into();
    Ok(Target { fd, path })
}

fn make_symlink(rootfs: &Resolver, target: &str, link: &str) -> Result<()> {
    let (dir, name) = rootfs.parent_and_name(Path::new(link))?;
    match symlinkat(target, &dir.fd, name.as_os_str()) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(e) => Err(Error::internal(format!("linking {link} to {target}: {e}"))),
    }
}
