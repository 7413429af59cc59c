//! Moving whole images in and out of berthd: pull from and push to a
//! registry, import and export archives. The daemon does it all itself
//! (containerd 1.6 leaves it to its clients), so the registry client, the
//! content store and the unpacker share one process: layers are unpacked
//! while the others still download.
//!
//! Every transfer works under a lease of its own, so nothing it has made
//! is collected before the image record and the config's
//! `containerd.io/gc.ref.snapshot.<snapshotter>` label hold it; a transfer
//! cut short (berthd killed) leaves only content and snapshots that the
//! lease's expiry hands to the garbage collector.

mod archive;
mod export;
mod import;
pub(crate) mod lease;
mod pull;
mod resolve;
mod unpack;

#[cfg(test)]
mod tests;

use std::future::Future;
use std::sync::Arc;

pub use import::ImportOptions;
pub use pull::{PullOptions, PushOptions};

use crate::content::Descriptor;
use crate::metadata::{ContentStore, ImageStore, LeaseManager};

/// Where one blob of a transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlobState {
    /// Present at the other end already: nothing moves.
    Exists,
    /// Bytes moving: `done` of `total`.
    Transferring,
    /// Moved and verified.
    Done,
    /// A layer unpacked into its snapshot.
    Unpacked,
}

/// A progress report for one blob, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobProgress {
    /// `config`, `layer`, `manifest`, `index` or `image`.
    pub kind: String,
    pub digest: String,
    pub done: u64,
    pub total: u64,
    pub state: BlobState,
}

/// Runs `transfer` to its end; should `gone` (the client left) come
/// first, `cancel` is cancelled and the transfer winds down through its
/// own error path, so what it made is undone rather than dropped midway.
pub async fn cancel_when<T>(
    transfer: impl Future<Output = T>,
    gone: impl Future<Output = ()>,
    cancel: &tokio_util::sync::CancellationToken,
) -> T {
    tokio::pin!(transfer);
    tokio::select! {
        done = &mut transfer => return done,
        () = gone => cancel.cancel(),
    }
    transfer.await
}

/// Receives [`BlobProgress`] reports, from any thread; it should only hand
/// them on (a channel send).
pub type ProgressFn = Arc<dyn Fn(BlobProgress) + Send + Sync>;

/// An image a transfer produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transferred {
    pub name: String,
    pub target: Descriptor,
    /// The chain ID of the unpacked top layer; empty when not unpacked.
    pub snapshot: String,
}

/// The stores a transfer works on. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Transfers {
    content: ContentStore,
    images: ImageStore,
    leases: LeaseManager,
}

impl Transfers {
    /// Transfers into (and out of) these stores.
    pub fn new(content: ContentStore, images: ImageStore, leases: LeaseManager) -> Self {
        Transfers {
            content,
            images,
            leases,
        }
    }

    /// Where archives being imported are spooled: beside the content
    /// store, on the same filesystem.
    pub fn spool_dir(&self) -> std::path::PathBuf {
        self.content.blobs().root().to_path_buf()
    }
}
