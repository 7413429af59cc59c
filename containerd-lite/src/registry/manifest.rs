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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn classify_json(value: serde_json::Value) -> Result<(Kind, String)> {
        let bytes = serde_json::to_vec(&value).unwrap();
        classify(&bytes, &Digest::sha256_of(&bytes))
    }

    #[test]
    fn documents_are_told_apart_by_media_type_or_shape() {
        let (kind, media) = classify_json(serde_json::json!({"mediaType": DOCKER_LIST})).unwrap();
        assert!(matches!(kind, Kind::Index) && media == DOCKER_LIST);
        let (kind, media) =
            classify_json(serde_json::json!({"mediaType": DOCKER_MANIFEST})).unwrap();
        assert!(matches!(kind, Kind::Manifest) && media == DOCKER_MANIFEST);
        let (kind, media) = classify_json(serde_json::json!({"manifests": []})).unwrap();
        assert!(matches!(kind, Kind::Index) && media == OCI_INDEX);
        let (kind, media) = classify_json(serde_json::json!({"config": {}})).unwrap();
        assert!(matches!(kind, Kind::Manifest) && media == OCI_MANIFEST);
    }

    #[test]
    fn unknown_or_malformed_documents_are_refused() {
        let unknown = classify_json(serde_json::json!({
            "mediaType": "application/vnd.docker.distribution.manifest.v1+prettyjws"
        }));
        let err = unknown.map(|_| ()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(
            err.message.contains("unsupported media type"),
            "{}",
            err.message
        );
        let shapeless = classify_json(serde_json::json!({"schemaVersion": 2}));
        assert_eq!(
            shapeless.map(|_| ()).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        let garbage = classify(b"{not json", &Digest::sha256_of(b"{not json"));
        assert_eq!(
            garbage.map(|_| ()).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn descriptors_need_a_valid_digest_and_a_size() {
        let digest = Digest::sha256_of(b"x").to_string();
        assert_eq!(descriptor(OCI_MANIFEST, &digest, 1).unwrap().size, 1);
        for (digest, size) in [("sha256:1234", 1), (digest.as_str(), -1), ("md5:00", 0)] {
            let err = descriptor(OCI_MANIFEST, digest, size).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{digest} {size}");
        }
    }
}
