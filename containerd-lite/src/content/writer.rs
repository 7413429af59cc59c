//! Ingests: the on-disk state of a blob being written, and its [`Writer`].

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::fsutil::{sync_dir, write_atomic};
use super::{Digest, Status, WriterOptions};
use crate::error::Context;
use crate::{Error, ErrorKind, Result};

const DATA: &str = "data";
const META: &str = "meta.json";
/// Suffix of an ingest directory still being set up; never listed.
const NEW_SUFFIX: &str = ".new";

/// What an ingest records besides its bytes.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct IngestMeta {
    reference: String,
    started_at: SystemTime,
    total: u64,
    expected: Option<Digest>,
}

/// One ingest directory: `data` and `meta.json`.
#[derive(Debug)]
pub(super) struct IngestDir {
    path: PathBuf,
    reference: String,
}

impl IngestDir {
    pub(super) fn new(path: PathBuf, reference: &str) -> IngestDir {
        IngestDir {
            path,
            reference: reference.to_owned(),
        }
    }

    /// Reads the ref back from an existing directory (for listings).
    pub(super) fn load(path: PathBuf) -> Result<IngestDir> {
        if path.extension().is_some() {
            return Err(Error::not_found(format!(
                "{}: not an ingest",
                path.display()
            )));
        }
        let meta = read_meta(&path)?;
        Ok(IngestDir {
            path,
            reference: meta.reference,
        })
    }

    /// Whether `path` is debris of a crash: a staging directory, or an
    /// ingest missing its data or its metadata.
    pub(super) fn is_leftover(path: &Path) -> bool {
        path.is_dir()
            && (path.extension().is_some()
                || !path.join(DATA).is_file()
                || !path.join(META).is_file())
    }

    pub(super) fn status(&self) -> Result<Status> {
        let meta = read_meta(&self.path).with_context(|| format!("ingest {}", self.reference))?;
        if meta.reference != self.reference {
            return Err(Error::not_found(format!("ingest {}", self.reference)));
        }
        let data = fs::metadata(self.path.join(DATA))
            .with_context(|| format!("ingest {}", self.reference))?;
        Ok(Status {
            reference: meta.reference,
            offset: data.len(),
            total: meta.total,
            expected: meta.expected,
            started_at: meta.started_at,
            updated_at: data.modified().unwrap_or(meta.started_at),
        })
    }

    pub(super) fn remove(&self) -> Result<()> {
        fs::remove_dir_all(&self.path).with_context(|| format!("ingest {}", self.reference))
    }
}

fn read_meta(dir: &Path) -> Result<IngestMeta> {
    let path = dir.join(META);
    let bytes = fs::read(&path).with_context(|| path.display())?;
    serde_json::from_slice(&bytes).map_err(|err| {
        Error::internal(format!(
            "{}: corrupt ingest metadata: {err}",
            path.display()
        ))
    })
}

fn write_meta(dir: &Path, meta: &IngestMeta) -> Result<()> {
    let bytes = serde_json::to_vec(meta)
        .map_err(|err| Error::internal(format!("encode ingest metadata: {err}")))?;
    write_atomic(&dir.join(META), &bytes)
}

/// Holds a ref for one writer; a second writer for the ref is refused until
/// this is dropped.
#[derive(Debug)]
pub(super) struct RefLock {
    active: Arc<Mutex<HashSet<String>>>,
    reference: String,
}

impl RefLock {
    pub(super) fn acquire(
        active: &Arc<Mutex<HashSet<String>>>,
        reference: &str,
    ) -> Result<RefLock> {
        let inserted = active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(reference.to_owned());
        if !inserted {
            return Err(Error::unavailable(format!(
                "ref {reference} locked: another writer holds it"
            )));
        }
        Ok(RefLock {
            active: Arc::clone(active),
            reference: reference.to_owned(),
        })
    }
}

impl Drop for RefLock {
    fn drop(&mut self) {
        self.active
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.reference);
    }
}

/// Writes one ingest. It holds the ref's lock until dropped or committed;
/// dropping it without commit keeps the bytes for a later writer to resume.
///
/// The calls map one to one onto containerd's `Write` stream: `status` for
/// `stat`, `write_at` for `write`, `commit` for `commit`.
#[derive(Debug)]
pub struct Writer {
    dir: IngestDir,
    meta: IngestMeta,
    data: File,
    hasher: Sha256,
    offset: u64,
    blobs_dir: PathBuf,
    /// Set once a full disk made the writer drop its ingest.
    discarded: bool,
    _lock: RefLock,
}

