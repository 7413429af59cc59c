//! The `mounts` of a config.json: option parsing and mounting each entry
//! under the rootfs (before pivot_root).

use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;
use nix::mount::{mount, MsFlags};
use oci_spec::runtime::{LinuxIdMapping, Mount};
use std::os::fd::AsRawFd;

use super::path::Resolver;
use crate::cgroups::CgroupState;
use crate::error::{Context, Error, Result};

/// A mount's options, split into what mount(2) takes.
#[derive(Debug, Clone, PartialEq)]
pub struct MountOptions {
    /// Flags to set.
    pub flags: MsFlags,
    /// Propagation changes, applied one by one after the mount.
    pub propagation: Vec<MsFlags>,
    /// Filesystem-specific options, joined with ',' for the data argument.
    pub data: Vec<String>,
    /// MOUNT_ATTR_* to set and clear recursively ("rro", "rnosuid", ...).
    pub recursive_set: u64,
    pub recursive_clear: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_ATIME: u64 = 0x70;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;

/// The recursive variant of an option ("rro" etc.): (set, clear).
fn recursive_attr(option: &str) -> Option<(u64, u64)> {
    Some(match option {
        "rro" => (MOUNT_ATTR_RDONLY, 0),
        "rrw" => (0, MOUNT_ATTR_RDONLY),
        "rnosuid" => (MOUNT_ATTR_NOSUID, 0),
        "rsuid" => (0, MOUNT_ATTR_NOSUID),
        "rnodev" => (MOUNT_ATTR_NODEV, 0),
        "rdev" => (0, MOUNT_ATTR_NODEV),
        "rnoexec" => (MOUNT_ATTR_NOEXEC, 0),
        "rexec" => (0, MOUNT_ATTR_NOEXEC),
        "rnodiratime" => (MOUNT_ATTR_NODIRATIME, 0),
        "rdiratime" => (0, MOUNT_ATTR_NODIRATIME),
        // The access-time mode is one field: clear it, then set one value.
        "rrelatime" => (0, MOUNT_ATTR_ATIME),
        "rnoatime" => (MOUNT_ATTR_NOATIME, MOUNT_ATTR_ATIME),
        "rstrictatime" => (MOUNT_ATTR_STRICTATIME, MOUNT_ATTR_ATIME),
        _ => return None,
    })
}

impl MountOptions {
    pub fn parse(options: &[String]) -> Result<Self> {
        let mut o = MountOptions {
            flags: MsFlags::empty(),
            propagation: Vec::new(),
            data: Vec::new(),
            recursive_set: 0,
            recursive_clear: 0,
        };
        for opt in options {
            let (set, clear) = match opt.as_str() {
                "defaults" => (MsFlags::empty(), MsFlags::empty()),
                "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
                "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
                "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
                "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
                "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
                "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
                "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
                "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
                "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
                "async" => (MsFlags::empty(), MsFlags::MS_SYNCHRONOUS),
                "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
                "remount" => (MsFlags::MS_REMOUNT, MsFlags::empty()),
                "mand" => (MsFlags::MS_MANDLOCK, MsFlags::empty()),
                "nomand" => (MsFlags::empty(), MsFlags::MS_MANDLOCK),
                "atime" => (MsFlags::empty(), MsFlags::MS_NOATIME),
                "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
                "diratime" => (MsFlags::empty(), MsFlags::MS_NODIRATIME),
                "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
                "bind" => (MsFlags::MS_BIND, MsFlags::empty()),
                "rbind" => (MsFlags::MS_BIND | MsFlags::MS_REC, MsFlags::empty()),
                "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
                "norelatime" => (MsFlags::empty(), MsFlags::MS_RELATIME),
                "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
                "nostrictatime" => (MsFlags::empty(), MsFlags::MS_STRICTATIME),
                "lazytime" => (MsFlags::MS_LAZYTIME, MsFlags::empty()),
                "nolazytime" => (MsFlags::empty(), MsFlags::MS_LAZYTIME),
                "silent" => (MsFlags::MS_SILENT, MsFlags::empty()),
                "loud" => (MsFlags::empty(), MsFlags::MS_SILENT),
                // runc's copy-up of the image's content into a tmpfs: the
                // tmpfs itself is what matters; content copy is not done.
                "tmpcopyup" => (MsFlags::empty(), MsFlags::empty()),
                // Id-mapped mounts: applied by the parent to the detached
                // source (see `open_bind_sources`), nothing to do here.
                "idmap" | "ridmap" => (MsFlags::empty(), MsFlags::empty()),
                p => {
                    if let Some(flag) = propagation_flag(p) {
                        o.propagation.push(flag);
                    } else if let Some((set, clear)) = recursive_attr(p) {
                        o.recursive_set = (o.recursive_set & !clear) | set;
                        o.recursive_clear = (o.recursive_clear & !set) | clear;
                    } else {
                        o.data.push(p.to_string());
                    }
                    continue;
                }
            };
            o.flags.insert(set);
            o.flags.remove(clear);
        }
        Ok(o)
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    fn data(&self) -> Option<String> {
        (!self.data.is_empty()).then(|| self.data.join(","))
    }
}

/// The mount(2) flag of a propagation name (`rootfsPropagation`, options).
pub fn propagation_flag(name: &str) -> Option<MsFlags> {
    Some(match name {
        "private" => MsFlags::MS_PRIVATE,
        "rprivate" => MsFlags::MS_PRIVATE | MsFlags::MS_REC,
        "shared" => MsFlags::MS_SHARED,
        "rshared" => MsFlags::MS_SHARED | MsFlags::MS_REC,
        "slave" => MsFlags::MS_SLAVE,
        "rslave" => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        "unbindable" => MsFlags::MS_UNBINDABLE,
        "runbindable" => MsFlags::MS_UNBINDABLE | MsFlags::MS_REC,
        _ => return None,
    })
}

/// What a mount needs to know of its surroundings.
#[derive(Debug)]
pub struct MountContext<'a> {
    pub rootfs: &'a Path,
    pub bundle: &'a Path,
    pub cgroup: &'a CgroupState,
    /// Whether the container has its own cgroup namespace.
    pub cgroupns: bool,
    /// Bind sources opened by the parent, by mount index (see
    /// [`open_bind_sources`]); `None` where the path is to be used.
    pub sources: &'a [Option<std::os::fd::OwnedFd>],
}

/// Whether a spec mount is a bind mount.
pub fn is_bind(m: &Mount) -> bool {
    m.typ().as_deref() == Some("bind")
        || m.options()
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .any(|o| o == "bind" || o == "rbind")
}

/// Detached copies (open_tree) of every bind mount's source, by mount
/// index. The parent makes them before init enters a new user namespace,
/// where the container's root may not be allowed to reach a source the
/// caller can; init attaches them with move_mount, which works across mount
/// namespaces (a plain bind from a descriptor would not).
///
/// An id-mapped mount (`uidMappings`/`gidMappings`, `idmap`, `ridmap`; see
/// [`crate::userns::validate_mounts`]) gets its mapping here, on the
/// detached copy (mount_setattr MOUNT_ATTR_IDMAP through a user namespace
/// with the mount's mappings, or the container's `container` ones when it
/// has none of its own), so init attaches it already mapped.
pub fn open_bind_sources(
    mounts: &[Mount],
    bundle: &Path,
    container: (&[LinuxIdMapping], &[LinuxIdMapping]),
) -> Result<Vec<Option<std::os::fd::OwnedFd>>> {
    // One user namespace per distinct pair of mappings.
    let mut namespaces: Vec<(String, std::os::fd::OwnedFd)> = Vec::new();
    mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let Some(source) = m.source().as_ref().filter(|_| is_bind(m)) else {
                return Ok(None);
            };
            let field = format!("mounts[{i}] ({})", m.destination().display());
            let path = bundle.join(source);
            let recursive = m
                .options()
                .as_deref()
                .unwrap_or(&[])
                .iter()
                .any(|o| o == "rbind");
            let tree = match crate::sys::open_tree_clone(&path, recursive) {
                Ok(tree) => tree,
                // Without privileges (rootless) no copy can be made, and
                // none is needed: the user reaches its own sources.
                Err(nix::errno::Errno::EPERM) if crate::sys::geteuid() != 0 => return Ok(None),
                Err(e) => {
                    return Err(Error::invalid(format!(
                        "{field}: source {}: {e}",
                        path.display()
                    )))
                }
            };
            if let Some(idmap) = crate::userns::MountIdmap::of(m) {
                let uids = idmap.uids.unwrap_or(container.0);
                let gids = idmap.gids.unwrap_or(container.1);
                let key = format!("{uids:?}/{gids:?}");
                let index = match namespaces.iter().position(|(k, _)| *k == key) {
                    Some(index) => index,
                    None => {
                        let userns = crate::userns::new_userns(uids, gids)
                            .map_err(|e| e.context(format!("{field}: id mapping")))?;
                        namespaces.push((key, userns));
                        namespaces.len() - 1
                    }
                };
                use std::os::fd::AsFd;
                crate::sys::idmap_tree(tree.as_fd(), namespaces[index].1.as_fd(), idmap.recursive)
                    .map_err(|e| {
                        Error::invalid(format!(
                            "{field}: id-mapping source {}: {e} (does its filesystem support id-mapped mounts?)",
                            path.display()
                        ))
                    })?;
            }
            Ok(Some(tree))
        })
        .collect()
}

