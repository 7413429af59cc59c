//! Whole-tree filesystem helpers the backends share: a faithful copy of a
//! directory tree (owners, modes, times, xattrs, hard links, special files)
//! and disk usage. Trees here are snapshot directories berthd owns; no path
//! below them is followed through a symlink.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};
use walkdir::WalkDir;

use crate::error::{Context, Error, Result};

use super::Usage;

/// One extended attribute: name and value.
pub type Xattr = (Vec<u8>, Vec<u8>);

/// The extended attributes of `path` itself (not of a symlink's target).
/// A filesystem without xattr support has none.
pub fn read_xattrs(path: &Path) -> Result<Vec<Xattr>> {
    let names = loop {
        let len = match rustix::fs::llistxattr_query(path) {
            Ok(len) => len,
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(err) => return Err(io_error(err)).with_context(|| xattr_where(path)),
        };
        let mut names = vec![0u8; len];
        match rustix::fs::llistxattr(path, &mut names[..]) {
            Ok(got) => {
                names.truncate(got);
                break names;
            }
            // The list grew between the two calls: ask again.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(err) => return Err(io_error(err)).with_context(|| xattr_where(path)),
        }
    };
    let mut xattrs = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let value = loop {
            let name_str = OsStr::from_bytes(name);
            let len = match rustix::fs::lgetxattr_query(path, name_str) {
                Ok(len) => len,
                // Removed meanwhile.
                Err(rustix::io::Errno::NODATA) => break None,
                Err(err) => return Err(io_error(err)).with_context(|| xattr_where(path)),
            };
            let mut value = vec![0u8; len];
            match rustix::fs::lgetxattr(path, name_str, &mut value[..]) {
                Ok(got) => {
                    value.truncate(got);
                    break Some(value);
                }
                Err(rustix::io::Errno::RANGE) => continue,
                Err(err) => return Err(io_error(err)).with_context(|| xattr_where(path)),
            }
        };
        if let Some(value) = value {
            xattrs.push((name.to_vec(), value));
        }
    }
    xattrs.sort();
    Ok(xattrs)
}

fn xattr_where(path: &Path) -> String {
    format!("extended attributes of {}", path.display())
}

pub(crate) fn io_error(err: rustix::io::Errno) -> Error {
    Error::from(std::io::Error::from(err))
}

/// Copies the tree at `src` into the existing directory `dst`, keeping
/// owners, modes, times, xattrs, hard links (within the tree), symlinks,
/// fifos, sockets and device nodes.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let mut first_links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    for entry in WalkDir::new(src).follow_links(false).sort_by_file_name() {
        let entry = entry
            .map_err(|e| Error::internal(e.to_string()))
            .with_context(|| format!("walk {}", src.display()))?;
        let from = entry.path();
        let relative = from.strip_prefix(src).unwrap_or(Path::new(""));
        let to = dst.join(relative);
        let meta =
            fs::symlink_metadata(from).with_context(|| format!("stat {}", from.display()))?;
        let file_type = meta.file_type();
        let copy_what = || format!("copy {} to {}", from.display(), to.display());

        if !file_type.is_dir() && meta.nlink() > 1 {
            let inode = (meta.dev(), meta.ino());
            if let Some(first) = first_links.get(&inode) {
                fs::hard_link(first, &to).with_context(copy_what)?;
                continue;
            }
            first_links.insert(inode, to.clone());
        }

        if file_type.is_dir() {
            if !relative.as_os_str().is_empty() {
                fs::create_dir(&to).with_context(copy_what)?;
            }
        } else if file_type.is_file() {
            fs::copy(from, &to).with_context(copy_what)?;
        } else if file_type.is_symlink() {
            let target = fs::read_link(from).with_context(copy_what)?;
            symlink(target, &to).with_context(copy_what)?;
        } else {
            let kind = FileType::from_raw_mode(meta.mode());
            let mode = Mode::from_raw_mode(meta.mode() & 0o7777);
            rustix::fs::mknodat(CWD, &to, kind, mode, meta.rdev())
                .map_err(io_error)
                .with_context(copy_what)?;
        }

        lchown(&to, Some(meta.uid()), Some(meta.gid())).with_context(copy_what)?;
        if !file_type.is_symlink() {
            // After chown, which clears set-id bits.
            fs::set_permissions(&to, fs::Permissions::from_mode(meta.mode() & 0o7777))
                .with_context(copy_what)?;
        }
        for (name, value) in read_xattrs(from)? {
            let name = OsStr::from_bytes(&name);
            rustix::fs::lsetxattr(&to, name, &value, XattrFlags::empty())
                .map_err(io_error)
                .with_context(copy_what)?;
        }
        if file_type.is_dir() {
            // A directory's times change as entries land in it: set last.
            dirs.push((to, meta));
        } else {
            set_times(&to, &meta).with_context(copy_what)?;
        }
    }
    for (dir, meta) in dirs.iter().rev() {
        set_times(dir, meta).with_context(|| format!("set times of {}", dir.display()))?;
    }
    Ok(())
}

/// Sets the access and modification times of `path` itself from `meta`.
fn set_times(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let times = Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        last_modification: Timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    };
    rustix::fs::utimensat(CWD, path, &times, AtFlags::SYMLINK_NOFOLLOW).map_err(io_error)
}

/// Space and inodes used by the tree at `root`, counting each inode once.
pub fn disk_usage(root: &Path) -> Result<Usage> {
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    for entry in WalkDir::new(root).follow_links(false) {
        let entry = entry
            .map_err(|e| Error::internal(e.to_string()))
            .with_context(|| format!("walk {}", root.display()))?;
        let meta = entry
            .metadata()
            .map_err(|e| Error::internal(e.to_string()))
            .with_context(|| format!("stat {}", entry.path().display()))?;
        if seen.insert((meta.dev(), meta.ino())) {
            usage.inodes += 1;
            usage.size += meta.blocks() * 512;
        }
    }
    Ok(usage)
}