impl Writer {
    /// Opens the ingest in `dir`, resuming it if it exists.
    pub(super) fn open(
        dir: IngestDir,
        lock: RefLock,
        options: WriterOptions,
        blobs_dir: PathBuf,
    ) -> Result<Writer> {
        let reference = options.reference.clone();
        let context = || format!("ingest {reference}");
        if IngestDir::is_leftover(&dir.path) {
            // Debris of a crash (see `LocalStore::recover`): start afresh.
            fs::remove_dir_all(&dir.path).with_context(context)?;
        }
        let meta = if dir.path.join(META).is_file() {
            let mut meta = read_meta(&dir.path).with_context(context)?;
            if meta.reference != options.reference {
                return Err(Error::internal(format!(
                    "ingest {reference}: directory {} belongs to ref {}",
                    dir.path.display(),
                    meta.reference
                )));
            }
            let total_changed = options.total != 0 && options.total != meta.total;
            let expected_changed = options.expected.is_some() && options.expected != meta.expected;
            if total_changed || expected_changed {
                if total_changed {
                    meta.total = options.total;
                }
                if expected_changed {
                    meta.expected = options.expected;
                }
                write_meta(&dir.path, &meta).with_context(context)?;
            }
            meta
        } else {
            let meta = IngestMeta {
                reference: options.reference,
                started_at: SystemTime::now(),
                total: options.total,
                expected: options.expected,
            };
            create_ingest_dir(&dir.path, &meta).with_context(context)?;
            meta
        };

        let data_path = dir.path.join(DATA);
        let mut data = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&data_path)
            .with_context(context)?;
        let (hasher, offset) = hash_prefix(&mut data, None).with_context(context)?;
        Ok(Writer {
            dir,
            meta,
            data,
            hasher,
            offset,
            blobs_dir,
            discarded: false,
            _lock: lock,
        })
    }

    /// The ref this writer holds.
    pub fn reference(&self) -> &str {
        &self.meta.reference
    }

    /// The number of bytes written so far: the next write's offset.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The digest of the bytes written so far.
    pub fn digest(&self) -> Digest {
        Digest::from_sha256(self.hasher.clone().finalize().into())
    }

    /// The ingest's state as `status`/`list_statuses` report it.
    pub fn status(&self) -> Status {
        let updated_at = self
            .data
            .metadata()
            .and_then(|m| m.modified())
            .unwrap_or(self.meta.started_at);
        Status {
            reference: self.meta.reference.clone(),
            offset: self.offset,
            total: self.meta.total,
            expected: self.meta.expected.clone(),
            started_at: self.meta.started_at,
            updated_at,
        }
    }

    /// Records the size the client now announces (0 leaves it unchanged).
    pub fn set_total(&mut self, total: u64) -> Result<()> {
        if total == 0 || total == self.meta.total {
            return Ok(());
        }
        self.meta.total = total;
        write_meta(&self.dir.path, &self.meta)
            .with_context(|| format!("ingest {}", self.reference()))
    }

    /// Appends `bytes` at the current offset. On failure the ingest keeps
    /// only what was written before; when the disk is full the ingest is
    /// discarded to give the space back, and this writer is spent.
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if self.discarded {
            return Err(Error::precondition(format!(
                "ingest {}: discarded after a failed write",
                self.meta.reference
            )));
        }
        if let Err(err) = self.data.write_all_at(bytes, self.offset) {
            let context = format!("ingest {}: write at {}", self.meta.reference, self.offset);
            if err.kind() == io::ErrorKind::StorageFull {
                self.discarded = true;
                self.dir.remove()?;
            } else {
                // A partial write must not leave bytes past the offset.
                let _ = self.data.set_len(self.offset);
            }
            return Err(Error::from(err).context(context));
        }
        self.hasher.update(bytes);
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// Writes `bytes` at `offset`, which must be the current offset; 0 when
    /// data was already written restarts the ingest from scratch (as a
    /// client does that cannot resume). Anything else is `InvalidArgument`.
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        if offset != self.offset {
            if offset != 0 {
                return Err(Error::invalid(format!(
                    "ingest {}: write at {offset} must occur at the current offset {}",
                    self.meta.reference, self.offset
                )));
            }
            self.truncate(0)?;
        }
        self.write(bytes)
    }

    /// Cuts the ingest back to `size` bytes (at most the current offset).
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        if size > self.offset {
            return Err(Error::invalid(format!(
                "ingest {}: cannot truncate to {size}, only {} bytes written",
                self.meta.reference, self.offset
            )));
        }
        let context = || format!("ingest {}: truncate to {size}", self.meta.reference);
        self.data.set_len(size).with_context(context)?;
        let (hasher, offset) = hash_prefix(&mut self.data, Some(size)).with_context(context)?;
        self.hasher = hasher;
        self.offset = offset;
        Ok(())
    }

    /// Verifies and publishes the blob. `size` (0: use the announced total,
    /// if any) must equal the bytes written, and the digest must equal
    /// `expected` (or the one announced at open) — otherwise
    /// `FailedPrecondition`; a digest mismatch also discards the ingest, as
    /// its bytes can never become the expected blob. An existing blob with
    /// the same digest gives `AlreadyExists` (the ingest is dropped).
    pub fn commit(mut self, size: u64, expected: Option<&Digest>) -> Result<Digest> {
        let reference = self.meta.reference.clone();
        if self.discarded {
            return Err(Error::precondition(format!(
                "ingest {reference}: discarded after a failed write"
            )));
        }
        let want_size = if size != 0 { size } else { self.meta.total };
        if want_size != 0 && want_size != self.offset {
            return Err(Error::precondition(format!(
                "ingest {reference}: unexpected commit size {}, expected {want_size}",
                self.offset
            )));
        }
        let actual = Digest::from_sha256(std::mem::take(&mut self.hasher).finalize().into());
        if let Some(expected) = expected.or(self.meta.expected.as_ref()) {
            if *expected != actual {
                let message = format!(
                    "ingest {reference}: unexpected commit digest {actual}, expected {expected}"
                );
                self.dir.remove()?;
                return Err(Error::precondition(message));
            }
        }

        let context = || format!("ingest {reference}: commit {actual}");
        let target = self.blobs_dir.join(actual.encoded());
        if target.exists() {
            self.dir.remove()?;
            return Err(Error::already_exists(format!(
                "content {actual}: already exists"
            )));
        }
        // The file holds exactly the hashed bytes, whatever a failed write left.
        self.data.set_len(self.offset).with_context(context)?;
        self.data.sync_all().with_context(context)?;
        self.data
            .set_permissions(fs::Permissions::from_mode(0o444))
            .with_context(context)?;
        fs::rename(self.dir.path.join(DATA), &target).with_context(context)?;
        sync_dir(&self.blobs_dir).with_context(context)?;
        // The blob is safe; a leftover ingest dir would only be noise.
        if let Err(err) = self.dir.remove() {
            if err.kind != ErrorKind::NotFound {
                return Err(err);
            }
        }
        Ok(actual)
    }
}

