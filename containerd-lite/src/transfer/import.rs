//! Importing an OCI layout tar or a `docker save` tar: documents checked
//! before any layer is stored, every blob verified against its digest
//! through a content-store ingest, each image unpacked, and only then its
//! record made.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};

use oci_client::manifest::OciImageIndex;
use serde::Deserialize;
use serde_json::json;

use super::archive::Archive;
use super::lease::TransferLease;
use super::resolve::{
    descriptor, is_index, is_manifest, manifest_parts, media_type_of, parse, ImageParts,
    OCI_CONFIG, OCI_MANIFEST,
};
use super::unpack::{unpack_image, UnpackTarget};
use super::{Transferred, Transfers};
use crate::content::{Descriptor, Digest, WriterOptions};
use crate::diff::Compression;
use crate::metadata::{Image, Labels};
use crate::registry::{Platform, MAX_MANIFEST_SIZE};
use crate::snapshots::Snapshotter;
use crate::{Error, ErrorKind, Result};

/// The annotation containerd names an exported image with.
pub(super) const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation for an image's reference (often only its tag).
pub(super) const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// How to import.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The name for images the archive leaves unnamed (`@<digest>` added
    /// when there are several); empty for `import-<digest>`.
    pub base_name: String,
    /// The platform whose manifest an index unpacks.
    pub platform: Option<Platform>,
}

/// An image found in an archive, its documents not yet stored.
struct Found {
    name: String,
    /// The root: a manifest or an index.
    target: Descriptor,
    /// Documents to store, children before parents, with their labels.
    documents: Vec<(Descriptor, Vec<u8>, Labels)>,
    /// The platform image to unpack, whose blobs come from the archive.
    parts: ImageParts,
    /// Where each of `parts`' blobs is in the archive.
    blob_paths: BTreeMap<Digest, String>,
}

impl Transfers {
    /// Imports the images in the tar `archive` into `namespace` and unpacks
    /// them into `snapshotter`. Blocking. `InvalidArgument` for a malformed
    /// archive, document or layer, `FailedPrecondition` for a blob that
    /// does not match its digest; then no image record is made and what was
    /// stored is held only by an expiring lease.
    pub fn import(
        &self,
        namespace: &str,
        archive: File,
        snapshotter: &Snapshotter,
        options: &ImportOptions,
    ) -> Result<Vec<Transferred>> {
        let archive = Archive::index(archive)?;
        let platform = options.platform.clone().unwrap_or_else(Platform::host);
        let found = if archive.contains("index.json") {
            oci_layout(&archive, &platform, options)?
        } else if archive.contains("manifest.json") {
            docker_save(&archive, options)?
        } else {
            return Err(Error::invalid(
                "archive: neither an OCI layout (index.json) nor a docker save (manifest.json)",
            ));
        };
        if found.is_empty() {
            return Err(Error::invalid("archive: it holds no image"));
        }
        let lease = TransferLease::begin(&self.leases, namespace, "transfer-import")?;
        let imported = found
            .into_iter()
            .map(|image| self.store(namespace, &archive, &lease, snapshotter, image))
            .collect::<Result<Vec<_>>>();
        lease.release();
        imported
    }

    /// Stores one image's blobs and documents, unpacks it, records it.
    fn store(
        &self,
        namespace: &str,
        archive: &Archive,
        lease: &TransferLease,
        snapshotter: &Snapshotter,
        image: Found,
    ) -> Result<Transferred> {
        let parts = &image.parts;
        let blobs = std::iter::once(&parts.config).chain(&parts.layers);
        for blob in blobs {
            let path = image
                .blob_paths
                .get(&blob.digest)
                .ok_or_else(|| Error::internal(format!("blob {}: no path", blob.digest)))?;
            let reader = archive.open(path)?;
            self.ingest(namespace, lease, blob, reader, Labels::new())
                .map_err(|err| err.context(format!("import {path}")))?;
        }
        for (document, bytes, labels) in &image.documents {
            self.ingest(namespace, lease, document, bytes.as_slice(), labels.clone())?;
        }
        let target = UnpackTarget {
            content: &self.content,
            namespace,
            lease,
            snapshotter,
            progress: None,
        };
        let snapshot = unpack_image(&target, parts, None)?;
        let record = Image::new(image.name.clone(), image.target.clone());
        match self.images.create(namespace, record.clone()) {
            Err(err) if err.kind == ErrorKind::AlreadyExists => {
                self.images
                    .update(namespace, record, &["target".to_owned()])?;
            }
            other => {
                other?;
            }
        }
        Ok(Transferred {
            name: image.name,
            target: image.target,
            snapshot,
        })
    }

