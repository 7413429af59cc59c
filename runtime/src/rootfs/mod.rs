//! The container's root filesystem, built inside its new mount namespace:
//! [`prepare`] (propagation, the rootfs bind, the spec's mounts, devices)
//! runs before the createContainer hooks; [`pivot`] switches root; and
//! [`finish`] applies what is expressed in container paths (masked and
//! read-only paths, sysctls, a read-only root).

pub mod devices;
pub mod mounts;
pub mod path;

use std::fs::File;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use oci_spec::runtime::Spec;

use crate::error::{Context, Error, Result};
use mounts::{mount_entry, propagation_flag, remount_bind, MountContext};

/// The propagation of `/` asked for by `linux.rootfsPropagation`
/// (default: rslave, so nothing the container mounts reaches the host and
/// host mounts still reach the container, as runc does).
fn root_propagation(spec: &Spec) -> Result<MsFlags> {
    match spec
        .linux()
        .as_ref()
        .and_then(|l| l.rootfs_propagation().as_deref())
    {
        None | Some("") => Ok(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        Some(name) => propagation_flag(name).ok_or_else(|| {
            Error::invalid(format!("linux.rootfsPropagation: unknown value {name:?}"))
        }),
    }
}

/// Set up mounts and devices under `ctx.rootfs` (still seen from the host's
/// root). Must run in the container's own mount namespace.
/// With `idmapped_root` (a detached, id-mapped copy of the rootfs mount
/// tree), that tree is put on the rootfs instead of a plain bind of it.
pub fn prepare(
    ctx: &MountContext<'_>,
    spec: &Spec,
    idmapped_root: Option<std::os::fd::OwnedFd>,
) -> Result<()> {
    let propagation = root_propagation(spec)?;
    // Everything below "/" becomes a slave (or what was asked) so our mounts
    // never propagate back to the host. A shared propagation is applied only
    // after pivot_root, which refuses shared parents.
    let initial = if propagation.contains(MsFlags::MS_SHARED) {
        MsFlags::MS_SLAVE | MsFlags::MS_REC
    } else {
        propagation | MsFlags::MS_REC
    };
    mount(None::<&str>, "/", None::<&str>, initial, None::<&str>)
        .context("setting the propagation of /")?;
    match idmapped_root {
        Some(tree) => {
            use std::os::fd::AsFd;
            crate::sys::move_mount_to(tree.as_fd(), ctx.rootfs).with_context(|| {
                format!("attaching the id-mapped rootfs on {}", ctx.rootfs.display())
            })?;
        }
        None => mount(
            Some(ctx.rootfs),
            ctx.rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting the rootfs {}", ctx.rootfs.display()))?,
    }

    let resolver = path::Resolver::new(ctx.rootfs)?;
    let entries = spec.mounts().as_deref().unwrap_or(&[]);
    // A read-only /dev is made read-only only once everything under it
    // (devpts, shm, mqueue, device nodes) is in place.
    let mut readonly_dev = false;
    for (i, m) in entries.iter().enumerate() {
        let is_dev = m.destination() == Path::new("/dev");
        let ro = m
            .options()
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .any(|o| o == "ro");
        if is_dev && ro && m.typ().as_deref() != Some("bind") {
            let mut writable = m.clone();
            let options = m.options().clone().unwrap_or_default();
            writable.set_options(Some(options.into_iter().filter(|o| o != "ro").collect()));
            mount_entry(ctx, &resolver, i, &writable)?;
            readonly_dev = true;
        } else {
            mount_entry(ctx, &resolver, i, m)?;
        }
    }
    let dev_is_bind = entries
        .iter()
        .any(|m| m.destination() == Path::new("/dev") && mounts::is_bind(m));
    let spec_devices = spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_deref())
        .unwrap_or(&[]);
    // A /dev bind-mounted from elsewhere (the host's, typically) is used
    // as it is: creating nodes in it would create them there.
    if !dev_is_bind {
        devices::create_devices(&resolver, spec_devices)?;
    }
    if readonly_dev {
        let dev = resolver.open(Path::new("/dev"))?;
        remount_bind(&dev.path, MsFlags::MS_RDONLY).context("mounts (/dev): read-only")?;
    }
    Ok(())
}

/// Create the process's `cwd` when it does not exist, as runc does: before
/// the root may turn read-only, resolved inside the rootfs (still seen
/// from the host's root) like every mount target, so a cwd through
/// `/proc/self/fd/N` cannot create anything in a directory a leaked
/// descriptor points to (CVE-2024-21626).
pub fn create_cwd(rootfs: &Path, cwd: &Path) -> Result<()> {
    path::Resolver::new(rootfs)?
        .mkdir_all(cwd)
        .map(drop)
        .map_err(|e| e.context(format!("creating process.cwd {}", cwd.display())))
}

/// Make `rootfs` the root: pivot_root(2), or with `no_pivot` a move-mount
/// plus chroot (for filesystems where pivot_root cannot work, e.g. ramfs).
pub fn pivot(rootfs: &Path, no_pivot: bool) -> Result<()> {
    if no_pivot {
        hide_host_proc_and_sys(rootfs)?;
        chdir(rootfs).with_context(|| format!("entering {}", rootfs.display()))?;
        mount(
            Some(rootfs),
            "/",
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .context("moving the rootfs onto /")?;
        chroot(".").context("chroot into the rootfs")?;
        return chdir("/").context("chdir /");
    }
    let old_root = File::open("/").context("opening the old root")?;
    let new_root = File::open(rootfs).with_context(|| format!("opening {}", rootfs.display()))?;
    fchdir(&new_root).context("entering the rootfs")?;
    // pivot_root(".", "."): the old root is stacked on top of the new one
    // and can be detached without a directory for it inside the container.
    pivot_root(".", ".").with_context(|| format!("pivot_root into {}", rootfs.display()))?;
    fchdir(&old_root).context("entering the old root")?;
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("making the old root a slave")?;
    umount2(".", MntFlags::MNT_DETACH).context("detaching the old root")?;
    chdir("/").context("chdir /")
}

/// Without pivot_root the host's own mounts stay in the container's mount
/// namespace, below the chroot. A full proc or sysfs mount there would let
/// a nested user namespace in the container mount a fresh, unmasked proc
/// (the kernel only checks that one is visible somewhere in the namespace),
/// so every such mount outside the rootfs is detached, or covered with an
/// empty tmpfs where it cannot be (as runc does).
fn hide_host_proc_and_sys(rootfs: &Path) -> Result<()> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").context("reading mountinfo")?;
    let mut targets: Vec<String> = info
        .lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mut fields = pre.split_whitespace();
            let root = fields.nth(3)?;
            let mountpoint = fields.next()?;
            let full = root == "/" && matches!(fstype, "proc" | "sysfs");
            (full && !Path::new(mountpoint).starts_with(rootfs)).then(|| mountpoint.to_string())
        })
        .collect();
    // Innermost first, so nested ones go before their parents.
    targets.sort_by_key(|t| std::cmp::Reverse(t.len()));
    for target in targets {
        let _ = mount(
            None::<&str>,
            target.as_str(),
            None::<&str>,
            MsFlags::MS_SLAVE | MsFlags::MS_REC,
            None::<&str>,
        );
        match umount2(target.as_str(), MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::ENOENT) => {}
            Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::EPERM) => {
                mount(
                    Some("tmpfs"),
                    target.as_str(),
                    Some("tmpfs"),
                    MsFlags::empty(),
                    None::<&str>,
                )
                .with_context(|| format!("covering the host's {target}"))?;
            }
            Err(e) => {
                return Err(crate::Error::internal(format!(
                    "detaching the host's {target}: {e}"
                )))
            }
        }
    }
    Ok(())
}

