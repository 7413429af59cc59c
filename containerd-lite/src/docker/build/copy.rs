//! COPY and ADD: files from the build context (or another stage's or
//! image's filesystem) into a step's mounted root filesystem, with
//! docker's rules: a directory source copies its contents, a destination
//! ending in `/` (or an existing directory, or several sources) receives
//! files by their base names, new files belong to root unless `--chown`
//! says otherwise, modes and modification times are kept, and ADD unpacks
//! local tar archives (plain, gzip, zstd).
//!
//! Paths on both sides resolve as if their root were `/`: `..` stops at
//! the root and symlinks are followed inside it, never out (no process
//! runs on either tree while a step copies). An existing symlink at a
//! destination is replaced, never written through.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fs::{self, File};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest as _, Sha256};

use crate::diff::{self, ApplyOptions};
use crate::error::Context as _;
use crate::snapshots::mount::Mount;
use crate::{Error, Result};

/// Most symlinks followed while resolving one path (Linux's limit).
const MAX_SYMLINKS: usize = 40;

/// One source of a COPY, found in its tree.
#[derive(Debug, Clone)]
pub struct Source {
    /// The path as matched, relative to the tree's root.
    pub relative: String,
    /// Where it is on the host (symlinks resolved inside the tree).
    pub path: PathBuf,
    /// Downloaded by ADD from a URL: copied as a file, never unpacked.
    pub remote: bool,
}

/// What a COPY or ADD does, its words expanded.
#[derive(Debug, Clone)]
pub struct CopySpec {
    pub instruction: &'static str,
    pub sources: Vec<String>,
    pub dest: String,
    /// The working directory a relative destination starts from.
    pub workdir: String,
    pub owner: (u32, u32),
    pub chmod: Option<u32>,
    /// ADD: local tar archives are unpacked.
    pub unpack_archives: bool,
}

/// Whether a pattern has glob characters.
fn is_pattern(text: &str) -> bool {
    text.contains(['*', '?', '['])
}

