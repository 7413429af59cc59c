//! The local services the gRPC API adapts, opened from the configuration,
//! and the garbage collection the services trigger after deletions.
//!
//! Layout under the root directory:
//!
//! ```text
//! <root>/
//! ├── uuid                         the daemon's identity (introspection)
//! ├── metadata.redb                namespaces, images, content records,
//! │                                leases, snapshots (tables per snapshotter)
//! ├── content/                     blobs and ingests (see `content`)
//! └── snapshotter/
//!     ├── overlayfs/snapshots/<id>
//!     └── native/snapshots/<id>
//! ```

use std::collections::BTreeMap;
use std::fs::DirBuilder;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::content::LocalStore;
use crate::error::Context;
use crate::events::Exchange;
use crate::gc::{Collected, Collector, GcSnapshotter, SnapshotNode};
use crate::metadata::{ContainerStore, ContentStore, Db, ImageStore, LeaseManager, NamespaceStore};
use crate::runtime::shim::ShimBinaries;
use crate::runtime::TaskManager;
use crate::snapshots::Snapshotter;
use crate::{Error, Result};

use super::introspection;

/// The snapshotter used when a request names none.
pub const DEFAULT_SNAPSHOTTER: &str = "overlayfs";

/// Everything the gRPC services are adapters over. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Backend {
    /// The daemon's stable identity.
    pub uuid: String,
    /// The metadata database, for services that create namespaces.
    pub db: Db,
    pub events: Exchange,
    pub namespaces: NamespaceStore,
    pub content: ContentStore,
    pub images: ImageStore,
    pub leases: LeaseManager,
    pub snapshotters: Snapshotters,
    pub gc: Gc,
    pub containers: ContainerStore,
    /// The runtime manager: one shim per task. Call
    /// [`TaskManager::restore`] and serve its event endpoint
    /// ([`crate::runtime::forward::serve_on`]) before serving the API.
    pub tasks: Arc<TaskManager>,
}

impl Backend {
    /// Opens (creating what is missing) the stores under `config.root`.
    pub fn open(config: &Config) -> Result<Backend> {
        for dir in [&config.root, &config.state] {
            create_dir(dir)?;
        }
        let root = &config.root;
        let uuid = introspection::load_or_create_uuid(root)?;
        let db = Db::open(root.join("metadata.redb"))?;
        let blobs = LocalStore::open(root.join("content"))?;

        let overlay_dir = root.join("snapshotter/overlayfs");
        create_dir(&overlay_dir)?;
        let overlayfs = Snapshotter::overlayfs(db.database().clone(), &overlay_dir)?;
        let native_dir = root.join("snapshotter/native");
        create_dir(&native_dir)?;
        let native = Snapshotter::native(db.database().clone(), &native_dir)?;
        let snapshotters = Snapshotters::new([overlayfs, native]);
        // A namespace holding snapshots is not empty: deleting it is refused.
        for snapshotter in snapshotters.all() {
            db.register_namespace_usage(
                "snapshots",
                Box::new(move |txn, namespace| snapshotter.namespace_in_use(txn, namespace)),
            );
        }

        let mut collector = Collector::new(db.clone(), blobs.clone());
        for snapshotter in snapshotters.all() {
            collector = collector.with_snapshotter(Arc::new(CollectedSnapshots(snapshotter)));
        }
        let events = Exchange::new();
        let mut binaries = ShimBinaries::default();
        for (runtime, shim) in &config.runtimes {
            binaries.set(runtime, shim);
        }
        let tasks = TaskManager::new(
            super::tasks::runtime_config(config, binaries),
            Arc::new(super::tasks::ExchangeSink(events.clone())),
        );
        Ok(Backend {
            uuid,
            containers: ContainerStore::open(db.clone())?,
            tasks,
            events,
            namespaces: NamespaceStore::new(db.clone()),
            content: ContentStore::new(db.clone(), blobs),
            images: ImageStore::new(db.clone()),
            leases: LeaseManager::new(db.clone()),
            db,
            snapshotters,
            gc: Gc::new(collector),
        })
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// The snapshotters by name.
#[derive(Debug, Clone)]
pub struct Snapshotters {
    by_name: BTreeMap<&'static str, Arc<Snapshotter>>,
}

impl Snapshotters {
    pub fn new(snapshotters: impl IntoIterator<Item = Snapshotter>) -> Self {
        Snapshotters {
            by_name: snapshotters
                .into_iter()
                .map(|s| (s.name(), Arc::new(s)))
                .collect(),
        }
    }

    /// The snapshotter a request names; empty means [`DEFAULT_SNAPSHOTTER`].
    /// An unknown name is InvalidArgument, as containerd answers.
    pub fn get(&self, name: &str) -> Result<Arc<Snapshotter>> {
        let name = if name.is_empty() {
            DEFAULT_SNAPSHOTTER
        } else {
            name
        };
        self.by_name.get(name).cloned().ok_or_else(|| {
            Error::invalid(format!(
                "snapshotter {name:?}: not loaded (berthd has {})",
                self.names().join(", ")
            ))
        })
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.by_name.keys().copied().collect()
    }

    pub fn all(&self) -> impl Iterator<Item = Arc<Snapshotter>> + '_ {
        self.by_name.values().cloned()
    }
}

/// A snapshotter as the garbage collector sees it.
struct CollectedSnapshots(Arc<Snapshotter>);

impl GcSnapshotter for CollectedSnapshots {
    fn name(&self) -> &str {
        self.0.name()
    }

    fn list(&self, namespace: &str) -> Result<Vec<SnapshotNode>> {
        Ok(self
            .0
            .walk::<&str>(namespace, &[])?
            .into_iter()
            .map(|info| SnapshotNode {
                key: info.name,
                parent: info.parent,
                labels: info.labels,
            })
            .collect())
    }

    fn remove(&self, namespace: &str, key: &str) -> Result<()> {
        self.0.remove(namespace, key)
    }
}

/// How long a scheduled collection waits, so a burst of deletions (an
/// image and its content) is swept once.
const GC_DELAY: Duration = Duration::from_millis(100);

/// Runs the garbage collector on the blocking pool: at once for calls that
/// ask for it (`sync` deletes), or shortly after deletions.
#[derive(Debug, Clone)]
pub struct Gc {
    collector: Arc<Collector>,
    scheduled: Arc<AtomicBool>,
}

impl Gc {
    pub fn new(collector: Collector) -> Self {
        Gc {
            collector: Arc::new(collector),
            scheduled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Collects now and reports what was removed.
    pub async fn collect(&self) -> Result<Collected> {
        let collector = self.collector.clone();
        let collected = tokio::task::spawn_blocking(move || collector.collect())
            .await
            .map_err(|e| Error::internal(format!("garbage collection: {e}")))??;
        if !collected.is_empty() {
            tracing::debug!(?collected, "garbage collected");
        }
        Ok(collected)
    }

    /// Collects soon, once for however many calls arrive meanwhile.
    pub fn schedule(&self) {
        if self.scheduled.swap(true, Ordering::AcqRel) {
            return;
        }
        let gc = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(GC_DELAY).await;
            gc.scheduled.store(false, Ordering::Release);
            if let Err(err) = gc.collect().await {
                tracing::warn!("scheduled garbage collection: {err}");
            }
        });
    }
}
