//! User namespaces: validating `uidMappings`/`gidMappings`, writing them for
//! a new init, and an id-mapped view of the rootfs when its files belong to
//! the host's root but the container's root is someone else on the host.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::{Context, Error, Result};
use crate::sys;

/// The kernel's limit on lines in uid_map/gid_map.
const MAX_LINES: usize = 340;

/// The uid and gid mappings of a spec (empty when absent).
pub fn mappings(spec: &Spec) -> (&[LinuxIdMapping], &[LinuxIdMapping]) {
    let linux = spec.linux().as_ref();
    (
        linux
            .and_then(|l| l.uid_mappings().as_deref())
            .unwrap_or(&[]),
        linux
            .and_then(|l| l.gid_mappings().as_deref())
            .unwrap_or(&[]),
    )
}

/// Check the mappings against the namespaces asked for.
pub fn validate(spec: &Spec) -> Result<()> {
    let userns = crate::spec::namespace(spec, LinuxNamespaceType::User);
    let (uids, gids) = mappings(spec);
    match userns {
        None if !uids.is_empty() || !gids.is_empty() => Err(Error::invalid(
            "linux.uidMappings/gidMappings: set, but linux.namespaces has no user namespace",
        )),
        None => Ok(()),
        Some(ns) if ns.path().is_some() => {
            if uids.is_empty() && gids.is_empty() {
                Ok(())
            } else {
                Err(Error::invalid(
                    "linux.uidMappings/gidMappings: a joined user namespace (with a path) has its mappings already",
                ))
            }
        }
        Some(_) => {
            check("linux.uidMappings", uids)?;
            check("linux.gidMappings", gids)?;
            let joined = crate::spec::namespaces(spec)
                .iter()
                .find(|n| n.path().is_some());
            match joined {
                Some(n) => Err(Error::unsupported(format!(
                    "linux.namespaces: joining the {} namespace by path together with a new user namespace is not supported yet",
                    n.typ()
                ))),
                None => Ok(()),
            }
        }
    }
}

fn check(field: &str, maps: &[LinuxIdMapping]) -> Result<()> {
    if maps.is_empty() {
        return Err(Error::invalid(format!(
            "{field}: a new user namespace needs at least one mapping"
        )));
    }
    if maps.len() > MAX_LINES {
        return Err(Error::invalid(format!(
            "{field}: {} mappings, the kernel takes at most {MAX_LINES}",
            maps.len()
        )));
    }
    let range = |start: u32, size: u32| (u64::from(start), u64::from(start) + u64::from(size));
    for (i, m) in maps.iter().enumerate() {
        if m.size() == 0 {
            return Err(Error::invalid(format!("{field}[{i}].size: must not be 0")));
        }
        for (what, start) in [("containerID", m.container_id()), ("hostID", m.host_id())] {
            if u64::from(start) + u64::from(m.size()) > u64::from(u32::MAX) {
                return Err(Error::invalid(format!(
                    "{field}[{i}]: {what} {start} + size {} exceeds the id range",
                    m.size()
                )));
            }
        }
        for (j, other) in maps.iter().enumerate().take(i) {
            let overlap = |a: (u64, u64), b: (u64, u64)| a.0 < b.1 && b.0 < a.1;
            if overlap(
                range(m.container_id(), m.size()),
                range(other.container_id(), other.size()),
            ) {
                return Err(Error::invalid(format!(
                    "{field}[{i}]: container ids overlap those of {field}[{j}]"
                )));
            }
            if overlap(
                range(m.host_id(), m.size()),
                range(other.host_id(), other.size()),
            ) {
                return Err(Error::invalid(format!(
                    "{field}[{i}]: host ids overlap those of {field}[{j}]"
                )));
            }
        }
    }
    Ok(())
}

/// The host id that container id `id` maps to.
pub fn host_id(maps: &[LinuxIdMapping], id: u32) -> Option<u32> {
    maps.iter().find_map(|m| {
        let offset = id.checked_sub(m.container_id())?;
        (offset < m.size()).then(|| m.host_id() + offset)
    })
}

