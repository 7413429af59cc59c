//! Manifest documents: telling an index from a manifest, parsing them,
//! and checking the descriptors they hold.

use oci_client::manifest::OciDescriptor;
use serde::Deserialize;

use crate::content::{Descriptor, Digest};
use crate::{Error, Result};

pub(super) const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub(super) const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub(super) const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub(super) const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

/// What the top of a manifest says it is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    config: Option<serde_json::Value>,
}

pub(super) enum Kind {
    Index,
    Manifest,
}

/// The media type of a manifest document and whether it is an index.
/// Documents without `mediaType` are told apart by their fields.
pub(super) fn classify(bytes: &[u8], digest: &Digest) -> Result<(Kind, String)> {
    let probe: Probe = serde_json::from_slice(bytes)
        .map_err(|err| Error::invalid(format!("manifest {digest}: malformed JSON: {err}")))?;
    match probe.media_type.as_deref() {
        Some(media @ (OCI_INDEX | DOCKER_LIST)) => Ok((Kind::Index, media.to_owned())),
        Some(media @ (OCI_MANIFEST | DOCKER_MANIFEST)) => Ok((Kind::Manifest, media.to_owned())),
        Some(other) => Err(Error::invalid(format!(
            "manifest {digest}: unsupported media type {other:?}"
        ))),
        None if probe.manifests.is_some() => Ok((Kind::Index, OCI_INDEX.to_owned())),
        None if probe.config.is_some() => Ok((Kind::Manifest, OCI_MANIFEST.to_owned())),
        None => Err(Error::invalid(format!(
            "manifest {digest}: neither a manifest nor an index"
        ))),
    }
}

pub(super) fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], digest: &Digest) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|err| Error::invalid(format!("manifest {digest}: malformed: {err}")))
}

/// Validates a descriptor from a manifest: digest syntax, size not negative.
pub(super) fn descriptor(media_type: &str, digest: &str, size: i64) -> Result<Descriptor> {
    let digest = Digest::parse(digest)?;
    let size = u64::try_from(size)
        .map_err(|_| Error::invalid(format!("descriptor {digest}: negative size {size}")))?;
    Ok(Descriptor {
        media_type: media_type.to_owned(),
        digest,
        size,
        annotations: Default::default(),
    })
}

pub(super) fn to_wire(descriptor: &Descriptor) -> OciDescriptor {
    OciDescriptor {
        media_type: descriptor.media_type.clone(),
        digest: descriptor.digest.to_string(),
        size: i64::try_from(descriptor.size).unwrap_or(i64::MAX),
        ..OciDescriptor::default()
    }
}
