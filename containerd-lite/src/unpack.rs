//! Unpacking an image: its layers become a chain of committed snapshots,
//! each named by its chain ID, as containerd's unpacker does.
//!
//! The chain ID of the first layer is its diffID; each next one is
//! `sha256(<parent chain ID> + " " + <diffID>)` (OCI image spec), so a
//! snapshot name says exactly which stack of layers it holds and images
//! sharing a base share its snapshots. Layers whose snapshot already exists
//! are skipped.
//!
//! On a snapshotter that can rebase (overlayfs), every missing layer is
//! decompressed and applied at the same time, each into a snapshot of its
//! own with no parent, and the snapshots are committed onto each other in
//! order as they finish. Otherwise (native, where a snapshot is a copy of
//! its parent) layers go one after the other.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

use crate::diff::{self, ApplyOptions};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::snapshots::{Kind, Snapshotter};

/// The label containerd puts on unpacked snapshots: their chain ID.
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";

/// A layer as the image manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerDescriptor {
    pub media_type: String,
    /// Digest of the (compressed) blob.
    pub digest: String,
    pub size: u64,
}

/// Where [`unpack`] gets layers from, and how it keeps what it makes safe
/// from the garbage collector while it works. Any
/// `Fn(&LayerDescriptor) -> Result<impl Read> + Sync` is a source that
/// holds nothing.
pub trait LayerSource: Sync {
    type Reader: Read;

    /// Opens a layer's blob for reading; called from several threads.
    fn open(&self, layer: &LayerDescriptor) -> Result<Self::Reader>;

    /// Called with each snapshot key (extraction snapshots and chain IDs)
    /// before it is created, e.g. to add it to the caller's lease.
    fn hold_snapshot(&self, key: &str) -> Result<()> {
        let _ = key;
        Ok(())
    }
}

impl<F, R> LayerSource for F
where
    F: Fn(&LayerDescriptor) -> Result<R> + Sync,
    R: Read,
{
    type Reader = R;

    fn open(&self, layer: &LayerDescriptor) -> Result<R> {
        self(layer)
    }
}

/// How to unpack.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// Limits for each layer's extraction.
    pub apply: ApplyOptions,
    /// Most layers applied at once (at least 1).
    pub parallelism: usize,
    /// Labels for every snapshot made, besides `containerd.io/snapshot.ref`.
    pub labels: BTreeMap<String, String>,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            apply: ApplyOptions::default(),
            parallelism: thread::available_parallelism()
                .map_or(2, |n| n.get())
                .clamp(2, 8),
            labels: BTreeMap::new(),
        }
    }
}

/// One layer's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackedLayer {
    pub chain_id: String,
    pub diff_id: String,
    /// False when its snapshot already existed.
    pub applied: bool,
}

/// What [`unpack`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// The chain ID of the top layer: the snapshot to run containers on.
    pub chain_id: String,
    pub layers: Vec<UnpackedLayer>,
}

/// The chain IDs of a stack of layers, bottom first.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => format!(
                "sha256:{:x}",
                Sha256::digest(format!("{parent} {diff_id}").as_bytes())
            ),
        };
        chain.push(next);
    }
    chain
}

fn check_digest(what: &str, digest: &str) -> Result<()> {
    let hex = digest.strip_prefix("sha256:").unwrap_or("");
    if hex.len() == 64
        && hex
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} {digest:?}: not a sha256 digest"
        )))
    }
}

/// A unique key for an extraction snapshot of `chain_id`.
fn extraction_key(chain_id: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("extract-{nanos}-{}-{n} {chain_id}", std::process::id())
}

/// Unpacks `layers` (bottom first) into snapshots of namespace `ns`,
/// checking each layer's diffID against `diff_ids` (the image config's
/// `rootfs.diff_ids`). `source` opens the layers' blobs (from several
/// threads at once) and holds the snapshots made. Returns the top chain ID.
///
/// A failure leaves the layers committed before it (they are correct and
/// reusable) and removes every snapshot still being extracted.
pub fn unpack<S: LayerSource>(
    snapshotter: &Snapshotter,
    ns: &str,
    layers: &[LayerDescriptor],
    diff_ids: &[String],
    source: &S,
    options: &UnpackOptions,
) -> Result<Unpacked> {
    if layers.is_empty() {
        return Err(Error::invalid("unpack: the image has no layers"));
    }
    if layers.len() != diff_ids.len() {
        return Err(Error::invalid(format!(
            "unpack: the manifest lists {} layers but the config {} diff_ids",
            layers.len(),
            diff_ids.len()
        )));
    }
    for diff_id in diff_ids {
        check_digest("diff_id", diff_id)?;
    }
    let chain = chain_ids(diff_ids);
    let first_missing = first_missing(snapshotter, ns, &chain)?;
    let job = Job {
        snapshotter,
        ns,
        layers,
        diff_ids,
        chain: &chain,
        source,
        options,
    };
    let mut applied = vec![false; layers.len()];
    if first_missing < layers.len() {
        if snapshotter.can_rebase() {
            job.in_parallel(first_missing, &mut applied)?;
        } else {
            job.in_sequence(first_missing, &mut applied)?;
        }
    }
    Ok(Unpacked {
        chain_id: chain[chain.len() - 1].clone(),
        layers: chain
            .iter()
            .zip(diff_ids)
            .zip(applied)
            .map(|((chain_id, diff_id), applied)| UnpackedLayer {
                chain_id: chain_id.clone(),
                diff_id: diff_id.clone(),
                applied,
            })
            .collect(),
    })
}

