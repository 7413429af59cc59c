//! The build context: the tar archive a client sends with `POST /build`
//! (plain, gzip or zstd), unpacked into a private directory that lives as
//! long as the build. Entries cannot land outside it (`..`, absolute
//! paths and links through symlinks are refused by the tar crate's
//! `unpack_in`), device nodes and fifos are skipped, and what
//! `.dockerignore` excludes is removed before any instruction sees it.

use std::fs::{self, File};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};

use crate::build::dockerfile::IgnoreRules;
use crate::error::Context as _;
use crate::{Error, Result};

/// The name of the ignore file at the context's root.
const IGNORE_FILE: &str = ".dockerignore";

/// An unpacked context. Removed from disk when dropped.
#[derive(Debug)]
pub struct Context {
    dir: tempfile::TempDir,
    /// The Dockerfile's text (read before `.dockerignore` applies: an
    /// excluded Dockerfile still drives the build, as with dockerd).
    pub dockerfile: String,
}

impl Context {
    /// Unpacks the archive in `archive` into a new directory under
    /// `scratch` and reads the Dockerfile at `dockerfile` (a path inside
    /// the context; `Dockerfile` falls back to `dockerfile` as dockerd's
    /// does).
    pub fn unpack(archive: File, scratch: &Path, dockerfile: &str) -> Result<Context> {
        fs::create_dir_all(scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let dir = tempfile::Builder::new()
            .prefix("context-")
            .tempdir_in(scratch)
            .with_context(|| format!("creating a context dir in {}", scratch.display()))?;
        if !is_archive(&archive)? {
            // `docker build - < Dockerfile`: the body is the Dockerfile and
            // the context is empty.
            let text = read_plain_dockerfile(archive)?;
            return Ok(Context {
                dir,
                dockerfile: text,
            });
        }
        unpack_archive(archive, dir.path())?;
        let dockerfile = read_dockerfile(dir.path(), dockerfile)?;
        let context = Context { dir, dockerfile };
        context.apply_ignore_file()?;
        Ok(context)
    }

    /// The context's root directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Removes everything `.dockerignore` excludes.
    fn apply_ignore_file(&self) -> Result<()> {
        let path = self.root().join(IGNORE_FILE);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(Error::from(err).context(format!("reading {IGNORE_FILE}"))),
        };
        let rules = IgnoreRules::parse(&text)
            .map_err(|err| Error::invalid(format!("{IGNORE_FILE}: {err}")))?;
        prune(self.root(), "", &rules)
    }
}

/// Walks `dir` (at `relative` inside the context) removing what `rules`
/// exclude; an excluded directory is only walked into when a later
/// exception may bring something below it back.
fn prune(dir: &Path, relative: &str, rules: &IgnoreRules) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            continue;
        };
        let path = entry.path();
        let rel = if relative.is_empty() {
            name.to_owned()
        } else {
            format!("{relative}/{name}")
        };
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let excluded = rules.is_excluded(&rel);
        if is_dir {
            if excluded && !rules.may_contain_included(&rel) {
                fs::remove_dir_all(&path)
                    .with_context(|| format!("removing {}", path.display()))?;
            } else {
                prune(&path, &rel, rules)?;
            }
        } else if excluded {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Most bytes a Dockerfile sent as the whole body may have.
const MAX_PLAIN_DOCKERFILE: u64 = 16 << 20;

/// Whether the body is an archive (compressed, or a tar by its header)
/// rather than a bare Dockerfile.
fn is_archive(file: &File) -> Result<bool> {
    let mut head = [0u8; 512];
    let mut read = 0;
    let mut reader = file;
    while read < head.len() {
        match reader.read(&mut head[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Error::from(err).context("reading the build context")),
        }
    }
    reader
        .seek(SeekFrom::Start(0))
        .context("reading the build context")?;
    let head = &head[..read];
    let compressed = head.starts_with(&[0x1f, 0x8b])
        || head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd])
        || head.starts_with(b"BZh")
        || head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]);
    let tar = head.len() >= 262 && &head[257..262] == b"ustar";
    Ok(compressed || tar)
}

/// The whole body as a Dockerfile.
fn read_plain_dockerfile(file: File) -> Result<String> {
    let mut bytes = Vec::new();
    file.take(MAX_PLAIN_DOCKERFILE + 1)
        .read_to_end(&mut bytes)
        .context("reading the Dockerfile")?;
    if bytes.len() as u64 > MAX_PLAIN_DOCKERFILE {
        return Err(Error::invalid(format!(
            "the build context is neither a tar archive nor a Dockerfile of at most {MAX_PLAIN_DOCKERFILE} bytes"
        )));
    }
    String::from_utf8(bytes).map_err(|_| {
        Error::invalid("the build context is neither a tar archive nor a UTF-8 Dockerfile")
    })
}

/// What the archive is compressed with, from its first bytes.
fn decompressed(mut file: File) -> Result<Box<dyn Read>> {
    let mut magic = [0u8; 6];
    let mut read = 0;
    while read < magic.len() {
        match file.read(&mut magic[read..]) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(Error::from(err).context("reading the build context")),
        }
    }
    file.seek(SeekFrom::Start(0))
        .context("reading the build context")?;
    let magic = &magic[..read];
    let reader = BufReader::new(file);
    if magic.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::GzDecoder::new(reader)))
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let decoder =
            zstd::Decoder::with_buffer(reader).context("reading the zstd build context")?;
        Ok(Box::new(decoder))
    } else if magic.starts_with(b"BZh") || magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Err(Error::invalid(
            "the build context is compressed with bzip2 or xz: send it as a plain, gzip or zstd tar",
        ))
    } else {
        Ok(Box::new(reader))
    }
}

