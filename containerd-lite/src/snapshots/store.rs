//! Snapshot metadata in berthd's redb database.
//!
//! Tables, one set per snapshotter `<name>` (`overlayfs`, `native`), all in
//! berthd's one database (schema version 1):
//! ```text
//! snapshots.<name>.v1.meta      "schema_version" -> 1, "next_id" -> next backend id
//! snapshots.<name>.v1.records   (namespace, key) -> JSON Record
//! snapshots.<name>.v1.children  (namespace, parent key, child key) -> ()
//! ```
//! `children` indexes the parent links of `records`, so refusing to remove
//! a parent is one range lookup. Every change to both is one transaction.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

use super::{Info, Kind, Usage};

/// The names of one snapshotter's tables.
#[derive(Debug, Clone)]
struct Tables {
    meta: String,
    records: String,
    children: String,
}

impl Tables {
    fn of(snapshotter: &str) -> Tables {
        Tables {
            meta: format!("snapshots.{snapshotter}.v1.meta"),
            records: format!("snapshots.{snapshotter}.v1.records"),
            children: format!("snapshots.{snapshotter}.v1.children"),
        }
    }

    fn meta(&self) -> TableDefinition<'_, &'static str, u64> {
        TableDefinition::new(&self.meta)
    }

    fn records(&self) -> TableDefinition<'_, (&'static str, &'static str), &'static [u8]> {
        TableDefinition::new(&self.records)
    }

    fn children(&self) -> TableDefinition<'_, (&'static str, &'static str, &'static str), ()> {
        TableDefinition::new(&self.children)
    }
}

const SCHEMA_VERSION: u64 = 1;

/// What berthd keeps about one snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Record {
    /// Names the backend directory, `<root>/snapshots/<id>`.
    pub id: u64,
    pub kind: Kind,
    pub parent: Option<String>,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
    /// Measured once at commit; committed snapshots never change.
    pub usage: Option<Usage>,
}

impl Record {
    pub fn info(&self, key: &str) -> Info {
        Info {
            name: key.to_string(),
            parent: self.parent.clone(),
            kind: self.kind,
            labels: self.labels.clone(),
            created: self.created,
            updated: self.updated,
        }
    }
}

fn db_error(err: impl Into<redb::Error>) -> Error {
    Error::internal(format!("snapshot metadata: {}", err.into()))
}

fn not_found(ns: &str, key: &str) -> Error {
    Error::not_found(format!("snapshot {key} in namespace {ns}: not found"))
}

fn decode(ns: &str, key: &str, bytes: &[u8]) -> Result<Record> {
    serde_json::from_slice(bytes).map_err(|e| {
        Error::internal(format!(
            "snapshot {key} in namespace {ns}: corrupt record: {e}"
        ))
    })
}

fn encode(record: &Record) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|e| Error::internal(format!("encode snapshot record: {e}")))
}

/// The snapshot tables of one database.
#[derive(Debug, Clone)]
pub(super) struct Store {
    db: Arc<Database>,
    tables: Tables,
}

impl Store {
    /// Creates the tables if needed and checks the schema version.
    pub fn open(db: Arc<Database>, snapshotter: &str) -> Result<Self> {
        let tables = Tables::of(snapshotter);
        let txn = db.begin_write().map_err(db_error)?;
        {
            let mut meta = txn.open_table(tables.meta()).map_err(db_error)?;
            let version = meta
                .get("schema_version")
                .map_err(db_error)?
                .map(|v| v.value());
            match version {
                None => {
                    meta.insert("schema_version", SCHEMA_VERSION).map_err(db_error)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(other) => {
                    return Err(Error::precondition(format!(
                        "snapshot metadata has schema version {other}, this berthd knows {SCHEMA_VERSION}"
                    )))
                }
            }
            txn.open_table(tables.records()).map_err(db_error)?;
            txn.open_table(tables.children()).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)?;
        Ok(Store { db, tables })
    }

    /// Reserves a new backend id, never handed out twice to recorded
    /// snapshots. The reservation is not flushed to disk by itself: the
    /// durable commit of the record that uses the id carries it along. An id
    /// lost in a crash was therefore used by no record and may come again;
    /// the snapshotter removes its leftover directory when it opens.
    pub fn allocate_id(&self) -> Result<u64> {
        let mut txn = self.db.begin_write().map_err(db_error)?;
        txn.set_durability(Durability::None).map_err(db_error)?;
        let id = {
            let mut meta = txn.open_table(self.tables.meta()).map_err(db_error)?;
            let id = meta
                .get("next_id")
                .map_err(db_error)?
                .map_or(1, |v| v.value());
            meta.insert("next_id", id + 1).map_err(db_error)?;
            id
        };
        txn.commit().map_err(db_error)?;
        Ok(id)
    }

    /// The record of `key` and the backend ids of its ancestors, nearest first.
    pub fn get_with_ancestors(&self, ns: &str, key: &str) -> Result<(Record, Vec<u64>)> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let records = txn.open_table(self.tables.records()).map_err(db_error)?;
        let get = |key: &str| -> Result<Record> {
            let value = records.get((ns, key)).map_err(db_error)?;
            let value = value.ok_or_else(|| not_found(ns, key))?;
            decode(ns, key, value.value())
        };
        let record = get(key)?;
        let mut ancestors = Vec::new();
        let mut next = record.parent.clone();
        while let Some(parent) = next {
            let parent_record = get(&parent).map_err(|e| {
                Error::internal(format!(
                    "snapshot {key}: broken parent chain: {}",
                    e.message
                ))
            })?;
            ancestors.push(parent_record.id);
            next = parent_record.parent;
        }
        Ok((record, ancestors))
    }