/// Builds the ingest in a side directory and renames it into place, so a
/// crash never leaves a half-made ingest under the real name.
fn create_ingest_dir(path: &Path, meta: &IngestMeta) -> Result<()> {
    let mut staging = path.as_os_str().to_owned();
    staging.push(NEW_SUFFIX);
    let staging = PathBuf::from(staging);
    match fs::remove_dir_all(&staging) {
        Err(err) if err.kind() != io::ErrorKind::NotFound => {
            return Err(Error::from(err).context(staging.display()))
        }
        _ => {}
    }
    fs::create_dir(&staging).with_context(|| staging.display())?;
    File::create(staging.join(DATA)).with_context(|| staging.display())?;
    write_meta(&staging, meta)?;
    fs::rename(&staging, path).with_context(|| path.display())?;
    if let Some(parent) = path.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

/// Hashes the first `limit` bytes of `file` (all of it for `None`) and
/// returns the running hash and the number of bytes hashed.
fn hash_prefix(file: &mut File, limit: Option<u64>) -> io::Result<(Sha256, u64)> {
    let mut hasher = Sha256::new();
    let mut reader = ReadFromStart { file, position: 0 };
    let copied = match limit {
        Some(limit) => io::copy(&mut reader.by_ref().take(limit), &mut hasher)?,
        None => io::copy(&mut reader, &mut hasher)?,
    };
    Ok((hasher, copied))
}

/// Reads a file from offset 0 with positional reads, leaving its cursor alone.
struct ReadFromStart<'a> {
    file: &'a File,
    position: u64,
}

impl Read for ReadFromStart<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.position)?;
        self.position += n as u64;
        Ok(n)
    }
}