/// The index of the lowest layer whose snapshot is missing: the highest
/// committed chain ID says everything below it exists.
fn first_missing(snapshotter: &Snapshotter, ns: &str, chain: &[String]) -> Result<usize> {
    for (i, chain_id) in chain.iter().enumerate().rev() {
        match snapshotter.stat(ns, chain_id) {
            Ok(info) if info.kind == Kind::Committed => return Ok(i + 1),
            Ok(info) => {
                return Err(Error::precondition(format!(
                    "snapshot {chain_id} in namespace {ns}: is {}, expected a committed layer",
                    info.kind
                )))
            }
            Err(err) if err.kind == ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        }
    }
    Ok(0)
}

struct Job<'a, S> {
    snapshotter: &'a Snapshotter,
    ns: &'a str,
    layers: &'a [LayerDescriptor],
    diff_ids: &'a [String],
    chain: &'a [String],
    source: &'a S,
    options: &'a UnpackOptions,
}

/// A layer applied into a detached snapshot, waiting for its commit.
struct Extracted {
    key: String,
}

impl<S: LayerSource> Job<'_, S> {
    fn labels(&self, i: usize) -> BTreeMap<String, String> {
        let mut labels = self.options.labels.clone();
        labels.insert(SNAPSHOT_REF_LABEL.to_string(), self.chain[i].clone());
        labels
    }

    fn parent(&self, i: usize) -> Option<&str> {
        i.checked_sub(1).map(|p| self.chain[p].as_str())
    }

    fn what(&self, i: usize) -> String {
        format!("layer {} ({})", i, self.layers[i].digest)
    }

    fn verify(&self, i: usize, applied: &diff::AppliedLayer) -> Result<()> {
        if applied.diff_id == self.diff_ids[i] {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "uncompressed digest {} does not match the image config's diff_id {}",
            applied.diff_id, self.diff_ids[i]
        )))
    }

    /// Has the source hold layer `i`'s extraction snapshot and chain ID.
    fn hold(&self, i: usize, key: &str) -> Result<()> {
        self.source
            .hold_snapshot(key)
            .and_then(|()| self.source.hold_snapshot(&self.chain[i]))
            .with_context(|| self.what(i))
    }

    /// Removes an extraction snapshot that will not be committed.
    fn discard(&self, key: &str) {
        let _ = self.snapshotter.remove(self.ns, key);
    }

    /// Commits through `commit`; a chain ID that appeared meanwhile (an
    /// unpack of the same image next to us) is as good as ours.
    fn finish(&self, key: &str, commit: impl FnOnce() -> Result<()>) -> Result<bool> {
        match commit() {
            Ok(()) => Ok(true),
            Err(err) if err.kind == ErrorKind::AlreadyExists => {
                self.discard(key);
                Ok(false)
            }
            Err(err) => {
                self.discard(key);
                Err(err)
            }
        }
    }

    fn in_sequence(&self, from: usize, applied: &mut [bool]) -> Result<()> {
        for (i, applied) in applied.iter_mut().enumerate().skip(from) {
            let key = extraction_key(&self.chain[i]);
            self.hold(i, &key)?;
            let mounts = self
                .snapshotter
                .prepare(self.ns, &key, self.parent(i), self.labels(i))
                .with_context(|| self.what(i))?;
            let extracted = self
                .source
                .open(&self.layers[i])
                .and_then(|blob| {
                    diff::apply(
                        &mounts,
                        blob,
                        &self.layers[i].media_type,
                        &self.options.apply,
                    )
                })
                .and_then(|done| self.verify(i, &done));
            if let Err(err) = extracted {
                self.discard(&key);
                return Err(err.context(self.what(i)));
            }
            *applied = self
                .finish(&key, || {
                    self.snapshotter
                        .commit(self.ns, &self.chain[i], &key, self.labels(i))
                })
                .with_context(|| self.what(i))?;
        }
        Ok(())
    }

    /// Applies one layer into a detached snapshot.
    fn extract_detached(&self, i: usize) -> Result<Extracted> {
        let key = extraction_key(&self.chain[i]);
        self.hold(i, &key)?;
        let upper = self
            .snapshotter
            .prepare_detached(self.ns, &key, self.labels(i))?;
        let extracted = self
            .source
            .open(&self.layers[i])
            .and_then(|blob| {
                diff::apply_to_overlay_upper(
                    &upper,
                    blob,
                    &self.layers[i].media_type,
                    &self.options.apply,
                )
            })
            .and_then(|done| self.verify(i, &done));
        match extracted {
            Ok(()) => Ok(Extracted { key }),
            Err(err) => {
                self.discard(&key);
                Err(err)
            }
        }
    }

    fn in_parallel(&self, from: usize, applied: &mut [bool]) -> Result<()> {
        let count = self.layers.len();
        let workers = self.options.parallelism.max(1).min(count - from);
        let next = AtomicUsize::new(from);
        let cancelled = AtomicBool::new(false);
        let (done_tx, done_rx) = mpsc::channel::<(usize, Result<Extracted>)>();

        thread::scope(|scope| {
            for _ in 0..workers {
                let done_tx = done_tx.clone();
                let (next, cancelled) = (&next, &cancelled);
                scope.spawn(move || loop {
                    if cancelled.load(Ordering::Relaxed) {
                        break;
                    }
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= count {
                        break;
                    }
                    let result = self.extract_detached(i);
                    if done_tx.send((i, result)).is_err() {
                        break;
                    }
                });
            }
            drop(done_tx);

            // Commit in order as layers finish; after a failure, drain and
            // discard what the workers still hand in.
            let mut waiting: BTreeMap<usize, Extracted> = BTreeMap::new();
            let mut wanted = from;
            let mut failure: Option<Error> = None;
            for (i, result) in done_rx {
                match result {
                    Ok(extracted) if failure.is_none() => {
                        waiting.insert(i, extracted);
                    }
                    Ok(extracted) => self.discard(&extracted.key),
                    Err(err) => {
                        cancelled.store(true, Ordering::Relaxed);
                        failure.get_or_insert(err.context(self.what(i)));
                    }
                }
                while failure.is_none() {
                    let Some(extracted) = waiting.remove(&wanted) else {
                        break;
                    };
                    let committed = self.finish(&extracted.key, || {
                        self.snapshotter.commit_onto(
                            self.ns,
                            &self.chain[wanted],
                            &extracted.key,
                            self.parent(wanted),
                            self.labels(wanted),
                        )
                    });
                    match committed {
                        Ok(made) => applied[wanted] = made,
                        Err(err) => {
                            cancelled.store(true, Ordering::Relaxed);
                            failure = Some(err.context(self.what(wanted)));
                        }
                    }
                    wanted += 1;
                }
            }
            for extracted in waiting.into_values() {
                self.discard(&extracted.key);
            }
            match failure {
                Some(err) => Err(err),
                None => Ok(()),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::fs;
    use std::io::{Cursor, Write};
    use std::path::Path;
    use std::sync::Arc;

    use crate::diff::stream::{MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP};
    use crate::snapshots::TempMount;

    fn sha256(bytes: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(bytes))
    }

    fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(1);
            header.set_size(content.len() as u64);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(&mut header, path, content.as_bytes())
                .unwrap();
        }
        builder.into_inner().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(bytes).unwrap();
        gz.finish().unwrap()
    }

    /// An image of four layers: blobs by digest, descriptors, diff_ids.
    struct Image {
        blobs: HashMap<String, Vec<u8>>,
        layers: Vec<LayerDescriptor>,
        diff_ids: Vec<String>,
    }

    fn image() -> Image {
        let tars = [
            tar_of(&[("etc/os", "base"), ("etc/gone", "x"), ("bin/sh", "sh")]),
            tar_of(&[("etc/os", "v2"), ("etc/.wh.gone", "")]),
            tar_of(&[("app/main", "main")]),
            tar_of(&[("app/config", "cfg"), ("bin/.wh.sh", "")]),
        ];
        let mut image = Image {
            blobs: HashMap::new(),
            layers: Vec::new(),
            diff_ids: Vec::new(),
        };
        for (i, tar) in tars.iter().enumerate() {
            let (blob, media_type) = if i % 2 == 0 {
                (gzip(tar), MEDIA_TYPE_TAR_GZIP)
            } else {
                (tar.clone(), MEDIA_TYPE_TAR)
            };
            let digest = sha256(&blob);
            image.layers.push(LayerDescriptor {
                media_type: media_type.into(),
                digest: digest.clone(),
                size: blob.len() as u64,
            });
            image.blobs.insert(digest, blob);
            image.diff_ids.push(sha256(tar));
        }
        image
    }

    impl Image {
        fn open(&self) -> impl Fn(&LayerDescriptor) -> Result<Cursor<Vec<u8>>> + Sync + '_ {
            |layer| {
                self.blobs
                    .get(&layer.digest)
                    .map(|b| Cursor::new(b.clone()))
                    .ok_or_else(|| Error::not_found(format!("blob {}", layer.digest)))
            }
        }
    }

    type Make = fn(Arc<redb::Database>, &Path) -> Result<Snapshotter>;

    fn snapshotter(dir: &Path, make: Make) -> Snapshotter {
        let db = Arc::new(redb::Database::create(dir.join("meta.redb")).unwrap());
        make(db, &dir.join("root")).unwrap()
    }

    fn listing(root: &Path) -> Vec<String> {
        let mut out: Vec<String> = walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                e.unwrap()
                    .path()
                    .strip_prefix(root)
                    .unwrap()
                    .display()
                    .to_string()
            })
            .collect();
        out.sort();
        out
    }

    #[test]
    fn chain_ids_follow_the_image_spec() {
        let d: Vec<String> = ["a", "b", "c"]
            .iter()
            .map(|x| sha256(x.as_bytes()))
            .collect();
        let chain = chain_ids(&d);
        assert_eq!(chain[0], d[0]);
        assert_eq!(chain[1], sha256(format!("{} {}", d[0], d[1]).as_bytes()));
        assert_eq!(
            chain[2],
            sha256(format!("{} {}", chain[1], d[2]).as_bytes())
        );
    }

    fn unpacks_and_reuses(make: Make) {
        let dir = tempfile::tempdir().unwrap();
        let s = snapshotter(dir.path(), make);
        let image = image();
        let options = UnpackOptions::default();
        let done = unpack(
            &s,
            "default",
            &image.layers,
            &image.diff_ids,
            &image.open(),
            &options,
        )
        .unwrap();
        let chain = chain_ids(&image.diff_ids);
        assert_eq!(done.chain_id, chain[3]);
        assert!(done.layers.iter().all(|l| l.applied));

        let infos = s.walk::<&str>("default", &[]).unwrap();
        assert_eq!(
            infos.len(),
            4,
            "only the layers, no extraction snapshots left: {infos:?}"
        );
        for (i, chain_id) in chain.iter().enumerate() {
            let info = s.stat("default", chain_id).unwrap();
            assert_eq!(info.kind, Kind::Committed);
            assert_eq!(
                info.parent.as_deref(),
                i.checked_sub(1).map(|p| chain[p].as_str())
            );
            assert_eq!(info.labels.get(SNAPSHOT_REF_LABEL), Some(chain_id));
        }
        let view = s
            .view("default", "look", Some(&chain[3]), BTreeMap::new())
            .unwrap();
        let mounted = TempMount::new(&view).unwrap();
        assert_eq!(
            listing(mounted.path()),
            ["app", "app/config", "app/main", "bin", "etc", "etc/os"]
        );
        assert_eq!(
            fs::read_to_string(mounted.path().join("etc/os")).unwrap(),
            "v2"
        );
        mounted.release().unwrap();

        // Again: nothing to do, and the blobs are not even opened.
        let again = unpack(
            &s,
            "default",
            &image.layers,
            &image.diff_ids,
            &|_: &LayerDescriptor| -> Result<Cursor<Vec<u8>>> { panic!("opened") },
            &options,
        )
        .unwrap();
        assert_eq!(again.chain_id, chain[3]);
        assert!(again.layers.iter().all(|l| !l.applied));
    }

    fn refuses_a_wrong_diff_id(make: Make) {
        let dir = tempfile::tempdir().unwrap();
        let s = snapshotter(dir.path(), make);
        let mut image = image();
        image.diff_ids[2] = sha256(b"something else");
        let err = unpack(
            &s,
            "default",
            &image.layers,
            &image.diff_ids,
            &image.open(),
            &UnpackOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("diff_id"), "{err}");
        let names: Vec<String> = s
            .walk::<&str>("default", &[])
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with("extract-")),
            "{names:?}"
        );
        let chain = chain_ids(&image.diff_ids);
        assert!(
            names.len() <= 2 && names.iter().all(|n| chain[..2].contains(n)),
            "{names:?}"
        );
    }

    fn reports_a_blob_that_cannot_be_opened(make: Make) {
        let dir = tempfile::tempdir().unwrap();
        let s = snapshotter(dir.path(), make);
        let mut image = image();
        let missing = image.layers[1].digest.clone();
        image.blobs.remove(&missing);
        let err = unpack(
            &s,
            "default",
            &image.layers,
            &image.diff_ids,
            &image.open(),
            &UnpackOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.message.contains(&missing), "{err}");
        let names: Vec<String> = s
            .walk::<&str>("default", &[])
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect();
        assert!(
            names.iter().all(|n| !n.starts_with("extract-")),
            "{names:?}"
        );
    }

    #[test]
    fn refuses_mismatched_manifest_and_config() {
        let dir = tempfile::tempdir().unwrap();
        let s = snapshotter(dir.path(), Snapshotter::overlayfs);
        let image = image();
        let err = unpack(
            &s,
            "default",
            &image.layers,
            &image.diff_ids[..3],
            &image.open(),
            &UnpackOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        let mut bad = image.diff_ids.clone();
        bad[0] = "md5:abc".into();
        let err = unpack(
            &s,
            "default",
            &image.layers,
            &bad,
            &image.open(),
            &UnpackOptions::default(),
        )
        .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
    }

    /// A source that records what it was asked to hold.
    struct Holding<'a> {
        image: &'a Image,
        held: std::sync::Mutex<Vec<String>>,
    }

    impl LayerSource for Holding<'_> {
        type Reader = Cursor<Vec<u8>>;
        fn open(&self, layer: &LayerDescriptor) -> Result<Self::Reader> {
            (self.image.open())(layer)
        }
        fn hold_snapshot(&self, key: &str) -> Result<()> {
            self.held.lock().unwrap().push(key.to_string());
            Ok(())
        }
    }

    #[test]
    fn every_snapshot_is_held_before_it_is_made() {
        for make in [Snapshotter::overlayfs as Make, Snapshotter::native] {
            let dir = tempfile::tempdir().unwrap();
            let s = snapshotter(dir.path(), make);
            let image = image();
            let source = Holding {
                image: &image,
                held: Default::default(),
            };
            unpack(
                &s,
                "default",
                &image.layers,
                &image.diff_ids,
                &source,
                &UnpackOptions::default(),
            )
            .unwrap();
            let held = source.held.into_inner().unwrap();
            for chain_id in chain_ids(&image.diff_ids) {
                assert!(held.contains(&chain_id), "{chain_id} not held: {held:?}");
            }
            assert_eq!(held.iter().filter(|k| k.starts_with("extract-")).count(), 4);
        }
    }

    #[test]
    fn overlayfs_unpacks_in_parallel_and_reuses() {
        unpacks_and_reuses(Snapshotter::overlayfs)
    }
    #[test]
    fn native_unpacks_in_sequence_and_reuses() {
        unpacks_and_reuses(Snapshotter::native)
    }
    #[test]
    fn overlayfs_refuses_a_wrong_diff_id() {
        refuses_a_wrong_diff_id(Snapshotter::overlayfs)
    }
    #[test]
    fn native_refuses_a_wrong_diff_id() {
        refuses_a_wrong_diff_id(Snapshotter::native)
    }
    #[test]
    fn overlayfs_reports_a_blob_that_cannot_be_opened() {
        reports_a_blob_that_cannot_be_opened(Snapshotter::overlayfs)
    }
    #[test]
    fn native_reports_a_blob_that_cannot_be_opened() {
        reports_a_blob_that_cannot_be_opened(Snapshotter::native)
    }
}

