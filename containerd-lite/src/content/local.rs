//! [`LocalStore`]: the content store on a local directory.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use sha2::{Digest as _, Sha256};

use super::writer::{IngestDir, RefLock, Writer};
use super::{Digest, Info, IngestManager, Ingester, Manager, Provider, Status, WriterOptions};
use crate::error::Context;
use crate::{Error, ErrorKind, Result};

/// A content store rooted at a directory (layout in the module docs).
/// Cloning is cheap and clones share the ref locks.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    /// Refs that have a live [`Writer`]; one writer per ref.
    active_refs: Arc<Mutex<HashSet<String>>>,
}

impl LocalStore {
    /// Opens the store at `root`, creating `blobs/sha256` and `ingest`,
    /// and clears crash debris from `ingest/`. Open a root once per process
    /// and share clones: the ref locks live in the value, and the clean-up
    /// assumes no writer is at work yet.
    pub fn open(root: impl Into<PathBuf>) -> Result<LocalStore> {
        let root = root.into();
        for dir in [root.join("blobs").join("sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let store = LocalStore {
            root,
            active_refs: Arc::default(),
        };
        store.recover()?;
        Ok(store)
    }

    /// Clears what a crash can leave in `ingest/`: a directory still being
    /// set up, or one whose data was already renamed into `blobs/`. Runs
    /// when the store is opened, before any writer exists.
    fn recover(&self) -> Result<()> {
        let root = self.ingest_root();
        for entry in fs::read_dir(&root).with_context(|| root.display())? {
            let path = entry.with_context(|| root.display())?.path();
            if IngestDir::is_leftover(&path) {
                fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
            }
        }
        Ok(())
    }

    /// The directory the store lives in.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the blob `digest` lives, whether or not it exists.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.encoded())
    }

    /// Whether `digest` is a committed blob.
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn ingest_root(&self) -> PathBuf {
        self.root.join("ingest")
    }

    fn ingest_dir(&self, reference: &str) -> Result<IngestDir> {
        if reference.is_empty() {
            return Err(Error::invalid("ingest ref must not be empty"));
        }
        let hashed = hex::encode(Sha256::digest(reference.as_bytes()));
        Ok(IngestDir::new(self.ingest_root().join(hashed), reference))
    }

    fn lock_ref(&self, reference: &str) -> Result<RefLock> {
        RefLock::acquire(&self.active_refs, reference)
    }
}

impl Provider for LocalStore {
    fn reader(&self, digest: &Digest) -> Result<BlobReader> {
        let path = self.blob_path(digest);
        let file = File::open(&path).with_context(|| format!("content {digest}"))?;
        let size = file
            .metadata()
            .with_context(|| format!("content {digest}"))?
            .len();
        Ok(BlobReader {
            digest: digest.clone(),
            file,
            size,
        })
    }
}

impl Ingester for LocalStore {
    fn writer(&self, options: WriterOptions) -> Result<Writer> {
        if let Some(expected) = &options.expected {
            if self.contains(expected) {
                return Err(Error::already_exists(format!(
                    "content {expected}: already exists"
                )));
            }
        }
        let lock = self.lock_ref(&options.reference)?;
        let dir = self.ingest_dir(&options.reference)?;
        Writer::open(dir, lock, options, self.blobs_dir())
    }
}

impl Manager for LocalStore {
    fn info(&self, digest: &Digest) -> Result<Info> {
        let meta =
            fs::metadata(self.blob_path(digest)).with_context(|| format!("content {digest}"))?;
        let modified = meta
            .modified()
            .with_context(|| format!("content {digest}"))?;
        Ok(Info {
            digest: digest.clone(),
            size: meta.len(),
            created_at: modified,
            updated_at: modified,
            labels: Default::default(),
        })
    }

    fn walk(&self, visit: &mut dyn FnMut(Info) -> Result<()>) -> Result<()> {
        let dir = self.blobs_dir();
        for entry in fs::read_dir(&dir).with_context(|| dir.display())? {
            let entry = entry.with_context(|| dir.display())?;
            // Anything not named by a valid digest (a stray temp file) is not content.
            let Ok(digest) =
                Digest::parse(&format!("sha256:{}", entry.file_name().to_string_lossy()))
            else {
                continue;
            };
            match self.info(&digest) {
                Ok(info) => visit(info)?,
                // Deleted while walking.
                Err(err) if err.kind == ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }

    fn delete(&self, digest: &Digest) -> Result<()> {
        fs::remove_file(self.blob_path(digest)).with_context(|| format!("content {digest}"))?;
        super::fsutil::sync_dir(&self.blobs_dir())
    }
}

impl IngestManager for LocalStore {
    fn status(&self, reference: &str) -> Result<Status> {
        self.ingest_dir(reference)?.status()
    }

    fn list_statuses(&self, prefix: &str) -> Result<Vec<Status>> {
        let root = self.ingest_root();
        let mut statuses = Vec::new();
        for entry in fs::read_dir(&root).with_context(|| root.display())? {
            let entry = entry.with_context(|| root.display())?;
            match IngestDir::load(entry.path()).and_then(|dir| dir.status()) {
                Ok(status) if status.reference.starts_with(prefix) => statuses.push(status),
                Ok(_) => {}
                // Aborted or committed meanwhile, or never got its metadata
                // (a crash right after mkdir): not an ingest to report.
                Err(err) if err.kind == ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        statuses.sort_by(|a, b| a.reference.cmp(&b.reference));
        Ok(statuses)
    }

    fn abort(&self, reference: &str) -> Result<()> {
        let _lock = self.lock_ref(reference)?;
        self.ingest_dir(reference)?.remove()
    }
}

/// A committed blob opened for reads at any offset.
#[derive(Debug)]
pub struct BlobReader {
    digest: Digest,
    file: File,
    size: u64,
}

impl BlobReader {
    /// The blob's digest.
    pub fn digest(&self) -> &Digest {
        &self.digest
    }

    /// The blob's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Reads up to `buf.len()` bytes at `offset`; returns 0 at the end.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        loop {
            match self.file.read_at(buf, offset) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => return other.with_context(|| format!("read content {}", self.digest)),
            }
        }
    }

    /// The open file, for streaming the whole blob (`io::copy`, `Read`).
    pub fn into_file(self) -> File {
        self.file
    }
}
