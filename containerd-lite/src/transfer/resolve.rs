//! Reading an image's documents (index, manifest, config) from the content
//! store, bounded in size and checked as they are parsed.

use oci_client::manifest::{OciImageIndex, OciImageManifest};
use serde::Deserialize;

use crate::content::{Descriptor, Digest};
use crate::metadata::ContentStore;
use crate::registry::{Platform, MAX_MANIFEST_SIZE};
use crate::unpack::LayerDescriptor;
use crate::{Error, Result};

pub(super) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(super) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(super) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub(super) const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// Whether a media type names an index (OCI) or manifest list (docker).
pub(super) fn is_index(media_type: &str) -> bool {
    media_type == OCI_INDEX || media_type == DOCKER_LIST
}

/// Whether a media type names an image manifest.
pub(super) fn is_manifest(media_type: &str) -> bool {
    media_type == OCI_MANIFEST || media_type == DOCKER_MANIFEST
}

/// Reads a whole document of `namespace`, refusing one over the manifest
/// size bound.
pub(super) fn read_document(
    content: &ContentStore,
    namespace: &str,
    digest: &Digest,
) -> Result<Vec<u8>> {
    let reader = content.reader(namespace, digest)?;
    if reader.size() > MAX_MANIFEST_SIZE as u64 {
        return Err(Error::invalid(format!(
            "document {digest}: {} bytes, more than the {MAX_MANIFEST_SIZE} allowed",
            reader.size()
        )));
    }
    let mut bytes = vec![0; reader.size() as usize];
    let mut filled = 0;
    while filled < bytes.len() {
        match reader.read_at(&mut bytes[filled..], filled as u64)? {
            0 => {
                return Err(Error::internal(format!(
                    "content {digest}: shorter than its size"
                )))
            }
            n => filled += n,
        }
    }
    Ok(bytes)
}

/// Parses a JSON document, naming it in the error.
pub(super) fn parse<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T> {
    serde_json::from_slice(bytes).map_err(|err| Error::invalid(format!("{what}: malformed: {err}")))
}

/// A descriptor from a document, its digest and size checked.
pub(super) fn descriptor(media_type: &str, digest: &str, size: i64) -> Result<Descriptor> {
    let size = u64::try_from(size)
        .map_err(|_| Error::invalid(format!("descriptor {digest}: negative size {size}")))?;
    Ok(Descriptor {
        media_type: media_type.to_owned(),
        digest: Digest::parse(digest)?,
        size,
        annotations: Default::default(),
    })
}

/// One platform's image: its manifest and what the manifest lists.
#[derive(Debug, Clone)]
pub(super) struct ImageParts {
    pub manifest: Descriptor,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
}

impl ImageParts {
    /// The layers as the unpacker takes them.
    pub(super) fn unpack_layers(&self) -> Vec<LayerDescriptor> {
        self.layers
            .iter()
            .map(|layer| LayerDescriptor {
                media_type: layer.media_type.clone(),
                digest: layer.digest.to_string(),
                size: layer.size,
            })
            .collect()
    }
}

/// The parts a manifest document lists.
pub(super) fn manifest_parts(manifest: Descriptor, bytes: &[u8]) -> Result<ImageParts> {
    let what = format!("manifest {}", manifest.digest);
    let parsed: OciImageManifest = parse(bytes, &what)?;
    let config = descriptor(
        &parsed.config.media_type,
        &parsed.config.digest,
        parsed.config.size,
    )?;
    let layers = parsed
        .layers
        .iter()
        .map(|layer| descriptor(&layer.media_type, &layer.digest, layer.size))
        .collect::<Result<Vec<_>>>()?;
    for layer in &layers {
        crate::diff::Compression::from_media_type(&layer.media_type).map_err(|_| {
            Error::invalid(format!(
                "{what}: layer {} has the unknown media type {:?}",
                layer.digest, layer.media_type
            ))
        })?;
    }
    Ok(ImageParts {
        manifest,
        config,
        layers,
    })
}

/// The image manifest `target` stands for on `platform`: itself, or the
/// index entry for that platform (which must be in the namespace).
pub(super) fn platform_image(
    content: &ContentStore,
    namespace: &str,
    target: &Descriptor,
    platform: &Platform,
) -> Result<ImageParts> {
    let bytes = read_document(content, namespace, &target.digest)?;
    let media_type = media_type_of(&target.media_type, &bytes);
    if is_manifest(&media_type) {
        return manifest_parts(target.clone(), &bytes);
    }
    if !is_index(&media_type) {
        return Err(Error::invalid(format!(
            "image {}: unknown media type {media_type:?}",
            target.digest
        )));
    }
    let index: OciImageIndex = parse(&bytes, &format!("index {}", target.digest))?;
    let (_, entry) = platform.select(&index.manifests)?;
    let child = descriptor(&entry.media_type, &entry.digest, entry.size)?;
    let child_bytes = read_document(content, namespace, &child.digest)?;
    manifest_parts(child, &child_bytes)
}

/// A document's media type: the descriptor's, else the one it declares.
pub(super) fn media_type_of(declared: &str, bytes: &[u8]) -> String {
    if !declared.is_empty() {
        return declared.to_owned();
    }
    #[derive(Deserialize)]
    struct Probe {
        #[serde(rename = "mediaType", default)]
        media_type: String,
        #[serde(default)]
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Probe>(bytes) {
        Ok(probe) if !probe.media_type.is_empty() => probe.media_type,
        Ok(probe) if probe.manifests.is_some() => OCI_INDEX.to_owned(),
        _ => OCI_MANIFEST.to_owned(),
    }
}

/// The `rootfs.diff_ids` of an image config.
pub(super) fn diff_ids(config: &Digest, bytes: &[u8]) -> Result<Vec<String>> {
    #[derive(Deserialize)]
    struct Config {
        rootfs: RootFs,
    }
    #[derive(Deserialize)]
    struct RootFs {
        diff_ids: Vec<String>,
    }
    let parsed: Config = parse(bytes, &format!("config {config}"))?;
    Ok(parsed.rootfs.diff_ids)
}
