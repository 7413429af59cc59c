//! The build cache: each step's result is recorded as an image record
//! named `moby-build-cache@sha256:<key>`, where the key digests the
//! parent image's ID and everything the step depends on (the instruction
//! after expansion, the build arguments a RUN sees, the digest of the
//! files a COPY reads). A later build making the same step from the same
//! parent finds the record and reuses the image. The records keep the
//! steps' images from the collector and are hidden from `docker images`
//! (as dockerd's intermediate images are, unless `-a`); `docker builder
//! prune` drops them. Blocking.

use sha2::{Digest as _, Sha256};

use super::image::BaseImage;
use crate::content::{Descriptor, Digest};
use crate::docker::reference::BUILD_CACHE_PREFIX;
use crate::docker::{Frontend, NAMESPACE};
use crate::metadata::{Filter, Image};
use crate::{ErrorKind, Result};

/// The record name of the step `step` made on `parent`.
pub fn key(parent: Option<&Digest>, step: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(parent.map_or("scratch", Digest::as_str).as_bytes());
    hasher.update(b"\n");
    hasher.update(step.as_bytes());
    format!(
        "{BUILD_CACHE_PREFIX}sha256:{}",
        hex::encode(hasher.finalize())
    )
}

/// The image recorded under `key`, if it is still whole.
pub fn lookup(frontend: &Frontend, key: &str) -> Result<Option<BaseImage>> {
    let image = match frontend.catalog.by_record(key) {
        Ok(image) => image,
        Err(err) if err.kind == ErrorKind::NotFound => return Ok(None),
        Err(err) => {
            tracing::debug!(key, "ignoring a broken build cache record: {err}");
            return Ok(None);
        }
    };
    // The layers must still be unpacked for the next step to build on.
    let base = BaseImage::of(&frontend.backend, &image)?;
    if let Some(chain_id) = base.chain_id() {
        let snapshotter = frontend
            .backend
            .snapshotters
            .get(crate::grpc::backend::DEFAULT_SNAPSHOTTER)?;
        if snapshotter.stat(NAMESPACE, &chain_id).is_err() {
            return Ok(None);
        }
    }
    Ok(Some(base))
}

/// Records `manifest` under `key`.
pub fn store(frontend: &Frontend, key: &str, manifest: &Descriptor) -> Result<()> {
    let images = &frontend.backend.images;
    let record = Image::new(key, manifest.clone());
    match images.create(NAMESPACE, record.clone()) {
        Err(err) if err.kind == ErrorKind::AlreadyExists => {
            images.update(NAMESPACE, record, &["target".to_owned()])?;
            Ok(())
        }
        other => other.map(|_| ()),
    }
}

/// Removes every cache record; returns how many there were.
pub fn clear(frontend: &Frontend) -> Result<Vec<String>> {
    let images = &frontend.backend.images;
    let mut removed = Vec::new();
    for record in images.list(NAMESPACE, &Filter::everything())? {
        if record.name.starts_with(BUILD_CACHE_PREFIX) {
            match images.delete(NAMESPACE, &record.name) {
                Ok(()) => removed.push(record.name),
                Err(err) if err.kind == ErrorKind::NotFound => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(removed)
}
