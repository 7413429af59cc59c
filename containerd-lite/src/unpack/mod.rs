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

#[cfg(test)]
mod containerd_compat;
#[cfg(test)]
mod tests;

/// The label containerd puts on unpacked snapshots: their chain ID.
pub const SNAPSHOT_REF_LABEL: &str = "containerd.io/snapshot.ref";

/// The label containerd puts on a layer blob once unpacked: its diffID.
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// The label key, on an image's config blob, whose value (the top chain
/// ID) keeps the image's snapshots of `snapshotter` from the garbage
/// collector: `containerd.io/gc.ref.snapshot.<snapshotter>`.
pub fn gc_snapshot_label(snapshotter: &str) -> String {
    format!("containerd.io/gc.ref.snapshot.{snapshotter}")
}

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
