//! Leases: named holds that keep content, snapshots and ingests from the
//! garbage collector while a client works (a pull, an unpack, a build).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::codec::{decode, encode};
use super::filter::{Fields, Filter};
use super::labels::{self, Labels};
use super::{namespaces, Db};
use crate::content::Digest;
use crate::{Error, Result};

/// (namespace, lease id) -> [`Lease`].
pub(crate) const LEASES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("leases");
/// (namespace, lease id, resource type, resource id) -> ().
pub(crate) const LEASE_RESOURCES: TableDefinition<(&str, &str, &str, &str), ()> =
    TableDefinition::new("lease_resources");

/// The label that gives a lease its expiry, an RFC 3339 time.
pub const EXPIRE_LABEL: &str = "containerd.io/gc.expire";

/// A lease and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    #[serde(skip)]
    pub id: String,
    pub labels: Labels,
    pub created_at: SystemTime,
}

impl Lease {
    /// When the lease stops protecting its resources, from [`EXPIRE_LABEL`];
    /// `None` if it has no expiry. `InvalidArgument` for a malformed time.
    pub fn expires_at(&self) -> Result<Option<SystemTime>> {
        let Some(text) = self.labels.get(EXPIRE_LABEL) else {
            return Ok(None);
        };
        let time = OffsetDateTime::parse(text, &Rfc3339).map_err(|err| {
            Error::invalid(format!(
                "lease {}: label {EXPIRE_LABEL}={text:?} is not an RFC 3339 time: {err}",
                self.id
            ))
        })?;
        Ok(Some(time.into()))
    }

    /// Whether the lease has expired at `now`. A malformed expiry never
    /// expires: losing data to a typo is worse than keeping it.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        matches!(self.expires_at(), Ok(Some(at)) if at <= now)
    }
}

impl Fields for Lease {
    fn field(&self, path: &[String]) -> Option<String> {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["id"] => Some(self.id.clone()),
            ["labels", key] => self.labels.get(*key).cloned(),
            _ => None,
        }
    }
}

/// Something a lease holds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LeaseResource {
    /// A committed blob.
    Content(Digest),
    /// An ingest in progress, by the client's ref.
    Ingest(String),
    /// A snapshot of one snapshotter.
    Snapshot { snapshotter: String, key: String },
}

impl LeaseResource {
    /// Builds a resource from its wire form: type `content` (id: a digest),
    /// `ingests` (id: a ref) or `snapshots/<snapshotter>` (id: a key).
    pub fn parse(kind: &str, id: &str) -> Result<LeaseResource> {
        if id.is_empty() {
            return Err(Error::invalid(format!(
                "lease resource of type {kind:?}: empty id"
            )));
        }
        match kind {
            "content" => Ok(LeaseResource::Content(Digest::parse(id)?)),
            "ingests" => Ok(LeaseResource::Ingest(id.to_owned())),
            _ => match kind.strip_prefix("snapshots/") {
                Some(snapshotter) if !snapshotter.is_empty() && !snapshotter.contains('/') => {
                    Ok(LeaseResource::Snapshot {
                        snapshotter: snapshotter.to_owned(),
                        key: id.to_owned(),
                    })
                }
                _ => Err(Error::invalid(format!(
                    "lease resource type {kind:?}: unsupported"
                ))),
            },
        }
    }

    /// The wire type: `content`, `ingests` or `snapshots/<snapshotter>`.
    pub fn kind(&self) -> String {
        match self {
            LeaseResource::Content(_) => "content".to_owned(),
            LeaseResource::Ingest(_) => "ingests".to_owned(),
            LeaseResource::Snapshot { snapshotter, .. } => format!("snapshots/{snapshotter}"),
        }
    }

    /// The wire id: the digest, the ref or the snapshot key.
    pub fn id(&self) -> &str {
        match self {
            LeaseResource::Content(digest) => digest.as_str(),
            LeaseResource::Ingest(reference) => reference,
            LeaseResource::Snapshot { key, .. } => key,
        }
    }
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(LEASES)?;
    txn.open_table(LEASE_RESOURCES)?;
    Ok(())
}

