//! Namespaced content: the blob store seen through each namespace's
//! records.
//!
//! Blobs are shared on disk, but a namespace sees a blob only once it has a
//! `content` record for it (with that namespace's labels). Writing a blob
//! that another namespace already has records it here without moving the
//! bytes again ("shared" content, as containerd does by default). Ingest
//! refs are namespaced too: the blob store sees `<namespace>/<ref>`.

use std::time::SystemTime;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::filter::{Fields, Filter};
use super::labels::{self, apply_label_path, validate_identifier, Labels};
use super::leases::{add_resource_in, delete_resource_in, LeaseResource};
use super::{namespaces, Db};
use crate::content::{
    BlobReader, Digest, Info, IngestManager, Ingester, LocalStore, Manager, Provider, Status,
    Writer, WriterOptions,
};
use crate::{Error, ErrorKind, Result};

/// (namespace, digest) -> [`ContentRecord`].
pub(crate) const CONTENT: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("content");

/// A namespace's record of a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ContentRecord {
    pub(crate) size: u64,
    pub(crate) labels: Labels,
    pub(crate) created_at: SystemTime,
    pub(crate) updated_at: SystemTime,
}

impl Fields for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["digest"] => Some(self.digest.to_string()),
            ["size"] => Some(self.size.to_string()),
            ["labels", key] => self.labels.get(*key).cloned(),
            _ => None,
        }
    }
}

impl Fields for Status {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [field] if field == "ref" => Some(self.reference.clone()),
            [field] if field == "expected" => self.expected.as_ref().map(Digest::to_string),
            _ => None,
        }
    }
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(CONTENT)?;
    Ok(())
}

pub(super) fn namespace_has_content(txn: &WriteTransaction, namespace: &str) -> Result<bool> {
    super::namespace_has_records(txn, CONTENT, namespace)
}

/// Every content record of every namespace in `table` (the collector
/// reads it in its own transaction).
pub(crate) fn all_in(
    table: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
) -> Result<Vec<(String, Info)>> {
    let mut all = Vec::new();
    for entry in table.iter()? {
        let (key, bytes) = entry?;
        let (namespace, digest) = key.value();
        let digest = Digest::parse(digest)
            .map_err(|err| Error::internal(format!("content record in {namespace}: {err}")))?;
        let record = decode_record(&digest, bytes.value())?;
        all.push((namespace.to_owned(), to_info(digest, record)));
    }
    Ok(all)
}

/// Removes a namespace's record of a blob, if any (the collector's sweep).
pub(crate) fn remove_in(txn: &WriteTransaction, namespace: &str, digest: &Digest) -> Result<()> {
    txn.open_table(CONTENT)?
        .remove((namespace, digest.as_str()))?;
    Ok(())
}

/// The ref the blob store knows an ingest by.
pub(crate) fn backend_ref(namespace: &str, reference: &str) -> String {
    format!("{namespace}/{reference}")
}

/// Splits a blob-store ingest ref back into (namespace, client ref).
pub(crate) fn split_backend_ref(backend: &str) -> Option<(&str, &str)> {
    backend.split_once('/')
}

/// The content service's store: [`LocalStore`] blobs plus per-namespace
/// records, labels and lease bookkeeping.
#[derive(Debug, Clone)]
pub struct ContentStore {
    db: Db,
    blobs: LocalStore,
}

impl ContentStore {
    /// The store over `db`'s records and the shared `blobs`.
    pub fn new(db: Db, blobs: LocalStore) -> Self {
        ContentStore { db, blobs }
    }

    /// The shared blob store underneath.
    pub fn blobs(&self) -> &LocalStore {
        &self.blobs
    }

    /// A blob as `namespace` sees it; `NotFound` unless recorded there.
    pub fn info(&self, namespace: &str, digest: &Digest) -> Result<Info> {
        self.db.read(|txn| {
            let table = txn.open_table(CONTENT)?;
            let bytes = table
                .get((namespace, digest.as_str()))?
                .ok_or_else(|| not_found(digest))?;
            Ok(to_info(
                digest.clone(),
                decode_record(digest, bytes.value())?,
            ))
        })
    }

    /// Updates a blob's labels in `namespace` by field mask (`labels`,
    /// `labels.<key>`; no paths replaces them all). `NotFound` unless
    /// recorded; any other path is `InvalidArgument`.
    pub fn update(
        &self,
        namespace: &str,
        digest: &Digest,
        labels: Labels,
        paths: &[String],
    ) -> Result<Info> {
        labels::validate(&labels)?;
        self.db.write(|txn| {
            let mut table = txn.open_table(CONTENT)?;
            let mut record = {
                let bytes = table
                    .get((namespace, digest.as_str()))?
                    .ok_or_else(|| not_found(digest))?;
                decode_record(digest, bytes.value())?
            };
            if paths.is_empty() {
                record.labels = labels;
            } else {
                for path in paths {
                    if !apply_label_path(&mut record.labels, &labels, path) {
                        return Err(Error::invalid(format!(
                            "content {digest}: cannot update field {path:?}"
                        )));
                    }
                }
            }
            record.updated_at = SystemTime::now();
            table.insert((namespace, digest.as_str()), encode(&record)?.as_slice())?;
            Ok(to_info(digest.clone(), record))
        })
    }