/// After pivot, in container paths: the root's propagation, sysctls,
/// read-only paths, masked paths, and a read-only root.
pub fn finish(spec: &Spec) -> Result<()> {
    let propagation = root_propagation(spec)?;
    if propagation.contains(MsFlags::MS_SHARED) {
        mount(None::<&str>, "/", None::<&str>, propagation, None::<&str>)
            .context("setting the propagation of /")?;
    }
    let linux = spec.linux().as_ref();
    if let Some(sysctl) = linux.and_then(|l| l.sysctl().as_ref()) {
        let mut keys: Vec<_> = sysctl.iter().collect();
        keys.sort();
        for (key, value) in keys {
            let path = crate::spec::sysctl_path(key);
            std::fs::write(&path, value).with_context(|| {
                format!(
                    "linux.sysctl {key}: writing {value:?} to {}",
                    path.display()
                )
            })?;
        }
    }
    for p in linux
        .and_then(|l| l.readonly_paths().as_deref())
        .unwrap_or(&[])
    {
        readonly_path(Path::new(p)).map_err(|e| e.context("linux.readonlyPaths"))?;
    }
    for p in linux
        .and_then(|l| l.masked_paths().as_deref())
        .unwrap_or(&[])
    {
        mask_path(Path::new(p)).map_err(|e| e.context("linux.maskedPaths"))?;
    }
    if spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        remount_bind(Path::new("/"), MsFlags::MS_RDONLY).context("root.readonly")?;
    }
    Ok(())
}

fn readonly_path(path: &Path) -> Result<()> {
    match mount(
        Some(path),
        path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Ok(()) => remount_bind(path, MsFlags::MS_RDONLY | MsFlags::MS_REC),
        Err(nix::errno::Errno::ENOENT) => Ok(()),
        Err(e) => Err(Error::internal(format!(
            "bind-mounting {}: {e}",
            path.display()
        ))),
    }
}

/// The /dev/null masked files are covered with must be the real one (char
/// device 1:3), not a file or link the image put there.
fn check_dev_null() -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata("/dev/null").context("/dev/null")?;
    let rdev = meta.rdev();
    if !meta.file_type().is_char_device()
        || nix::sys::stat::major(rdev) != 1
        || nix::sys::stat::minor(rdev) != 3
    {
        return Err(Error::invalid(
            "/dev/null in the container is not the null device (char 1:3): refusing to mask paths with it",
        ));
    }
    Ok(())
}

/// Hide `path`: an empty read-only tmpfs over a directory, /dev/null over
/// anything else. Paths that do not exist are skipped.
fn mask_path(path: &Path) -> Result<()> {
    check_dev_null()?;
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::internal(format!("{}: {e}", path.display()))),
    };
    let result = if meta.is_dir() {
        mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            None::<&str>,
        )
    } else {
        mount(
            Some("/dev/null"),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    result.with_context(|| format!("masking {}", path.display()))
}