    /// The record of `key`.
    pub fn get(&self, ns: &str, key: &str) -> Result<Record> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let records = txn.open_table(self.tables.records()).map_err(db_error)?;
        let value = records.get((ns, key)).map_err(db_error)?;
        let value = value.ok_or_else(|| not_found(ns, key))?;
        decode(ns, key, value.value())
    }

    /// Checks that `key` is free and `parent` (if any) is committed.
    /// Returns the ancestors' backend ids, nearest first.
    pub fn check_new(&self, ns: &str, key: &str, parent: Option<&str>) -> Result<Vec<u64>> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let records = txn.open_table(self.tables.records()).map_err(db_error)?;
        if records.get((ns, key)).map_err(db_error)?.is_some() {
            return Err(Error::already_exists(format!(
                "snapshot {key} in namespace {ns}: already exists"
            )));
        }
        drop(records);
        drop(txn);
        let Some(parent) = parent else {
            return Ok(Vec::new());
        };
        let (record, mut ancestors) = self.get_with_ancestors(ns, parent).map_err(|e| {
            if e.kind == crate::ErrorKind::NotFound {
                Error::not_found(format!(
                    "parent snapshot {parent} of {key} in namespace {ns}: not found"
                ))
            } else {
                e
            }
        })?;
        if record.kind != Kind::Committed {
            return Err(Error::invalid(format!(
                "parent snapshot {parent} of {key}: is {}, not committed",
                record.kind
            )));
        }
        ancestors.insert(0, record.id);
        Ok(ancestors)
    }

    /// Stores a new snapshot, re-checking in the same transaction that the
    /// key is still free and the parent still committed.
    pub fn insert(&self, ns: &str, key: &str, record: &Record) -> Result<()> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut records = txn.open_table(self.tables.records()).map_err(db_error)?;
            if records.get((ns, key)).map_err(db_error)?.is_some() {
                return Err(Error::already_exists(format!(
                    "snapshot {key} in namespace {ns}: already exists"
                )));
            }
            if let Some(parent) = record.parent.as_deref() {
                let value = records.get((ns, parent)).map_err(db_error)?;
                let value = value.ok_or_else(|| {
                    Error::not_found(format!(
                        "parent snapshot {parent} of {key} in namespace {ns}: not found"
                    ))
                })?;
                if decode(ns, parent, value.value())?.kind != Kind::Committed {
                    return Err(Error::invalid(format!(
                        "parent snapshot {parent} of {key}: not committed"
                    )));
                }
                drop(value);
                let mut children = txn.open_table(self.tables.children()).map_err(db_error)?;
                children.insert((ns, parent, key), ()).map_err(db_error)?;
            }
            records
                .insert((ns, key), encode(record)?.as_slice())
                .map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }

    /// Turns the active snapshot `key` into the committed snapshot `name`,
    /// keeping its backend id. With `rebase_onto`, the active snapshot must
    /// have no parent and the committed one gets that (committed) parent.
    /// Returns the committed record.
    pub fn commit(
        &self,
        ns: &str,
        key: &str,
        name: &str,
        rebase_onto: Option<&str>,
        labels: BTreeMap<String, String>,
        usage: Usage,
    ) -> Result<Record> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let committed = {
            let mut records = txn.open_table(self.tables.records()).map_err(db_error)?;
            let active = {
                let value = records.get((ns, key)).map_err(db_error)?;
                let value = value.ok_or_else(|| not_found(ns, key))?;
                decode(ns, key, value.value())?
            };
            if active.kind != Kind::Active {
                return Err(Error::precondition(format!(
                    "snapshot {key} in namespace {ns}: is {}, only active snapshots can be committed",
                    active.kind
                )));
            }
            if records.get((ns, name)).map_err(db_error)?.is_some() {
                return Err(Error::already_exists(format!(
                    "snapshot {name} in namespace {ns}: already exists"
                )));
            }
            let mut parent = active.parent.clone();
            if let Some(base) = rebase_onto {
                if active.parent.is_some() {
                    return Err(Error::precondition(format!(
                        "snapshot {key} in namespace {ns}: has a parent, cannot be rebased"
                    )));
                }
                let value = records.get((ns, base)).map_err(db_error)?;
                let value = value.ok_or_else(|| not_found(ns, base))?;
                if decode(ns, base, value.value())?.kind != Kind::Committed {
                    return Err(Error::invalid(format!(
                        "parent snapshot {base} of {name}: not committed"
                    )));
                }
                parent = Some(base.to_string());
            }
            let now = SystemTime::now();
            let committed = Record {
                id: active.id,
                kind: Kind::Committed,
                parent: parent.clone(),
                labels,
                created: now,
                updated: now,
                usage: Some(usage),
            };
            records.remove((ns, key)).map_err(db_error)?;
            records
                .insert((ns, name), encode(&committed)?.as_slice())
                .map_err(db_error)?;
            let mut children = txn.open_table(self.tables.children()).map_err(db_error)?;
            if let Some(old_parent) = active.parent.as_deref() {
                children.remove((ns, old_parent, key)).map_err(db_error)?;
            }
            if let Some(parent) = parent.as_deref() {
                children.insert((ns, parent, name), ()).map_err(db_error)?;
            }
            committed
        };
        txn.commit().map_err(db_error)?;
        Ok(committed)
    }

    /// Removes `key`, refused while it has children. Returns what it was.
    pub fn remove(&self, ns: &str, key: &str) -> Result<Record> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let removed = {
            let mut records = txn.open_table(self.tables.records()).map_err(db_error)?;
            let mut children = txn.open_table(self.tables.children()).map_err(db_error)?;
            let record = {
                let value = records.get((ns, key)).map_err(db_error)?;
                let value = value.ok_or_else(|| not_found(ns, key))?;
                decode(ns, key, value.value())?
            };
            let first_child = children
                .range((ns, key, "")..)
                .map_err(db_error)?
                .next()
                .transpose()
                .map_err(db_error)?
                .and_then(|(k, _)| {
                    let (child_ns, parent, child) = k.value();
                    (child_ns == ns && parent == key).then(|| child.to_string())
                });
            if let Some(child) = first_child {
                return Err(Error::precondition(format!(
                    "snapshot {key} in namespace {ns}: has children (e.g. {child}), remove them first"
                )));
            }
            records.remove((ns, key)).map_err(db_error)?;
            if let Some(parent) = record.parent.as_deref() {
                children.remove((ns, parent, key)).map_err(db_error)?;
            }
            record
        };
        txn.commit().map_err(db_error)?;
        Ok(removed)
    }

    /// Changes the record of `key` with `change` and stores it.
    pub fn update(
        &self,
        ns: &str,
        key: &str,
        change: impl FnOnce(&mut Record) -> Result<()>,
    ) -> Result<Record> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let record = {
            let mut records = txn.open_table(self.tables.records()).map_err(db_error)?;
            let mut record = {
                let value = records.get((ns, key)).map_err(db_error)?;
                let value = value.ok_or_else(|| not_found(ns, key))?;
                decode(ns, key, value.value())?
            };
            change(&mut record)?;
            record.updated = SystemTime::now();
            records
                .insert((ns, key), encode(&record)?.as_slice())
                .map_err(db_error)?;
            record
        };
        txn.commit().map_err(db_error)?;
        Ok(record)
    }

    /// Every snapshot of namespace `ns`, by key.
    pub fn list(&self, ns: &str) -> Result<Vec<(String, Record)>> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let records = txn.open_table(self.tables.records()).map_err(db_error)?;
        let mut out = Vec::new();
        for item in records.range((ns, "")..).map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            let (record_ns, key) = k.value();
            if record_ns != ns {
                break;
            }
            out.push((key.to_string(), decode(ns, key, v.value())?));
        }
        Ok(out)
    }

    /// The backend ids some record, in any namespace, refers to.
    pub fn ids_in_use(&self) -> Result<HashSet<u64>> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let records = txn.open_table(self.tables.records()).map_err(db_error)?;
        let mut ids = HashSet::new();
        for item in records.iter().map_err(db_error)? {
            let (k, v) = item.map_err(db_error)?;
            let (ns, key) = k.value();
            ids.insert(decode(ns, key, v.value())?.id);
        }
        Ok(ids)
    }
}

impl Store {
    /// Whether `ns` has any snapshot, read inside the caller's write
    /// transaction (for the namespace deletion check of the metadata store).
    pub fn namespace_has_snapshots(&self, txn: &redb::WriteTransaction, ns: &str) -> Result<bool> {
        let records = txn.open_table(self.tables.records()).map_err(db_error)?;
        let first = records.range((ns, "")..).map_err(db_error)?.next();
        match first {
            None => Ok(false),
            Some(item) => {
                let (k, _) = item.map_err(db_error)?;
                Ok(k.value().0 == ns)
            }
        }
    }
}
