//! berthd's metadata: one redb database for every namespaced record.
//!
//! [`Db`] owns the database file and hands out the shared
//! `Arc<redb::Database>`, so each service (content, images, leases here;
//! snapshots and containers in their own modules) defines its own tables in
//! the same file and can update several of them in one transaction.
//!
//! Every table is keyed by namespace first, so a namespace's records are one
//! contiguous range. Values are JSON documents (see each record type), which
//! lets fields be added without a migration. The schema, as tables:
//!
//! ```text
//! metadata.redb
//! ├── schema            "version" -> u64           (SCHEMA_VERSION)
//! ├── namespaces        <ns> -> { labels, created_at, updated_at }
//! ├── images            (<ns>, <name>) -> { target: { media_type, digest,
//! │                         size, annotations }, labels, created_at, updated_at }
//! ├── content           (<ns>, <digest>) -> { size, labels, created_at, updated_at }
//! ├── leases            (<ns>, <id>) -> { labels, created_at }
//! └── lease_resources   (<ns>, <id>, <type>, <resource id>) -> ()
//!                           type: "content" | "ingests" | "snapshots/<snapshotter>"
//! ```
//!
//! Blobs themselves live in the content store on disk; a blob is visible in
//! a namespace only once that namespace has a `content` record for it.
//! Namespaces are created implicitly by the first write into them.
//!
//! Versioning: the `schema` table records [`SCHEMA_VERSION`]. Opening an
//! older database runs the [`MIGRATIONS`] from its version up, in one write
//! transaction; a database from a newer berthd is refused.

mod codec;
pub mod content;
pub mod filter;
pub mod images;
pub mod labels;
pub mod leases;
pub mod namespaces;

use std::fmt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use redb::{
    ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, Value, WriteTransaction,
};

pub use content::{ContentStore, NamespacedWriter};
pub use filter::{Fields, Filter};
pub use images::{Image, ImageStore};
pub use labels::Labels;
pub use leases::{Lease, LeaseManager, LeaseResource};
pub use namespaces::{Namespace, NamespaceStore};

use crate::{Error, Result};

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

const SCHEMA: TableDefinition<&str, u64> = TableDefinition::new("schema");
const VERSION_KEY: &str = "version";

/// One step of schema evolution: brings a database at `from` to `from + 1`.
pub struct Migration {
    pub from: u64,
    pub description: &'static str,
    pub apply: fn(&WriteTransaction) -> Result<()>,
}

/// Every migration, in order. Empty while the schema is at version 1.
pub const MIGRATIONS: &[Migration] = &[];

/// Decides whether a namespace still holds records in a table owned by
/// another module (snapshots, containers): `Ok(true)` means in use.
pub type NamespaceUsage = Box<dyn Fn(&WriteTransaction, &str) -> Result<bool> + Send + Sync>;

/// The metadata database. Cloning is cheap; clones share the database.
#[derive(Clone)]
pub struct Db {
    database: Arc<redb::Database>,
    usage_checks: Arc<RwLock<Vec<(&'static str, NamespaceUsage)>>>,
}

impl fmt::Debug for Db {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Db").finish_non_exhaustive()
    }
}

impl Db {
    /// Opens (or creates) the database file at `path` and brings its schema
    /// to [`SCHEMA_VERSION`].
    pub fn open(path: impl AsRef<Path>) -> Result<Db> {
        let path = path.as_ref();
        let database = redb::Database::create(path)
            .map_err(|err| Error::from(err).context(format!("metadata {}", path.display())))?;
        let db = Db {
            database: Arc::new(database),
            usage_checks: Arc::default(),
        };
        db.migrate()
            .map_err(|err| err.context(format!("metadata {}", path.display())))?;
        Ok(db)
    }

    /// The shared database, for modules that keep their own tables in it.
    pub fn database(&self) -> &Arc<redb::Database> {
        &self.database
    }

