//! The content store: immutable blobs addressed by their digest.
//!
//! The model is containerd's local content store, split by what a caller
//! needs:
//!
//! * [`Provider`] reads a committed blob at any offset;
//! * [`Ingester`] opens a [`Writer`] for a client-chosen `ref`. Ingests are
//!   resumable: the bytes written so far stay on disk under the ref, and a
//!   later writer for the same ref continues at the recorded offset. Only one
//!   writer may hold a ref at a time (the next gets `Unavailable`);
//! * [`Manager`] answers `info`, `walk` and `delete` over committed blobs;
//! * [`IngestManager`] lists, inspects and aborts ingests in progress.
//!
//! [`LocalStore`] implements all four on a directory:
//!
//! ```text
//! <root>/
//! ├── blobs/sha256/<hex>        committed blobs, read-only, named by digest
//! └── ingest/<sha256(ref)>/     one directory per ingest in progress
//!     ├── data                  the bytes received so far (offset = length)
//!     └── meta.json             ref, started_at, total, expected digest
//! ```
//!
//! A commit verifies size and digest, fsyncs the data, and renames it into
//! `blobs/`, so a partial ingest is never visible as a blob. This store knows
//! nothing of namespaces or labels: `metadata::content` layers those on top.

mod digest;
mod fsutil;
mod local;
mod writer;

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

pub use digest::Digest;
pub use local::{BlobReader, LocalStore};
pub use writer::Writer;

use crate::Result;

/// An OCI content descriptor: what a manifest, index or image record points
/// at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// What the store knows of a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub digest: Digest,
    pub size: u64,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
    /// Empty from [`LocalStore`]; the namespaced store fills in its labels.
    pub labels: BTreeMap<String, String>,
}

/// The state of an ingest in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// The client's name for the ingest.
    pub reference: String,
    /// Bytes received so far; the next write must start here.
    pub offset: u64,
    /// The size the client announced, 0 when unknown.
    pub total: u64,
    /// The digest the client announced, if any.
    pub expected: Option<Digest>,
    pub started_at: SystemTime,
    pub updated_at: SystemTime,
}

/// How to open a writer: the ref names the ingest; `total` and `expected`
/// are what the client announces (0 and `None` when it does not know yet).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriterOptions {
    pub reference: String,
    pub total: u64,
    pub expected: Option<Digest>,
}

impl WriterOptions {
    /// Options for `reference` with nothing announced.
    pub fn new(reference: impl Into<String>) -> Self {
        WriterOptions {
            reference: reference.into(),
            ..Default::default()
        }
    }
}

/// Reads committed blobs.
pub trait Provider {
    /// Opens the blob for reads at any offset; `NotFound` if absent.
    fn reader(&self, digest: &Digest) -> Result<BlobReader>;
}

/// Writes new blobs through named, resumable ingests.
pub trait Ingester {
    /// Opens (or resumes) the ingest `options.reference`. Fails with
    /// `AlreadyExists` when `options.expected` is already a blob, and with
    /// `Unavailable` while another writer holds the same ref.
    fn writer(&self, options: WriterOptions) -> Result<Writer>;
}

/// Inspects and removes committed blobs.
pub trait Manager {
    /// Size and times of a blob; `NotFound` if absent.
    fn info(&self, digest: &Digest) -> Result<Info>;
    /// Calls `visit` for every committed blob; stops at the first error.
    fn walk(&self, visit: &mut dyn FnMut(Info) -> Result<()>) -> Result<()>;
    /// Removes a blob; `NotFound` if absent.
    fn delete(&self, digest: &Digest) -> Result<()>;
}

/// Inspects and cancels ingests in progress.
pub trait IngestManager {
    /// The state of one ingest; `NotFound` if there is none under `reference`.
    fn status(&self, reference: &str) -> Result<Status>;
    /// Every ingest whose ref starts with `prefix` (all for `""`).
    fn list_statuses(&self, prefix: &str) -> Result<Vec<Status>>;
    /// Drops an ingest and its data; `NotFound` if there is none.
    fn abort(&self, reference: &str) -> Result<()>;
}

#[cfg(test)]
mod tests;