    /// The blobs recorded in `namespace` that pass `filter`, by digest.
    pub fn list(&self, namespace: &str, filter: &Filter) -> Result<Vec<Info>> {
        self.db.read(|txn| {
            let table = txn.open_table(CONTENT)?;
            let mut infos = Vec::new();
            for entry in table.range((namespace, "")..)? {
                let (key, bytes) = entry?;
                let (ns, digest) = key.value();
                if ns != namespace {
                    break;
                }
                let digest = Digest::parse(digest)
                    .map_err(|err| Error::internal(format!("content record: {err}")))?;
                let info = to_info(digest.clone(), decode_record(&digest, bytes.value())?);
                if filter.matches(&info) {
                    infos.push(info);
                }
            }
            Ok(infos)
        })
    }

    /// Removes `namespace`'s record of a blob; `NotFound` unless recorded.
    /// The bytes stay until the garbage collector finds no namespace
    /// referring to them (the caller runs it after deletions).
    pub fn delete(&self, namespace: &str, digest: &Digest) -> Result<()> {
        self.db.write(|txn| {
            match txn
                .open_table(CONTENT)?
                .remove((namespace, digest.as_str()))?
            {
                Some(_) => Ok(()),
                None => Err(not_found(digest)),
            }
        })
    }

    /// Opens a blob recorded in `namespace` for reading.
    pub fn reader(&self, namespace: &str, digest: &Digest) -> Result<BlobReader> {
        self.info(namespace, digest)?;
        self.blobs.reader(digest)
    }

    /// Opens (or resumes) ingest `options.reference` in `namespace`,
    /// creating the namespace on first use. With a `lease`, the ingest and
    /// then the committed blob are held by it.
    ///
    /// `AlreadyExists` when `options.expected` is already recorded in the
    /// namespace — or is a blob another namespace wrote, which is then
    /// recorded here without any transfer. `Unavailable` while another
    /// writer holds the ref; `NotFound` for an unknown lease.
    pub fn writer(
        &self,
        namespace: &str,
        lease: Option<&str>,
        options: WriterOptions,
    ) -> Result<NamespacedWriter> {
        validate_identifier("namespace", namespace)?;
        if options.reference.is_empty() {
            return Err(Error::invalid("ingest ref must not be empty"));
        }
        let reference = options.reference.clone();
        if let Some(expected) = &options.expected {
            self.adopt_existing(namespace, lease, expected, options.total)?;
        }
        self.db.write(|txn| {
            namespaces::ensure(txn, namespace)?;
            if let Some(lease) = lease {
                add_resource_in(
                    txn,
                    namespace,
                    lease,
                    &LeaseResource::Ingest(reference.clone()),
                )?;
            }
            Ok(())
        })?;
        let expected = options.expected.clone();
        let opened = self.blobs.writer(WriterOptions {
            reference: backend_ref(namespace, &reference),
            ..options
        });
        let inner = match (opened, &expected) {
            (Ok(inner), _) => inner,
            // Committed by another writer since the check above: record it.
            (Err(err), Some(expected)) if err.kind == ErrorKind::AlreadyExists => {
                self.adopt_existing(namespace, lease, expected, 0)?;
                return Err(err);
            }
            (Err(err), _) => return Err(err),
        };
        Ok(NamespacedWriter {
            inner,
            db: self.db.clone(),
            blobs: self.blobs.clone(),
            namespace: namespace.to_owned(),
            reference,
            lease: lease.map(str::to_owned),
        })
    }

