//! Snapshots: the filesystem trees containers and image layers live in,
//! with containerd's Snapshotter contract.
//!
//! A snapshot is one of three kinds:
//! - **committed**: read-only and immutable, the only kind that can be a
//!   parent. Image layers end up as committed snapshots.
//! - **active**: a writable tree made from a committed parent (or from
//!   nothing) by [`Snapshotter::prepare`]; it becomes committed under a new
//!   name with [`Snapshotter::commit`].
//! - **view**: a read-only tree of a committed parent made by
//!   [`Snapshotter::view`]; it can only be removed, never committed.
//!
//! Keys are unique per namespace, and every method takes the namespace. A
//! snapshot with children cannot be removed. Nothing is mounted by the
//! snapshotter: it returns [`Mount`]s the caller mounts ([`mount_all`]) and
//! unmounts ([`unmount_all`]) where it wants the tree.
//!
//! # Worked example: unpacking a two-layer image, then running on it
//!
//! ```text
//! // Layer 1 has no parent. The active snapshot's key is temporary; its
//! // committed name is the layer's chain ID.
//! mounts = prepare(ns, "extract-1", None)        // bind of an empty dir
//! mount_all(mounts, tmp); apply layer 1 into tmp; unmount_all(tmp)
//! commit(ns, "sha256:c1", "extract-1")           // "extract-1" is gone now
//!
//! // Layer 2 goes on top of layer 1.
//! mounts = prepare(ns, "extract-2", Some("sha256:c1"))   // overlay c1 + upper
//! apply layer 2 (overlayfs applies straight into the upper dir)
//! commit(ns, "sha256:c2", "extract-2")
//!
//! // A container gets its own writable tree over the image...
//! mounts = prepare(ns, "ctr-1", Some("sha256:c2"))
//! // ...and a reader (say, an image inspector) a read-only one.
//! mounts = view(ns, "inspect", Some("sha256:c2"))
//!
//! remove(ns, "sha256:c2")   // FailedPrecondition: ctr-1 and inspect use it
//! commit(ns, "x", "inspect") // FailedPrecondition: views are never committed
//! remove(ns, "inspect"); remove(ns, "ctr-1"); remove(ns, "sha256:c2") // fine
//! ```
//!
//! Metadata lives in berthd's redb database (tables `snapshots.v1.*`,
//! drawn in `store.rs` and docs/berthd.md); the trees live in
//! `<root>/snapshots/<id>`, numbered by
//! a backend id that never repeats. A snapshot directory is built under a
//! temporary name and renamed into place before its record is stored, and
//! removed after its record is gone, so a crash leaves at worst a directory
//! no record refers to, which [`Snapshotter::cleanup`] removes.

mod backend;
pub mod mount;
mod native;
mod overlay;
mod store;
pub mod tree;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::{Context, Error, Result};

use crate::metadata::Fields;
pub use crate::metadata::Filter;
pub use backend::Backend;
pub use mount::{mount_all, unmount_all, Mount, TempMount};
pub use native::Native;
pub use overlay::Overlay;

use store::{Record, Store};

/// The kind of a snapshot; see the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    View,
    Active,
    Committed,
}

impl Kind {
    /// The name filters and the API use: `view`, `active`, `committed`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Active => "active",
            Kind::Committed => "committed",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a snapshot is, as Stat and Walk report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    /// The key (active, view) or committed name.
    pub name: String,
    /// The committed parent, if any.
    pub parent: Option<String>,
    pub kind: Kind,
    pub labels: BTreeMap<String, String>,
    pub created: SystemTime,
    pub updated: SystemTime,
}

impl Fields for Info {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [field] if field == "name" => Some(self.name.clone()),
            [field] if field == "parent" => self.parent.clone(),
            [field] if field == "kind" => Some(self.kind.to_string()),
            [field, label @ ..] if field == "labels" && !label.is_empty() => {
                self.labels.get(&label.join(".")).cloned()
            }
            _ => None,
        }
    }
}

/// Disk space a snapshot itself takes (its parents not counted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Bytes of disk blocks.
    pub size: u64,
    /// Inodes, each hard-linked file once.
    pub inodes: u64,
}