fn map_text(maps: &[LinuxIdMapping]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// Write the mappings of process `pid`'s new user namespace (one write
/// each, as the kernel requires).
pub fn write_mappings(pid: i32, uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<()> {
    std::fs::write(format!("/proc/{pid}/uid_map"), map_text(uids))
        .context("linux.uidMappings: writing uid_map")?;
    // Without CAP_SETGID in our namespace, the kernel takes a gid map only
    // once setgroups(2) is denied in the new namespace.
    if sys::geteuid() != 0 {
        std::fs::write(format!("/proc/{pid}/setgroups"), "deny")
            .context("linux.gidMappings: denying setgroups")?;
    }
    std::fs::write(format!("/proc/{pid}/gid_map"), map_text(gids))
        .context("linux.gidMappings: writing gid_map")
}

/// Check the id mappings of the spec's mounts (`mounts[].uidMappings` /
/// `gidMappings`, and the `idmap` / `ridmap` options): only bind mounts
/// can be id-mapped, only in a container with a new user namespace, only
/// by root, and mappings come in uid and gid pairs, each valid as the
/// container's own would have to be. Refused as runc refuses them.
pub fn validate_mounts(spec: &Spec) -> Result<()> {
    let new_userns = crate::spec::namespace(spec, LinuxNamespaceType::User)
        .is_some_and(|ns| ns.path().is_none());
    for (i, m) in spec.mounts().as_deref().unwrap_or(&[]).iter().enumerate() {
        let Some(idmap) = MountIdmap::of(m) else {
            continue;
        };
        let field = format!("mounts[{i}] ({})", m.destination().display());
        if !crate::rootfs::mounts::is_bind(m) {
            return Err(Error::invalid(format!(
                "{field}: uidMappings/gidMappings and the idmap/ridmap options are supported only for bind mounts"
            )));
        }
        if !new_userns {
            return Err(Error::invalid(format!(
                "{field}: id-mapped mounts need the container to have a new user namespace (linux.namespaces has none)"
            )));
        }
        if sys::geteuid() != 0 {
            return Err(Error::unsupported(format!(
                "{field}: id-mapped mounts need root (CAP_SYS_ADMIN in the initial user namespace)"
            )));
        }
        match (idmap.uids, idmap.gids) {
            (None, None) => {}
            (Some(uids), Some(gids)) => {
                check(&format!("{field}.uidMappings"), uids)?;
                check(&format!("{field}.gidMappings"), gids)?;
            }
            _ => {
                return Err(Error::invalid(format!(
                    "{field}: id-mapped mounts need both uidMappings and gidMappings"
                )))
            }
        }
    }
    Ok(())
}

/// How a spec mount is to be id-mapped.
#[derive(Debug, Clone, Copy)]
pub struct MountIdmap<'a> {
    /// The mount's own mappings (`None`: the container's are used).
    pub uids: Option<&'a [LinuxIdMapping]>,
    pub gids: Option<&'a [LinuxIdMapping]>,
    /// `ridmap`: every mount in the tree, not just its top one.
    pub recursive: bool,
}

impl<'a> MountIdmap<'a> {
    /// `None` when the mount is not id-mapped (no mappings, no option).
    pub fn of(m: &'a oci_spec::runtime::Mount) -> Option<Self> {
        let options = m.options().as_deref().unwrap_or(&[]);
        let recursive = options.iter().any(|o| o == "ridmap");
        let asked = recursive || options.iter().any(|o| o == "idmap");
        let uids = m.uid_mappings().as_deref().filter(|v| !v.is_empty());
        let gids = m.gid_mappings().as_deref().filter(|v| !v.is_empty());
        (asked || uids.is_some() || gids.is_some()).then_some(Self {
            uids,
            gids,
            recursive,
        })
    }
}

/// A user namespace with the given mappings, to id-map mounts through: a
/// short-lived child is cloned into a new user namespace, its maps are
/// written, the namespace is opened, and the child ends (the descriptor
/// keeps the namespace alive).
pub fn new_userns(uids: &[LinuxIdMapping], gids: &[LinuxIdMapping]) -> Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let (wait_end, hold_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).context("creating a pipe for a user namespace")?;
    let (fork, _) = sys::clone_fork(libc::CLONE_NEWUSER, None)
        .context("cloning a process into a new user namespace")?;
    let pid = match fork {
        sys::CloneResult::Child => {
            // Wait until the parent has what it needs (end of file).
            drop(hold_end);
            let mut byte = [0u8; 1];
            let _ = nix::unistd::read(&wait_end, &mut byte);
            sys::exit_now(0)
        }
        sys::CloneResult::Parent(pid) => pid,
    };
    drop(wait_end);
    let opened = write_mappings(pid.as_raw(), uids, gids).and_then(|()| {
        std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map(OwnedFd::from)
            .context("opening a new user namespace")
    });
    drop(hold_end);
    let _ = nix::sys::wait::waitpid(pid, None);
    opened
}

