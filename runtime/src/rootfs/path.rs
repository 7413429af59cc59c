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

/// What [`Resolver::walk`] makes of a missing last component.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    /// Nothing: a missing component is an error.
    Existing,
    /// A directory (mode 0755), like every missing component before it.
    Dir,
    /// An empty regular file (mode 0644), created O_CREAT|O_EXCL|O_NOFOLLOW.
    File,
}

impl Resolver {
    /// The directory `container_path`, created (mode 0755, like every
    /// missing parent) when it does not exist.
    pub fn mkdir_all(&self, container_path: &Path) -> Result<Target> {
        self.open_or_create(container_path, Leaf::Dir)
    }

    /// A file (or whatever non-directory is there) at `container_path`, an
    /// empty regular file created when nothing is there: the target of a
    /// bind mount of a file.
    pub fn ensure_file(&self, container_path: &Path) -> Result<Target> {
        self.open_or_create(container_path, Leaf::File)
    }

    /// The directory that holds `container_path` (created when missing)
    /// and the last component's name, for creating a node there with the
    /// *at() system calls, which never follow that last component.
    pub fn parent_and_name(&self, container_path: &Path) -> Result<(Target, OsString)> {
        let name = container_path
            .file_name()
            .filter(|n| *n != "..")
            .ok_or_else(|| {
                Error::invalid(format!(
                    "{}: does not name a file (no last component)",
                    container_path.display()
                ))
            })?;
        let parent = container_path.parent().unwrap_or(Path::new("/"));
        Ok((self.mkdir_all(parent)?, name.to_os_string()))
    }

