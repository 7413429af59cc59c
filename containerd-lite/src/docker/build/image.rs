//! The image a build step starts from and the images steps make: a step's
//! filesystem change becomes a layer (computed from the step's snapshot
//! against its parent, written to the content store, and the snapshot
//! itself committed as the layer's chain ID, so nothing is unpacked
//! again); its configuration change becomes a new config; both become a
//! new manifest. Every blob and snapshot is held by the build's lease
//! until an image record names it. Blocking.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};

use serde_json::{json, Value};

use crate::content::{Descriptor, Digest, WriterOptions};
use crate::diff::{self, Compression, ComputeOptions};
use crate::docker::images::catalog::DockerImage;
use crate::docker::NAMESPACE;
use crate::grpc::backend::DEFAULT_SNAPSHOTTER;
use crate::grpc::Backend;
use crate::metadata::Labels;
use crate::snapshots::mount::Mount;
use crate::transfer::lease::TransferLease;
use crate::unpack::{chain_ids, gc_snapshot_label, UNCOMPRESSED_LABEL};
use crate::{Error, ErrorKind, Result};

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// An image as a build step sees it: the whole config document (unknown
/// keys kept), its layers and their snapshot.
#[derive(Debug, Clone)]
pub struct BaseImage {
    /// The config digest (docker's image ID); `None` for `scratch`.
    pub id: Option<Digest>,
    /// A record naming the image (a name, or its build cache record), by
    /// which containers are made of it; `None` for `scratch`.
    pub record: Option<String>,
    /// The manifest (what a record names); `None` for `scratch`.
    pub manifest: Option<Descriptor>,
    /// Whether the manifest uses docker's media types (new layers follow).
    pub docker_media_types: bool,
    pub config: Value,
    pub layers: Vec<Descriptor>,
}

impl BaseImage {
    /// The empty image `FROM scratch` starts from.
    pub fn scratch() -> BaseImage {
        let platform = crate::registry::Platform::host();
        BaseImage {
            id: None,
            record: None,
            manifest: None,
            docker_media_types: false,
            config: json!({
                "architecture": platform.architecture,
                "os": platform.os,
                "config": {},
                "rootfs": { "type": "layers", "diff_ids": [] },
                "history": [],
            }),
            layers: Vec::new(),
        }
    }

    /// `image` with its config document read from the content store.
    pub fn of(backend: &Backend, image: &DockerImage) -> Result<BaseImage> {
        let mut reader = backend.content.reader(NAMESPACE, &image.id)?.into_file();
        let mut bytes = Vec::new();
        reader
            .read_to_end(&mut bytes)
            .map_err(|err| Error::internal(format!("reading image config {}: {err}", image.id)))?;
        let config: Value = serde_json::from_slice(&bytes).map_err(|err| {
            Error::invalid(format!("image config {}: malformed: {err}", image.id))
        })?;
        if !config.is_object() {
            return Err(Error::invalid(format!(
                "image config {}: not a JSON object",
                image.id
            )));
        }
        Ok(BaseImage {
            id: Some(image.id.clone()),
            record: image.records.first().map(|r| r.name.clone()),
            manifest: Some(image.manifest.clone()),
            docker_media_types: image.manifest.media_type == DOCKER_MANIFEST,
            config,
            layers: image.layers.clone(),
        })
    }

    /// `rootfs.diff_ids`.
    pub fn diff_ids(&self) -> Vec<String> {
        strings(self.config.pointer("/rootfs/diff_ids"))
    }

    /// The snapshot holding this image's filesystem (`None`: empty).
    pub fn chain_id(&self) -> Option<String> {
        chain_ids(&self.diff_ids()).pop()
    }

    /// The run configuration (`config`: Env, Cmd, WorkingDir, ...).
    pub fn run_config(&self) -> &Value {
        static EMPTY: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
        self.config
            .get("config")
            .filter(|c| c.is_object())
            .unwrap_or_else(|| EMPTY.get_or_init(|| json!({})))
    }

