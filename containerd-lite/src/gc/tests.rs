//! The collector over real metadata and blobs, with an in-memory
//! snapshotter behind the [`GcSnapshotter`] seam.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;
use crate::content::{Descriptor, Ingester, LocalStore, WriterOptions};
use crate::metadata::{ContentStore, Image, ImageStore, Labels, LeaseManager};
use crate::Error;

/// Snapshots in memory; like a real snapshotter it refuses to remove a
/// snapshot that still has children.
#[derive(Default)]
struct MemorySnapshotter {
    snapshots: Mutex<BTreeMap<(String, String), SnapshotNode>>,
}

impl MemorySnapshotter {
    fn add(&self, namespace: &str, key: &str, parent: Option<&str>, labels: Labels) {
        let node = SnapshotNode {
            key: key.to_owned(),
            parent: parent.map(str::to_owned),
            labels,
        };
        self.snapshots
            .lock()
            .unwrap()
            .insert((namespace.to_owned(), key.to_owned()), node);
    }

    fn keys(&self, namespace: &str) -> Vec<String> {
        self.snapshots
            .lock()
            .unwrap()
            .keys()
            .filter(|(ns, _)| ns == namespace)
            .map(|(_, key)| key.clone())
            .collect()
    }
}

impl GcSnapshotter for MemorySnapshotter {
    fn name(&self) -> &str {
        "overlayfs"
    }

    fn list(&self, namespace: &str) -> Result<Vec<SnapshotNode>> {
        Ok(self
            .snapshots
            .lock()
            .unwrap()
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|(_, node)| node.clone())
            .collect())
    }

    fn remove(&self, namespace: &str, key: &str) -> Result<()> {
        let mut snapshots = self.snapshots.lock().unwrap();
        let has_child = snapshots
            .iter()
            .any(|((ns, _), node)| ns == namespace && node.parent.as_deref() == Some(key));
        if has_child {
            return Err(Error::precondition(format!("snapshot {key}: has children")));
        }
        snapshots
            .remove(&(namespace.to_owned(), key.to_owned()))
            .map(|_| ())
            .ok_or_else(|| Error::not_found(format!("snapshot {key}")))
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    content: ContentStore,
    snapshots: Arc<MemorySnapshotter>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("meta.redb")).unwrap();
        let blobs = LocalStore::open(dir.path().join("content")).unwrap();
        Fixture {
            _dir: dir,
            content: ContentStore::new(db.clone(), blobs),
            db,
            snapshots: Arc::default(),
        }
    }

    fn collector(&self) -> Collector {
        Collector::new(self.db.clone(), self.content.blobs().clone())
            .with_snapshotter(self.snapshots.clone())
    }

    fn blob(&self, namespace: &str, data: &[u8], labels: &[(&str, &str)]) -> Digest {
        let mut writer = self
            .content
            .writer(namespace, None, WriterOptions::new(format!("ref-{data:?}")))
            .unwrap();
        writer.write(data).unwrap();
        writer.commit(0, None, to_labels(labels)).unwrap()
    }

    fn image(&self, namespace: &str, name: &str, target: &Digest) {
        let descriptor = Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: target.clone(),
            size: 1,
            annotations: Default::default(),
        };
        ImageStore::new(self.db.clone())
            .create(namespace, Image::new(name, descriptor))
            .unwrap();
    }

    fn visible(&self, namespace: &str, digest: &Digest) -> bool {
        self.content.info(namespace, digest).is_ok()
    }

    fn on_disk(&self, digest: &Digest) -> bool {
        self.content.blobs().contains(digest)
    }
}

fn to_labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// An image as a pull leaves it: manifest -> config and layer by gc.ref
/// labels; config -> the unpacked snapshot chain.
fn pulled_image(f: &Fixture, namespace: &str) -> (Digest, Digest, Digest) {
    let layer = f.blob(namespace, b"layer", &[]);
    let config = f.blob(
        namespace,
        b"config",
        &[("containerd.io/gc.ref.snapshot.overlayfs", "chain-2")],
    );
    let manifest = f.blob(
        namespace,
        b"manifest",
        &[
            ("containerd.io/gc.ref.content.config", config.as_str()),
            ("containerd.io/gc.ref.content.l.0", layer.as_str()),
        ],
    );
    f.snapshots.add(namespace, "chain-1", None, Labels::new());
    f.snapshots
        .add(namespace, "chain-2", Some("chain-1"), Labels::new());
    f.image(namespace, "docker.io/library/busybox:latest", &manifest);
    (manifest, config, layer)
}

#[test]
fn what_an_image_reaches_is_kept_and_the_rest_swept() {
    let f = Fixture::new();
    let (manifest, config, layer) = pulled_image(&f, "default");
    let orphan = f.blob("default", b"orphan", &[]);
    f.snapshots.add("default", "old-1", None, Labels::new());
    f.snapshots
        .add("default", "old-2", Some("old-1"), Labels::new());
    f.snapshots
        .add("default", "old-3", Some("old-2"), Labels::new());

    let collected = f.collector().collect().unwrap();
    assert_eq!(collected.content, [("default".to_owned(), orphan.clone())]);
    assert_eq!(collected.blobs, std::slice::from_ref(&orphan));
    let swept: Vec<&str> = collected.snapshots.iter().map(|s| s.key.as_str()).collect();
    assert_eq!(swept, ["old-3", "old-2", "old-1"], "children first");

    for digest in [&manifest, &config, &layer] {
        assert!(f.visible("default", digest) && f.on_disk(digest));
    }
    assert!(!f.visible("default", &orphan) && !f.on_disk(&orphan));
    assert_eq!(f.snapshots.keys("default"), ["chain-1", "chain-2"]);

    assert!(
        f.collector().collect().unwrap().is_empty(),
        "nothing left to sweep"
    );
}