/// Mount spec entry `index` under the rootfs. The destination is created
/// along a path resolved inside the rootfs, then opened with `resolver` and
/// mounted onto through that descriptor, so a symlink swapped in meanwhile
/// cannot redirect the mount to the host.
pub fn mount_entry(
    ctx: &MountContext<'_>,
    resolver: &Resolver,
    index: usize,
    m: &Mount,
) -> Result<()> {
    let field = format!("mounts[{index}] ({})", m.destination().display());
    let options = MountOptions::parse(m.options().as_deref().unwrap_or(&[]))
        .map_err(|e| e.context(&field))?;
    let typ = m.typ().as_deref().unwrap_or("none");
    let dest = m.destination();
    if matches!(typ, "proc" | "sysfs") && resolver.is_symlink(dest) {
        return Err(Error::invalid(format!(
            "{field}: {typ} must be mounted on ordinary directory, not a symlink"
        )));
    }
    let result = if options.is_bind() || typ == "bind" {
        bind_mount(ctx, index, m, &options, resolver)
    } else if typ == "cgroup" || typ == "cgroup2" {
        resolver
            .mkdir_all(dest)
            .and_then(|_| mount_cgroup(ctx, &options, dest, resolver))
    } else {
        resolver.mkdir_all(dest).and_then(|target| {
            let source = m.source().clone().unwrap_or_else(|| PathBuf::from(typ));
            mount(
                Some(&source),
                &target.path,
                Some(typ),
                options.flags,
                options.data().as_deref(),
            )
            .with_context(|| format!("mounting {typ} on {}", dest.display()))
        })
    };
    result.map_err(|e| e.context(&field))?;
    if options.recursive_set != 0 || options.recursive_clear != 0 {
        let target = resolver.open(m.destination())?;
        crate::sys::mount_setattr_recursive(
            &target.path,
            options.recursive_set,
            options.recursive_clear,
        )
        .with_context(|| format!("{field}: setting recursive mount attributes"))?;
    }
    for flag in &options.propagation {
        let target = resolver.open(m.destination())?;
        mount(
            None::<&str>,
            &target.path,
            None::<&str>,
            *flag,
            None::<&str>,
        )
        .with_context(|| format!("{field}: setting propagation of {}", dest.display()))?;
    }
    Ok(())
}