/// An id-mapped copy of the rootfs mount tree, for init to put in place of
/// the rootfs, when the rootfs belongs to the host's root while the
/// container's root is another host user: through it the container's root
/// owns its files. `None` when no mapping is needed (the rootfs was already
/// chowned for the mapping) or the filesystem cannot be id-mapped; the
/// container then sees the rootfs as it is, as with runc.
pub fn idmapped_rootfs(
    pid: i32,
    rootfs: &Path,
    uids: &[LinuxIdMapping],
) -> Result<Option<OwnedFd>> {
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(rootfs)
        .with_context(|| format!("{}", rootfs.display()))?
        .uid();
    let root_on_host = host_id(uids, 0);
    if owner != 0 || root_on_host.is_none_or(|h| h == 0) {
        return Ok(None);
    }
    let userns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
        .context("opening the container's user namespace")?;
    let tree = sys::open_tree_clone(rootfs, true)
        .with_context(|| format!("cloning the mount of {}", rootfs.display()))?;
    match sys::idmap_tree(tree.as_fd(), userns.as_fd(), true) {
        Ok(()) => Ok(Some(tree)),
        Err(e) => {
            tracing::warn!(
                "rootfs {}: cannot be id-mapped ({e}); the container sees its files as owned by nobody",
                rootfs.display()
            );
            Ok(None)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(c: u32, h: u32, n: u32) -> LinuxIdMapping {
        serde_json::from_value(serde_json::json!({"containerID": c, "hostID": h, "size": n}))
            .unwrap()
    }

    #[test]
    fn overlaps_and_sizes_are_refused() {
        check("m", &[map(0, 1000, 10)]).unwrap();
        check("m", &[map(0, 1000, 10), map(10, 2000, 5)]).unwrap();
        assert!(check("m", &[]).is_err());
        assert!(check("m", &[map(0, 1000, 0)]).is_err());
        let e = check("m", &[map(0, 1000, 10), map(5, 5000, 10)]).unwrap_err();
        assert!(e.message().contains("container ids overlap"), "{e}");
        let e = check("m", &[map(0, 1000, 10), map(100, 1005, 10)]).unwrap_err();
        assert!(e.message().contains("host ids overlap"), "{e}");
        assert!(check("m", &[map(0, u32::MAX - 1, 10)]).is_err());
        let many: Vec<_> = (0..341).map(|i| map(i, 100_000 + i, 1)).collect();
        assert!(check("m", &many).is_err());
    }

    #[test]
    fn host_ids() {
        let maps = [map(0, 100_000, 1000), map(1000, 5000, 1)];
        assert_eq!(host_id(&maps, 0), Some(100_000));
        assert_eq!(host_id(&maps, 999), Some(100_999));
        assert_eq!(host_id(&maps, 1000), Some(5000));
        assert_eq!(host_id(&maps, 1001), None);
    }
}