    /// The schema version recorded in the file.
    pub fn schema_version(&self) -> Result<u64> {
        self.read(|txn| {
            let table = match txn.open_table(SCHEMA) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
                Err(err) => return Err(err.into()),
            };
            Ok(table.get(VERSION_KEY)?.map(|v| v.value()).unwrap_or(0))
        })
    }

    /// Registers a check that keeps a namespace from being deleted while a
    /// table of another module still has records in it. `what` names the
    /// records in the error ("snapshots", "containers").
    pub fn register_namespace_usage(&self, what: &'static str, check: NamespaceUsage) {
        self.usage_checks
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .push((what, check));
    }

    /// Runs `body` in a read transaction (a consistent snapshot).
    pub fn read<T>(&self, body: impl FnOnce(&ReadTransaction) -> Result<T>) -> Result<T> {
        let txn = self.database.begin_read()?;
        body(&txn)
    }

    /// Runs `body` in a write transaction, committed only if it succeeds.
    pub fn write<T>(&self, body: impl FnOnce(&WriteTransaction) -> Result<T>) -> Result<T> {
        let txn = self.database.begin_write()?;
        let value = body(&txn)?;
        txn.commit()?;
        Ok(value)
    }

    /// The first registered usage check that finds records of `namespace`,
    /// by name.
    pub(crate) fn namespace_used_by(
        &self,
        txn: &WriteTransaction,
        namespace: &str,
    ) -> Result<Option<&'static str>> {
        let checks = self
            .usage_checks
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        for (what, check) in checks.iter() {
            if check(txn, namespace)? {
                return Ok(Some(what));
            }
        }
        Ok(None)
    }

    fn migrate(&self) -> Result<()> {
        self.write(|txn| {
            let mut table = txn.open_table(SCHEMA)?;
            let found = table.get(VERSION_KEY)?.map(|v| v.value());
            let Some(mut version) = found else {
                // A new file: create every table so readers never miss one.
                namespaces::create_tables(txn)?;
                images::create_tables(txn)?;
                content::create_tables(txn)?;
                leases::create_tables(txn)?;
                table.insert(VERSION_KEY, SCHEMA_VERSION)?;
                return Ok(());
            };
            if version > SCHEMA_VERSION {
                return Err(Error::precondition(format!(
                    "schema version {version} is newer than this berthd's {SCHEMA_VERSION}"
                )));
            }
            while version < SCHEMA_VERSION {
                let step = MIGRATIONS
                    .iter()
                    .find(|m| m.from == version)
                    .ok_or_else(|| {
                        Error::internal(format!("no migration from schema {version}"))
                    })?;
                (step.apply)(txn)
                    .map_err(|err| err.context(format!("migration {}", step.description)))?;
                version += 1;
            }
            table.insert(VERSION_KEY, SCHEMA_VERSION)?;
            Ok(())
        })
    }
}

/// Whether a table keyed by `(namespace, ..)` has a record of `namespace`.
pub(crate) fn namespace_has_records<V: Value + 'static>(
    txn: &WriteTransaction,
    definition: TableDefinition<(&'static str, &'static str), V>,
    namespace: &str,
) -> Result<bool> {
    let table = txn.open_table(definition)?;
    let found = match table.range((namespace, "")..)?.next() {
        Some(entry) => entry?.0.value().0 == namespace,
        None => false,
    };
    Ok(found)
}

/// redb's errors are storage failures from berthd's point of view, except a
/// database another process holds (Unavailable).
macro_rules! internal_from_redb {
    ($($ty:ty),*) => {$(
        impl From<$ty> for Error {
            fn from(err: $ty) -> Error {
                Error::internal(format!("metadata database: {err}"))
            }
        }
    )*};
}
internal_from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

impl From<redb::DatabaseError> for Error {
    fn from(err: redb::DatabaseError) -> Error {
        match err {
            redb::DatabaseError::DatabaseAlreadyOpen => {
                Error::unavailable("metadata database: already open by another process")
            }
            other => Error::internal(format!("metadata database: {other}")),
        }
    }
}

impl From<redb::Error> for Error {
    fn from(err: redb::Error) -> Error {
        match err {
            redb::Error::DatabaseAlreadyOpen => {
                Error::unavailable("metadata database: already open by another process")
            }
            other => Error::internal(format!("metadata database: {other}")),
        }
    }
}

#[cfg(test)]
mod tests;