fn bind_mount(
    ctx: &MountContext<'_>,
    index: usize,
    m: &Mount,
    options: &MountOptions,
    resolver: &Resolver,
) -> Result<()> {
    let dest = m.destination();
    let source = m
        .source()
        .as_ref()
        .ok_or_else(|| Error::invalid("source: a bind mount needs a source"))?;
    let shown = ctx.bundle.join(source);
    // A detached copy the parent made for us is looked at through its
    // descriptor, and attached with move_mount.
    let tree = ctx.sources.get(index).and_then(Option::as_ref);
    let source = match tree {
        Some(fd) => {
            use std::os::fd::AsRawFd;
            PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        }
        None => shown.clone(),
    };
    let meta = fs::metadata(&source)
        .map_err(|e| Error::invalid(format!("source {}: {e}", shown.display())))?;
    let target = if meta.is_dir() {
        resolver.mkdir_all(dest)?
    } else {
        resolver.ensure_file(dest)?
    };
    let bind = options.flags & (MsFlags::MS_BIND | MsFlags::MS_REC) | MsFlags::MS_BIND;
    match tree {
        Some(fd) => {
            use std::os::fd::AsFd;
            crate::sys::move_mount_onto(fd.as_fd(), target.fd.as_fd())
        }
        None => mount(
            Some(&source),
            &target.path,
            None::<&str>,
            bind,
            None::<&str>,
        ),
    }
    .with_context(|| format!("bind-mounting {} on {}", shown.display(), dest.display()))?;
    let extra = options.flags - (MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
    if !extra.is_empty() {
        // Reopen: the old descriptor is the directory under the new mount.
        remount_bind(&resolver.open(m.destination())?.path, extra)?;
    }
    Ok(())
}

/// Remount an existing bind mount with `flags`, keeping the flags the
/// kernel would refuse to clear (nosuid, nodev, noexec already set).
pub fn remount_bind(dest: &Path, flags: MsFlags) -> Result<()> {
    let kept = locked_flags(dest);
    mount(
        None::<&str>,
        dest,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags | kept,
        None::<&str>,
    )
    .with_context(|| format!("remounting {} with {flags:?}", dest.display()))
}

fn locked_flags(path: &Path) -> MsFlags {
    use nix::sys::statvfs::{statvfs, FsFlags};
    let Ok(st) = statvfs(path) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (fs, ms) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if f.contains(fs) {
            out |= ms;
        }
    }
    out
}

