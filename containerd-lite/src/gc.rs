//! Garbage collection: mark what is reachable, sweep the rest.
//!
//! The graph, as containerd draws it, per namespace:
//!
//! * roots: every image (its target blob, and what its labels point at);
//!   every lease not yet expired (the blobs, snapshots and ingests it
//!   holds); every blob or snapshot labelled `containerd.io/gc.root`;
//!   every ingest updated within the grace period;
//! * edges: a label `containerd.io/gc.ref.content<anything>=<digest>` on a
//!   blob, image or snapshot points at that blob;
//!   `containerd.io/gc.ref.snapshot.<snapshotter>[/<anything>]=<key>` points
//!   at that snapshot; a snapshot points at its parent.
//!
//! The sweep removes, in order: expired leases; every unmarked content
//! record (in one metadata transaction with the mark, so the records seen
//! are the records judged); the blobs no namespace records any more (a blob
//! nobody ever recorded only once it is older than the grace period, so a
//! commit racing with the collector keeps its blob); unmarked snapshots,
//! children before parents; and stale, unleased ingests.
//!
//! Snapshots live in the snapshotters' own stores: the collector reaches
//! them through [`GcSnapshotter`], which each snapshotter implements.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::mpsc::{self, SyncSender};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime};

use redb::ReadableTable;

use crate::content::{Digest, IngestManager, Manager};
use crate::metadata::{self, Db, LeaseResource};
use crate::metadata::{content as content_records, images, leases, namespaces};
use crate::{content::LocalStore, ErrorKind, Result};

/// Marks a blob or snapshot as a root of its own.
pub const ROOT_LABEL: &str = "containerd.io/gc.root";
/// Prefix of labels that point at a blob (the value is its digest).
pub const CONTENT_REF_PREFIX: &str = "containerd.io/gc.ref.content";
/// Prefix of labels that point at a snapshot: the snapshotter's name
/// follows (up to an optional `/`), the value is the key.
pub const SNAPSHOT_REF_PREFIX: &str = "containerd.io/gc.ref.snapshot.";
/// How long an unleased ingest, or a blob no namespace recorded, is kept.
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(60 * 60);

/// A snapshot as the collector sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotNode {
    pub key: String,
    pub parent: Option<String>,
    pub labels: metadata::Labels,
}

/// What the collector needs from one snapshotter.
pub trait GcSnapshotter: Send + Sync {
    /// The snapshotter's name, as in `snapshots/<name>` lease resources and
    /// `containerd.io/gc.ref.snapshot.<name>` labels.
    fn name(&self) -> &str;
    /// Every snapshot of `namespace`, committed or active.
    fn list(&self, namespace: &str) -> Result<Vec<SnapshotNode>>;
    /// Removes one snapshot; the collector removes children first.
    fn remove(&self, namespace: &str, key: &str) -> Result<()>;
}

/// A snapshot by namespace, snapshotter and key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SnapshotId {
    pub namespace: String,
    pub snapshotter: String,
    pub key: String,
}

/// What one collection removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// Content records, as `(namespace, digest)`.
    pub content: Vec<(String, Digest)>,
    /// Blobs deleted from disk.
    pub blobs: Vec<Digest>,
    pub snapshots: Vec<SnapshotId>,
    /// Ingests aborted, as `(namespace, ref)`.
    pub ingests: Vec<(String, String)>,
    /// Expired leases, as `(namespace, id)`.
    pub leases: Vec<(String, String)>,
}

impl Collected {
    /// Whether nothing was removed.
    pub fn is_empty(&self) -> bool {
        *self == Collected::default()
    }
}

/// Runs collections over the metadata, the blob store and the snapshotters.
/// Configure it with the `with_*` methods, then clone it freely: clones
/// share one lock (one collection at a time) and one background worker.
#[derive(Clone)]
pub struct Collector {
    db: Db,
    blobs: LocalStore,
    snapshotters: Vec<Arc<dyn GcSnapshotter>>,
    grace_period: Duration,
    /// One collection at a time.
    running: Arc<Mutex<()>>,
    /// Wakes the background worker; set up by the first [`Self::schedule`].
    trigger: Arc<OnceLock<SyncSender<()>>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field(
                "snapshotters",
                &self
                    .snapshotters
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>(),
            )
            .field("grace_period", &self.grace_period)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Node {
    Content(String, Digest),
    Snapshot(SnapshotId),
}

impl Collector {
    /// A collector over `db` and `blobs`, with no snapshotters yet.
    pub fn new(db: Db, blobs: LocalStore) -> Self {
        Collector {
            db,
            blobs,
            snapshotters: Vec::new(),
            grace_period: DEFAULT_GRACE_PERIOD,
            running: Arc::default(),
            trigger: Arc::default(),
        }
    }

