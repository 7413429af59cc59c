//! Computing a layer: the changes between two trees, written as an OCI
//! layer tar.
//!
//! Two ways to find the changes:
//! - an overlay upper dir already is the change set: walk it, turning
//!   overlay whiteouts (0/0 character devices) into `.wh.<name>` entries and
//!   opaque directories into `.wh..wh..opq`;
//! - otherwise walk both trees side by side: what only the upper tree has
//!   is added, what differs in type, content or metadata is modified, and
//!   what only the lower tree has is deleted (one whiteout for a deleted
//!   directory, none for what was inside it).
//!
//! Parents of every entry are written before it (with the upper tree's
//! metadata) so the layer recreates them faithfully on any base.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, Metadata};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use walkdir::WalkDir;

use crate::error::{Context, Error, Result};
use crate::snapshots::tree::read_xattrs;

use super::{OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// What changed at one path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// Present in the upper tree (added or modified): written as an entry.
    Write,
    /// A directory whose lower contents are all hidden (overlay opaque):
    /// written as an entry followed by an opaque whiteout.
    WriteOpaque,
    /// Gone from the upper tree: written as a whiteout.
    Delete,
}

/// Changes by path; a path sorts before everything below it.
pub(super) type Changes = BTreeMap<PathBuf, Change>;

fn walk_error(root: &Path) -> impl Fn(walkdir::Error) -> Error + '_ {
    move |e| Error::internal(format!("walk {}: {e}", root.display()))
}

fn relative<'a>(path: &'a Path, root: &Path) -> &'a Path {
    path.strip_prefix(root).unwrap_or(path)
}

/// The changes an overlay upper dir records.
pub(super) fn overlay_changes(upper: &Path) -> Result<Changes> {
    let mut changes = Changes::new();
    for entry in WalkDir::new(upper).min_depth(1).follow_links(false) {
        let entry = entry.map_err(walk_error(upper))?;
        let meta = entry
            .metadata()
            .map_err(|e| Error::internal(e.to_string()))?;
        let path = relative(entry.path(), upper).to_path_buf();
        let change = if meta.file_type().is_char_device() && meta.rdev() == 0 {
            Change::Delete
        } else if meta.is_dir() && is_opaque(entry.path())? {
            Change::WriteOpaque
        } else {
            Change::Write
        };
        changes.insert(path, change);
    }
    Ok(changes)
}

fn is_opaque(dir: &Path) -> Result<bool> {
    Ok(read_xattrs(dir)?
        .iter()
        .any(|(name, value)| name == OVERLAY_OPAQUE_XATTR.as_bytes() && value == b"y"))
}

/// The changes that turn the tree `lower` into the tree `upper`.
pub(super) fn tree_changes(lower: &Path, upper: &Path) -> Result<Changes> {
    let mut changes = Changes::new();
    // Below a directory the lower tree lacks (or has as something else),
    // everything is new, and the lower tree is not looked into: its path
    // there could lead through a symlink.
    let mut new_subtree: Option<PathBuf> = None;
    for entry in WalkDir::new(upper).min_depth(1).follow_links(false) {
        let entry = entry.map_err(walk_error(upper))?;
        let path = relative(entry.path(), upper);
        if new_subtree
            .as_deref()
            .is_some_and(|dir| path.starts_with(dir))
        {
            changes.insert(path.to_path_buf(), Change::Write);
            continue;
        }
        let upper_meta = fs::symlink_metadata(entry.path())
            .with_context(|| format!("stat {}", entry.path().display()))?;
        let lower_path = lower.join(path);
        let lower_meta = match fs::symlink_metadata(&lower_path) {
            Ok(meta) => Some(meta),
            Err(err) if err.kind() == io::ErrorKind::NotFound => None,
            Err(err) => return Err(err).with_context(|| format!("stat {}", lower_path.display())),
        };
        if upper_meta.is_dir() && !lower_meta.as_ref().is_some_and(|m| m.is_dir()) {
            new_subtree = Some(path.to_path_buf());
        }
        let same = match &lower_meta {
            Some(lower_meta) => same_file(&lower_path, lower_meta, entry.path(), &upper_meta)?,
            None => false,
        };
        if !same {
            changes.insert(path.to_path_buf(), Change::Write);
        }
    }
    let mut walk = WalkDir::new(lower)
        .min_depth(1)
        .follow_links(false)
        .into_iter();
    while let Some(entry) = walk.next() {
        let entry = entry.map_err(walk_error(lower))?;
        let path = relative(entry.path(), lower);
        let is_dir = entry.file_type().is_dir();
        match fs::symlink_metadata(upper.join(path)) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                changes.insert(path.to_path_buf(), Change::Delete);
                if is_dir {
                    walk.skip_current_dir();
                }
            }
            Err(err) => {
                return Err(err).with_context(|| format!("stat {}", upper.join(path).display()))
            }
            // Replaced by a non-directory: the new entry hides all of it.
            Ok(meta) if is_dir && !meta.is_dir() => walk.skip_current_dir(),
            Ok(_) => {}
        }
    }
    Ok(changes)
}

