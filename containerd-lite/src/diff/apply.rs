//! Secure extraction of a layer's tar stream into a directory.
//!
//! Every write goes through a directory file descriptor: an entry's parent
//! is opened with `openat2(RESOLVE_IN_ROOT)`, so `..` and symlinks (absolute
//! or relative) resolve as if the layer root were `/` and can never lead
//! out of it; the entry itself is then created, replaced or changed with
//! `*at` calls on its last component that never follow a symlink. Entry
//! names with a `..` component are refused outright; a leading `/` is
//! dropped (the path is taken relative to the root).

use std::collections::HashSet;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use rustix::fs::{
    AtFlags, Dir, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
};
use rustix::io::Errno;

use crate::error::{Context, Error, Result};

use super::sparse::SparseFile;
use super::ApplyOptions;
use super::{OPAQUE_WHITEOUT, OVERLAY_OPAQUE_XATTR, WHITEOUT_PREFIX};

/// How whiteouts are written.
#[derive(Debug, Clone)]
pub(super) enum WhiteoutStyle {
    /// The root is a plain tree: whiteouts delete what they name.
    Delete,
    /// The root is an overlay upper dir over `lowers` (newest first):
    /// whiteouts become overlay whiteouts, for the mount to interpret.
    Overlay { lowers: Vec<PathBuf> },
}

/// What one entry's header says about ownership, mode, times and xattrs.
struct Attributes {
    uid: Uid,
    gid: Gid,
    mode: Mode,
    mtime: Timespec,
    xattrs: Xattrs,
}

impl Attributes {
    fn times(&self) -> Timestamps {
        Timestamps {
            last_access: self.mtime,
            last_modification: self.mtime,
        }
    }
}

/// Extracts one layer into `root`.
pub(super) struct Extractor<'a> {
    root: OwnedFd,
    whiteouts: WhiteoutStyle,
    options: &'a ApplyOptions,
    /// Bytes written into files so far (sparse files count what they
    /// expand to, not what the stream carried).
    written: u64,
    entries: u64,
    /// Paths this layer created, on a plain tree: an opaque directory
    /// keeps these.
    created: HashSet<PathBuf>,
    /// Directory times, set once nothing more is written into them.
    dir_times: Vec<(Vec<OsString>, Timestamps)>,
    /// The last parent directory opened: entries come grouped by
    /// directory. Forgotten whenever anything is removed, the only way the
    /// path could come to resolve elsewhere.
    parent_cache: Option<(Vec<OsString>, Rc<OwnedFd>)>,
}

fn errno(err: Errno) -> Error {
    Error::from(io::Error::from(err))
}

fn join(components: &[OsString]) -> PathBuf {
    components.iter().collect()
}

/// The longest entry name taken (the kernel's PATH_MAX); it also bounds
/// the memory kept per entry.
const MAX_NAME: usize = 4096;

/// Splits an entry name into its components: `.` and empty parts dropped,
/// a leading `/` ignored, `..` refused.
fn components(name: &[u8]) -> Result<Vec<OsString>> {
    if name.len() > MAX_NAME {
        return Err(Error::invalid(format!(
            "layer entry name of {} bytes: longer than {MAX_NAME}",
            name.len()
        )));
    }
    let mut out = Vec::new();
    for part in name.split(|b| *b == b'/') {
        match part {
            b"" | b"." => continue,
            b".." => {
                return Err(Error::invalid(format!(
                    "layer entry {:?}: '..' would reach outside the layer root",
                    String::from_utf8_lossy(name)
                )))
            }
            part => out.push(OsString::from_vec(part.to_vec())),
        }
    }
    Ok(out)
}

/// `name` as a single path component, for the `*at` calls.
fn leaf(name: &OsStr) -> &Path {
    Path::new(name)
}

impl<'a> Extractor<'a> {
    pub fn new(root: &Path, whiteouts: WhiteoutStyle, options: &'a ApplyOptions) -> Result<Self> {
        let root_fd = rustix::fs::open(
            root,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)
        .with_context(|| format!("open layer root {}", root.display()))?;
        Ok(Extractor {
            root: root_fd,
            whiteouts,
            options,
            written: 0,
            entries: 0,
            created: HashSet::new(),
            dir_times: Vec::new(),
            parent_cache: None,
        })
    }

