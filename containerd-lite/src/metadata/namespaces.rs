//! Namespaces: the isolation unit of every record.

use std::time::SystemTime;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::filter::{labels_field, Fields};
use super::labels::{self, apply_label_path, validate_identifier, Labels};
use super::{content, images, leases, Db};
use crate::{Error, Result};

pub(crate) const NAMESPACES: TableDefinition<&str, &[u8]> = TableDefinition::new("namespaces");

/// A namespace and its labels.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    #[serde(skip)]
    pub name: String,
    pub labels: Labels,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl Fields for Namespace {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [name] if name == "name" => Some(self.name.clone()),
            _ => labels_field(&self.labels, path),
        }
    }
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(NAMESPACES)?;
    Ok(())
}

/// Makes sure `namespace` exists, creating it if this is its first use.
/// Every write into a namespace calls this in its own transaction; other
/// modules (snapshots, containers) call it too.
pub fn ensure(txn: &WriteTransaction, namespace: &str) -> Result<()> {
    validate_identifier("namespace", namespace)?;
    let mut table = txn.open_table(NAMESPACES)?;
    if table.get(namespace)?.is_none() {
        let now = SystemTime::now();
        let record = Namespace {
            name: namespace.to_owned(),
            labels: Labels::new(),
            created_at: now,
            updated_at: now,
        };
        table.insert(namespace, encode(&record)?.as_slice())?;
    }
    Ok(())
}

/// Whether `namespace` exists, read without taking the write lock: callers
/// skip a commit (and its flush) when there is nothing to create.
pub fn exists(db: &Db, namespace: &str) -> Result<bool> {
    db.read(|txn| Ok(txn.open_table(NAMESPACES)?.get(namespace)?.is_some()))
}

/// The namespaces service: create, inspect, relabel and delete namespaces.
#[derive(Debug, Clone)]
pub struct NamespaceStore {
    db: Db,
}

impl NamespaceStore {
    /// The store over `db`.
    pub fn new(db: Db) -> Self {
        NamespaceStore { db }
    }

    /// Creates `name` with `labels`; `AlreadyExists` if it exists.
    pub fn create(&self, name: &str, labels: Labels) -> Result<Namespace> {
        validate_identifier("namespace", name)?;
        labels::validate(&labels)?;
        self.db.write(|txn| {
            let mut table = txn.open_table(NAMESPACES)?;
            if table.get(name)?.is_some() {
                return Err(Error::already_exists(format!(
                    "namespace {name}: already exists"
                )));
            }
            let now = SystemTime::now();
            let record = Namespace {
                name: name.to_owned(),
                labels,
                created_at: now,
                updated_at: now,
            };
            table.insert(name, encode(&record)?.as_slice())?;
            Ok(record)
        })
    }

    /// One namespace; `NotFound` if it does not exist.
    pub fn get(&self, name: &str) -> Result<Namespace> {
        self.db.read(|txn| {
            let table = txn.open_table(NAMESPACES)?;
            let bytes = table
                .get(name)?
                .ok_or_else(|| Error::not_found(format!("namespace {name}: not found")))?;
            Ok(Namespace {
                name: name.to_owned(),
                ..decode(bytes.value(), format_args!("namespace {name}"))?
            })
        })
    }

    /// Every namespace, by name.
    pub fn list(&self) -> Result<Vec<Namespace>> {
        self.db.read(|txn| {
            let table = txn.open_table(NAMESPACES)?;
            let mut all = Vec::new();
            for entry in table.iter()? {
                let (name, bytes) = entry?;
                let name = name.value().to_owned();
                let record: Namespace = decode(bytes.value(), format_args!("namespace {name}"))?;
                all.push(Namespace { name, ..record });
            }
            Ok(all)
        })
    }

    /// Updates a namespace's labels by field mask (`labels`,
    /// `labels.<key>`; no paths replaces all labels), creating it if new.
    pub fn update(&self, name: &str, labels: Labels, paths: &[String]) -> Result<Namespace> {
        labels::validate(&labels)?;
        self.db.write(|txn| {
            ensure(txn, name)?;
            let mut table = txn.open_table(NAMESPACES)?;
            let mut record: Namespace = {
                let bytes = table
                    .get(name)?
                    .ok_or_else(|| Error::not_found(format!("namespace {name}: not found")))?;
                decode(bytes.value(), format_args!("namespace {name}"))?
            };
            record.name = name.to_owned();
            if paths.is_empty() {
                record.labels = labels;
            } else {
                for path in paths {
                    if !apply_label_path(&mut record.labels, &labels, path) {
                        return Err(Error::invalid(format!(
                            "namespace {name}: cannot update field {path:?}"
                        )));
                    }
                }
            }
            record.updated_at = SystemTime::now();
            table.insert(name, encode(&record)?.as_slice())?;
            Ok(record)
        })
    }

    /// Deletes an empty namespace: `NotFound` if absent,
    /// `FailedPrecondition` while it still holds images, content, leases or
    /// any record of a module registered with
    /// [`Db::register_namespace_usage`].
    pub fn delete(&self, name: &str) -> Result<()> {
        self.db.write(|txn| {
            let mut table = txn.open_table(NAMESPACES)?;
            if table.remove(name)?.is_none() {
                return Err(Error::not_found(format!("namespace {name}: not found")));
            }
            drop(table);
            let used_by = if images::namespace_has_images(txn, name)? {
                Some("images")
            } else if content::namespace_has_content(txn, name)? {
                Some("content")
            } else if leases::namespace_has_leases(txn, name)? {
                Some("leases")
            } else {
                self.db.namespace_used_by(txn, name)?
            };
            if let Some(what) = used_by {
                return Err(Error::precondition(format!(
                    "namespace {name}: must be empty, but it still has {what}"
                )));
            }
            Ok(())
        })
    }
}