pub(super) fn namespace_has_leases(txn: &WriteTransaction, namespace: &str) -> Result<bool> {
    super::namespace_has_records(txn, LEASES, namespace)
}

/// Every lease of every namespace with its resources, for the collector:
/// `(namespace, lease, resources)`.
pub(crate) fn all_with_resources(
    txn: &WriteTransaction,
) -> Result<Vec<(String, Lease, Vec<LeaseResource>)>> {
    let leases = txn.open_table(LEASES)?;
    let resources = txn.open_table(LEASE_RESOURCES)?;
    let mut all = Vec::new();
    for entry in leases.iter()? {
        let (key, bytes) = entry?;
        let (namespace, id) = key.value();
        let lease = decode_lease(id, bytes.value())?;
        let held = resources_of(&resources, namespace, id)?;
        all.push((namespace.to_owned(), lease, held));
    }
    Ok(all)
}

/// Deletes a lease and its resource records within an open transaction;
/// returns whether it existed.
pub(crate) fn delete_in(txn: &WriteTransaction, namespace: &str, id: &str) -> Result<bool> {
    if txn.open_table(LEASES)?.remove((namespace, id))?.is_none() {
        return Ok(false);
    }
    let mut table = txn.open_table(LEASE_RESOURCES)?;
    for resource in resources_of(&table, namespace, id)? {
        let kind = resource.kind();
        table.remove((namespace, id, kind.as_str(), resource.id()))?;
    }
    Ok(true)
}

/// Adds `resource` to lease `id` within an open transaction (the content
/// store records what a leased writer ingests and commits this way).
/// `NotFound` if the lease does not exist.
pub fn add_resource_in(
    txn: &WriteTransaction,
    namespace: &str,
    id: &str,
    resource: &LeaseResource,
) -> Result<()> {
    if txn.open_table(LEASES)?.get((namespace, id))?.is_none() {
        return Err(lease_not_found(id));
    }
    let kind = resource.kind();
    txn.open_table(LEASE_RESOURCES)?
        .insert((namespace, id, kind.as_str(), resource.id()), ())?;
    Ok(())
}

/// Removes `resource` from lease `id` within an open transaction; removing
/// one the lease does not hold is not an error.
pub fn delete_resource_in(
    txn: &WriteTransaction,
    namespace: &str,
    id: &str,
    resource: &LeaseResource,
) -> Result<()> {
    let kind = resource.kind();
    txn.open_table(LEASE_RESOURCES)?
        .remove((namespace, id, kind.as_str(), resource.id()))?;
    Ok(())
}

fn resources_of(
    table: &impl ReadableTable<(&'static str, &'static str, &'static str, &'static str), ()>,
    namespace: &str,
    id: &str,
) -> Result<Vec<LeaseResource>> {
    let mut held = Vec::new();
    for entry in table.range((namespace, id, "", "")..)? {
        let (key, _) = entry?;
        let (ns, lease, kind, resource) = key.value();
        if ns != namespace || lease != id {
            break;
        }
        held.push(LeaseResource::parse(kind, resource).map_err(|err| {
            Error::internal(format!("lease {id}: corrupt resource record: {err}"))
        })?);
    }
    Ok(held)
}

/// The leases service's store.
#[derive(Debug, Clone)]
pub struct LeaseManager {
    db: Db,
}

impl LeaseManager {
    /// The manager over `db`.
    pub fn new(db: Db) -> Self {
        LeaseManager { db }
    }

    /// Creates lease `id`, or one with a generated id when `id` is empty
    /// (as containerd's Create does). `AlreadyExists` if taken;
    /// `InvalidArgument` for a malformed id, labels or expiry.
    pub fn create(&self, namespace: &str, id: &str, labels: Labels) -> Result<Lease> {
        let id = if id.is_empty() {
            generated_id()
        } else {
            validate_id(id)?;
            id.to_owned()
        };
        let id = id.as_str();
        labels::validate(&labels)?;
        let lease = Lease {
            id: id.to_owned(),
            labels,
            created_at: SystemTime::now(),
        };
        lease.expires_at()?;
        self.db.write(|txn| {
            namespaces::ensure(txn, namespace)?;
            let mut table = txn.open_table(LEASES)?;
            if table.get((namespace, id))?.is_some() {
                return Err(Error::already_exists(format!("lease {id}: already exists")));
            }
            table.insert((namespace, id), encode(&lease)?.as_slice())?;
            Ok(lease)
        })
    }