    /// Changes the run configuration with `change`.
    pub fn update_run_config<T>(
        &mut self,
        change: impl FnOnce(&mut serde_json::Map<String, Value>) -> T,
    ) -> T {
        let mut run = match self.config.get_mut("config").map(Value::take) {
            Some(Value::Object(run)) => run,
            _ => serde_json::Map::new(),
        };
        let result = change(&mut run);
        // `of` and `scratch` only make objects, which index assignment needs.
        self.config["config"] = Value::Object(run);
        result
    }

    /// The image ID docker shows (`sha256:...`), or `scratch`.
    pub fn shown_id(&self) -> String {
        self.id
            .as_ref()
            .map_or_else(|| "scratch".to_owned(), ToString::to_string)
    }
}

/// The strings of a JSON array (none when it is not one).
pub fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// A layer written for a step.
#[derive(Debug, Clone)]
pub struct NewLayer {
    pub descriptor: Descriptor,
    pub diff_id: String,
}

/// Writes a blob through an ingest held by `lease`; an existing blob is
/// kept (and recorded). Returns its digest.
fn write_blob(
    backend: &Backend,
    lease: &TransferLease,
    bytes: &[u8],
    labels: Labels,
) -> Result<Digest> {
    let digest = Digest::sha256_of(bytes);
    let options = WriterOptions {
        reference: format!("build-{digest}"),
        total: bytes.len() as u64,
        expected: Some(digest.clone()),
    };
    match backend.content.writer(NAMESPACE, Some(lease.id()), options) {
        Ok(mut writer) => {
            if writer.offset() > 0 {
                writer.truncate(0)?;
            }
            writer.write(bytes)?;
            match writer.commit(bytes.len() as u64, Some(&digest), labels.clone()) {
                Ok(_) => return Ok(digest),
                Err(err) if err.kind == ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err.context(format!("storing {digest}"))),
            }
        }
        Err(err) if err.kind == ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err),
    }
    hold_existing(backend, lease, &digest)?;
    if !labels.is_empty() {
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        backend.content.update(NAMESPACE, &digest, labels, &paths)?;
    }
    Ok(digest)
}

/// Puts an existing blob under the lease too, so a collection cannot take
/// it before the image naming it is recorded.
fn hold_existing(backend: &Backend, lease: &TransferLease, digest: &Digest) -> Result<()> {
    backend.leases.add_resource(
        NAMESPACE,
        lease.id(),
        &crate::metadata::LeaseResource::Content(digest.clone()),
    )
}

/// An `io::Write` over a content writer.
struct BlobSink<'a> {
    writer: &'a mut crate::metadata::content::NamespacedWriter,
}

