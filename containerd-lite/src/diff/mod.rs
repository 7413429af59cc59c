//! Diff: applying layers to snapshots and computing layers from them.
//!
//! [`apply`] extracts a layer (tar, tar+gzip or tar+zstd) onto the tree a
//! snapshot's mounts present and returns the layer's uncompressed digest
//! (its diffID), to be checked against the image config. Whiteouts follow
//! the OCI layer spec: `.wh.<name>` deletes `name` from the layers below,
//! `.wh..wh..opq` hides everything the layers below have in its directory.
//! On an active overlayfs snapshot the layer is written straight into the
//! upper dir and whiteouts become overlay whiteouts (a 0/0 character
//! device; the `trusted.overlay.opaque=y` xattr); on a plain tree (native
//! snapshots, a first layer) they delete.
//!
//! Extraction is built to survive hostile layers; see [`apply`] for what
//! it refuses and `apply.rs` for how.
//!
//! [`compute`] does the reverse: the changes from a lower tree to an upper
//! one as a layer, optionally compressed.

mod apply;
mod compute;
mod sparse;
pub mod stream;

#[cfg(test)]
mod tests;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::error::{Context, Error, Result};
use crate::snapshots::{Mount, TempMount};

pub use stream::Compression;

use apply::{Extractor, WhiteoutStyle};
use stream::{Compressor, DigestReader, DigestWriter};

/// Marks a deleted entry: `.wh.<name>`.
pub const WHITEOUT_PREFIX: &str = ".wh.";
/// Marks an opaque directory.
pub const OPAQUE_WHITEOUT: &str = ".wh..wh..opq";
/// The xattr overlayfs reads to treat a directory as opaque.
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

/// Limits and permissions for [`apply`].
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Whether the layer may create block and character devices. Off by
    /// default: image layers have no business making device nodes. (A 0/0
    /// character device is overlayfs's whiteout and is read as one.)
    pub allow_devices: bool,
    /// Most bytes the uncompressed stream, and separately the files it
    /// writes, may reach: a decompression bomb stops here.
    pub max_bytes: u64,
    /// Most entries a layer may have (this also bounds the memory an
    /// extraction keeps: a few bytes and the name per entry).
    pub max_entries: u64,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions {
            allow_devices: false,
            max_bytes: 64 << 30,
            max_entries: 2_000_000,
        }
    }
}

/// What [`apply`] reports about the layer it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedLayer {
    /// `sha256:<hex>` of the uncompressed tar stream.
    pub diff_id: String,
    /// Bytes of the uncompressed tar stream.
    pub size: u64,
}

/// Where a layer goes, worked out from a snapshot's mounts.
enum Target {
    /// An active overlay snapshot: its upper dir, over its lower dirs.
    OverlayUpper {
        upper: PathBuf,
        lowers: Vec<PathBuf>,
    },
    /// A writable directory, as is.
    Dir(PathBuf),
    /// Anything else, mounted for the duration.
    Mounted(TempMount),
}

impl Target {
    fn of(mounts: &[Mount]) -> Result<Self> {
        match mounts {
            [m] if m.r#type == "overlay" && m.target.is_none() => match m.option("upperdir") {
                Some(upper) => Ok(Target::OverlayUpper {
                    upper: PathBuf::from(upper),
                    lowers: m.lowerdirs(),
                }),
                None => Err(Error::precondition(
                    "apply: the mounts are read-only (overlay without upper dir)",
                )),
            },
            [m] if m.is_bind() && m.target.is_none() => {
                if m.is_readonly() {
                    return Err(Error::precondition(format!(
                        "apply: the mount of {} is read-only",
                        m.source
                    )));
                }
                Ok(Target::Dir(PathBuf::from(&m.source)))
            }
            [] => Err(Error::invalid("apply: no mounts given")),
            mounts => Ok(Target::Mounted(TempMount::new(mounts)?)),
        }
    }
}

/// Applies the layer read from `layer`, of `media_type`, onto the tree
/// `mounts` present, and returns its diffID and uncompressed size.
///
/// Whatever the layer holds, nothing is written outside that tree: entry
/// names with `..` are refused and absolute names taken as relative;
/// symlinks in a path resolve inside the tree (as if it were `/`); hard
/// links can only point at files inside it; an existing symlink is
/// replaced, never written through. Device nodes are refused unless
/// `options.allow_devices`; the uncompressed size, the bytes written and
/// the entry count are bounded by `options`. An error leaves the tree
/// partly written: the caller removes the snapshot.
pub fn apply(
    mounts: &[Mount],
    layer: impl Read,
    media_type: &str,
    options: &ApplyOptions,
) -> Result<AppliedLayer> {
    let compression = Compression::from_media_type(media_type)?;
    let target = Target::of(mounts)?;
    let (root, whiteouts) = match &target {
        Target::OverlayUpper { upper, lowers } => (
            upper.clone(),
            WhiteoutStyle::Overlay {
                lowers: lowers.clone(),
            },
        ),
        Target::Dir(dir) => (dir.clone(), WhiteoutStyle::Delete),
        Target::Mounted(mounted) => (mounted.path().to_path_buf(), WhiteoutStyle::Delete),
    };
    let applied = apply_into(&root, whiteouts, layer, compression, options)?;
    if let Target::Mounted(mounted) = target {
        mounted.release()?;
    }
    Ok(applied)
}