/// A snapshotter: the shared contract over one [`Backend`].
#[derive(Debug)]
pub struct Snapshotter {
    /// `<root>/snapshots`, holding one directory per backend id.
    dir: PathBuf,
    store: Store,
    backend: Box<dyn Backend>,
    /// Ids whose directory is being built and has no record yet; cleanup
    /// leaves them alone.
    in_flight: Mutex<HashSet<u64>>,
}

/// Removes an id from the in-flight set when creation ends, however it ends.
struct InFlight<'a> {
    snapshotter: &'a Snapshotter,
    id: u64,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.snapshotter.in_flight().remove(&self.id);
    }
}

impl Snapshotter {
    /// A snapshotter keeping trees under `root` (which it creates) and
    /// metadata in `db`.
    pub fn new(db: Arc<redb::Database>, root: &Path, backend: Box<dyn Backend>) -> Result<Self> {
        let dir = root.join("snapshots");
        fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
        let snapshotter = Snapshotter {
            dir,
            store: Store::open(db, backend.name())?,
            backend,
            in_flight: Mutex::new(HashSet::new()),
        };
        // Leftovers of a crash go before any id is handed out again: an id
        // reserved but never recorded may be reserved anew (see
        // `Store::allocate_id`), and its old directory must not be in the way.
        snapshotter.cleanup()?;
        Ok(snapshotter)
    }

    /// The `overlayfs` snapshotter rooted at `root`.
    pub fn overlayfs(db: Arc<redb::Database>, root: &Path) -> Result<Self> {
        Self::new(db, root, Box::new(Overlay::new()))
    }

    /// The `native` (copying) snapshotter rooted at `root`.
    pub fn native(db: Arc<redb::Database>, root: &Path) -> Result<Self> {
        Self::new(db, root, Box::new(Native))
    }

    /// Whether namespace `ns` still has snapshots here, read in the caller's
    /// write transaction: the check the metadata store runs before deleting
    /// a namespace.
    pub fn namespace_in_use(&self, txn: &redb::WriteTransaction, ns: &str) -> Result<bool> {
        self.store.namespace_has_snapshots(txn, ns)
    }