    /// Whether the last component of `container_path` (its parents
    /// resolved inside the rootfs) is a symlink; `false` when it does not
    /// exist.
    pub fn is_symlink(&self, container_path: &Path) -> bool {
        use nix::fcntl::AtFlags;
        use nix::sys::stat::{fstatat, SFlag};
        let (Some(parent), Some(name)) = (container_path.parent(), container_path.file_name())
        else {
            return false;
        };
        let Ok(dir) = self.open(parent) else {
            return false;
        };
        fstatat(&dir.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
    }

    /// The kernel resolves an existing path in one call (openat2, see
    /// [`Self::open`]); a missing one is walked and created.
    fn open_or_create(&self, container_path: &Path, leaf: Leaf) -> Result<Target> {
        if let Ok(target) = self.open(container_path) {
            use nix::sys::stat::{fstat, SFlag};
            let is_dir = fstat(&target.fd).is_ok_and(|st| {
                SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
            });
            if leaf != Leaf::Dir || is_dir {
                return Ok(target);
            }
        }
        let fd = self.walk(container_path, leaf)?;
        use std::os::fd::AsRawFd;
        let path = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        Ok(Target { fd, path })
    }

    /// Walk `container_path` one component at a time, each looked up with
    /// O_NOFOLLOW in the directory reached so far (a descriptor, never a
    /// path): symlinks are read and followed by us as if the rootfs were
    /// `/`, `..` never climbs above it, and missing components are created
    /// with mkdirat/openat in the directory that should hold them. What a
    /// racer swaps in meanwhile is judged like anything else on the next
    /// lookup, so nothing outside the rootfs is ever created or opened.
    fn walk(&self, container_path: &Path, leaf: Leaf) -> Result<std::os::fd::OwnedFd> {
        use nix::errno::Errno;
        use nix::fcntl::{openat, readlinkat, OFlag};
        use nix::sys::stat::{fstat, mkdirat, Mode, SFlag};
        use std::os::fd::AsFd;
        let shown = container_path.display();
        let mut pending = components(container_path);
        // The directories walked through, below the rootfs; `..` pops one.
        let mut stack: Vec<std::os::fd::OwnedFd> = Vec::new();
        // Symlinks followed and components created: bounded, so that a
        // racer cannot keep us busy forever.
        let mut steps = 0;
        while let Some(part) = pending.pop_front() {
            if part == ".." {
                stack.pop();
                continue;
            }
            if steps > MAX_SYMLINKS {
                return Err(Error::invalid(format!(
                    "{shown}: too many levels of symbolic links (or a component keeps changing)"
                )));
            }
            let dir = stack.last().map_or(self.root_fd.as_fd(), |d| d.as_fd());
            let last = pending.is_empty();
            match openat(
                dir,
                part.as_os_str(),
                OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                Mode::empty(),
            ) {
                Ok(fd) => {
                    let st = fstat(&fd).map_err(|e| {
                        Error::internal(format!("{shown}: inspecting {part:?}: {e}"))
                    })?;
                    match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
                        SFlag::S_IFLNK => {
                            steps += 1;
                            let target = readlinkat(&fd, "").map_err(|e| {
                                Error::internal(format!("{shown}: reading link {part:?}: {e}"))
                            })?;
                            let target = Path::new(&target);
                            if target.is_absolute() {
                                stack.clear();
                            }
                            for (i, c) in components(target).into_iter().enumerate() {
                                pending.insert(i, c);
                            }
                        }
                        SFlag::S_IFDIR => stack.push(fd),
                        _ if last && leaf != Leaf::Dir => return Ok(fd),
                        _ => {
                            return Err(Error::invalid(format!(
                                "{shown}: {part:?} is not a directory"
                            )))
                        }
                    }
                }
                Err(Errno::ENOENT) if leaf != Leaf::Existing => {
                    let created = if last && leaf == Leaf::File {
                        openat(
                            dir,
                            part.as_os_str(),
                            OFlag::O_CREAT
                                | OFlag::O_EXCL
                                | OFlag::O_NOFOLLOW
                                | OFlag::O_WRONLY
                                | OFlag::O_CLOEXEC,
                            Mode::from_bits_truncate(0o644),
                        )
                        .map(drop)
                    } else {
                        mkdirat(dir, part.as_os_str(), Mode::from_bits_truncate(0o755))
                    };
                    steps += 1;
                    match created {
                        // EEXIST: someone was quicker; look at what is there.
                        Ok(()) | Err(Errno::EEXIST) => pending.push_front(part),
                        Err(e) => {
                            return Err(Error::internal(format!(
                                "{shown}: creating {part:?} in the rootfs: {e}"
                            )))
                        }
                    }
                }
                Err(e) => {
                    return Err(Error::internal(format!(
                        "{shown}: opening {part:?} in the rootfs: {e}"
                    )))
                }
            }
        }
        match stack.pop() {
            Some(fd) => Ok(fd),
            None => self
                .root_fd
                .try_clone()
                .map_err(|e| Error::internal(format!("{shown}: duplicating the rootfs: {e}"))),
        }
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

    #[test]
    fn creation_never_leaves_the_root() {
        let outside = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        symlink(outside.path(), root.join("abs")).unwrap();
        symlink("../../../../../../..", root.join("up")).unwrap();
        // A dangling link: its target is created, inside the root.
        symlink("/made/by/link", root.join("dangling")).unwrap();
        let r = Resolver::new(root).unwrap();
        let real = |t: &Target| std::fs::read_link(&t.path).unwrap();
        let canon = root.canonicalize().unwrap();
        let t = r.mkdir_all(Path::new("/abs/x/y")).unwrap();
        assert_eq!(
            real(&t),
            canon
                .join(outside.path().strip_prefix("/").unwrap())
                .join("x/y")
        );
        let t = r.mkdir_all(Path::new("/up/a/../b")).unwrap();
        assert_eq!(real(&t), canon.join("b"));
        let t = r.mkdir_all(Path::new("/dangling/z")).unwrap();
        assert_eq!(real(&t), canon.join("made/by/link/z"));
        let t = r.ensure_file(Path::new("/up/f/file")).unwrap();
        assert_eq!(real(&t), canon.join("f/file"));
        assert!(std::fs::metadata(root.join("f/file")).unwrap().is_file());
        let (parent, name) = r.parent_and_name(Path::new("/abs/dev/null")).unwrap();
        assert_eq!(name, "null");
        assert!(real(&parent).starts_with(&canon));
        assert!(r.parent_and_name(Path::new("/")).is_err());
        // A file in the way of a directory is an error, not a way out.
        assert!(r.mkdir_all(Path::new("/f/file/sub")).is_err());
        assert!(r.is_symlink(Path::new("/abs")));
        assert!(!r.is_symlink(Path::new("/f")));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }
}
