//! Unpacking a transferred image into a snapshotter, and the labels that
//! make it count as unpacked for containerd's clients: the top chain ID on
//! the config (`containerd.io/gc.ref.snapshot.<snapshotter>`) and each
//! layer's diffID on its blob (`containerd.io/uncompressed`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use super::lease::TransferLease;
use super::resolve::{diff_ids, read_document, ImageParts};
use super::{BlobProgress, BlobState, ProgressFn};
use crate::content::Digest;
use crate::metadata::ContentStore;
use crate::snapshots::Snapshotter;
use crate::unpack::{
    chain_ids, gc_snapshot_label, unpack, LayerDescriptor, LayerSource, UnpackOptions,
    UNCOMPRESSED_LABEL,
};
use crate::{Error, Result};

/// Blobs of a download that have landed in the content store, for an
/// unpack running alongside it: opening a layer waits for it.
#[derive(Debug, Default)]
pub(super) struct Arrivals {
    state: Mutex<ArrivalState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct ArrivalState {
    landed: HashSet<String>,
    /// Set when the download ended without some blobs: waiting is over.
    failed: Option<String>,
}

/// How long an unpack waits for a layer before it checks again whether the
/// download has given up (it is told so, this only bounds a lost wakeup).
const ARRIVAL_POLL: Duration = Duration::from_millis(500);

impl Arrivals {
    /// Marks a blob as landed.
    pub(super) fn landed(&self, digest: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.landed.insert(digest.to_owned());
        }
        self.changed.notify_all();
    }

    /// Ends every wait: the download will bring nothing more.
    pub(super) fn fail(&self, why: &str) {
        if let Ok(mut state) = self.state.lock() {
            state.failed.get_or_insert_with(|| why.to_owned());
        }
        self.changed.notify_all();
    }

    /// Waits until `digest` landed; an error once the download failed.
    pub(super) fn wait(&self, digest: &str) -> Result<()> {
        let poisoned = || Error::internal("download tracking: a thread panicked");
        let mut state = self.state.lock().map_err(|_| poisoned())?;
        loop {
            if state.landed.contains(digest) {
                return Ok(());
            }
            if let Some(why) = &state.failed {
                return Err(Error::unavailable(format!(
                    "blob {digest} never arrived: {why}"
                )));
            }
            state = self
                .changed
                .wait_timeout(state, ARRIVAL_POLL)
                .map_err(|_| poisoned())?
                .0;
        }
    }
}

/// Layers read from the content store; snapshots held by the transfer's
/// lease. With `arrivals`, a layer's snapshots are not made before its
/// blob has landed: the unpacker names the layer's chain ID to
/// `hold_snapshot` before it prepares anything for it, and that waits, so
/// a download cut short leaves no empty extraction snapshot waiting.
struct ContentLayers<'a> {
    content: &'a ContentStore,
    namespace: &'a str,
    lease: &'a TransferLease,
    snapshotter: &'a str,
    arrivals: Option<&'a Arrivals>,
    /// Each layer's blob digest by its chain ID.
    blob_of_chain: HashMap<String, String>,
}

impl LayerSource for ContentLayers<'_> {
    type Reader = File;

    fn open(&self, layer: &LayerDescriptor) -> Result<File> {
        if let Some(arrivals) = self.arrivals {
            arrivals.wait(&layer.digest)?;
        }
        let digest = Digest::parse(&layer.digest)?;
        Ok(self.content.reader(self.namespace, &digest)?.into_file())
    }

    fn hold_snapshot(&self, key: &str) -> Result<()> {
        self.lease.hold_snapshot(self.snapshotter, key)?;
        match (self.arrivals, self.blob_of_chain.get(key)) {
            (Some(arrivals), Some(blob)) => arrivals.wait(blob),
            _ => Ok(()),
        }
    }
}

/// What an unpack needs besides the image.
pub(super) struct UnpackTarget<'a> {
    pub content: &'a ContentStore,
    pub namespace: &'a str,
    pub lease: &'a TransferLease,
    pub snapshotter: &'a Snapshotter,
    pub progress: Option<&'a ProgressFn>,
}

/// Unpacks `image` and labels its config and layers; returns the top chain
/// ID. With `arrivals`, its config and layers may still be downloading.
pub(super) fn unpack_image(
    target: &UnpackTarget<'_>,
    image: &ImageParts,
    arrivals: Option<&Arrivals>,
) -> Result<String> {
    let content = target.content;
    let namespace = target.namespace;
    if let Some(arrivals) = arrivals {
        arrivals.wait(image.config.digest.as_str())?;
    }
    let config = read_document(content, namespace, &image.config.digest)?;
    let diff_ids = diff_ids(&image.config.digest, &config)?;
    let blob_of_chain = chain_ids(&diff_ids)
        .into_iter()
        .zip(image.layers.iter().map(|layer| layer.digest.to_string()))
        .collect();
    let source = ContentLayers {
        content,
        namespace,
        lease: target.lease,
        snapshotter: target.snapshotter.name(),
        arrivals,
        blob_of_chain,
    };
    let unpacked = unpack(
        target.snapshotter,
        namespace,
        &image.unpack_layers(),
        &diff_ids,
        &source,
        &UnpackOptions::default(),
    )
    .map_err(|err| err.context(format!("unpack {}", image.manifest.digest)))?;

    // The config now keeps the snapshots; each layer says its diffID.
    let key = gc_snapshot_label(target.snapshotter.name());
    let labels = BTreeMap::from([(key.clone(), unpacked.chain_id.clone())]);
    content.update(
        namespace,
        &image.config.digest,
        labels,
        &[format!("labels.{key}")],
    )?;
    let path = [format!("labels.{UNCOMPRESSED_LABEL}")];
    for (layer, done) in image.layers.iter().zip(&unpacked.layers) {
        let labels = BTreeMap::from([(UNCOMPRESSED_LABEL.to_owned(), done.diff_id.clone())]);
        content.update(namespace, &layer.digest, labels, &path)?;
        if let Some(report) = target.progress {
            report(BlobProgress {
                kind: "layer".to_owned(),
                digest: layer.digest.to_string(),
                done: layer.size,
                total: layer.size,
                state: BlobState::Unpacked,
            });
        }
    }
    Ok(unpacked.chain_id)
}