impl Write for BlobSink<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.writer
            .write(bytes)
            .map_err(|err| io::Error::other(err.message))?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Turns the active snapshot `key` (made on `base`'s snapshot) into
/// `base`'s next layer: the change is written as a gzip layer blob and the
/// snapshot is committed under the new chain ID (or dropped, when that
/// layer exists already). `key` is gone afterwards either way.
pub fn commit_snapshot(
    backend: &Backend,
    lease: &TransferLease,
    base: &BaseImage,
    key: &str,
) -> Result<NewLayer> {
    let snapshotter = backend.snapshotters.get(DEFAULT_SNAPSHOTTER)?;
    let (layer, chain_id) = layer_of(backend, lease, base, key)?;
    match snapshotter.commit(NAMESPACE, &chain_id, key, BTreeMap::new()) {
        Ok(()) => {}
        Err(err) if err.kind == ErrorKind::AlreadyExists => {
            snapshotter.remove(NAMESPACE, key)?;
        }
        Err(err) => return Err(err.context(format!("committing build snapshot {key}"))),
    }
    Ok(layer)
}

/// Like [`commit_snapshot`], but `key` stays as it is (a container kept
/// after the build still has its filesystem): the layer is unpacked into
/// a snapshot of its own.
pub fn copy_snapshot(
    backend: &Backend,
    lease: &TransferLease,
    base: &BaseImage,
    key: &str,
) -> Result<NewLayer> {
    let snapshotter = backend.snapshotters.get(DEFAULT_SNAPSHOTTER)?;
    let (layer, chain_id) = layer_of(backend, lease, base, key)?;
    if snapshotter.stat(NAMESPACE, &chain_id).is_ok() {
        return Ok(layer);
    }
    let extract = format!("build-extract-{}", uuid::Uuid::new_v4().simple());
    lease.hold_snapshot(snapshotter.name(), &extract)?;
    let mounts = snapshotter.prepare(
        NAMESPACE,
        &extract,
        base.chain_id().as_deref(),
        BTreeMap::new(),
    )?;
    let applied = backend
        .content
        .reader(NAMESPACE, &layer.descriptor.digest)
        .and_then(|blob| {
            diff::apply(
                &mounts,
                blob.into_file(),
                &layer.descriptor.media_type,
                &diff::ApplyOptions::default(),
            )
        })
        .and_then(|_| snapshotter.commit(NAMESPACE, &chain_id, &extract, BTreeMap::new()));
    if let Err(err) = applied {
        let _ = snapshotter.remove(NAMESPACE, &extract);
        if err.kind != ErrorKind::AlreadyExists {
            return Err(err.context("unpacking the step's layer"));
        }
    }
    Ok(layer)
}

/// Writes the layer `key` holds over `base` and returns it with its chain
/// ID (held by the lease).
fn layer_of(
    backend: &Backend,
    lease: &TransferLease,
    base: &BaseImage,
    key: &str,
) -> Result<(NewLayer, String)> {
    let snapshotter = backend.snapshotters.get(DEFAULT_SNAPSHOTTER)?;
    let view_key = format!("build-view-{}", uuid::Uuid::new_v4().simple());
    lease.hold_snapshot(snapshotter.name(), &view_key)?;
    let parent = base.chain_id();
    let lower = snapshotter.view(NAMESPACE, &view_key, parent.as_deref(), BTreeMap::new())?;
    let written = snapshotter
        .mounts(NAMESPACE, key)
        .and_then(|upper| write_layer(backend, lease, base, &lower, &upper));
    if let Err(err) = snapshotter.remove(NAMESPACE, &view_key) {
        tracing::warn!(key = view_key, "removing a build view: {err}");
    }
    let layer = written?;
    let mut diff_ids = base.diff_ids();
    diff_ids.push(layer.diff_id.clone());
    let chain_id = chain_ids(&diff_ids)
        .pop()
        .ok_or_else(|| Error::internal("a layer without a chain ID"))?;
    lease.hold_snapshot(snapshotter.name(), &chain_id)?;
    Ok((layer, chain_id))
}

/// Writes the layer turning `lower` into `upper` to the content store.
fn write_layer(
    backend: &Backend,
    lease: &TransferLease,
    base: &BaseImage,
    lower: &[Mount],
    upper: &[Mount],
) -> Result<NewLayer> {
    let reference = format!("build-layer-{}", uuid::Uuid::new_v4().simple());
    let mut writer = backend.content.writer(
        NAMESPACE,
        Some(lease.id()),
        WriterOptions::new(reference.clone()),
    )?;
    let options = ComputeOptions {
        compression: Compression::Gzip,
    };
    let computed = diff::compute(
        lower,
        upper,
        BlobSink {
            writer: &mut writer,
        },
        &options,
    );
    let computed = match computed {
        Ok(computed) => computed,
        Err(err) => {
            drop(writer);
            let _ = backend.content.abort(NAMESPACE, &reference);
            return Err(err.context("computing the step's layer"));
        }
    };
    let digest = Digest::parse(&computed.digest)?;
    let labels = Labels::from([(UNCOMPRESSED_LABEL.to_owned(), computed.diff_id.clone())]);
    match writer.commit(computed.size, Some(&digest), labels.clone()) {
        Ok(_) => {}
        Err(err) if err.kind == ErrorKind::AlreadyExists => {
            let _ = backend.content.abort(NAMESPACE, &reference);
            hold_existing(backend, lease, &digest)?;
            let paths = [format!("labels.{UNCOMPRESSED_LABEL}")];
            backend.content.update(NAMESPACE, &digest, labels, &paths)?;
        }
        Err(err) => {
            let _ = backend.content.abort(NAMESPACE, &reference);
            return Err(err.context("storing the step's layer"));
        }
    }
    let media_type = if base.docker_media_types {
        DOCKER_LAYER.to_owned()
    } else {
        computed.media_type
    };
    Ok(NewLayer {
        descriptor: Descriptor {
            media_type,
            digest,
            size: computed.size,
            annotations: BTreeMap::new(),
        },
        diff_id: computed.diff_id,
    })
}

/// What [`write_image`] stored.
#[derive(Debug, Clone)]
pub struct Written {
    pub image: BaseImage,
    /// The manifest: what an image record points at.
    pub manifest: Descriptor,
}

/// Stores the image `base` becomes with `layer` on top (if any) and
/// `config` as its config document (its `rootfs` is set here).
pub fn write_image(
    backend: &Backend,
    lease: &TransferLease,
    base: &BaseImage,
    layer: Option<NewLayer>,
    mut config: Value,
) -> Result<Written> {
    let mut layers = base.layers.clone();
    let mut diff_ids = base.diff_ids();
    if let Some(layer) = layer {
        layers.push(layer.descriptor);
        diff_ids.push(layer.diff_id);
    }
    config["rootfs"] = json!({ "type": "layers", "diff_ids": diff_ids });
    let config_bytes = serde_json::to_vec(&config)
        .map_err(|err| Error::internal(format!("encoding an image config: {err}")))?;
    let mut config_labels = Labels::new();
    if let Some(chain_id) = chain_ids(&diff_ids).pop() {
        config_labels.insert(gc_snapshot_label(DEFAULT_SNAPSHOTTER), chain_id);
    }
    let config_digest = write_blob(backend, lease, &config_bytes, config_labels)?;
    let (manifest_type, config_type) = if base.docker_media_types {
        (DOCKER_MANIFEST, DOCKER_CONFIG)
    } else {
        (OCI_MANIFEST, OCI_CONFIG)
    };
    let layer_json: Vec<Value> = layers
        .iter()
        .map(|l| json!({ "mediaType": l.media_type, "digest": l.digest.as_str(), "size": l.size }))
        .collect();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": manifest_type,
        "config": { "mediaType": config_type, "digest": config_digest.as_str(), "size": config_bytes.len() },
        "layers": layer_json,
    });
    let manifest_bytes = serde_json::to_vec(&manifest)
        .map_err(|err| Error::internal(format!("encoding a manifest: {err}")))?;
    let mut manifest_labels = Labels::from([(
        "containerd.io/gc.ref.content.config".to_owned(),
        config_digest.to_string(),
    )]);
    for (position, layer) in layers.iter().enumerate() {
        manifest_labels.insert(
            format!("containerd.io/gc.ref.content.l.{position}"),
            layer.digest.to_string(),
        );
    }
    let manifest_digest = write_blob(backend, lease, &manifest_bytes, manifest_labels)?;
    let manifest = Descriptor {
        media_type: manifest_type.to_owned(),
        digest: manifest_digest,
        size: manifest_bytes.len() as u64,
        annotations: BTreeMap::new(),
    };
    Ok(Written {
        image: BaseImage {
            id: Some(config_digest),
            record: None,
            manifest: Some(manifest.clone()),
            docker_media_types: base.docker_media_types,
            config,
            layers,
        },
        manifest,
    })
}