/// Whether two files are the same for a layer: type, owner, mode, xattrs,
/// link target or device, and for files size, mtime and (when the times
/// cannot tell) content. Directory times are not compared: they move
/// whenever an entry inside changes, which the layer records anyway.
fn same_file(lower: &Path, lm: &Metadata, upper: &Path, um: &Metadata) -> Result<bool> {
    if lm.mode() != um.mode() || lm.uid() != um.uid() || lm.gid() != um.gid() {
        return Ok(false);
    }
    if read_xattrs(lower)? != read_xattrs(upper)? {
        return Ok(false);
    }
    let kind = um.file_type();
    if kind.is_dir() {
        return Ok(true);
    }
    if kind.is_symlink() {
        return Ok(fs::read_link(lower)? == fs::read_link(upper)?);
    }
    if kind.is_char_device() || kind.is_block_device() {
        return Ok(lm.rdev() == um.rdev());
    }
    if !kind.is_file() {
        return Ok(true);
    }
    if lm.size() != um.size() || lm.mtime() != um.mtime() || lm.mtime_nsec() != um.mtime_nsec() {
        return Ok(false);
    }
    if um.mtime_nsec() != 0 {
        return Ok(true);
    }
    // Times with no sub-second part may have been truncated by a copy:
    // compare the bytes.
    same_content(lower, upper)
}

fn same_content(a: &Path, b: &Path) -> Result<bool> {
    let (mut a, mut b) = (File::open(a)?, File::open(b)?);
    let (mut buf_a, mut buf_b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        let m = read_full(&mut b, &mut buf_b)?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    Ok(filled)
}

/// Writes `changes`, read from the tree at `upper`, as tar entries.
pub(super) fn write_changes<W: Write>(upper: &Path, changes: &Changes, out: W) -> Result<W> {
    let mut writer = LayerWriter {
        upper,
        builder: tar::Builder::new(out),
        written_dirs: HashSet::new(),
        first_links: HashMap::new(),
    };
    for (path, change) in changes {
        writer.parents(path)?;
        match change {
            Change::Delete => {
                let name = path.file_name().unwrap_or_default();
                let mut whiteout = std::ffi::OsString::from(WHITEOUT_PREFIX);
                whiteout.push(name);
                writer.empty_file(&path.with_file_name(whiteout))?;
            }
            Change::Write => writer.entry(path)?,
            Change::WriteOpaque => {
                writer.entry(path)?;
                writer.empty_file(&path.join(OPAQUE_WHITEOUT))?;
            }
        }
    }
    writer.builder.into_inner().context("finish layer tar")
}

struct LayerWriter<'a, W: Write> {
    upper: &'a Path,
    builder: tar::Builder<W>,
    written_dirs: HashSet<PathBuf>,
    /// First path written for each multiply-linked inode.
    first_links: HashMap<(u64, u64), PathBuf>,
}