    /// Writes one blob through an ingest that checks its size and digest;
    /// a blob already here only gets `labels`.
    fn ingest(
        &self,
        namespace: &str,
        lease: &TransferLease,
        blob: &Descriptor,
        mut data: impl Read,
        labels: Labels,
    ) -> Result<()> {
        let options = WriterOptions {
            reference: format!("import-{}", blob.digest),
            total: blob.size,
            expected: Some(blob.digest.clone()),
        };
        let exists = match self.content.writer(namespace, Some(lease.id()), options) {
            Ok(mut writer) => {
                if writer.offset() > 0 {
                    writer.truncate(0)?;
                }
                let copied = copy_into(&mut data, |chunk| writer.write(chunk));
                let committed = copied
                    .and_then(|()| writer.commit(blob.size, Some(&blob.digest), labels.clone()));
                match committed {
                    Ok(_) => false,
                    Err(err) if err.kind == ErrorKind::AlreadyExists => true,
                    Err(err) => {
                        let reference = format!("import-{}", blob.digest);
                        let _ = self.content.abort(namespace, &reference);
                        return Err(err.context(format!("blob {}", blob.digest)));
                    }
                }
            }
            Err(err) if err.kind == ErrorKind::AlreadyExists => true,
            Err(err) => return Err(err),
        };
        if exists && !labels.is_empty() {
            let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
            self.content
                .update(namespace, &blob.digest, labels, &paths)?;
        }
        Ok(())
    }
}

/// Feeds `data` to `write` in chunks.
fn copy_into(data: &mut impl Read, mut write: impl FnMut(&[u8]) -> Result<()>) -> Result<()> {
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(Error::invalid(format!("archive: {err}"))),
        };
        write(&buf[..n])?;
    }
}

/// The archive path of a blob in an OCI layout.
fn blob_path(digest: &Digest) -> String {
    format!("blobs/{}/{}", digest.algorithm(), digest.encoded())
}

/// Reads a document from the archive and checks it against its descriptor.
fn document(archive: &Archive, descriptor: &Descriptor) -> Result<Vec<u8>> {
    let path = blob_path(&descriptor.digest);
    let bytes = archive.read(&path, MAX_MANIFEST_SIZE as u64)?;
    check(descriptor, &bytes)?;
    Ok(bytes)
}

fn check(descriptor: &Descriptor, bytes: &[u8]) -> Result<()> {
    let digest = Digest::sha256_of(bytes);
    if digest != descriptor.digest || bytes.len() as u64 != descriptor.size {
        return Err(Error::precondition(format!(
            "blob {}: the archive holds {} bytes digesting to {digest}",
            descriptor.digest,
            bytes.len()
        )));
    }
    Ok(())
}

/// The name for an image: a full reference the archive gives, else one
/// made from the options.
fn image_name(
    given: Option<&str>,
    target: &Digest,
    options: &ImportOptions,
    several: bool,
) -> String {
    if let Some(name) = given.filter(|name| !name.is_empty()) {
        if let Ok(reference) = name.parse::<oci_client::Reference>() {
            if name.contains(':') || name.contains('/') || name.contains('@') {
                return reference.whole();
            }
        }
        if !options.base_name.is_empty() {
            return format!("{}:{name}", options.base_name);
        }
    }
    if options.base_name.is_empty() {
        format!("import-{}", target.encoded())
    } else if several {
        format!("{}@{target}", options.base_name)
    } else {
        options.base_name.clone()
    }
}

/// The images of an OCI layout: each entry of index.json.
fn oci_layout(
    archive: &Archive,
    platform: &Platform,
    options: &ImportOptions,
) -> Result<Vec<Found>> {
    let bytes = archive.read("index.json", MAX_MANIFEST_SIZE as u64)?;
    let index: OciImageIndex = parse(&bytes, "index.json")?;
    let several = index.manifests.len() > 1;
    let mut found = Vec::new();
    for entry in &index.manifests {
        let mut target = descriptor(&entry.media_type, &entry.digest, entry.size)?;
        let annotations = entry.annotations.clone().unwrap_or_default();
        let name = annotations
            .get(CONTAINERD_NAME)
            .or_else(|| annotations.get(OCI_REF_NAME))
            .map(String::as_str);
        let name = image_name(name, &target.digest, options, several);
        let root = document(archive, &target)?;
        target.media_type = media_type_of(&target.media_type, &root);
        let mut documents = Vec::new();
        let parts = if is_manifest(&target.media_type) {
            let parts = manifest_parts(target.clone(), &root)?;
            documents.push((target.clone(), root, manifest_labels(&parts)));
            parts
        } else if is_index(&target.media_type) {
            let nested: OciImageIndex = parse(&root, &format!("index {}", target.digest))?;
            let (position, entry) = platform.select(&nested.manifests)?;
            let child = descriptor(&entry.media_type, &entry.digest, entry.size)?;
            let child_bytes = document(archive, &child)?;
            let parts = manifest_parts(child.clone(), &child_bytes)?;
            documents.push((child.clone(), child_bytes, manifest_labels(&parts)));
            let labels = Labels::from([(
                format!("containerd.io/gc.ref.content.m.{position}"),
                child.digest.to_string(),
            )]);
            documents.push((target.clone(), root, labels));
            parts
        } else {
            return Err(Error::invalid(format!(
                "index.json: entry {} has the unknown media type {:?}",
                target.digest, target.media_type
            )));
        };
        let blob_paths = std::iter::once(&parts.config)
            .chain(&parts.layers)
            .map(|blob| (blob.digest.clone(), blob_path(&blob.digest)))
            .collect();
        found.push(Found {
            name,
            target,
            documents,
            parts,
            blob_paths,
        });
    }
    Ok(found)
}