/// Splits a path into its normal components (`.` and a leading `/`
/// dropped, `..` kept for the resolver).
fn parts(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(part) => Some(part.to_owned()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// `path` resolved inside `root` as if `root` were `/`. With
/// `follow_last`, a symlink in the last component is followed too.
/// Components that do not exist are kept as they are.
pub fn resolve_in(root: &Path, path: &str, follow_last: bool) -> Result<PathBuf> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending: VecDeque<OsString> = parts(Path::new(path)).into();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let mut candidate = root.to_path_buf();
        candidate.extend(&resolved);
        candidate.push(&part);
        let is_last = pending.is_empty();
        let is_link = fs::symlink_metadata(&candidate).is_ok_and(|m| m.file_type().is_symlink());
        if is_link && (!is_last || follow_last) {
            links += 1;
            if links > MAX_SYMLINKS {
                return Err(Error::invalid(format!(
                    "{path}: too many levels of symbolic links"
                )));
            }
            let target = fs::read_link(&candidate)
                .with_context(|| format!("reading the link {}", candidate.display()))?;
            if target.is_absolute() {
                resolved.clear();
            }
            for part in parts(&target).into_iter().rev() {
                pending.push_front(part);
            }
            continue;
        }
        resolved.push(part);
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// The sources `patterns` name in the tree at `root`. `what` names the
/// tree in errors ("build context", "stage builder", ...).
pub fn find_sources(
    root: &Path,
    patterns: &[String],
    what: &str,
    instruction: &str,
) -> Result<Vec<Source>> {
    let mut found = Vec::new();
    for pattern in patterns {
        let clean = clean_relative(pattern);
        if !is_pattern(&clean) {
            let path = resolve_in(root, &clean, true)?;
            if fs::symlink_metadata(&path).is_err() {
                return Err(Error::invalid(format!(
                    "{instruction} failed: file not found in {what} or excluded by .dockerignore: stat {clean}: file does not exist"
                )));
            }
            found.push(Source {
                relative: clean,
                path,
                remote: false,
            });
            continue;
        }
        let glob = glob::Pattern::new(&clean).map_err(|err| {
            Error::invalid(format!("{instruction} {pattern}: bad pattern: {err}"))
        })?;
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        let mut matched = Vec::new();
        let walker = walkdir::WalkDir::new(root).min_depth(1).sort_by_file_name();
        for entry in walker {
            let entry =
                entry.map_err(|err| Error::internal(format!("walking the {what}: {err}")))?;
            let Ok(relative) = entry.path().strip_prefix(root) else {
                continue;
            };
            let Some(relative) = relative.to_str() else {
                continue;
            };
            if glob.matches_with(relative, options) {
                matched.push(Source {
                    relative: relative.to_owned(),
                    path: resolve_in(root, relative, true)?,
                    remote: false,
                });
            }
        }
        if matched.is_empty() {
            return Err(Error::invalid(format!(
                "{instruction} failed: no source files were specified"
            )));
        }
        found.extend(matched);
    }
    Ok(found)
}

/// `path` without a leading `/`, `.` components and doubled slashes.
fn clean_relative(path: &str) -> String {
    let kept: Vec<&str> = path
        .split('/')
        .filter(|part| !part.is_empty() && *part != ".")
        .collect();
    if kept.is_empty() {
        ".".to_owned()
    } else {
        kept.join("/")
    }
}

/// A digest of everything the sources hold that a copy depends on:
/// names, types, modes, link targets and contents (not times or owners).
/// `file:`, `dir:` or `multi:` prefixed, as docker names copied sources.
pub fn content_digest(sources: &[Source]) -> Result<String> {
    let mut hasher = Sha256::new();
    for source in sources {
        hasher.update(source.relative.as_bytes());
        hasher.update([0]);
        let walker = walkdir::WalkDir::new(&source.path).sort_by_file_name();
        for entry in walker {
            let entry = entry
                .map_err(|err| Error::internal(format!("reading {}: {err}", source.relative)))?;
            let meta = entry
                .path()
                .symlink_metadata()
                .with_context(|| format!("reading {}", entry.path().display()))?;
            let name = entry
                .path()
                .strip_prefix(&source.path)
                .unwrap_or(entry.path());
            hasher.update(name.as_os_str().as_bytes());
            hasher.update([0]);
            hasher.update(meta.mode().to_le_bytes());
            if meta.file_type().is_symlink() {
                let target = fs::read_link(entry.path())
                    .with_context(|| format!("reading {}", entry.path().display()))?;
                hasher.update(target.as_os_str().as_bytes());
            } else if meta.is_file() {
                hasher.update(meta.len().to_le_bytes());
                let mut file = File::open(entry.path())
                    .with_context(|| format!("reading {}", entry.path().display()))?;
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = file
                        .read(&mut buf)
                        .with_context(|| format!("reading {}", entry.path().display()))?;
                    if n == 0 {
                        break;
                    }
                    hasher.update(&buf[..n]);
                }
            }
            hasher.update([0xff]);
        }
    }
    let hex = hex::encode(hasher.finalize());
    let kind = match sources {
        [one] if one.path.is_dir() => "dir",
        [_] => "file",
        _ => "multi",
    };
    Ok(format!("{kind}:{hex}"))
}

/// Copies `sources` into the tree at `rootfs` as `spec` says.
pub fn copy(rootfs: &Path, sources: &[Source], spec: &CopySpec) -> Result<()> {
    let dest = if spec.dest.starts_with('/') {
        spec.dest.clone()
    } else {
        format!("{}/{}", spec.workdir.trim_end_matches('/'), spec.dest)
    };
    let dest_is_dir_syntax =
        spec.dest.ends_with('/') || spec.dest == "." || spec.dest.ends_with("/.");
    let resolved = resolve_in(rootfs, &dest, true)?;
    let exists_as_dir = resolved.is_dir();
    if sources.len() > 1 && !dest_is_dir_syntax && !exists_as_dir {
        return Err(Error::invalid(format!(
            "When using {} with more than one source file, the destination must be a directory and end with a /",
            spec.instruction
        )));
    }
    let copier = Copier { rootfs, spec };
    for source in sources {
        let meta = fs::symlink_metadata(&source.path)
            .with_context(|| format!("reading {}", source.relative))?;
        if meta.is_dir() {
            let target = copier.make_dirs(&dest)?;
            copier.copy_dir_contents(&source.path, &target)?;
        } else if spec.unpack_archives && meta.is_file() && !source.remote {
            if let Some(media_type) = archive_type(&source.path)? {
                let target = copier.make_dirs(&dest)?;
                copier.unpack(&source.path, media_type, &target)?;
                continue;
            }
            copier.copy_file_to(source, &dest, dest_is_dir_syntax || exists_as_dir)?;
        } else {
            copier.copy_file_to(source, &dest, dest_is_dir_syntax || exists_as_dir)?;
        }
    }
    Ok(())
}

/// The layer media type to unpack a local archive with, if it is one.
fn archive_type(path: &Path) -> Result<Option<&'static str>> {
    let mut head = [0u8; 512];
    let mut file = File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut read = 0;
    while read < head.len() {
        let n = file
            .read(&mut head[read..])
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        read += n;
    }
    let head = &head[..read];
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Some(diff::stream::MEDIA_TYPE_TAR_GZIP));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        return Ok(Some(diff::stream::MEDIA_TYPE_TAR_ZSTD));
    }
    if head.starts_with(b"BZh") || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(Error::unimplemented(format!(
            "ADD {}: bzip2 and xz archives are not supported; use a plain, gzip or zstd tar",
            path.display()
        )));
    }
    // A tar header: "ustar" at offset 257.
    if head.len() >= 262 && &head[257..262] == b"ustar" {
        return Ok(Some(diff::stream::MEDIA_TYPE_TAR));
    }
    Ok(None)
}

