//! Docker's view of the image records in the `moby` namespace: records
//! sharing a config are one image (its ID is the config digest), shown
//! with all their names. Resolves each record's target (an index is read
//! for the host platform) down to the config, and sizes an image by its
//! unpacked snapshots.

use std::collections::BTreeMap;
use std::time::SystemTime;

use oci_client::manifest::{OciImageIndex, OciImageManifest};
use serde::Deserialize;
use serde_json::Value;

use crate::content::{Descriptor, Digest};
use crate::docker::reference::{self, familiar, ImageRef, Lookup};
use crate::docker::NAMESPACE;
use crate::grpc::backend::DEFAULT_SNAPSHOTTER;
use crate::grpc::Backend;
use crate::metadata::{Filter, Image};
use crate::registry::{Platform, MAX_MANIFEST_SIZE};
use crate::unpack::chain_ids;
use crate::{Error, ErrorKind, Result};

/// What an image config holds that the Docker API shows.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ImageConfig {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub variant: Option<String>,
    #[serde(default)]
    pub os: String,
    /// The run configuration, passed through with docker's own keys.
    #[serde(default)]
    pub config: Option<Value>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default)]
    pub history: Vec<History>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RootFs {
    #[serde(default)]
    pub diff_ids: Vec<String>,
}

/// One step of an image's history.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct History {
    #[serde(default)]
    pub created: Option<String>,
    #[serde(default)]
    pub created_by: Option<String>,
    #[serde(default)]
    pub comment: Option<String>,
    #[serde(default)]
    pub empty_layer: bool,
}

impl ImageConfig {
    /// The config's labels.
    pub fn labels(&self) -> BTreeMap<String, String> {
        self.config
            .as_ref()
            .and_then(|config| config.get("Labels"))
            .and_then(|labels| serde_json::from_value(labels.clone()).ok())
            .unwrap_or_default()
    }

    /// The creation time in Unix seconds (0 when the config has none).
    pub fn created_unix(&self) -> i64 {
        self.created.as_deref().map_or(0, unix_time)
    }
}

/// An RFC 3339 time of a config in Unix seconds; 0 when unreadable.
pub fn unix_time(text: &str) -> i64 {
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map_or(0, |t| t.unix_timestamp())
}

/// One docker image: a config and every record pointing at it.
#[derive(Debug, Clone)]
pub struct DockerImage {
    /// The config digest: what docker calls the image ID.
    pub id: Digest,
    /// The records, by name (dangling ones included).
    pub records: Vec<Image>,
    pub manifest: Descriptor,
    pub layers: Vec<Descriptor>,
    pub config: ImageConfig,
    /// Bytes on disk: the unpacked snapshots, or the layers when not
    /// unpacked.
    pub size: u64,
}

impl DockerImage {
    /// `busybox:latest`, ... (dangling records left out).
    pub fn repo_tags(&self) -> Vec<String> {
        self.records
            .iter()
            .filter(|r| !reference::is_unnamed(&r.name))
            .filter_map(|r| ImageRef::parse(&r.name).ok())
            .filter(|r| r.tag().is_some())
            .map(|r| r.familiar())
            .collect()
    }

    /// `busybox@sha256:<manifest or index digest>`, once per repository.
    pub fn repo_digests(&self) -> Vec<String> {
        let mut digests: Vec<String> = self
            .records
            .iter()
            .filter(|r| !reference::is_unnamed(&r.name))
            .filter_map(|r| {
                let parsed = ImageRef::parse(&r.name).ok()?;
                Some(match parsed.digest() {
                    Some(_) => parsed.familiar(),
                    None => format!("{}@{}", parsed.familiar_repository(), r.target.digest),
                })
            })
            .collect();
        digests.sort();
        digests.dedup();
        digests
    }

    /// Whether no name keeps it and it is not only a build step's image
    /// (docker's `<none>:<none>`).
    pub fn is_dangling(&self) -> bool {
        self.records.iter().all(|r| reference::is_unnamed(&r.name)) && !self.is_intermediate()
    }

    /// Whether only the build cache keeps it: the image of a build step,
    /// which `docker images` lists only with `-a`.
    pub fn is_intermediate(&self) -> bool {
        self.records
            .iter()
            .all(|r| reference::is_build_cache(&r.name))
    }

    /// The short ID docker prints: 12 hex digits.
    pub fn short_id(&self) -> String {
        self.id.encoded().chars().take(12).collect()
    }

    /// The chain IDs of its layers, bottom first.
    pub fn chain_ids(&self) -> Vec<String> {
        chain_ids(&self.config.rootfs.diff_ids)
    }

    /// When it was last given a name (the newest record's update).
    pub fn last_tag_time(&self) -> SystemTime {
        self.records
            .iter()
            .map(|r| r.updated_at)
            .max()
            .unwrap_or(SystemTime::UNIX_EPOCH)
    }
}

/// Reads docker images from the backend's stores. Blocking.
#[derive(Debug, Clone)]
pub struct Catalog {
    backend: Backend,
}