/// The same image unpacked by containerd 1.6 and by berthd gives the same
/// tree. Runs a private containerd (Debian's containerd package, as CI has
/// it) on a temporary root and socket.
#[cfg(test)]
mod containerd_compat {
    use super::*;
    use std::collections::BTreeMap;
    use std::fs;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command};
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use crate::diff::{compute, Compression, ComputeOptions};
    use crate::snapshots::{tree::read_xattrs, Mount, TempMount};

    fn sha256(bytes: &[u8]) -> String {
        format!("sha256:{:x}", Sha256::digest(bytes))
    }

    /// Every file's type, mode, owner, mtime, content digest, link target
    /// and xattrs, and which paths of the tree share an inode (link counts
    /// themselves are not compared: through overlayfs a file keeps the
    /// count it has in its lower layer).
    fn describe(root: &Path) -> BTreeMap<String, String> {
        let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .map(|e| e.unwrap().path().to_path_buf())
            .collect();
        entries.sort();
        let mut by_inode: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
        for path in &entries {
            let m = fs::symlink_metadata(path).unwrap();
            if !m.is_dir() {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                by_inode.entry((m.dev(), m.ino())).or_default().push(rel);
            }
        }
        entries
            .into_iter()
            .map(|path| {
                let rel = path.strip_prefix(root).unwrap().display().to_string();
                let m = fs::symlink_metadata(&path).unwrap();
                let kind = m.file_type();
                let what = if kind.is_file() {
                    sha256(&fs::read(&path).unwrap())
                } else if kind.is_symlink() {
                    format!("-> {}", fs::read_link(&path).unwrap().display())
                } else {
                    format!("type {:o} rdev {}", m.mode() & 0o170000, m.rdev())
                };
                let link = match by_inode.get(&(m.dev(), m.ino())) {
                    Some(group) if group.len() > 1 => format!(" =link {}", group[0]),
                    _ => String::new(),
                };
                let xattrs: Vec<_> = read_xattrs(&path)
                    .unwrap()
                    .into_iter()
                    .filter(|(n, _)| !n.starts_with(b"trusted.overlay."))
                    .collect();
                let mode = if kind.is_symlink() {
                    0
                } else {
                    m.mode() & 0o7777
                };
                let line = format!(
                    "{what} mode {mode:o} {}:{} mtime {} xattrs {xattrs:?}{link}",
                    m.uid(),
                    m.gid(),
                    m.mtime()
                );
                (rel, line)
            })
            .collect()
    }

    /// Three layers: a base, changes made through an overlay (deletions, an
    /// opaque directory, a replaced symlink, modes), and hard links.
    fn layers(work: &Path) -> Vec<(Vec<u8>, String)> {
        let db = Arc::new(redb::Database::create(work.join("build.redb")).unwrap());
        let s = Snapshotter::overlayfs(db, &work.join("build")).unwrap();
        let ns = "build";
        let mut out = Vec::new();
        let mut layer = |parent: Option<&str>, name: &str, change: &dyn Fn(&Path)| {
            let key = format!("{name}-work");
            let active = s.prepare(ns, &key, parent, BTreeMap::new()).unwrap();
            let mounted = TempMount::new(&active).unwrap();
            change(mounted.path());
            mounted.release().unwrap();
            let lower: Vec<Mount> = match parent {
                Some(p) => s
                    .view(ns, &format!("{name}-parent"), Some(p), BTreeMap::new())
                    .unwrap(),
                None => Vec::new(),
            };
            let mut bytes = Vec::new();
            let options = ComputeOptions {
                compression: Compression::Gzip,
            };
            let computed = compute(&lower, &active, &mut bytes, &options).unwrap();
            s.commit(ns, name, &key, BTreeMap::new()).unwrap();
            out.push((bytes, computed.diff_id));
        };
        layer(None, "l1", &|root| {
            for dir in ["etc/conf.d", "usr/bin", "usr/lib/app", "var/cache/apt"] {
                fs::create_dir_all(root.join(dir)).unwrap();
            }
            fs::write(root.join("etc/os-release"), "base\n").unwrap();
            fs::write(root.join("etc/conf.d/a"), "a").unwrap();
            fs::write(root.join("usr/bin/tool"), "tool").unwrap();
            fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755))
                .unwrap();
            fs::write(root.join("usr/lib/app/data"), vec![7u8; 100_000]).unwrap();
            fs::write(root.join("var/cache/apt/pkg"), "cached").unwrap();
            std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
            std::os::unix::fs::chown(root.join("etc/conf.d/a"), Some(1000), Some(1000)).unwrap();
            rustix::fs::setxattr(
                root.join("usr/bin/tool"),
                "user.origin",
                b"base",
                rustix::fs::XattrFlags::empty(),
            )
            .unwrap();
        });
        layer(Some("l1"), "l2", &|root| {
            fs::write(root.join("etc/os-release"), "v2\n").unwrap();
            fs::remove_file(root.join("etc/conf.d/a")).unwrap();
            fs::remove_dir_all(root.join("var/cache")).unwrap();
            fs::remove_dir_all(root.join("usr/lib/app")).unwrap();
            fs::create_dir(root.join("usr/lib/app")).unwrap();
            fs::write(root.join("usr/lib/app/new"), "new").unwrap();
            fs::remove_file(root.join("bin")).unwrap();
            fs::create_dir(root.join("bin")).unwrap();
            fs::write(root.join("bin/sh"), "sh").unwrap();
            fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o700)).unwrap();
        });
        layer(Some("l2"), "l3", &|root| {
            fs::create_dir(root.join("opt")).unwrap();
            fs::write(root.join("opt/one"), "same inode").unwrap();
            fs::hard_link(root.join("opt/one"), root.join("opt/two")).unwrap();
            fs::set_permissions(root.join("opt/one"), fs::Permissions::from_mode(0o4750)).unwrap();
            nix::unistd::mkfifo(
                &root.join("opt/pipe"),
                nix::sys::stat::Mode::from_bits_truncate(0o600),
            )
            .unwrap();
        });
        out
    }

    /// An OCI image layout tar of `layers`, named `berth-compat:1`.
    fn oci_archive(layers: &[(Vec<u8>, String)]) -> (Vec<u8>, Vec<LayerDescriptor>, Vec<String>) {
        let mut blobs: Vec<Vec<u8>> = Vec::new();
        let descriptors: Vec<LayerDescriptor> = layers
            .iter()
            .map(|(bytes, _)| LayerDescriptor {
                media_type: crate::diff::stream::MEDIA_TYPE_TAR_GZIP.into(),
                digest: sha256(bytes),
                size: bytes.len() as u64,
            })
            .collect();
        let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux", "config": {},
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }))
        .unwrap();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                        "digest": sha256(&config), "size": config.len() },
            "layers": descriptors.iter().map(|d| serde_json::json!({
                "mediaType": d.media_type, "digest": d.digest, "size": d.size })).collect::<Vec<_>>(),
        }))
        .unwrap();
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json",
                            "digest": sha256(&manifest), "size": manifest.len(),
                            "annotations": { "org.opencontainers.image.ref.name": "1" } }],
        }))
        .unwrap();
        blobs.extend(layers.iter().map(|(b, _)| b.clone()));
        blobs.push(config);
        blobs.push(manifest);
        let mut tar = tar::Builder::new(Vec::new());
        let mut add = |path: &str, data: &[u8]| {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(0);
            header.set_size(data.len() as u64);
            header.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut header, path, data).unwrap();
        };
        add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
        add("index.json", &index);
        for blob in &blobs {
            let digest = sha256(blob);
            add(
                &format!("blobs/sha256/{}", &digest["sha256:".len()..]),
                blob,
            );
        }
        (tar.into_inner().unwrap(), descriptors, diff_ids)
    }

    struct Containerd {
        child: Child,
        socket: PathBuf,
    }

    impl Containerd {
        fn start(dir: &Path) -> Self {
            let socket = dir.join("containerd.sock");
            let config = dir.join("config.toml");
            fs::write(
                &config,
                format!(
                    "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n",
                    dir.join("root").display(),
                    dir.join("state").display(),
                    socket.display()
                ),
            )
            .unwrap();
            let child = Command::new("containerd")
                .arg("--config")
                .arg(&config)
                .stdout(fs::File::create(dir.join("containerd.log")).unwrap())
                .stderr(fs::File::create(dir.join("containerd.err")).unwrap())
                .spawn()
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            while !socket.exists() {
                assert!(Instant::now() < deadline, "containerd did not start");
                std::thread::sleep(Duration::from_millis(100));
            }
            Containerd { child, socket }
        }

        fn ctr(&self, args: &[&str]) -> String {
            String::from_utf8_lossy(&self.ctr_bytes(args)).into_owned()
        }

        fn ctr_bytes(&self, args: &[&str]) -> Vec<u8> {
            let output = Command::new("ctr")
                .arg("--address")
                .arg(&self.socket)
                .args(args)
                .output()
                .unwrap();
            assert!(
                output.status.success(),
                "ctr {args:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            output.stdout
        }

        /// Mounts containerd's snapshot `key` on `target` with the mount
        /// command `ctr snapshots mounts` prints.
        fn mount_snapshot(&self, key: &str, target: &Path) {
            let command = self.ctr(&["snapshots", "mounts", target.to_str().unwrap(), key]);
            let status = Command::new("sh").arg("-c").arg(&command).status().unwrap();
            assert!(status.success(), "{command}");
        }
    }

    impl Drop for Containerd {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let _ = self.child.wait();
        }
    }

    /// Layers containerd computes (Go's tar writer, its whiteouts) apply
    /// with berthd to the tree containerd has.
    #[test]
    fn applies_layers_containerd_computes() {
        let work = tempfile::tempdir().unwrap();
        let containerd_dir = tempfile::tempdir_in(work.path()).unwrap();
        let containerd = Containerd::start(containerd_dir.path());
        let target = work.path().join("mnt");
        fs::create_dir(&target).unwrap();
        let change = |key: &str, parent: &str, edit: &dyn Fn(&Path)| {
            containerd.ctr(&["snapshots", "prepare", key, parent]);
            containerd.mount_snapshot(key, &target);
            edit(&target);
            crate::snapshots::unmount_all(&target).unwrap();
        };
        change("base-work", "", &|root| {
            fs::create_dir_all(root.join("usr/bin")).unwrap();
            fs::create_dir_all(root.join("etc/skel")).unwrap();
            fs::create_dir(root.join("d")).unwrap();
            fs::write(root.join("etc/f"), "hi").unwrap();
            fs::write(root.join("etc/skel/.profile"), "p").unwrap();
            fs::write(root.join("usr/bin/t"), "x").unwrap();
            fs::hard_link(root.join("usr/bin/t"), root.join("usr/bin/t2")).unwrap();
            fs::set_permissions(root.join("usr/bin/t"), fs::Permissions::from_mode(0o4755))
                .unwrap();
            std::os::unix::fs::symlink("../etc/f", root.join("usr/link")).unwrap();
            std::os::unix::fs::chown(root.join("etc/f"), Some(33), Some(33)).unwrap();
            nix::unistd::mkfifo(
                &root.join("d/p"),
                nix::sys::stat::Mode::from_bits_truncate(0o644),
            )
            .unwrap();
            fs::write(root.join("d/gone"), "g").unwrap();
        });
        containerd.ctr(&["snapshots", "commit", "base", "base-work"]);
        change("top", "base", &|root| {
            fs::remove_file(root.join("etc/f")).unwrap();
            fs::remove_dir_all(root.join("etc/skel")).unwrap();
            fs::remove_dir_all(root.join("d")).unwrap();
            fs::create_dir(root.join("d")).unwrap();
            fs::write(root.join("d/n"), "new").unwrap();
            fs::write(root.join("usr/bin/t"), "xy").unwrap();
        });
        let media_type = crate::diff::stream::MEDIA_TYPE_TAR;
        let diff = |key: &str| {
            containerd.ctr_bytes(&["snapshots", "diff", "--media-type", media_type, key])
        };
        let (base_layer, top_layer) = (diff("base"), diff("top"));
        containerd.mount_snapshot("top", &target);
        let theirs = describe(&target);
        crate::snapshots::unmount_all(&target).unwrap();
        drop(containerd);
        assert!(
            theirs.contains_key("d/n") && !theirs.contains_key("d/gone"),
            "{theirs:?}"
        );
        assert!(
            !theirs.contains_key("etc/skel") && !theirs.contains_key("etc/f"),
            "{theirs:?}"
        );

        let layers = [&base_layer, &top_layer];
        let blobs: BTreeMap<String, Vec<u8>> =
            layers.iter().map(|b| (sha256(b), b.to_vec())).collect();
        let descriptors: Vec<LayerDescriptor> = layers
            .iter()
            .map(|b| LayerDescriptor {
                media_type: media_type.into(),
                digest: sha256(b),
                size: b.len() as u64,
            })
            .collect();
        let diff_ids: Vec<String> = descriptors.iter().map(|d| d.digest.clone()).collect();
        for make in [
            Snapshotter::overlayfs as fn(_, &Path) -> _,
            Snapshotter::native,
        ] {
            let root = tempfile::tempdir_in(work.path()).unwrap();
            let db = Arc::new(redb::Database::create(root.path().join("meta.redb")).unwrap());
            let s = make(db, &root.path().join("root")).unwrap();
            let open = |l: &LayerDescriptor| -> Result<std::io::Cursor<Vec<u8>>> {
                Ok(std::io::Cursor::new(blobs[&l.digest].clone()))
            };
            let done = unpack(
                &s,
                "default",
                &descriptors,
                &diff_ids,
                &open,
                &UnpackOptions::default(),
            )
            .unwrap();
            let view = s
                .view("default", "look", Some(&done.chain_id), BTreeMap::new())
                .unwrap();
            let mounted = TempMount::new(&view).unwrap();
            let ours = describe(mounted.path());
            mounted.release().unwrap();
            assert_eq!(ours, theirs, "{} differs from containerd", s.name());
        }
    }

    #[test]
    fn matches_containerd() {
        let work = tempfile::tempdir().unwrap();
        let layers = layers(work.path());
        let (archive, descriptors, diff_ids) = oci_archive(&layers);
        let archive_path = work.path().join("image.tar");
        fs::write(&archive_path, &archive).unwrap();

        // berthd's unpack, both snapshotters.
        let mut ours = Vec::new();
        for make in [
            Snapshotter::overlayfs as fn(_, &Path) -> _,
            Snapshotter::native,
        ] {
            let root = tempfile::tempdir_in(work.path()).unwrap();
            let db = Arc::new(redb::Database::create(root.path().join("meta.redb")).unwrap());
            let s = make(db, &root.path().join("root")).unwrap();
            let blobs: BTreeMap<String, Vec<u8>> =
                layers.iter().map(|(b, _)| (sha256(b), b.clone())).collect();
            let open = |l: &LayerDescriptor| -> Result<std::io::Cursor<Vec<u8>>> {
                Ok(std::io::Cursor::new(blobs[&l.digest].clone()))
            };
            let done = unpack(
                &s,
                "default",
                &descriptors,
                &diff_ids,
                &open,
                &UnpackOptions::default(),
            )
            .unwrap();
            let view = s
                .view("default", "look", Some(&done.chain_id), BTreeMap::new())
                .unwrap();
            let mounted = TempMount::new(&view).unwrap();
            ours.push((s.name(), describe(mounted.path())));
            mounted.release().unwrap();
        }

        // containerd's.
        let containerd_dir = tempfile::tempdir_in(work.path()).unwrap();
        let containerd = Containerd::start(containerd_dir.path());
        containerd.ctr(&[
            "images",
            "import",
            "--base-name",
            "docker.io/library/berth-compat",
            archive_path.to_str().unwrap(),
        ]);
        let target = work.path().join("containerd-view");
        fs::create_dir(&target).unwrap();
        containerd.ctr(&[
            "images",
            "mount",
            "docker.io/library/berth-compat:1",
            target.to_str().unwrap(),
        ]);
        let theirs = describe(&target);
        containerd.ctr(&["images", "unmount", "--rm", target.to_str().unwrap()]);
        drop(containerd);

        // The comparison is not vacuous: the layers' changes are all there.
        assert!(theirs["opt/two"].ends_with("=link opt/one"), "{theirs:?}");
        assert!(theirs["bin"].starts_with("type 40000"), "{theirs:?}");
        assert!(theirs.contains_key("usr/lib/app/new") && !theirs.contains_key("usr/lib/app/data"));
        assert!(!theirs.contains_key("var/cache") && !theirs.contains_key("etc/conf.d/a"));
        for (name, tree) in ours {
            assert_eq!(tree, theirs, "{name} differs from containerd");
        }
    }
}