    /// Extracts every entry of `archive`.
    pub fn extract<R: Read>(&mut self, archive: &mut tar::Archive<R>) -> Result<()> {
        let entries = archive.entries().map_err(tar_error)?;
        for entry in entries {
            let mut entry = entry.map_err(tar_error)?;
            self.entries += 1;
            if self.entries > self.options.max_entries {
                return Err(Error::invalid(format!(
                    "layer has more than {} entries",
                    self.options.max_entries
                )));
            }
            let name = entry.path_bytes().into_owned();
            self.entry(&mut entry)
                .with_context(|| format!("layer entry {:?}", String::from_utf8_lossy(&name)))?;
        }
        // Not synced here: committing the snapshot syncs its filesystem
        // once, however many layers or changes went into it.
        self.set_dir_times()
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let (xattrs, sparse) = pax_records(entry)?;
        let path = match sparse.as_ref().and_then(|s| s.name.as_deref()) {
            Some(name) => components(name)?,
            None => components(&entry.path_bytes())?,
        };
        let kind = entry.header().entry_type();
        if kind == tar::EntryType::XGlobalHeader {
            return Ok(());
        }
        let Some((name, parent)) = path.split_last() else {
            // The root itself: its attributes belong to the snapshot.
            return Ok(());
        };
        if let Some(whiteout) = name.as_bytes().strip_prefix(WHITEOUT_PREFIX.as_bytes()) {
            return self.whiteout(parent, OsStr::from_bytes(whiteout), entry.header());
        }
        if kind.is_character_special() && is_overlay_whiteout(entry.header())? {
            // A whiteout in overlay form inside the tar: as `.wh.<name>`.
            let Some(dir) = self.whiteout_dir(parent)? else {
                return Ok(());
            };
            return self.hide(&dir, name, entry.header());
        }
        self.check_creatable(kind)?;
        let attributes = attributes(entry.header(), xattrs)?;
        let dir = self.parent(parent)?;
        match kind {
            k if k.is_dir() => {
                self.make_dir(&dir, name)?;
                let fd = rustix::fs::openat(
                    &dir,
                    leaf(name),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(errno)?;
                self.set_fd_attributes(&fd, &attributes)?;
                self.dir_times.push((path.clone(), attributes.times()));
            }
            k if k.is_file() || k == tar::EntryType::Continuous || k.is_gnu_sparse() => {
                self.write_file(&dir, name, entry, sparse.as_ref(), &attributes)?;
            }
            k if k.is_symlink() => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::invalid("symlink without a target"))?;
                let target = OsStr::from_bytes(&target);
                self.create_at(&dir, name, || {
                    rustix::fs::symlinkat(target, &dir, leaf(name))
                })?;
                self.set_at_attributes(&dir, name, &attributes, false)?;
            }
            k if k.is_hard_link() => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| Error::invalid("hard link without a target"))?;
                let target = components(&target)?;
                let Some((target_name, target_parent)) = target.split_last() else {
                    return Err(Error::invalid("hard link to the layer root"));
                };
                let target_dir = self
                    .open_dir(target_parent, false)
                    .with_context(|| format!("hard link target {}", join(&target).display()))?;
                self.create_at(&dir, name, || {
                    rustix::fs::linkat(
                        &target_dir,
                        leaf(target_name),
                        &dir,
                        leaf(name),
                        AtFlags::empty(),
                    )
                })
                .with_context(|| format!("hard link to {}", join(&target).display()))?;
            }
            k if k.is_character_special() || k.is_block_special() => {
                let header = entry.header();
                let major = header.device_major().map_err(tar_error)?.unwrap_or(0);
                let minor = header.device_minor().map_err(tar_error)?.unwrap_or(0);
                let file_type = if k.is_block_special() {
                    FileType::BlockDevice
                } else {
                    FileType::CharacterDevice
                };
                let dev = rustix::fs::makedev(major, minor);
                self.create_at(&dir, name, || {
                    rustix::fs::mknodat(&dir, leaf(name), file_type, attributes.mode, dev)
                })?;
                self.set_at_attributes(&dir, name, &attributes, true)?;
            }
            k if k.is_fifo() => {
                self.create_at(&dir, name, || {
                    rustix::fs::mknodat(&dir, leaf(name), FileType::Fifo, attributes.mode, 0)
                })?;
                self.set_at_attributes(&dir, name, &attributes, true)?;
            }
            other => {
                return Err(Error::invalid(format!(
                    "unsupported tar entry type {other:?}"
                )));
            }
        }
        if matches!(self.whiteouts, WhiteoutStyle::Delete) {
            self.created.insert(join(&path));
        }
        Ok(())
    }

    /// The directory at `components`, made if missing; see `open_dir`.
    fn parent(&mut self, components: &[OsString]) -> Result<Rc<OwnedFd>> {
        if let Some((cached, dir)) = &self.parent_cache {
            if cached.as_slice() == components {
                return Ok(Rc::clone(dir));
            }
        }
        let dir = Rc::new(self.open_dir(components, true)?);
        self.parent_cache = Some((components.to_vec(), Rc::clone(&dir)));
        Ok(dir)
    }

    /// Removes `name` from `dir` (recursively, never following symlinks).
    fn remove(&mut self, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        self.parent_cache = None;
        remove_at(dir, name)
    }

    /// Creates `name` in `dir` with `make`; if something is already there,
    /// it is removed first (a layer entry replaces what lower layers had,
    /// and an existing symlink is never written through).
    fn create_at<T>(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        make: impl Fn() -> rustix::io::Result<T>,
    ) -> Result<T> {
        match make() {
            Err(Errno::EXIST) => {
                self.remove(dir, name)?;
                make().map_err(errno)
            }
            other => other.map_err(errno),
        }
    }

    /// Makes the directory `name` in `dir`, keeping one that is there and
    /// replacing anything else.
    fn make_dir(&mut self, dir: &OwnedFd, name: &OsStr) -> Result<()> {
        let mkdir = || rustix::fs::mkdirat(dir, leaf(name), Mode::from_raw_mode(0o700));
        match mkdir() {
            Ok(()) => Ok(()),
            Err(Errno::EXIST) => {
                let stat = rustix::fs::statat(dir, leaf(name), AtFlags::SYMLINK_NOFOLLOW)
                    .map_err(errno)?;
                if FileType::from_raw_mode(stat.st_mode) == FileType::Directory {
                    return Ok(());
                }
                self.remove(dir, name)?;
                mkdir().map_err(errno)
            }
            Err(err) => Err(errno(err)),
        }
    }

    /// Refuses, before anything is touched, entries this layer may not
    /// create: device nodes (unless permitted) and unknown types.
    fn check_creatable(&self, kind: tar::EntryType) -> Result<()> {
        if kind.is_character_special() || kind.is_block_special() {
            if self.options.allow_devices {
                return Ok(());
            }
            return Err(Error::invalid(
                "device node refused (layers may not create block or character devices)",
            ));
        }
        let known = kind.is_dir()
            || kind.is_file()
            || kind == tar::EntryType::Continuous
            || kind.is_gnu_sparse()
            || kind.is_symlink()
            || kind.is_hard_link()
            || kind.is_fifo();
        if known {
            Ok(())
        } else {
            Err(Error::invalid(format!(
                "unsupported tar entry type {kind:?}"
            )))
        }
    }

    /// Creates the regular file `name` in `dir` with the entry's content.
    fn write_file<R: Read>(
        &mut self,
        dir: &OwnedFd,
        name: &OsStr,
        content: &mut tar::Entry<'_, R>,
        sparse: Option<&SparseFile>,
        attributes: &Attributes,
    ) -> Result<()> {
        let fd = self.create_at(dir, name, || {
            rustix::fs::openat(
                dir,
                leaf(name),
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
        })?;
        let mut file = File::from(fd);
        let budget = self.options.max_bytes.saturating_sub(self.written);
        let copied = match sparse {
            Some(sparse) => {
                // Holes cost nothing here, but count: a copy of the file
                // (native snapshots) may fill them.
                if sparse.real_size > budget {
                    return Err(Error::invalid(format!(
                        "layer expands past the limit of {} bytes",
                        self.options.max_bytes
                    )));
                }
                sparse.write(content, &file)?;
                sparse.real_size
            }
            None => io::copy(&mut content.take(budget.saturating_add(1)), &mut file)
                .map_err(|e| Error::invalid(format!("read content: {e}")))?,
        };
        self.written += copied;
        if self.written > self.options.max_bytes {
            return Err(Error::invalid(format!(
                "layer expands past the limit of {} bytes",
                self.options.max_bytes
            )));
        }
        self.set_fd_attributes(&file, attributes)?;
        rustix::fs::futimens(&file, &attributes.times()).map_err(errno)
    }

    /// Owner, mode and xattrs of an open file or directory.
    fn set_fd_attributes(&self, fd: impl AsFd, attributes: &Attributes) -> Result<()> {
        rustix::fs::fchown(&fd, Some(attributes.uid), Some(attributes.gid)).map_err(errno)?;
        // After chown, which clears set-id bits.
        rustix::fs::fchmod(&fd, attributes.mode).map_err(errno)?;
        for (name, value) in &attributes.xattrs {
            rustix::fs::fsetxattr(&fd, name.as_os_str(), value, XattrFlags::empty())
                .map_err(errno)
                .with_context(|| format!("set xattr {}", name.to_string_lossy()))?;
        }
        Ok(())
    }

    /// Owner, mode (`chmod`, not for symlinks) and times of `name` in `dir`,
    /// never following a symlink. Xattrs on these kinds are not kept.
    fn set_at_attributes(
        &self,
        dir: &OwnedFd,
        name: &OsStr,
        attributes: &Attributes,
        chmod: bool,
    ) -> Result<()> {
        rustix::fs::chownat(
            dir,
            leaf(name),
            Some(attributes.uid),
            Some(attributes.gid),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno)?;
        if chmod {
            // `name` was just created by us as a fifo or device node: no
            // symlink for chmod to follow.
            rustix::fs::chmodat(dir, leaf(name), attributes.mode, AtFlags::empty())
                .map_err(errno)?;
        }
        rustix::fs::utimensat(
            dir,
            leaf(name),
            &attributes.times(),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(errno)
    }

    /// Opens the directory at `components` inside the root, resolving
    /// symlinks as if the root were `/`. With `create`, missing
    /// directories are made (mode 0755, or copied from a lower layer).
    fn open_dir(&self, components: &[OsString], create: bool) -> Result<OwnedFd> {
        match self.resolve(components) {
            Err(Errno::NOENT) if create => {}
            other => {
                return other
                    .map_err(errno)
                    .with_context(|| format!("directory {}", join(components).display()))
            }
        }
        let mut dir = self.resolve(&[]).map_err(errno)?;
        for depth in 1..=components.len() {
            let prefix = &components[..depth];
            dir = match self.resolve(prefix) {
                Ok(fd) => fd,
                Err(Errno::NOENT) => {
                    let name = &prefix[depth - 1];
                    let mode = self.lower_dir_mode(prefix);
                    rustix::fs::mkdirat(&dir, leaf(name), Mode::from_raw_mode(0o755))
                        .map_err(errno)
                        .with_context(|| format!("create directory {}", join(prefix).display()))?;
                    if let Some((mode, uid, gid)) = mode {
                        rustix::fs::chownat(
                            &dir,
                            leaf(name),
                            Some(uid),
                            Some(gid),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(errno)?;
                        rustix::fs::chmodat(&dir, leaf(name), mode, AtFlags::empty())
                            .map_err(errno)?;
                    }
                    self.resolve(prefix).map_err(errno)?
                }
                Err(err) => {
                    return Err(errno(err))
                        .with_context(|| format!("directory {}", join(prefix).display()))
                }
            };
        }
        Ok(dir)
    }

    fn resolve(&self, components: &[OsString]) -> rustix::io::Result<OwnedFd> {
        let path = if components.is_empty() {
            PathBuf::from(".")
        } else {
            join(components)
        };
        rustix::fs::openat2(
            &self.root,
            &path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    }

    /// On an overlay upper dir, a directory made only to hold an entry
    /// takes the owner and mode it has in the nearest lower layer, so it
    /// does not hide them. Lower paths are looked up without symlinks.
    fn lower_dir_mode(&self, components: &[OsString]) -> Option<(Mode, Uid, Gid)> {
        let WhiteoutStyle::Overlay { lowers } = &self.whiteouts else {
            return None;
        };
        let path = join(components);
        lowers.iter().find_map(|lower| {
            let lower = rustix::fs::open(
                lower,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            let fd = rustix::fs::openat2(
                &lower,
                &path,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
                ResolveFlags::IN_ROOT | ResolveFlags::NO_SYMLINKS,
            )
            .ok()?;
            let stat = rustix::fs::fstat(&fd).ok()?;
            Some((
                Mode::from_raw_mode(stat.st_mode & 0o7777),
                Uid::from_raw(stat.st_uid),
                Gid::from_raw(stat.st_gid),
            ))
        })
    }

    /// Handles `.wh.<name>` (remove `name`) and `.wh..wh..opq` (hide what
    /// lower layers have in the directory).
    fn whiteout(&mut self, parent: &[OsString], name: &OsStr, header: &tar::Header) -> Result<()> {
        let Some(dir) = self.whiteout_dir(parent)? else {
            return Ok(());
        };
        if name.as_bytes() == &OPAQUE_WHITEOUT.as_bytes()[WHITEOUT_PREFIX.len()..] {
            return self.opaque(parent, &dir);
        }
        if name.as_bytes().starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Other `.wh..wh.` names are aufs bookkeeping, meaningless here.
            return Ok(());
        }
        self.hide(&dir, name, header)
    }

    /// The directory a whiteout applies in. An overlay whiteout needs it
    /// in the upper dir, so it is made; on a plain tree a missing
    /// directory has nothing to delete (`None`), and none is made.
    fn whiteout_dir(&self, parent: &[OsString]) -> Result<Option<OwnedFd>> {
        match self.whiteouts {
            WhiteoutStyle::Overlay { .. } => self.open_dir(parent, true).map(Some),
            WhiteoutStyle::Delete => match self.resolve(parent) {
                Ok(dir) => Ok(Some(dir)),
                Err(Errno::NOENT | Errno::NOTDIR) => Ok(None),
                Err(err) => {
                    Err(errno(err)).with_context(|| format!("directory {}", join(parent).display()))
                }
            },
        }
    }

    /// Removes `name` from `dir` as the whiteout style says: deleted, or
    /// replaced by an overlay whiteout.
    fn hide(&mut self, dir: &OwnedFd, name: &OsStr, header: &tar::Header) -> Result<()> {
        // `.wh..` or `.wh...` would name the directory itself or its parent.
        if name.is_empty() || name == "." || name == ".." {
            return Err(Error::invalid("whiteout without a valid name"));
        }
        match &self.whiteouts {
            WhiteoutStyle::Delete => match self.remove(dir, name) {
                Err(err) if err.kind == crate::ErrorKind::NotFound => Ok(()),
                other => other,
            },
            WhiteoutStyle::Overlay { .. } => {
                match self.remove(dir, name) {
                    Err(err) if err.kind != crate::ErrorKind::NotFound => return Err(err),
                    _ => {}
                }
                // An overlay whiteout: a 0/0 character device.
                rustix::fs::mknodat(dir, leaf(name), FileType::CharacterDevice, Mode::empty(), 0)
                    .map_err(errno)
                    .context("create overlay whiteout")?;
                let uid = header.uid().map_err(tar_error)?;
                let gid = header.gid().map_err(tar_error)?;
                let (uid, gid) = (id32(uid)?, id32(gid)?);
                rustix::fs::chownat(
                    dir,
                    leaf(name),
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::SYMLINK_NOFOLLOW,
                )
                .map_err(errno)
            }
        }
    }

    fn opaque(&mut self, parent: &[OsString], dir: &OwnedFd) -> Result<()> {
        let readable = rustix::fs::openat(
            dir,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno)?;
        match &self.whiteouts {
            WhiteoutStyle::Overlay { .. } => {
                rustix::fs::fsetxattr(&readable, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
                    .map_err(errno)
                    .context("mark directory opaque")
            }
            WhiteoutStyle::Delete => {
                let mut doomed = Vec::new();
                for child in Dir::read_from(&readable).map_err(errno)? {
                    let child = child.map_err(errno)?;
                    let name = OsStr::from_bytes(child.file_name().to_bytes());
                    if name == "." || name == ".." {
                        continue;
                    }
                    let mut path = join(parent);
                    path.push(name);
                    if !self.created.contains(&path) {
                        doomed.push(name.to_os_string());
                    }
                }
                for name in doomed {
                    self.remove(dir, &name)?;
                }
                Ok(())
            }
        }
    }

    /// Sets directory times last, deepest first, as entries landing in a
    /// directory change its times.
    fn set_dir_times(&mut self) -> Result<()> {
        for (path, times) in std::mem::take(&mut self.dir_times).iter().rev() {
            let Some((name, parent)) = path.split_last() else {
                continue;
            };
            let dir = match self.resolve(parent) {
                Ok(dir) => dir,
                // Removed by a later whiteout.
                Err(Errno::NOENT) => continue,
                Err(err) => return Err(errno(err)),
            };
            match rustix::fs::utimensat(&dir, leaf(name), times, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(err) => {
                    return Err(errno(err))
                        .with_context(|| format!("set times of {}", join(path).display()))
                }
            }
        }
        Ok(())
    }
}

/// Whether a character device entry is 0/0: overlayfs's whiteout.
fn is_overlay_whiteout(header: &tar::Header) -> Result<bool> {
    let major = header.device_major().map_err(tar_error)?;
    let minor = header.device_minor().map_err(tar_error)?;
    Ok(major == Some(0) && minor == Some(0))
}

fn tar_error(err: io::Error) -> Error {
    Error::invalid(format!("malformed tar: {err}"))
}

fn id32(id: u64) -> Result<u32> {
    u32::try_from(id).map_err(|_| Error::invalid(format!("owner id {id} out of range")))
}

/// Extended attributes as a layer carries them: name and value.
type Xattrs = Vec<(OsString, Vec<u8>)>;

/// The xattrs (`SCHILY.xattr.*`) and sparse layout (`GNU.sparse.*`) an
/// entry's PAX records give.
fn pax_records<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<(Xattrs, Option<SparseFile>)> {
    let Some(pax) = entry.pax_extensions().map_err(tar_error)? else {
        return Ok((Vec::new(), None));
    };
    let records = pax
        .map(|r| r.map(|r| (r.key_bytes(), r.value_bytes())))
        .collect::<io::Result<Vec<_>>>()
        .map_err(tar_error)?;
    let mut xattrs = Vec::new();
    for (key, value) in &records {
        if let Some(name) = key.strip_prefix(b"SCHILY.xattr.") {
            // A layer may not speak for the overlay filesystem.
            if !name.starts_with(b"trusted.overlay.") {
                xattrs.push((OsString::from_vec(name.to_vec()), value.to_vec()));
            }
        }
    }
    let sparse = SparseFile::from_pax(records.iter().copied())?;
    Ok((xattrs, sparse))
}

/// The attributes of an entry: its header, and the xattrs of its PAX records.
fn attributes(header: &tar::Header, xattrs: Xattrs) -> Result<Attributes> {
    let mtime = header.mtime().map_err(tar_error)?;
    Ok(Attributes {
        uid: Uid::from_raw(id32(header.uid().map_err(tar_error)?)?),
        gid: Gid::from_raw(id32(header.gid().map_err(tar_error)?)?),
        mode: Mode::from_raw_mode(header.mode().map_err(tar_error)? & 0o7777),
        mtime: Timespec {
            tv_sec: i64::try_from(mtime).unwrap_or(i64::MAX),
            tv_nsec: 0,
        },
        xattrs,
    })
}

/// Removes `name` from `dir`, recursively for a directory, never following
/// a symlink.
pub(super) fn remove_at(dir: &OwnedFd, name: &OsStr) -> Result<()> {
    if name.is_empty() || name == "." || name == ".." || name.as_bytes().contains(&b'/') {
        return Err(Error::invalid(format!(
            "remove {:?}: not a single entry name",
            name.to_string_lossy()
        )));
    }
    match rustix::fs::unlinkat(dir, leaf(name), AtFlags::empty()) {
        Ok(()) => return Ok(()),
        Err(Errno::ISDIR) => {}
        Err(err) => {
            return Err(errno(err)).with_context(|| format!("remove {}", name.to_string_lossy()))
        }
    }
    let sub = rustix::fs::openat(
        dir,
        leaf(name),
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno)?;
    let mut children = Vec::new();
    for child in Dir::read_from(&sub).map_err(errno)? {
        let child = child.map_err(errno)?;
        let child = OsStr::from_bytes(child.file_name().to_bytes());
        if child != "." && child != ".." {
            children.push(child.to_os_string());
        }
    }
    for child in children {
        remove_at(&sub, &child)?;
    }
    rustix::fs::unlinkat(dir, leaf(name), AtFlags::REMOVEDIR)
        .map_err(errno)
        .with_context(|| format!("remove directory {}", name.to_string_lossy()))
}