    /// Fails with `AlreadyExists` if `expected` needs no ingest: recorded in
    /// `namespace` already, or a blob on disk that is recorded now.
    fn adopt_existing(
        &self,
        namespace: &str,
        lease: Option<&str>,
        expected: &Digest,
        total: u64,
    ) -> Result<()> {
        let on_disk = match self.blobs.info(expected) {
            Ok(info) => Some(info),
            Err(err) if err.kind == ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        let recorded = self.db.write(|txn| {
            if txn
                .open_table(CONTENT)?
                .get((namespace, expected.as_str()))?
                .is_some()
            {
                return Ok(true);
            }
            let Some(info) = &on_disk else {
                return Ok(false);
            };
            if total != 0 && total != info.size {
                return Err(Error::precondition(format!(
                    "content {expected}: announced size {total}, but the blob has {}",
                    info.size
                )));
            }
            namespaces::ensure(txn, namespace)?;
            record_blob(txn, namespace, lease, expected, info.size, Labels::new())?;
            Ok(true)
        })?;
        if recorded {
            return Err(Error::already_exists(format!(
                "content {expected}: already exists"
            )));
        }
        Ok(())
    }

    /// One ingest of `namespace`; `NotFound` if there is none.
    pub fn status(&self, namespace: &str, reference: &str) -> Result<Status> {
        let status = self.blobs.status(&backend_ref(namespace, reference))?;
        Ok(Status {
            reference: reference.to_owned(),
            ..status
        })
    }

    /// The ingests of `namespace` that pass `filter` (field `ref`).
    pub fn list_statuses(&self, namespace: &str, filter: &Filter) -> Result<Vec<Status>> {
        let prefix = backend_ref(namespace, "");
        let mut statuses = Vec::new();
        for status in self.blobs.list_statuses(&prefix)? {
            let reference = status.reference[prefix.len()..].to_owned();
            let status = Status {
                reference,
                ..status
            };
            if filter.matches(&status) {
                statuses.push(status);
            }
        }
        Ok(statuses)
    }

    /// Drops an ingest of `namespace` and its bytes; `NotFound` if none,
    /// `Unavailable` while a writer holds it.
    pub fn abort(&self, namespace: &str, reference: &str) -> Result<()> {
        self.blobs.abort(&backend_ref(namespace, reference))
    }
}

/// Records `digest` in `namespace` (keeping an existing record's labels
/// unless new ones are given) and moves a lease's hold from ingest to blob.
/// Returns whether the namespace already had it.
fn record_blob(
    txn: &WriteTransaction,
    namespace: &str,
    lease: Option<&str>,
    digest: &Digest,
    size: u64,
    labels: Labels,
) -> Result<bool> {
    if let Some(lease) = lease {
        add_resource_in(
            txn,
            namespace,
            lease,
            &LeaseResource::Content(digest.clone()),
        )?;
    }
    let mut table = txn.open_table(CONTENT)?;
    if table.get((namespace, digest.as_str()))?.is_some() {
        return Ok(true);
    }
    let now = SystemTime::now();
    let record = ContentRecord {
        size,
        labels,
        created_at: now,
        updated_at: now,
    };
    table.insert((namespace, digest.as_str()), encode(&record)?.as_slice())?;
    Ok(false)
}

/// A [`Writer`] within a namespace: committing records the blob there.
#[derive(Debug)]
pub struct NamespacedWriter {
    inner: Writer,
    db: Db,
    blobs: LocalStore,
    namespace: String,
    reference: String,
    lease: Option<String>,
}

impl NamespacedWriter {
    /// The client's ref.
    pub fn reference(&self) -> &str {
        &self.reference
    }

    /// The next write's offset.
    pub fn offset(&self) -> u64 {
        self.inner.offset()
    }

    /// The ingest's state, with the client's ref.
    pub fn status(&self) -> Status {
        Status {
            reference: self.reference.clone(),
            ..self.inner.status()
        }
    }

    /// See [`Writer::set_total`].
    pub fn set_total(&mut self, total: u64) -> Result<()> {
        self.inner.set_total(total)
    }

    /// See [`Writer::write`].
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        self.inner.write(bytes)
    }

    /// See [`Writer::write_at`].
    pub fn write_at(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        self.inner.write_at(offset, bytes)
    }

    /// See [`Writer::truncate`].
    pub fn truncate(&mut self, size: u64) -> Result<()> {
        self.inner.truncate(size)
    }

    /// Verifies and publishes the blob as [`Writer::commit`] does, then
    /// records it in the namespace with `labels` (and in the lease, if
    /// any). A blob already on disk is recorded without error;
    /// `AlreadyExists` only when this namespace had it already.
    pub fn commit(self, size: u64, expected: Option<&Digest>, labels: Labels) -> Result<Digest> {
        labels::validate(&labels)?;
        let digest = self.inner.digest();
        match self.inner.commit(size, expected) {
            Ok(_) => {}
            Err(err) if err.kind == ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        let size = self.blobs.info(&digest)?.size;
        let lease = self.lease.as_deref();
        let had_it = self.db.write(|txn| {
            namespaces::ensure(txn, &self.namespace)?;
            if let Some(lease) = lease {
                delete_resource_in(
                    txn,
                    &self.namespace,
                    lease,
                    &LeaseResource::Ingest(self.reference.clone()),
                )?;
            }
            record_blob(txn, &self.namespace, lease, &digest, size, labels)
        })?;
        if had_it {
            return Err(Error::already_exists(format!(
                "content {digest}: already exists"
            )));
        }
        Ok(digest)
    }
}

fn to_info(digest: Digest, record: ContentRecord) -> Info {
    Info {
        digest,
        size: record.size,
        created_at: record.created_at,
        updated_at: record.updated_at,
        labels: record.labels,
    }
}

fn decode_record(digest: &Digest, bytes: &[u8]) -> Result<ContentRecord> {
    decode(bytes, format_args!("content {digest}"))
}

fn not_found(digest: &Digest) -> Error {
    Error::not_found(format!("content {digest}: not found"))
}