    /// The snapshotter's name (`overlayfs`, `native`).
    pub fn name(&self) -> &'static str {
        self.backend.name()
    }

    fn in_flight(&self) -> MutexGuard<'_, HashSet<u64>> {
        self.in_flight
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn id_dir(&self, id: u64) -> PathBuf {
        self.dir.join(id.to_string())
    }

    /// The snapshot `key` of namespace `ns`.
    pub fn stat(&self, ns: &str, key: &str) -> Result<Info> {
        Ok(self.store.get(ns, key)?.info(key))
    }

    /// Changes the labels of `info.name`, the only mutable field. With no
    /// field paths all labels are replaced by `info.labels`; `labels`
    /// does the same; `labels.<key>` sets that one label from `info.labels`,
    /// or removes it when `info.labels` lacks it.
    pub fn update<S: AsRef<str>>(&self, ns: &str, info: &Info, fieldpaths: &[S]) -> Result<Info> {
        let key = &info.name;
        let record = self.store.update(ns, key, |record| {
            if fieldpaths.is_empty() {
                record.labels = info.labels.clone();
                return Ok(());
            }
            for path in fieldpaths.iter().map(|p| p.as_ref()) {
                if path == "labels" {
                    record.labels = info.labels.clone();
                } else if let Some(label) = path.strip_prefix("labels.") {
                    match info.labels.get(label) {
                        Some(value) => record.labels.insert(label.to_string(), value.clone()),
                        None => record.labels.remove(label),
                    };
                } else {
                    return Err(Error::invalid(format!(
                        "snapshot {key}: cannot update field {path:?} (only labels change)"
                    )));
                }
            }
            validate_labels(&record.labels)
        })?;
        Ok(record.info(key))
    }

    /// Disk usage of `key` itself: measured at commit for committed
    /// snapshots, now for active ones.
    pub fn usage(&self, ns: &str, key: &str) -> Result<Usage> {
        let record = self.store.get(ns, key)?;
        match record.usage {
            Some(usage) => Ok(usage),
            None => self.backend.usage(&self.id_dir(record.id)),
        }
    }

    /// The mounts presenting the tree of an active snapshot or view (a
    /// committed snapshot has none: view it).
    pub fn mounts(&self, ns: &str, key: &str) -> Result<Vec<Mount>> {
        let (record, ancestors) = self.store.get_with_ancestors(ns, key)?;
        if record.kind == Kind::Committed {
            return Err(Error::precondition(format!(
                "snapshot {key} in namespace {ns}: is committed, only active snapshots and views have mounts"
            )));
        }
        let parents: Vec<PathBuf> = ancestors.iter().map(|id| self.id_dir(*id)).collect();
        Ok(self
            .backend
            .mounts(&self.id_dir(record.id), record.kind, &parents))
    }

    /// Creates the active snapshot `key` over the committed `parent` (or
    /// empty) and returns its mounts.
    pub fn prepare(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(ns, key, parent, labels, Kind::Active)
    }

    /// Creates the read-only view `key` of the committed `parent` (or of
    /// an empty tree) and returns its mounts.
    pub fn view(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.create(ns, key, parent, labels, Kind::View)
    }

    fn create(
        &self,
        ns: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
        kind: Kind,
    ) -> Result<Vec<Mount>> {
        if key.is_empty() {
            return Err(Error::invalid("snapshot key: must not be empty"));
        }
        validate_labels(&labels)?;
        let parent = parent.filter(|p| !p.is_empty());
        let ancestors = self.store.check_new(ns, key, parent)?;
        let parents: Vec<PathBuf> = ancestors.iter().map(|id| self.id_dir(*id)).collect();

        let id = self.store.allocate_id()?;
        self.in_flight().insert(id);
        let _in_flight = InFlight {
            snapshotter: self,
            id,
        };

        let dir = self.id_dir(id);
        self.build_dir(id, kind, &parents)
            .with_context(|| format!("snapshot {key} in namespace {ns}"))?;
        let now = SystemTime::now();
        let record = Record {
            id,
            kind,
            parent: parent.map(str::to_string),
            labels,
            created: now,
            updated: now,
            usage: None,
        };
        if let Err(err) = self.store.insert(ns, key, &record) {
            let _ = fs::remove_dir_all(&dir);
            return Err(err);
        }
        Ok(self.backend.mounts(&dir, kind, &parents))
    }

    /// Builds `<id>` under a temporary name, then renames it into place.
    fn build_dir(&self, id: u64, kind: Kind, parents: &[PathBuf]) -> Result<()> {
        let building = self.dir.join(format!("new-{id}"));
        fs::create_dir(&building).with_context(|| format!("create {}", building.display()))?;
        let built = self
            .backend
            .create(&building, kind, parents)
            .and_then(|()| {
                let dir = self.id_dir(id);
                fs::rename(&building, &dir)
                    .with_context(|| format!("rename {} to {}", building.display(), dir.display()))
            })
            .and_then(|()| sync_dir(&self.dir));
        if built.is_err() {
            let _ = fs::remove_dir_all(&building);
        }
        built
    }

    /// Commits the active snapshot `key` as `name`, with `labels`; `key`
    /// no longer exists afterwards. Views cannot be committed.
    pub fn commit(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        if name.is_empty() {
            return Err(Error::invalid("committed snapshot name: must not be empty"));
        }
        validate_labels(&labels)?;
        let record = self.store.get(ns, key)?;
        if record.kind != Kind::Active {
            return Err(Error::precondition(format!(
                "snapshot {key} in namespace {ns}: is {}, only active snapshots can be committed",
                record.kind
            )));
        }
        let dir = self.id_dir(record.id);
        let usage = self.backend.usage(&dir)?;
        // What was written must be on disk before anyone builds on it.
        sync_tree(&dir)?;
        self.store.commit(ns, key, name, None, labels, usage)?;
        Ok(())
    }

    /// Whether this snapshotter can rebase: see [`Snapshotter::prepare_detached`].
    pub fn can_rebase(&self) -> bool {
        self.backend.can_rebase()
    }

    /// Creates an active snapshot `key` with no parent, to be filled as an
    /// overlay upper dir (whiteouts as overlay whiteouts) and committed
    /// onto a parent that may not exist yet with
    /// [`Snapshotter::commit_onto`]. Returns the directory to fill. This is
    /// how independent layers are applied in parallel; only snapshotters
    /// that [can rebase](Snapshotter::can_rebase) offer it (others:
    /// Unimplemented).
    pub fn prepare_detached(
        &self,
        ns: &str,
        key: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<PathBuf> {
        if !self.can_rebase() {
            return Err(Error::unimplemented(format!(
                "snapshotter {}: cannot rebase snapshots",
                self.name()
            )));
        }
        self.create(ns, key, None, labels, Kind::Active)?;
        let record = self.store.get(ns, key)?;
        Ok(self.backend.upper_dir(&self.id_dir(record.id)))
    }

    /// Commits the detached snapshot `key` as `name` on top of the
    /// committed `parent` (or of nothing).
    pub fn commit_onto(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        parent: Option<&str>,
        labels: BTreeMap<String, String>,
    ) -> Result<()> {
        if !self.can_rebase() {
            return Err(Error::unimplemented(format!(
                "snapshotter {}: cannot rebase snapshots",
                self.name()
            )));
        }
        validate_labels(&labels)?;
        let record = self.store.get(ns, key)?;
        if record.kind != Kind::Active {
            return Err(Error::precondition(format!(
                "snapshot {key} in namespace {ns}: is {}, only active snapshots can be committed",
                record.kind
            )));
        }
        let dir = self.id_dir(record.id);
        let usage = self.backend.usage(&dir)?;
        sync_tree(&dir)?;
        self.store.commit(ns, key, name, parent, labels, usage)?;
        Ok(())
    }

    /// Removes `key`; refused with FailedPrecondition while other snapshots
    /// have it as parent. Its directory goes right after the record; if
    /// that fails, [`Snapshotter::cleanup`] finishes the job.
    pub fn remove(&self, ns: &str, key: &str) -> Result<()> {
        let record = self.store.remove(ns, key)?;
        let dir = self.id_dir(record.id);
        let doomed = self.dir.join(format!("rm-{}", record.id));
        if fs::rename(&dir, &doomed).is_ok() {
            let _ = fs::remove_dir_all(&doomed);
        }
        Ok(())
    }

    /// The snapshots of `ns` that pass `filters` (containerd's syntax, see
    /// [`Filter`]), ordered by name.
    pub fn walk<S: AsRef<str>>(&self, ns: &str, filters: &[S]) -> Result<Vec<Info>> {
        let filter = Filter::parse_all(filters)?;
        Ok(self
            .store
            .list(ns)?
            .into_iter()
            .map(|(key, record)| record.info(&key))
            .filter(|info| filter.matches(info))
            .collect())
    }

    /// Removes every snapshot directory no record refers to: leftovers of
    /// crashes and of removals whose directory could not be deleted.
    pub fn cleanup(&self) -> Result<()> {
        // Held throughout, so a snapshot cannot finish being created between
        // reading the records and deleting its directory.
        let in_flight = self.in_flight();
        let in_use = self.store.ids_in_use()?;
        let entries =
            fs::read_dir(&self.dir).with_context(|| format!("read {}", self.dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("read {}", self.dir.display()))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let id = name
                .strip_prefix("new-")
                .or_else(|| name.strip_prefix("rm-"))
                .unwrap_or(name);
            let Ok(id) = id.parse::<u64>() else { continue };
            let orphan = if name.starts_with("rm-") {
                true
            } else {
                !in_use.contains(&id) && !in_flight.contains(&id)
            };
            if orphan {
                let path = entry.path();
                match fs::remove_dir_all(&path) {
                    // A removal running alongside got there first.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    other => other.with_context(|| format!("remove {}", path.display()))?,
                }
            }
        }
        Ok(())
    }
}

/// Most bytes a label's key and value may take together, as containerd.
const MAX_LABEL: usize = 4096;

/// Checks labels as containerd does: non-empty keys, key and value at most
/// 4096 bytes together.
fn validate_labels(labels: &BTreeMap<String, String>) -> Result<()> {
    for (key, value) in labels {
        if key.is_empty() {
            return Err(Error::invalid("label key: must not be empty"));
        }
        if key.len() + value.len() > MAX_LABEL {
            return Err(Error::invalid(format!(
                "label {key:?}: key and value longer than {MAX_LABEL} bytes"
            )));
        }
    }
    Ok(())
}

/// fsyncs a directory, so a rename or creation in it is durable.
fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {}", dir.display()))
}

/// Makes what was written below `dir` durable: one syncfs of its filesystem
/// rather than an fsync per file.
fn sync_tree(dir: &Path) -> Result<()> {
    let handle = fs::File::open(dir).with_context(|| format!("open {}", dir.display()))?;
    rustix::fs::syncfs(&handle)
        .map_err(tree::io_error)
        .with_context(|| format!("sync filesystem of {}", dir.display()))
}