impl<W: Write> LayerWriter<'_, W> {
    fn parents(&mut self, path: &Path) -> Result<()> {
        let mut missing: Vec<&Path> = path
            .ancestors()
            .skip(1)
            .filter(|p| !p.as_os_str().is_empty())
            .take_while(|p| !self.written_dirs.contains(*p))
            .collect();
        missing.reverse();
        for dir in missing {
            self.entry(dir)?;
        }
        Ok(())
    }

    /// A whiteout marker: an empty regular file.
    fn empty_file(&mut self, path: &Path) -> Result<()> {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_size(0);
        header.set_mtime(0);
        self.builder
            .append_data(&mut header, path, io::empty())
            .with_context(|| format!("write {}", path.display()))
    }

    /// The entry for `path` as the upper tree has it.
    fn entry(&mut self, path: &Path) -> Result<()> {
        let source = self.upper.join(path);
        let what = || format!("write {}", path.display());
        let meta = fs::symlink_metadata(&source).with_context(what)?;
        let kind = meta.file_type();
        if kind.is_socket() {
            // Sockets have no tar form; they are not part of a layer.
            return Ok(());
        }
        let xattrs: Vec<(String, Vec<u8>)> = read_xattrs(&source)?
            .into_iter()
            .filter(|(name, _)| !name.starts_with(b"trusted.overlay."))
            .filter_map(|(name, value)| {
                String::from_utf8(name)
                    .ok()
                    .map(|n| (format!("SCHILY.xattr.{n}"), value))
            })
            .collect();
        if !xattrs.is_empty() {
            self.builder
                .append_pax_extensions(xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .with_context(what)?;
        }
        let mut header = tar::Header::new_gnu();
        header.set_mode(meta.mode() & 0o7777);
        header.set_uid(u64::from(meta.uid()));
        header.set_gid(u64::from(meta.gid()));
        header.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        header.set_size(0);

        if !kind.is_dir() && meta.nlink() > 1 {
            let inode = (meta.dev(), meta.ino());
            if let Some(first) = self.first_links.get(&inode) {
                header.set_entry_type(tar::EntryType::Link);
                let first = first.clone();
                return self
                    .builder
                    .append_link(&mut header, path, first)
                    .with_context(what);
            }
            self.first_links.insert(inode, path.to_path_buf());
        }

        if kind.is_dir() {
            header.set_entry_type(tar::EntryType::Directory);
            self.written_dirs.insert(path.to_path_buf());
            self.builder
                .append_data(&mut header, path, io::empty())
                .with_context(what)
        } else if kind.is_file() {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(meta.size());
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                .open(&source)
                .with_context(what)?;
            let content = ExactReader {
                inner: file,
                remaining: meta.size(),
            };
            self.builder
                .append_data(&mut header, path, content)
                .with_context(what)
        } else if kind.is_symlink() {
            header.set_entry_type(tar::EntryType::Symlink);
            let target = fs::read_link(&source).with_context(what)?;
            self.builder
                .append_link(&mut header, path, target)
                .with_context(what)
        } else {
            let entry_type = if kind.is_fifo() {
                tar::EntryType::Fifo
            } else if kind.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Char
            };
            header.set_entry_type(entry_type);
            if !kind.is_fifo() {
                let rdev = meta.rdev();
                header
                    .set_device_major(rustix::fs::major(rdev))
                    .with_context(what)?;
                header
                    .set_device_minor(rustix::fs::minor(rdev))
                    .with_context(what)?;
            }
            self.builder
                .append_data(&mut header, path, io::empty())
                .with_context(what)
        }
    }
}

/// Reads exactly `remaining` bytes, failing if the file got shorter since
/// its size went into the header (a longer file is cut at that size), so a
/// file changing under us can never produce a corrupt tar.
struct ExactReader<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for ExactReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.remaining).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being written to the layer",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}