    /// One lease; `NotFound` if absent.
    pub fn get(&self, namespace: &str, id: &str) -> Result<Lease> {
        self.db.read(|txn| {
            let table = txn.open_table(LEASES)?;
            let bytes = table
                .get((namespace, id))?
                .ok_or_else(|| lease_not_found(id))?;
            decode_lease(id, bytes.value())
        })
    }

    /// Deletes a lease and releases what it held (collected by the next
    /// GC if nothing else refers to it); `NotFound` if absent.
    pub fn delete(&self, namespace: &str, id: &str) -> Result<()> {
        self.db.write(|txn| match delete_in(txn, namespace, id)? {
            true => Ok(()),
            false => Err(lease_not_found(id)),
        })
    }

    /// The leases of `namespace` that pass `filter`, by id.
    pub fn list(&self, namespace: &str, filter: &Filter) -> Result<Vec<Lease>> {
        self.db.read(|txn| {
            let table = txn.open_table(LEASES)?;
            let mut leases = Vec::new();
            for entry in table.range((namespace, "")..)? {
                let (key, bytes) = entry?;
                let (ns, id) = key.value();
                if ns != namespace {
                    break;
                }
                let lease = decode_lease(id, bytes.value())?;
                if filter.matches(&lease) {
                    leases.push(lease);
                }
            }
            Ok(leases)
        })
    }

    /// Adds a resource to lease `id`; `NotFound` if the lease is absent.
    pub fn add_resource(&self, namespace: &str, id: &str, resource: &LeaseResource) -> Result<()> {
        self.db
            .write(|txn| add_resource_in(txn, namespace, id, resource))
    }

    /// Removes a resource from lease `id`; `NotFound` if the lease is absent.
    pub fn delete_resource(
        &self,
        namespace: &str,
        id: &str,
        resource: &LeaseResource,
    ) -> Result<()> {
        self.db.write(|txn| {
            if txn.open_table(LEASES)?.get((namespace, id))?.is_none() {
                return Err(lease_not_found(id));
            }
            delete_resource_in(txn, namespace, id, resource)
        })
    }

    /// What lease `id` holds; `NotFound` if the lease is absent.
    pub fn list_resources(&self, namespace: &str, id: &str) -> Result<Vec<LeaseResource>> {
        self.db.read(|txn| {
            if txn.open_table(LEASES)?.get((namespace, id))?.is_none() {
                return Err(lease_not_found(id));
            }
            resources_of(&txn.open_table(LEASE_RESOURCES)?, namespace, id)
        })
    }
}

/// The longest lease id accepted.
pub const MAX_LEASE_ID_LEN: usize = 256;

/// Lease ids are the client's: ctr's random ones (`<nanos>-<base64url>`)
/// do not follow the identifier rule, so any printable id is accepted.
fn validate_id(id: &str) -> Result<()> {
    if id.len() > MAX_LEASE_ID_LEN {
        return Err(Error::invalid(format!(
            "lease id {id:?}: longer than {MAX_LEASE_ID_LEN} bytes"
        )));
    }
    if id.chars().any(char::is_control) {
        return Err(Error::invalid(format!(
            "lease id {id:?}: control characters"
        )));
    }
    Ok(())
}

/// A fresh lease id: the time in nanoseconds and a per-process counter.
fn generated_id() -> String {
    static SEQUENCE: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!(
        "{nanos}-{}-{}",
        std::process::id(),
        SEQUENCE.fetch_add(1, Ordering::Relaxed)
    )
}

fn decode_lease(id: &str, bytes: &[u8]) -> Result<Lease> {
    let lease: Lease = decode(bytes, format_args!("lease {id}"))?;
    Ok(Lease {
        id: id.to_owned(),
        ..lease
    })
}

fn lease_not_found(id: &str) -> Error {
    Error::not_found(format!("lease {id}: not found"))
}