struct Copier<'a> {
    rootfs: &'a Path,
    spec: &'a CopySpec,
}

impl Copier<'_> {
    /// Creates the directory `path` (inside the rootfs) and its missing
    /// parents, owned as the copy says; returns it on the host.
    fn make_dirs(&self, path: &str) -> Result<PathBuf> {
        let mut current = String::new();
        for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
            current.push('/');
            current.push_str(part);
            let host = resolve_in(self.rootfs, &current, true)?;
            match fs::symlink_metadata(&host) {
                Ok(meta) if meta.is_dir() => continue,
                Ok(_) => {
                    return Err(Error::invalid(format!(
                        "{} failed: {current} exists and is not a directory",
                        self.spec.instruction
                    )))
                }
                Err(_) => {
                    fs::create_dir(&host).with_context(|| format!("creating {current}"))?;
                    fs::set_permissions(&host, fs::Permissions::from_mode(0o755))
                        .with_context(|| format!("setting the mode of {current}"))?;
                    self.own(&host, None)?;
                }
            }
        }
        resolve_in(self.rootfs, path, true)
    }

    /// Sets the owner (and with `--chmod`, the mode) of a copied entry.
    fn own(&self, path: &Path, mode: Option<u32>) -> Result<()> {
        let (uid, gid) = self.spec.owner;
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .with_context(|| format!("changing the owner of {}", path.display()))?;
        let is_link = fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        if let (Some(mode), false) = (self.spec.chmod.or(mode), is_link) {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .with_context(|| format!("setting the mode of {}", path.display()))?;
        }
        Ok(())
    }

    /// Copies one non-directory source to `dest` (into it when `into_dir`).
    fn copy_file_to(&self, source: &Source, dest: &str, into_dir: bool) -> Result<()> {
        let target = if into_dir {
            let dir = self.make_dirs(dest)?;
            let name = Path::new(&source.relative)
                .file_name()
                .ok_or_else(|| Error::invalid(format!("{}: no file name", source.relative)))?;
            dir.join(name)
        } else {
            let parent = Path::new(dest)
                .parent()
                .and_then(Path::to_str)
                .unwrap_or("/");
            let dir = self.make_dirs(parent)?;
            let name = Path::new(dest)
                .file_name()
                .ok_or_else(|| Error::invalid(format!("{dest}: no file name")))?;
            dir.join(name)
        };
        self.copy_entry(&source.path, &target)
    }

    /// Copies the entries of the directory `src` into `dst` (a directory).
    fn copy_dir_contents(&self, src: &Path, dst: &Path) -> Result<()> {
        let entries = fs::read_dir(src).with_context(|| format!("reading {}", src.display()))?;
        let mut names: Vec<_> = entries
            .map(|e| e.map(|e| e.file_name()))
            .collect::<io::Result<_>>()
            .with_context(|| format!("reading {}", src.display()))?;
        names.sort();
        for name in names {
            self.copy_entry(&src.join(&name), &dst.join(&name))?;
        }
        Ok(())
    }

    /// Copies `src` (any type; directories recursively) to `dst`,
    /// replacing what is there unless both are directories.
    fn copy_entry(&self, src: &Path, dst: &Path) -> Result<()> {
        let meta =
            fs::symlink_metadata(src).with_context(|| format!("reading {}", src.display()))?;
        let existing = fs::symlink_metadata(dst).ok();
        let file_type = meta.file_type();
        if file_type.is_dir() {
            match existing {
                Some(e) if e.is_dir() => {}
                Some(_) => {
                    fs::remove_file(dst).with_context(|| format!("replacing {}", dst.display()))?;
                    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?;
                }
                None => {
                    fs::create_dir(dst).with_context(|| format!("creating {}", dst.display()))?
                }
            }
            self.copy_dir_contents(src, dst)?;
            self.own(dst, Some(meta.mode() & 0o7777))?;
            set_mtime(dst, &meta)?;
            return Ok(());
        }
        match existing {
            Some(e) if e.is_dir() => {
                fs::remove_dir_all(dst).with_context(|| format!("replacing {}", dst.display()))?
            }
            Some(_) => {
                fs::remove_file(dst).with_context(|| format!("replacing {}", dst.display()))?
            }
            None => {}
        }
        if file_type.is_symlink() {
            let target =
                fs::read_link(src).with_context(|| format!("reading {}", src.display()))?;
            std::os::unix::fs::symlink(&target, dst)
                .with_context(|| format!("creating {}", dst.display()))?;
            self.own(dst, None)?;
        } else if file_type.is_file() {
            let mut from = File::open(src).with_context(|| format!("reading {}", src.display()))?;
            let mut to = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc_nofollow())
                .open(dst)
                .with_context(|| format!("creating {}", dst.display()))?;
            io::copy(&mut from, &mut to)
                .with_context(|| format!("copying to {}", dst.display()))?;
            drop(to);
            self.own(dst, Some(meta.mode() & 0o7777))?;
        } else {
            // Sockets, fifos and devices have no place in a copy.
            return Ok(());
        }
        set_mtime(dst, &meta)
    }

    /// Unpacks the archive at `archive` into the directory `dst`.
    fn unpack(&self, archive: &Path, media_type: &str, dst: &Path) -> Result<()> {
        let file = File::open(archive).with_context(|| format!("reading {}", archive.display()))?;
        diff::apply(
            &[Mount::bind(dst, false)],
            file,
            media_type,
            &ApplyOptions::default(),
        )
        .map_err(|err| err.context(format!("{} {}", self.spec.instruction, archive.display())))?;
        Ok(())
    }
}