#[test]
fn deleting_the_image_releases_everything_it_held() {
    let f = Fixture::new();
    let (manifest, config, layer) = pulled_image(&f, "default");
    ImageStore::new(f.db.clone())
        .delete("default", "docker.io/library/busybox:latest")
        .unwrap();
    let collected = f.collector().collect().unwrap();
    assert_eq!(collected.content.len(), 3);
    assert_eq!(collected.snapshots.len(), 2);
    for digest in [&manifest, &config, &layer] {
        assert!(!f.visible("default", digest) && !f.on_disk(digest));
    }
    assert!(f.snapshots.keys("default").is_empty());
}

#[test]
fn a_blob_another_namespace_records_stays_on_disk() {
    let f = Fixture::new();
    let shared = f.blob("ns1", b"shared", &[]);
    f.blob("ns2", b"shared", &[("containerd.io/gc.root", "true")]);
    let collected = f.collector().collect().unwrap();
    assert_eq!(collected.content, [("ns1".to_owned(), shared.clone())]);
    assert!(collected.blobs.is_empty());
    assert!(f.visible("ns2", &shared) && f.on_disk(&shared));
}

#[test]
fn leases_protect_until_they_expire() {
    let f = Fixture::new();
    let leases = LeaseManager::new(f.db.clone());
    let held = f.blob("default", b"held", &[]);
    let expiring = f.blob("default", b"expiring", &[]);
    f.snapshots.add("default", "extract-1", None, Labels::new());

    leases.create("default", "pull", Labels::new()).unwrap();
    leases
        .add_resource("default", "pull", &LeaseResource::Content(held.clone()))
        .unwrap();
    let snapshot = LeaseResource::Snapshot {
        snapshotter: "overlayfs".into(),
        key: "extract-1".into(),
    };
    leases.add_resource("default", "pull", &snapshot).unwrap();
    let past = to_labels(&[(metadata::leases::EXPIRE_LABEL, "2000-01-01T00:00:00Z")]);
    leases.create("default", "old", past).unwrap();
    leases
        .add_resource("default", "old", &LeaseResource::Content(expiring.clone()))
        .unwrap();

    let collected = f.collector().collect().unwrap();
    assert_eq!(collected.leases, [("default".to_owned(), "old".to_owned())]);
    assert_eq!(
        collected.content,
        [("default".to_owned(), expiring.clone())]
    );
    assert!(f.visible("default", &held));
    assert_eq!(f.snapshots.keys("default"), ["extract-1"]);
    assert_eq!(
        leases.get("default", "old").unwrap_err().kind,
        ErrorKind::NotFound
    );

    leases.delete("default", "pull").unwrap();
    let collected = f.collector().collect().unwrap();
    assert_eq!(collected.content, [("default".to_owned(), held)]);
    assert_eq!(collected.snapshots.len(), 1);
}

#[test]
fn gc_root_labels_keep_content_and_snapshots() {
    let f = Fixture::new();
    let pinned = f.blob("default", b"pinned", &[("containerd.io/gc.root", "2024")]);
    let child = f.blob("default", b"child", &[]);
    f.content
        .update(
            "default",
            &pinned,
            to_labels(&[("containerd.io/gc.ref.content.m.0", child.as_str())]),
            &["labels.containerd.io/gc.ref.content.m.0".to_owned()],
        )
        .unwrap();
    f.snapshots.add(
        "default",
        "pinned-snap",
        None,
        to_labels(&[("containerd.io/gc.root", "")]),
    );
    assert!(f.collector().collect().unwrap().is_empty());
    assert!(f.visible("default", &child));
}

#[test]
fn stale_unleased_ingests_are_aborted() {
    let f = Fixture::new();
    LeaseManager::new(f.db.clone())
        .create("default", "pull", Labels::new())
        .unwrap();
    for (reference, lease) in [("leased", Some("pull")), ("loose", None)] {
        let mut writer = f
            .content
            .writer("default", lease, WriterOptions::new(reference))
            .unwrap();
        writer.write(b"partial").unwrap();
    }
    let busy = f
        .content
        .writer("default", None, WriterOptions::new("busy"))
        .unwrap();

    assert!(
        f.collector().collect().unwrap().ingests.is_empty(),
        "young ingests stay"
    );
    let collected = f
        .collector()
        .with_grace_period(Duration::ZERO)
        .collect()
        .unwrap();
    assert_eq!(
        collected.ingests,
        [("default".to_owned(), "loose".to_owned())]
    );
    assert!(f.content.status("default", "leased").is_ok());
    assert!(
        f.content.status("default", "busy").is_ok(),
        "a live writer is left alone"
    );
    drop(busy);
}

#[test]
fn blobs_nobody_recorded_go_after_the_grace_period() {
    let f = Fixture::new();
    let mut writer = f
        .content
        .blobs()
        .writer(WriterOptions::new("crashed-before-record"))
        .unwrap();
    writer.write(b"stray").unwrap();
    let stray = writer.commit(0, None).unwrap();

    assert!(f.collector().collect().unwrap().is_empty());
    assert!(f.on_disk(&stray));
    let collected = f
        .collector()
        .with_grace_period(Duration::ZERO)
        .collect()
        .unwrap();
    assert_eq!(collected.blobs, std::slice::from_ref(&stray));
    assert!(!f.on_disk(&stray));
}

#[test]
fn scheduled_collections_run_in_the_background() {
    let f = Fixture::new();
    let orphan = f.blob("default", b"orphan", &[]);
    let collector = f.collector();
    let clone = collector.clone();
    clone.schedule();
    clone.schedule();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while f.on_disk(&orphan) {
        assert!(std::time::Instant::now() < deadline, "no collection ran");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(!f.visible("default", &orphan));
}