impl Catalog {
    /// A catalog of `backend`'s `moby` namespace.
    pub fn new(backend: Backend) -> Self {
        Catalog { backend }
    }

    /// Every record of the namespace.
    pub fn records(&self) -> Result<Vec<Image>> {
        self.backend.images.list(NAMESPACE, &Filter::everything())
    }

    /// Every image, newest first. A record whose documents are missing
    /// (a pull cut short, a foreign record) is skipped.
    pub fn list(&self) -> Result<Vec<DockerImage>> {
        let mut by_id: BTreeMap<Digest, DockerImage> = BTreeMap::new();
        for record in self.records()? {
            match by_id.values_mut().find(|image| {
                image
                    .records
                    .iter()
                    .any(|r| r.target.digest == record.target.digest)
            }) {
                Some(image) => image.records.push(record),
                None => match self.resolve(record.clone()) {
                    Ok(image) => match by_id.get_mut(&image.id) {
                        Some(existing) => existing.records.push(record),
                        None => {
                            by_id.insert(image.id.clone(), image);
                        }
                    },
                    Err(err) => {
                        tracing::debug!(image = %record.name, "not shown by the docker API: {err}");
                    }
                },
            }
        }
        let mut images: Vec<DockerImage> = by_id.into_values().collect();
        images.sort_by(|a, b| {
            b.config
                .created_unix()
                .cmp(&a.config.created_unix())
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(images)
    }

    /// The image `text` names, as dockerd looks one up: a full ID, a
    /// reference, an ID prefix. `NotFound` with dockerd's message.
    pub fn find(&self, text: &str) -> Result<DockerImage> {
        let no_such = || Error::not_found(format!("No such image: {}", shown(text)));
        let by_prefix = |prefix: &str| -> Result<DockerImage> {
            let mut matching = self
                .list()?
                .into_iter()
                .filter(|image| image.id.as_str().starts_with(prefix));
            let first = matching.next().ok_or_else(no_such)?;
            if matching.next().is_some() {
                return Err(Error::invalid(format!(
                    "ambiguous image ID prefix {text:?}: several images match"
                )));
            }
            Ok(first)
        };
        match Lookup::parse(text)? {
            Lookup::Id(id) => self
                .list()?
                .into_iter()
                .find(|image| image.id.as_str() == id)
                .ok_or_else(no_such),
            Lookup::IdPrefix(prefix) => by_prefix(&prefix),
            Lookup::Reference(parsed, prefix) => match self.by_reference(&parsed) {
                Ok(image) => Ok(image),
                Err(err) if err.kind == ErrorKind::NotFound => {
                    if let Some(digest) = parsed.digest() {
                        // `repo@digest`: the image one of whose names in
                        // that repository points at the digest.
                        let repository = parsed.repository();
                        return self
                            .list()?
                            .into_iter()
                            .find(|image| {
                                image.records.iter().any(|r| {
                                    r.target.digest.as_str() == digest
                                        && ImageRef::parse(&r.name)
                                            .is_ok_and(|n| n.repository() == repository)
                                })
                            })
                            .ok_or_else(no_such);
                    }
                    match prefix {
                        Some(prefix) => by_prefix(&prefix),
                        None => Err(no_such()),
                    }
                }
                Err(err) => Err(err),
            },
        }
    }

    /// The image of the record `name`, with all its other records.
    /// [`Catalog::by_name`], and for `name@digest` only a record whose
    /// target is that digest: a name can never make another image pass
    /// for a digest it does not have.
    fn by_reference(&self, parsed: &ImageRef) -> Result<DockerImage> {
        let name = parsed.name();
        if let Some(digest) = parsed.digest() {
            let record = self.backend.images.get(NAMESPACE, &name)?;
            if record.target.digest.as_str() != digest {
                tracing::warn!(
                    "image record {name} points at {}, not at its own digest",
                    record.target.digest
                );
                return Err(Error::not_found(format!("No such image: {name}")));
            }
        }
        self.by_name(&name)
    }

    /// The image the record `name` points at, with only that record (no
    /// search for the image's other names).
    pub fn by_record(&self, name: &str) -> Result<DockerImage> {
        let record = self.backend.images.get(NAMESPACE, name)?;
        self.resolve(record)
    }

    pub fn by_name(&self, name: &str) -> Result<DockerImage> {
        let record = self.backend.images.get(NAMESPACE, name)?;
        let mut image = self.resolve(record)?;
        let id = image.id.clone();
        image.records = self.records_of(&id)?;
        Ok(image)
    }

    /// The records whose target resolves to config `id`.
    fn records_of(&self, id: &Digest) -> Result<Vec<Image>> {
        let mut records = Vec::new();
        let mut seen: BTreeMap<Digest, bool> = BTreeMap::new();
        for record in self.records()? {
            let same = match seen.get(&record.target.digest) {
                Some(same) => *same,
                None => {
                    let same = self
                        .platform_manifest(&record.target)
                        .map(|(_, manifest)| manifest.config.digest == id.as_str())
                        .unwrap_or(false);
                    seen.insert(record.target.digest.clone(), same);
                    same
                }
            };
            if same {
                records.push(record);
            }
        }
        Ok(records)
    }

    /// Reads a record's documents down to its config.
    fn resolve(&self, record: Image) -> Result<DockerImage> {
        let (manifest, parsed) = self.platform_manifest(&record.target)?;
        let id = Digest::parse(&parsed.config.digest)?;
        let config_bytes = self.document(&id)?;
        let config: ImageConfig = serde_json::from_slice(&config_bytes)
            .map_err(|err| Error::invalid(format!("image config {id}: malformed: {err}")))?;
        let layers = parsed
            .layers
            .iter()
            .map(|layer| {
                Ok(Descriptor {
                    media_type: layer.media_type.clone(),
                    digest: Digest::parse(&layer.digest)?,
                    size: u64::try_from(layer.size).unwrap_or(0),
                    annotations: Default::default(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let mut image = DockerImage {
            id,
            records: vec![record],
            manifest,
            layers,
            config,
            size: 0,
        };
        image.size = self.size_of(&image);
        Ok(image)
    }

    /// The manifest `target` stands for on the host platform.
    fn platform_manifest(&self, target: &Descriptor) -> Result<(Descriptor, OciImageManifest)> {
        let bytes = self.document(&target.digest)?;
        let probe: Value = serde_json::from_slice(&bytes).map_err(|err| {
            Error::invalid(format!("document {}: malformed: {err}", target.digest))
        })?;
        if probe.get("manifests").is_none() {
            let manifest: OciImageManifest = serde_json::from_value(probe).map_err(|err| {
                Error::invalid(format!("manifest {}: malformed: {err}", target.digest))
            })?;
            return Ok((target.clone(), manifest));
        }
        let index: OciImageIndex = serde_json::from_value(probe)
            .map_err(|err| Error::invalid(format!("index {}: malformed: {err}", target.digest)))?;
        let (_, entry) = Platform::host()
            .select(&index.manifests)
            .map_err(|err| err.context(format!("index {}", target.digest)))?;
        let child = Descriptor {
            media_type: entry.media_type.clone(),
            digest: Digest::parse(&entry.digest)?,
            size: u64::try_from(entry.size).unwrap_or(0),
            annotations: Default::default(),
        };
        let bytes = self.document(&child.digest)?;
        let manifest: OciImageManifest = serde_json::from_slice(&bytes).map_err(|err| {
            Error::invalid(format!("manifest {}: malformed: {err}", child.digest))
        })?;
        Ok((child, manifest))
    }

    /// A whole small document from the content store.
    fn document(&self, digest: &Digest) -> Result<Vec<u8>> {
        let reader = self.backend.content.reader(NAMESPACE, digest)?;
        if reader.size() > MAX_MANIFEST_SIZE as u64 {
            return Err(Error::invalid(format!(
                "document {digest}: {} bytes, more than the {MAX_MANIFEST_SIZE} allowed",
                reader.size()
            )));
        }
        let mut bytes = Vec::with_capacity(reader.size() as usize);
        std::io::Read::read_to_end(&mut reader.into_file(), &mut bytes)
            .map_err(|err| Error::internal(format!("reading content {digest}: {err}")))?;
        Ok(bytes)
    }

    /// The snapshots' disk usage, else the layers' compressed sizes.
    fn size_of(&self, image: &DockerImage) -> u64 {
        let unpacked: Option<u64> = self
            .backend
            .snapshotters
            .get(DEFAULT_SNAPSHOTTER)
            .ok()
            .and_then(|snapshotter| {
                image
                    .chain_ids()
                    .iter()
                    .map(|chain| snapshotter.usage(NAMESPACE, chain).ok().map(|u| u.size))
                    .sum()
            });
        match unpacked {
            Some(size) if !image.layers.is_empty() => size,
            _ => image.layers.iter().map(|layer| layer.size).sum(),
        }
    }

    /// The per-layer sizes, bottom first (snapshot usage, else the
    /// compressed size).
    pub fn layer_sizes(&self, image: &DockerImage) -> Vec<u64> {
        let snapshotter = self.backend.snapshotters.get(DEFAULT_SNAPSHOTTER).ok();
        image
            .chain_ids()
            .iter()
            .zip(&image.layers)
            .map(|(chain, layer)| {
                snapshotter
                    .as_ref()
                    .and_then(|s| s.usage(NAMESPACE, chain).ok())
                    .map_or(layer.size, |usage| usage.size)
            })
            .collect()
    }
}

/// A name as dockerd echoes it in "No such image": the familiar form of a
/// reference, else the text as given.
pub fn shown(text: &str) -> String {
    match ImageRef::parse(text) {
        Ok(parsed) if !text.starts_with("sha256:") => familiar(&parsed.name()),
        _ => text.to_owned(),
    }
}