/// The cgroup filesystem inside the container: on v2 a cgroup2 mount (or a
/// bind of the container's cgroup without a cgroup namespace); on v1 a
/// tmpfs with one bind of the container's cgroup per hierarchy, as runc does.
fn mount_cgroup(
    ctx: &MountContext<'_>,
    options: &MountOptions,
    container_dest: &Path,
    resolver: &Resolver,
) -> Result<()> {
    let flags = options.flags;
    let shown = container_dest.display();
    let target = resolver.open(container_dest)?;
    match ctx.cgroup {
        CgroupState::V2 { path } => {
            if ctx.cgroupns {
                mount(
                    Some("cgroup2"),
                    &target.path,
                    Some("cgroup2"),
                    flags,
                    None::<&str>,
                )
                .with_context(|| format!("mounting cgroup2 on {shown}"))
            } else {
                mount(
                    Some(path),
                    &target.path,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .with_context(|| format!("bind-mounting {} on {shown}", path.display()))?;
                remount_bind(&resolver.open(container_dest)?.path, flags)
            }
        }
        CgroupState::V1 { paths } => {
            let tmpfs_flags = flags - MsFlags::MS_RDONLY;
            mount(
                Some("tmpfs"),
                &target.path,
                Some("tmpfs"),
                tmpfs_flags,
                Some("mode=755"),
            )
            .with_context(|| format!("mounting tmpfs on {shown}"))?;
            // Our fresh tmpfs: nothing else can have put links in it, and
            // still everything in it is made relative to its descriptor.
            let tmpfs = resolver.open(container_dest)?;
            let dest = tmpfs.path.as_path();
            for (name, path) in v1_cgroup_binds(paths) {
                let name = name.as_os_str();
                match nix::sys::stat::mkdirat(
                    &tmpfs.fd,
                    name,
                    nix::sys::stat::Mode::from_bits_truncate(0o755),
                ) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => {
                        return Err(Error::internal(format!(
                            "creating {shown}/{}: {e}",
                            name.to_string_lossy()
                        )))
                    }
                }
                let sub_fd = nix::fcntl::openat(
                    &tmpfs.fd,
                    name,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .with_context(|| format!("opening {shown}/{}", name.to_string_lossy()))?;
                let sub = PathBuf::from(format!("/proc/self/fd/{}", sub_fd.as_raw_fd()));
                mount(
                    Some(path),
                    &sub,
                    None::<&str>,
                    MsFlags::MS_BIND | MsFlags::MS_REC,
                    None::<&str>,
                )
                .with_context(|| {
                    format!(
                        "bind-mounting {} on {shown}/{}",
                        path.display(),
                        name.to_string_lossy()
                    )
                })?;
                // Reopen: the old descriptor is the directory under the mount.
                let mounted = nix::fcntl::openat(
                    &tmpfs.fd,
                    name,
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .with_context(|| format!("opening {shown}/{}", name.to_string_lossy()))?;
                remount_bind(
                    Path::new(&format!("/proc/self/fd/{}", mounted.as_raw_fd())),
                    flags | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                )?;
                let name = name.to_string_lossy();
                if name.contains(',') {
                    for part in name.split(',') {
                        match nix::unistd::symlinkat(name.as_ref(), &tmpfs.fd, part) {
                            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                            Err(e) => {
                                return Err(Error::internal(format!("linking {shown}/{part}: {e}")))
                            }
                        }
                    }
                }
            }
            if flags.contains(MsFlags::MS_RDONLY) {
                remount_bind_fs(dest, tmpfs_flags | MsFlags::MS_RDONLY)?;
            }
            Ok(())
        }
    }
}

fn remount_bind_fs(dest: &Path, flags: MsFlags) -> Result<()> {
    mount(
        None::<&str>,
        dest,
        None::<&str>,
        MsFlags::MS_REMOUNT | flags,
        Some("mode=755"),
    )
    .with_context(|| format!("remounting {} read-only", dest.display()))
}

/// What a v1 cgroup mount in the container holds: for each hierarchy the
/// container's cgroup is in, the name of its directory in the tmpfs (the
/// hierarchy's own name on the host, "cpu,cpuacct") and the container's
/// cgroup there, bind-mounted on it.
pub(crate) fn v1_cgroup_binds(
    paths: &std::collections::BTreeMap<String, PathBuf>,
) -> Vec<(std::ffi::OsString, &Path)> {
    let mountpoints = v1_mountpoints();
    let mut binds: Vec<(std::ffi::OsString, &Path)> = Vec::new();
    for path in paths.values() {
        let Some(mp) = mountpoints
            .iter()
            .filter(|mp| path.starts_with(mp))
            .max_by_key(|mp| mp.as_os_str().len())
        else {
            continue;
        };
        let Some(name) = mp.file_name() else { continue };
        if !binds.iter().any(|(n, _)| n == name) {
            binds.push((name.to_os_string(), path.as_path()));
        }
    }
    binds
}

/// Mount points of v1 cgroup hierarchies (and the unified one on hybrid
/// hosts), from /proc/self/mountinfo.
fn v1_mountpoints() -> Vec<PathBuf> {
    let Ok(text) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            pre.split_whitespace().nth(4).map(PathBuf::from)
        })
        .collect()
}