/// Unpacks every file, directory and link of the archive into `root`.
fn unpack_archive(file: File, root: &Path) -> Result<()> {
    let mut archive = tar::Archive::new(decompressed(file)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive.set_unpack_xattrs(false);
    let bad = |err: std::io::Error| {
        Error::invalid(format!(
            "the build context is not a valid tar archive: {err}"
        ))
    };
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir() || kind.is_symlink() || kind.is_hard_link()) {
            continue;
        }
        let path = entry.path().map_err(bad)?.into_owned();
        if path.components().any(|c| {
            matches!(
                c,
                Component::ParentDir | Component::RootDir | Component::Prefix(_)
            )
        }) {
            return Err(Error::invalid(format!(
                "the build context has an entry outside of it: {}",
                path.display()
            )));
        }
        let unpacked = entry.unpack_in(root).map_err(|err| {
            Error::invalid(format!(
                "the build context's entry {}: {err}",
                path.display()
            ))
        })?;
        if !unpacked {
            return Err(Error::invalid(format!(
                "the build context has an entry outside of it: {}",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Reads the Dockerfile named `name` inside the context at `root`.
fn read_dockerfile(root: &Path, name: &str) -> Result<String> {
    let name = if name.is_empty() { "Dockerfile" } else { name };
    let relative = inside_context(name)?;
    let mut candidates = vec![relative.clone()];
    if name == "Dockerfile" {
        candidates.push(PathBuf::from("dockerfile"));
    }
    for candidate in &candidates {
        let path = root.join(candidate);
        // The file itself may not be a symlink out of the context.
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_file() => {
                let bytes = fs::read(&path).with_context(|| format!("reading {name}"))?;
                return String::from_utf8(bytes).map_err(|_| {
                    Error::invalid(format!("the Dockerfile {name} is not UTF-8 text"))
                });
            }
            _ => continue,
        }
    }
    Err(Error::invalid(format!(
        "Cannot locate specified Dockerfile: {name}"
    )))
}

/// `name` as a relative path that stays inside the context.
fn inside_context(name: &str) -> Result<PathBuf> {
    let mut clean = PathBuf::new();
    for component in Path::new(name).components() {
        match component {
            Component::Normal(part) => clean.push(part),
            Component::CurDir => {}
            Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(Error::invalid(format!(
                    "the Dockerfile ({name}) must be within the build context"
                )))
            }
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(Error::invalid("the Dockerfile's path is empty"));
    }
    Ok(clean)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn archive(entries: &[(&str, &[u8])]) -> File {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, *data).unwrap();
        }
        let bytes = builder.into_inner().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        file
    }

    #[test]
    fn unpacks_reads_the_dockerfile_and_applies_the_ignore_file() {
        let scratch = tempfile::tempdir().unwrap();
        let file = archive(&[
            ("Dockerfile", b"FROM scratch\n"),
            (".dockerignore", b"*.log\nsecret/\n!secret/keep\n"),
            ("a.txt", b"a"),
            ("b.log", b"b"),
            ("secret/key", b"k"),
            ("secret/keep", b"kept"),
        ]);
        let context = Context::unpack(file, scratch.path(), "Dockerfile").unwrap();
        assert_eq!(context.dockerfile, "FROM scratch\n");
        let root = context.root().to_path_buf();
        assert!(root.join("a.txt").exists());
        assert!(!root.join("b.log").exists());
        assert!(!root.join("secret/key").exists());
        assert!(root.join("secret/keep").exists());
        drop(context);
        assert!(!root.exists(), "the context dir goes with the build");
    }

    #[test]
    fn a_missing_dockerfile_or_one_outside_the_context_is_refused() {
        let scratch = tempfile::tempdir().unwrap();
        let err =
            Context::unpack(archive(&[("a", b"")]), scratch.path(), "Dockerfile").unwrap_err();
        assert_eq!(
            err.message,
            "Cannot locate specified Dockerfile: Dockerfile"
        );
        let err =
            Context::unpack(archive(&[("a", b"")]), scratch.path(), "../Dockerfile").unwrap_err();
        assert!(
            err.message.contains("within the build context"),
            "{}",
            err.message
        );
        assert_eq!(
            fs::read_dir(scratch.path()).unwrap().count(),
            0,
            "nothing left behind"
        );
    }

    #[test]
    fn a_body_that_is_no_archive_is_the_dockerfile() {
        let scratch = tempfile::tempdir().unwrap();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"FROM scratch\nCOPY a /\n").unwrap();
        file.seek(SeekFrom::Start(0)).unwrap();
        let context = Context::unpack(file, scratch.path(), "").unwrap();
        assert_eq!(context.dockerfile, "FROM scratch\nCOPY a /\n");
        assert_eq!(fs::read_dir(context.root()).unwrap().count(), 0);
    }

    #[test]
    fn the_lowercase_dockerfile_is_found_too() {
        let scratch = tempfile::tempdir().unwrap();
        let context =
            Context::unpack(archive(&[("dockerfile", b"FROM x")]), scratch.path(), "").unwrap();
        assert_eq!(context.dockerfile, "FROM x");
    }
}
