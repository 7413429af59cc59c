//! Random access to the files of a tar archive on disk: one pass records
//! where each file's bytes are, then any file reads straight from there.
//! Paths are normalised and must stay inside the archive; a symlink (old
//! `docker save` links duplicate layers) resolves to the file it names.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Component, Path};

use crate::{Error, Result};

/// Where a file's bytes lie in the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Span {
    offset: u64,
    size: u64,
}

/// The files of a tar archive by normalised path.
#[derive(Debug)]
pub(super) struct Archive {
    file: File,
    files: HashMap<String, Span>,
}

/// Most symlink hops followed when resolving a path.
const MAX_LINK_HOPS: usize = 8;

/// `path` with `.` dropped and `..` applied, relative to the archive root;
/// `None` when it is absolute or climbs out.
fn normalise(path: &Path) -> Option<String> {
    let mut parts: Vec<String> = Vec::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_str()?.to_owned()),
            Component::CurDir => {}
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}

impl Archive {
    /// Indexes the archive in `file`. Entries with absolute paths or `..`
    /// climbing out, or links pointing out, are `InvalidArgument`.
    pub(super) fn index(file: File) -> Result<Archive> {
        let bad = |what: String| Error::invalid(format!("archive: {what}"));
        let mut files = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        let mut archive = tar::Archive::new(&file);
        let entries = archive
            .entries()
            .map_err(|err| bad(format!("not a tar: {err}")))?;
        for entry in entries {
            let entry = entry.map_err(|err| bad(format!("unreadable entry: {err}")))?;
            let raw = entry
                .path()
                .map_err(|err| bad(format!("entry path: {err}")))?
                .into_owned();
            let path = normalise(&raw)
                .ok_or_else(|| bad(format!("entry {} escapes the archive", raw.display())))?;
            match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let span = Span {
                        offset: entry.raw_file_position(),
                        size: entry.size(),
                    };
                    files.insert(path, span);
                }
                tar::EntryType::Symlink | tar::EntryType::Link => {
                    let target = entry
                        .link_name()
                        .map_err(|err| bad(format!("link {path}: {err}")))?
                        .ok_or_else(|| bad(format!("link {path}: no target")))?;
                    let joined = if entry.header().entry_type() == tar::EntryType::Symlink {
                        Path::new(&path)
                            .parent()
                            .unwrap_or(Path::new(""))
                            .join(&target)
                    } else {
                        target.into_owned()
                    };
                    let resolved = normalise(&joined).ok_or_else(|| {
                        bad(format!(
                            "link {path} -> {} escapes the archive",
                            joined.display()
                        ))
                    })?;
                    links.push((path, resolved));
                }
                _ => {}
            }
        }
        for _ in 0..MAX_LINK_HOPS {
            let mut unresolved = Vec::new();
            for (path, target) in links {
                match files.get(&target) {
                    Some(span) => {
                        files.insert(path, *span);
                    }
                    None => unresolved.push((path, target)),
                }
            }
            links = unresolved;
            if links.is_empty() {
                break;
            }
        }
        Ok(Archive { file, files })
    }

    /// Whether the archive has a file at `path`.
    pub(super) fn contains(&self, path: &str) -> bool {
        normalise(Path::new(path)).is_some_and(|path| self.files.contains_key(&path))
    }

    /// A file's size; `InvalidArgument` when the archive lacks it.
    pub(super) fn size(&self, path: &str) -> Result<u64> {
        Ok(self.span(path)?.size)
    }

    fn span(&self, path: &str) -> Result<Span> {
        normalise(Path::new(path))
            .and_then(|normal| self.files.get(&normal).copied())
            .ok_or_else(|| Error::invalid(format!("archive: no file {path:?}")))
    }

    /// Reads a file's bytes as a stream.
    pub(super) fn open(&self, path: &str) -> Result<EntryReader<'_>> {
        let span = self.span(path)?;
        Ok(EntryReader {
            file: &self.file,
            next: span.offset,
            end: span.offset + span.size,
        })
    }

    /// Reads a whole small file, refusing one over `limit` bytes.
    pub(super) fn read(&self, path: &str, limit: u64) -> Result<Vec<u8>> {
        let size = self.size(path)?;
        if size > limit {
            return Err(Error::invalid(format!(
                "archive: {path} is {size} bytes, more than the {limit} allowed"
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        self.open(path)?
            .read_to_end(&mut bytes)
            .map_err(|err| Error::internal(format!("archive: read {path}: {err}")))?;
        Ok(bytes)
    }
}

/// One file of an [`Archive`], read in place.
#[derive(Debug)]
pub(super) struct EntryReader<'a> {
    file: &'a File,
    next: u64,
    end: u64,
}

impl Read for EntryReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.next);
        let want = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.next)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive truncated inside a file",
            ));
        }
        self.next += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_and_escapes_are_refused() {
        assert_eq!(
            normalise(Path::new("./blobs/sha256/ab")).unwrap(),
            "blobs/sha256/ab"
        );
        assert_eq!(normalise(Path::new("a/../b")).unwrap(), "b");
        assert!(normalise(Path::new("../etc/passwd")).is_none());
        assert!(normalise(Path::new("/etc/passwd")).is_none());
    }
}