    /// Adds a snapshotter whose snapshots are collected too.
    pub fn with_snapshotter(mut self, snapshotter: Arc<dyn GcSnapshotter>) -> Self {
        self.snapshotters.push(snapshotter);
        self
    }

    /// Sets how long unleased ingests and unrecorded blobs are kept.
    pub fn with_grace_period(mut self, grace_period: Duration) -> Self {
        self.grace_period = grace_period;
        self
    }

    /// Asks for a collection soon, on a background thread, and returns at
    /// once: what a deletion calls. Requests made while one is pending are
    /// served by that one. A failed collection is logged; the next request
    /// tries again. The worker stops once every clone is dropped.
    pub fn schedule(&self) {
        let trigger = self.trigger.get_or_init(|| {
            let (sender, requests) = mpsc::sync_channel::<()>(1);
            // The worker's copy has a trigger of its own, so it does not
            // keep the channel open.
            let worker = Collector {
                trigger: Arc::default(),
                ..self.clone()
            };
            let spawned = std::thread::Builder::new()
                .name("berthd-gc".into())
                .spawn(move || {
                    while requests.recv().is_ok() {
                        if let Err(err) = worker.collect() {
                            tracing::warn!(error = %err, "garbage collection failed");
                        }
                    }
                });
            if let Err(err) = spawned {
                tracing::warn!(error = %err, "cannot start the garbage collector's thread");
            }
            sender
        });
        // Full means a collection is already pending; disconnected means
        // the worker never started (logged above).
        let _ = trigger.try_send(());
    }

    /// Runs one mark and sweep now and reports what it removed.
    pub fn collect(&self) -> Result<Collected> {
        let _running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let now = SystemTime::now();
        let mut collected = Collected::default();

        // Snapshots live in their snapshotters' stores, which may use the
        // same database: read them before taking the write transaction.
        let namespaces = self.db.read(namespace_names)?;
        let snapshots = self.list_snapshots(&namespaces)?;
        let (marked_snapshots, marked_blobs, leased_ingests) = self.db.write(|txn| {
            let records = content_records::all_in(&txn.open_table(content_records::CONTENT)?)?;
            let mut graph = Graph::new(&records, &snapshots);
            let mut leased_ingests = HashSet::new();

            for (namespace, image) in images::all_in(txn)? {
                graph.root(Node::Content(
                    namespace.clone(),
                    image.target.digest.clone(),
                ));
                graph.root_label_refs(&namespace, &image.labels);
            }
            for (namespace, lease, resources) in leases::all_with_resources(txn)? {
                if lease.is_expired(now) {
                    leases::delete_in(txn, &namespace, &lease.id)?;
                    collected.leases.push((namespace, lease.id));
                    continue;
                }
                for resource in resources {
                    match resource {
                        LeaseResource::Content(digest) => {
                            graph.root(Node::Content(namespace.clone(), digest))
                        }
                        LeaseResource::Snapshot { snapshotter, key } => {
                            graph.root(Node::Snapshot(SnapshotId {
                                namespace: namespace.clone(),
                                snapshotter,
                                key,
                            }))
                        }
                        LeaseResource::Ingest(reference) => {
                            leased_ingests
                                .insert(content_records::backend_ref(&namespace, &reference));
                        }
                    }
                }
            }
            for (namespace, info) in &records {
                if info.labels.contains_key(ROOT_LABEL) {
                    graph.root(Node::Content(namespace.clone(), info.digest.clone()));
                }
            }
            for (id, node) in &snapshots {
                if node.labels.contains_key(ROOT_LABEL) {
                    graph.root(Node::Snapshot(id.clone()));
                }
            }
            graph.mark();

            for (namespace, info) in &records {
                let node = Node::Content(namespace.clone(), info.digest.clone());
                if !graph.marked.contains(&node) {
                    content_records::remove_in(txn, namespace, &info.digest)?;
                    collected
                        .content
                        .push((namespace.clone(), info.digest.clone()));
                }
            }
            let mut marked_snapshots = HashSet::new();
            let mut marked_blobs = HashSet::new();
            for node in graph.marked {
                match node {
                    Node::Snapshot(id) => marked_snapshots.insert(id),
                    Node::Content(_, digest) => marked_blobs.insert(digest),
                };
            }
            Ok((marked_snapshots, marked_blobs, leased_ingests))
        })?;

        self.sweep_blobs(now, &marked_blobs, &mut collected)?;
        self.sweep_snapshots(&snapshots, &marked_snapshots, &mut collected)?;
        self.sweep_ingests(now, &leased_ingests, &mut collected)?;
        Ok(collected)
    }