/// mkdir -p with mode 0755, by path: only for paths of the container
/// after pivot_root (see [`Resolver::mkdir_all`] before it).
pub fn mkdir_all(path: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .with_context(|| format!("creating directory {}", path.display()))
}

/// Make sure a regular file (or any non-directory) exists at `path`; by
/// path, like [`mkdir_all`].
pub fn ensure_file(path: &Path) -> Result<()> {
    if let Some(parent) = path.parent() {
        mkdir_all(parent)?;
    }
    match fs::symlink_metadata(path) {
        Ok(_) => Ok(()),
        Err(_) => fs::File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map(drop)
            .with_context(|| format!("creating {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(list: &[&str]) -> MountOptions {
        MountOptions::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn parses_flags_data_and_propagation() {
        let o = opts(&["nosuid", "strictatime", "mode=755", "size=65536k", "rslave"]);
        assert_eq!(o.flags, MsFlags::MS_NOSUID | MsFlags::MS_STRICTATIME);
        assert_eq!(o.data, vec!["mode=755", "size=65536k"]);
        assert_eq!(o.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        let o = opts(&["rbind", "ro", "rw"]);
        assert!(o.is_bind());
        assert!(!o.flags.contains(MsFlags::MS_RDONLY));
        assert!(o.flags.contains(MsFlags::MS_REC));
    }

    #[test]
    fn idmap_options_are_no_mount_flags() {
        let o = opts(&["rbind", "idmap", "ridmap"]);
        assert_eq!(o.flags, MsFlags::MS_BIND | MsFlags::MS_REC);
        assert!(o.data.is_empty());
    }
}
