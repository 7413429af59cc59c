//! Resolving container paths inside the root filesystem without ever
//! leaving it: symlinks are followed as if the rootfs were `/`, and `..`
//! stops at the rootfs.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

use crate::error::{Error, Result};

const MAX_SYMLINKS: usize = 255;

/// Join `unsafe_path` (an absolute path as the container sees it) onto
/// `root`, resolving every symlink relative to `root`. Components that do
/// not exist yet are kept as written (their parents are resolved).
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(unsafe_path);
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved
            .iter()
            .fold(root.to_path_buf(), |p, c| p.join(c))
            .join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(Error::invalid(format!(
                        "{}: too many levels of symbolic links",
                        unsafe_path.display()
                    )));
                }
                let target = std::fs::read_link(&candidate).map_err(|e| {
                    Error::internal(format!("reading link {}: {e}", candidate.display()))
                })?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, c) in components(&target).into_iter().enumerate() {
                    pending.insert(i, c);
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(resolved.iter().fold(root.to_path_buf(), |p, c| p.join(c)))
}

/// The normal and `..` components of a path; `/` and `.` dropped.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn stays_inside_root() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("a/b")).unwrap();
        symlink("/etc", root.join("a/abs")).unwrap();
        symlink("../../../../..", root.join("a/up")).unwrap();
        symlink("b", root.join("a/rel")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/a/abs/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/up/etc")).unwrap(),
            root.join("etc")
        );
        assert_eq!(
            secure_join(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            secure_join(root, Path::new("/a/rel/c")).unwrap(),
            root.join("a/b/c")
        );
        assert_eq!(
            secure_join(root, Path::new("/")).unwrap(),
            root.to_path_buf()
        );
        assert!(secure_join(root, Path::new("/loop/x")).is_err());
    }
}

/// A mount target opened inside the rootfs: mounting onto [`Self::path`]
/// (`/proc/self/fd/N`) mounts onto exactly the directory or file that was
/// resolved, whatever happens to the path's components afterwards.
#[derive(Debug)]
pub struct Target {
    pub fd: std::os::fd::OwnedFd,
    pub path: PathBuf,
}

/// Resolves container paths to [`Target`]s with the kernel's help
/// (openat2 with RESOLVE_IN_ROOT): a symlink, even one swapped in after our
/// own checks, cannot lead outside the rootfs (CVE-2021-30465).
#[derive(Debug)]
pub struct Resolver {
    root: PathBuf,
    root_fd: std::os::fd::OwnedFd,
}

impl Resolver {
    pub fn new(root: &Path) -> Result<Self> {
        use nix::fcntl::{open, OFlag};
        use nix::sys::stat::Mode;
        let root_fd = open(
            root,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::internal(format!("opening the rootfs {}: {e}", root.display())))?;
        Ok(Self {
            root: root.to_path_buf(),
            root_fd,
        })
    }

    /// Open `container_path` (which must exist) as an O_PATH descriptor.
    pub fn open(&self, container_path: &Path) -> Result<Target> {
        use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
        use std::os::fd::AsRawFd;
        let relative: PathBuf = components(container_path)
            .into_iter()
            .fold(PathBuf::from("."), |p, c| p.join(c));
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = match openat2(&self.root_fd, &relative, how) {
            Ok(fd) => fd,
            // Kernels before 5.6: resolve ourselves, refuse a final
            // symlink, and check where the descriptor really points.
            Err(nix::errno::Errno::ENOSYS) => {
                let joined = secure_join(&self.root, container_path)?;
                let fd = nix::fcntl::open(
                    &joined,
                    OFlag::O_PATH | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW,
                    nix::sys::stat::Mode::empty(),
                )
                .map_err(|e| Error::internal(format!("opening {}: {e}", joined.display())))?;
                let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .map_err(|e| Error::internal(format!("checking {}: {e}", joined.display())))?;
                if !real.starts_with(&self.root) {
                    return Err(Error::invalid(format!(
                        "{}: resolves outside the rootfs (to {})",
                        container_path.display(),
                        real.display()
                    )));
                }
                fd
            }
            Err(e) => {
                return Err(Error::internal(format!(
                    "opening {} in the rootfs: {e}",
                    container_path.display()
                )))
            }
        };
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Ok(Target { fd, path })
    }
}

#[cfg(test)]
mod resolver_tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn targets_never_leave_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("inside/x")).unwrap();
        std::fs::create_dir_all(outside.path().join("x")).unwrap();
        // An absolute link to the host and a relative one climbing out.
        symlink(outside.path(), root.join("abs")).unwrap();
        symlink("../../../../../../..", root.join("up")).unwrap();
        let r = Resolver::new(root).unwrap();
        let t = r.open(Path::new("/inside/x")).unwrap();
        let real = std::fs::read_link(&t.path).unwrap();
        assert_eq!(real, root.join("inside/x").canonicalize().unwrap());
        // /abs/x is resolved as <root>/<outside>/x, which does not exist.
        assert!(r.open(Path::new("/abs/x")).is_err());
        let t = r.open(Path::new("/up/inside")).unwrap();
        let real = std::fs::read_link(&t.path).unwrap();
        assert_eq!(real, root.join("inside").canonicalize().unwrap());
    }
}