    fn list_snapshots(&self, namespaces: &[String]) -> Result<HashMap<SnapshotId, SnapshotNode>> {
        let mut all = HashMap::new();
        for snapshotter in &self.snapshotters {
            for namespace in namespaces {
                for node in snapshotter.list(namespace)? {
                    let id = SnapshotId {
                        namespace: namespace.clone(),
                        snapshotter: snapshotter.name().to_owned(),
                        key: node.key.clone(),
                    };
                    all.insert(id, node);
                }
            }
        }
        Ok(all)
    }

    /// Deletes blobs that nothing marked and no namespace records: at once
    /// if this collection removed their last record, after the grace
    /// period otherwise.
    fn sweep_blobs(
        &self,
        now: SystemTime,
        marked: &HashSet<Digest>,
        collected: &mut Collected,
    ) -> Result<()> {
        let recorded: HashSet<Digest> = self.db.read(|txn| {
            Ok(
                content_records::all_in(&txn.open_table(content_records::CONTENT)?)?
                    .into_iter()
                    .map(|(_, info)| info.digest)
                    .collect(),
            )
        })?;
        let released: HashSet<&Digest> = collected.content.iter().map(|(_, d)| d).collect();
        let mut doomed = Vec::new();
        self.blobs.walk(&mut |info| {
            if recorded.contains(&info.digest) || marked.contains(&info.digest) {
                return Ok(());
            }
            let stale = now
                .duration_since(info.updated_at)
                .is_ok_and(|age| age >= self.grace_period);
            if released.contains(&info.digest) || stale {
                doomed.push(info.digest);
            }
            Ok(())
        })?;
        for digest in doomed {
            match self.blobs.delete(&digest) {
                Ok(()) => collected.blobs.push(digest),
                Err(err) if err.kind == ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
        collected.blobs.sort();
        Ok(())
    }

    /// Removes unmarked snapshots, each after every snapshot whose parent it is.
    fn sweep_snapshots(
        &self,
        snapshots: &HashMap<SnapshotId, SnapshotNode>,
        marked: &HashSet<SnapshotId>,
        collected: &mut Collected,
    ) -> Result<()> {
        let mut doomed: BTreeSet<&SnapshotId> = snapshots
            .keys()
            .filter(|id| !marked.contains(*id))
            .collect();
        while !doomed.is_empty() {
            let parents: HashSet<SnapshotId> = doomed
                .iter()
                .filter_map(|id| {
                    let parent = snapshots.get(*id)?.parent.clone()?;
                    Some(SnapshotId {
                        key: parent,
                        ..(*id).clone()
                    })
                })
                .collect();
            let leaves: Vec<&SnapshotId> = doomed
                .iter()
                .copied()
                .filter(|id| !parents.contains(*id))
                .collect();
            if leaves.is_empty() {
                return Err(crate::Error::internal(
                    "snapshots: parent cycle among unreferenced snapshots",
                ));
            }
            for id in leaves {
                doomed.remove(id);
                let snapshotter = self
                    .snapshotters
                    .iter()
                    .find(|s| s.name() == id.snapshotter)
                    .ok_or_else(|| {
                        crate::Error::internal(format!("snapshotter {}: gone", id.snapshotter))
                    })?;
                match snapshotter.remove(&id.namespace, &id.key) {
                    Ok(()) => collected.snapshots.push(id.clone()),
                    Err(err) if err.kind == ErrorKind::NotFound => {}
                    Err(err) => {
                        return Err(err.context(format!(
                            "gc: remove snapshot {} of {} in {}",
                            id.key, id.snapshotter, id.namespace
                        )))
                    }
                }
            }
        }
        Ok(())
    }

    /// Aborts ingests that no lease holds and nobody wrote to within the
    /// grace period. One being written right now is left alone.
    fn sweep_ingests(
        &self,
        now: SystemTime,
        leased: &HashSet<String>,
        collected: &mut Collected,
    ) -> Result<()> {
        for status in self.blobs.list_statuses("")? {
            let stale = now
                .duration_since(status.updated_at)
                .is_ok_and(|age| age >= self.grace_period);
            if leased.contains(&status.reference) || !stale {
                continue;
            }
            match self.blobs.abort(&status.reference) {
                Ok(()) => {
                    let (namespace, reference) =
                        content_records::split_backend_ref(&status.reference)
                            .unwrap_or(("", &status.reference));
                    collected
                        .ingests
                        .push((namespace.to_owned(), reference.to_owned()));
                }
                Err(err) if matches!(err.kind, ErrorKind::NotFound | ErrorKind::Unavailable) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(())
    }
}

fn namespace_names(txn: &redb::ReadTransaction) -> Result<Vec<String>> {
    let table = txn.open_table(namespaces::NAMESPACES)?;
    let mut names = Vec::new();
    for entry in table.iter()? {
        names.push(entry?.0.value().to_owned());
    }
    Ok(names)
}

/// The reference graph of one collection.
struct Graph<'a> {
    content: HashMap<(&'a str, &'a Digest), &'a metadata::Labels>,
    snapshots: &'a HashMap<SnapshotId, SnapshotNode>,
    marked: HashSet<Node>,
    pending: VecDeque<Node>,
}

impl<'a> Graph<'a> {
    fn new(
        records: &'a [(String, crate::content::Info)],
        snapshots: &'a HashMap<SnapshotId, SnapshotNode>,
    ) -> Self {
        Graph {
            content: records
                .iter()
                .map(|(ns, info)| ((ns.as_str(), &info.digest), &info.labels))
                .collect(),
            snapshots,
            marked: HashSet::new(),
            pending: VecDeque::new(),
        }
    }

    fn root(&mut self, node: Node) {
        if self.marked.insert(node.clone()) {
            self.pending.push_back(node);
        }
    }

    /// Roots whatever `labels` point at (an image's labels).
    fn root_label_refs(&mut self, namespace: &str, labels: &metadata::Labels) {
        for node in label_refs(namespace, labels) {
            self.root(node);
        }
    }

    fn mark(&mut self) {
        while let Some(node) = self.pending.pop_front() {
            let mut next = Vec::new();
            match &node {
                Node::Content(namespace, digest) => {
                    if let Some(labels) = self.content.get(&(namespace.as_str(), digest)) {
                        next.extend(label_refs(namespace, labels));
                    }
                }
                Node::Snapshot(id) => {
                    if let Some(snapshot) = self.snapshots.get(id) {
                        next.extend(label_refs(&id.namespace, &snapshot.labels));
                        if let Some(parent) = &snapshot.parent {
                            next.push(Node::Snapshot(SnapshotId {
                                key: parent.clone(),
                                ..id.clone()
                            }));
                        }
                    }
                }
            }
            for node in next {
                self.root(node);
            }
        }
    }
}

/// The nodes `labels` point at through `gc.ref` labels. Values that are not
/// digests, or snapshot refs without a snapshotter, point nowhere.
fn label_refs(namespace: &str, labels: &metadata::Labels) -> Vec<Node> {
    let mut refs = Vec::new();
    for (key, value) in labels {
        if key.starts_with(CONTENT_REF_PREFIX) {
            if let Ok(digest) = Digest::parse(value) {
                refs.push(Node::Content(namespace.to_owned(), digest));
            }
        } else if let Some(rest) = key.strip_prefix(SNAPSHOT_REF_PREFIX) {
            let snapshotter = rest.split('/').next().unwrap_or(rest);
            if !snapshotter.is_empty() && !value.is_empty() {
                refs.push(Node::Snapshot(SnapshotId {
                    namespace: namespace.to_owned(),
                    snapshotter: snapshotter.to_owned(),
                    key: value.clone(),
                }));
            }
        }
    }
    refs
}

#[cfg(test)]
mod tests;