/// The labels that let the garbage collector follow a manifest.
fn manifest_labels(parts: &ImageParts) -> Labels {
    let mut labels = Labels::from([(
        "containerd.io/gc.ref.content.config".to_owned(),
        parts.config.digest.to_string(),
    )]);
    for (position, layer) in parts.layers.iter().enumerate() {
        labels.insert(
            format!("containerd.io/gc.ref.content.l.{position}"),
            layer.digest.to_string(),
        );
    }
    labels
}

/// One image of a `docker save` manifest.json.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SavedImage {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The images of a `docker save` archive: each entry of manifest.json gets
/// an OCI manifest made for it (the archive has none).
fn docker_save(archive: &Archive, options: &ImportOptions) -> Result<Vec<Found>> {
    let bytes = archive.read("manifest.json", MAX_MANIFEST_SIZE as u64)?;
    let saved: Vec<SavedImage> = parse(&bytes, "manifest.json")?;
    let several = saved.len() > 1;
    let mut found = Vec::new();
    for image in saved {
        let config_bytes = archive.read(&image.config, MAX_MANIFEST_SIZE as u64)?;
        let config = Descriptor {
            media_type: OCI_CONFIG.to_owned(),
            digest: Digest::sha256_of(&config_bytes),
            size: config_bytes.len() as u64,
            annotations: Default::default(),
        };
        let mut blob_paths = BTreeMap::from([(config.digest.clone(), image.config.clone())]);
        let mut layers = Vec::new();
        for path in &image.layers {
            let (digest, compression) = digest_layer(archive, path)?;
            blob_paths.insert(digest.clone(), path.clone());
            layers.push(json!({
                "mediaType": compression.media_type(),
                "digest": digest.to_string(),
                "size": archive.size(path)?,
            }));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {
                "mediaType": OCI_CONFIG,
                "digest": config.digest.to_string(),
                "size": config.size,
            },
            "layers": layers,
        });
        let manifest_bytes = serde_json::to_vec(&manifest)
            .map_err(|err| Error::internal(format!("encode a manifest: {err}")))?;
        let target = Descriptor {
            media_type: OCI_MANIFEST.to_owned(),
            digest: Digest::sha256_of(&manifest_bytes),
            size: manifest_bytes.len() as u64,
            annotations: Default::default(),
        };
        let parts = manifest_parts(target.clone(), &manifest_bytes)?;
        let documents = vec![(target.clone(), manifest_bytes, manifest_labels(&parts))];
        let tags = image.repo_tags.unwrap_or_default();
        let names: Vec<String> = if tags.is_empty() {
            vec![image_name(None, &target.digest, options, several)]
        } else {
            tags.iter()
                .map(|tag| image_name(Some(tag), &target.digest, options, several))
                .collect()
        };
        for name in names {
            found.push(Found {
                name,
                target: target.clone(),
                documents: documents.clone(),
                parts: parts.clone(),
                blob_paths: blob_paths.clone(),
            });
        }
    }
    Ok(found)
}

/// A saved layer's digest and compression (from its first bytes).
fn digest_layer(archive: &Archive, path: &str) -> Result<(Digest, Compression)> {
    use sha2::Digest as _;
    let mut reader = archive.open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut head = Vec::new();
    copy_into(&mut reader, |chunk| {
        if head.len() < 4 {
            head.extend_from_slice(&chunk[..chunk.len().min(4)]);
        }
        hasher.update(chunk);
        Ok(())
    })?;
    let compression = if head.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    Ok((Digest::from_sha256(hasher.finalize().into()), compression))
}