/// `O_NOFOLLOW`: a destination is never opened through a symlink.
fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

/// Gives `path` the modification time of `meta` (not following links).
fn set_mtime(path: &Path, meta: &fs::Metadata) -> Result<()> {
    let time = rustix::fs::Timespec {
        tv_sec: meta.mtime(),
        tv_nsec: meta.mtime_nsec() as _,
    };
    let times = rustix::fs::Timestamps {
        last_access: time,
        last_modification: time,
    };
    rustix::fs::utimensat(
        rustix::fs::CWD,
        path,
        &times,
        rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|err| Error::internal(format!("setting the times of {}: {err}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(sources: &[&str], dest: &str) -> CopySpec {
        CopySpec {
            instruction: "COPY",
            sources: sources.iter().map(|s| s.to_string()).collect(),
            dest: dest.to_owned(),
            workdir: "/".to_owned(),
            owner: (0, 0),
            chmod: None,
            unpack_archives: false,
        }
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("real")).unwrap();
        std::os::unix::fs::symlink("/etc", root.path().join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../real", root.path().join("rel")).unwrap();
        assert_eq!(
            resolve_in(root.path(), "/abs/passwd", true).unwrap(),
            root.path().join("etc/passwd")
        );
        assert_eq!(
            resolve_in(root.path(), "rel/x", true).unwrap(),
            root.path().join("real/x")
        );
        assert_eq!(
            resolve_in(root.path(), "../../x", true).unwrap(),
            root.path().join("x")
        );
        assert_eq!(
            resolve_in(root.path(), "abs", false).unwrap(),
            root.path().join("abs")
        );
    }

    #[test]
    fn files_dirs_and_globs_copy_as_docker_copies_them() {
        let context = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        fs::write(context.path().join("a.txt"), "a").unwrap();
        fs::write(context.path().join("b.txt"), "b").unwrap();
        fs::create_dir_all(context.path().join("dir/sub")).unwrap();
        fs::write(context.path().join("dir/sub/c"), "c").unwrap();
        // An absolute link in the image: the copy lands inside the root.
        std::os::unix::fs::symlink("/target", rootfs.path().join("link")).unwrap();

        let s = spec(&["*.txt"], "/link/");
        let sources = find_sources(context.path(), &s.sources, "build context", "COPY").unwrap();
        assert_eq!(sources.len(), 2);
        copy(rootfs.path(), &sources, &s).unwrap();
        assert_eq!(
            fs::read_to_string(rootfs.path().join("target/a.txt")).unwrap(),
            "a"
        );
        assert_eq!(
            fs::read_to_string(rootfs.path().join("target/b.txt")).unwrap(),
            "b"
        );

        let s = spec(&["dir"], "/copied");
        let sources = find_sources(context.path(), &s.sources, "build context", "COPY").unwrap();
        copy(rootfs.path(), &sources, &s).unwrap();
        assert_eq!(
            fs::read_to_string(rootfs.path().join("copied/sub/c")).unwrap(),
            "c"
        );

        let s = spec(&["a.txt"], "/renamed");
        let sources = find_sources(context.path(), &s.sources, "build context", "COPY").unwrap();
        copy(rootfs.path(), &sources, &s).unwrap();
        assert_eq!(
            fs::read_to_string(rootfs.path().join("renamed")).unwrap(),
            "a"
        );

        let s = spec(&["a.txt", "b.txt"], "/notadir");
        let sources = find_sources(context.path(), &s.sources, "build context", "COPY").unwrap();
        let err = copy(rootfs.path(), &sources, &s).unwrap_err();
        assert!(
            err.message.contains("must be a directory"),
            "{}",
            err.message
        );

        let err =
            find_sources(context.path(), &["missing".into()], "build context", "COPY").unwrap_err();
        assert!(
            err.message.contains("file not found in build context"),
            "{}",
            err.message
        );
        let err =
            find_sources(context.path(), &["*.none".into()], "build context", "COPY").unwrap_err();
        assert!(err.message.contains("no source files"), "{}", err.message);
    }

    #[test]
    fn an_existing_symlink_is_replaced_not_written_through() {
        let context = tempfile::tempdir().unwrap();
        let rootfs = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("victim"), "safe").unwrap();
        fs::write(context.path().join("f"), "new").unwrap();
        std::os::unix::fs::symlink(outside.path().join("victim"), rootfs.path().join("f")).unwrap();
        let s = spec(&["f"], "/");
        let sources = find_sources(context.path(), &s.sources, "build context", "COPY").unwrap();
        copy(rootfs.path(), &sources, &s).unwrap();
        assert_eq!(
            fs::read_to_string(outside.path().join("victim")).unwrap(),
            "safe"
        );
        assert_eq!(fs::read_to_string(rootfs.path().join("f")).unwrap(), "new");
    }

    #[test]
    fn the_content_digest_follows_contents_not_times() {
        let context = tempfile::tempdir().unwrap();
        fs::write(context.path().join("f"), "one").unwrap();
        let sources = find_sources(context.path(), &["f".into()], "build context", "COPY").unwrap();
        let first = content_digest(&sources).unwrap();
        assert!(first.starts_with("file:"));
        fs::write(context.path().join("f"), "one").unwrap();
        assert_eq!(content_digest(&sources).unwrap(), first);
        fs::write(context.path().join("f"), "two").unwrap();
        assert_ne!(content_digest(&sources).unwrap(), first);
    }
}