/// Applies a layer into `upper`, an overlay upper dir whose lower layers
/// are not known yet (a snapshot from
/// [`Snapshotter::prepare_detached`](crate::snapshots::Snapshotter::prepare_detached)):
/// whiteouts become overlay whiteouts. Same guarantees as [`apply`].
pub fn apply_to_overlay_upper(
    upper: &Path,
    layer: impl Read,
    media_type: &str,
    options: &ApplyOptions,
) -> Result<AppliedLayer> {
    let compression = Compression::from_media_type(media_type)?;
    let whiteouts = WhiteoutStyle::Overlay { lowers: Vec::new() };
    apply_into(upper, whiteouts, layer, compression, options)
}

fn apply_into(
    root: &Path,
    whiteouts: WhiteoutStyle,
    layer: impl Read,
    compression: Compression,
    options: &ApplyOptions,
) -> Result<AppliedLayer> {
    let mut stream = DigestReader::new(compression.decompress(layer)?, options.max_bytes);
    let extracted = {
        let mut archive = tar::Archive::new(&mut stream);
        Extractor::new(root, whiteouts, options)
            .and_then(|mut extractor| extractor.extract(&mut archive))
    };
    let drained = extracted.and_then(|()| {
        stream
            .drain()
            .map_err(|e| Error::invalid(format!("read layer: {e}")))
    });
    if let Err(err) = drained {
        if stream.exceeded() {
            return Err(Error::invalid(format!(
                "layer expands past the limit of {} bytes",
                options.max_bytes
            )));
        }
        return Err(err);
    }
    let (diff_id, size) = stream.finish();
    Ok(AppliedLayer { diff_id, size })
}

/// Options for [`compute`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ComputeOptions {
    pub compression: Compression,
}

/// What [`compute`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ComputedLayer {
    /// The OCI media type matching the compression.
    pub media_type: String,
    /// `sha256:<hex>` and size of the bytes written (compressed).
    pub digest: String,
    pub size: u64,
    /// `sha256:<hex>` of the uncompressed tar.
    pub diff_id: String,
}

/// Where the changes between two mount lists are read.
enum Source {
    /// `upper` is an overlay upper dir over exactly the lower tree.
    OverlayUpper(PathBuf),
    /// Two trees to compare; temporary mounts live as long as this.
    Trees {
        lower: PathBuf,
        upper: PathBuf,
        mounted: Vec<TempMount>,
    },
}

/// The layer dirs a mount list presents, if it is just a stack of them.
fn layer_dirs(mounts: &[Mount]) -> Option<Vec<PathBuf>> {
    match mounts {
        [] => Some(Vec::new()),
        [m] if m.is_bind() && m.target.is_none() => Some(vec![PathBuf::from(&m.source)]),
        [m] if m.r#type == "overlay" && m.option("upperdir").is_none() => Some(m.lowerdirs()),
        _ => None,
    }
}

/// A directory presenting `mounts`: a bind's source as is, else mounted
/// read-only on a temporary directory.
fn tree_of(mounts: &[Mount], mounted: &mut Vec<TempMount>) -> Result<PathBuf> {
    match mounts {
        [m] if m.is_bind() && m.target.is_none() => Ok(PathBuf::from(&m.source)),
        [] => {
            let empty = TempMount::new(&[])?;
            let path = empty.path().to_path_buf();
            mounted.push(empty);
            Ok(path)
        }
        mounts => {
            let readonly: Vec<Mount> = mounts
                .iter()
                .map(|m| {
                    let mut m = m.clone();
                    m.options.retain(|o| o != "rw");
                    if !m.is_readonly() {
                        m.options.push("ro".into());
                    }
                    m
                })
                .collect();
            let tree = TempMount::new(&readonly)?;
            let path = tree.path().to_path_buf();
            mounted.push(tree);
            Ok(path)
        }
    }
}

impl Source {
    fn of(lower: &[Mount], upper: &[Mount]) -> Result<Self> {
        if let [m] = upper {
            if let (Some(dir), Some(lowers)) = (m.option("upperdir"), layer_dirs(lower)) {
                if m.r#type == "overlay" && m.lowerdirs() == lowers {
                    return Ok(Source::OverlayUpper(PathBuf::from(dir)));
                }
            }
        }
        let mut mounted = Vec::new();
        let lower = tree_of(lower, &mut mounted)?;
        let upper = tree_of(upper, &mut mounted)?;
        Ok(Source::Trees {
            lower,
            upper,
            mounted,
        })
    }
}

/// Writes to `out` the layer that turns the tree of `lower` into the tree
/// of `upper` (typically a snapshot's parent view and the snapshot), and
/// reports its digests.
pub fn compute(
    lower: &[Mount],
    upper: &[Mount],
    out: impl Write,
    options: &ComputeOptions,
) -> Result<ComputedLayer> {
    let source = Source::of(lower, upper)?;
    let (changes, upper_dir) = match &source {
        Source::OverlayUpper(dir) => (compute::overlay_changes(dir)?, dir.clone()),
        Source::Trees { lower, upper, .. } => (compute::tree_changes(lower, upper)?, upper.clone()),
    };
    let compressed = DigestWriter::new(out);
    let compressor = Compressor::new(options.compression, compressed)?;
    let uncompressed = DigestWriter::new(compressor);
    let uncompressed = compute::write_changes(&upper_dir, &changes, uncompressed)?;
    let (compressor, diff_id, _) = uncompressed.finish();
    let compressed = compressor.finish().context("finish layer compression")?;
    let (mut out, digest, size) = compressed.finish();
    out.flush().context("flush layer")?;
    if let Source::Trees { mounted, .. } = source {
        for tree in mounted {
            tree.release()?;
        }
    }
    Ok(ComputedLayer {
        media_type: options.compression.media_type().to_string(),
        digest,
        size,
        diff_id,
    })
}
