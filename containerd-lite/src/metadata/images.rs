//! Image records: a name pointing at a target descriptor, per namespace.

use std::time::SystemTime;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::filter::{Fields, Filter};
use super::labels::{self, apply_label_path, Labels};
use super::{namespaces, Db};
use crate::content::Descriptor;
use crate::{Error, Result};

/// (namespace, image name) -> [`Image`].
pub(crate) const IMAGES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("images");

/// A named image in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// The full reference, e.g. `docker.io/library/busybox:latest`.
    #[serde(skip)]
    pub name: String,
    /// The root of the image: a manifest or an index.
    pub target: Descriptor,
    pub labels: Labels,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl Image {
    /// A new image record; the times are set when it is stored.
    /// The store over `db`.
    pub fn new(name: impl Into<String>, target: Descriptor) -> Image {
        Image {
            name: name.into(),
            target,
            labels: Labels::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }
}

impl Fields for Image {
    fn field(&self, path: &[String]) -> Option<String> {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["name"] => Some(self.name.clone()),
            ["target", "digest"] => Some(self.target.digest.to_string()),
            ["target", "mediatype"] => Some(self.target.media_type.clone()),
            ["annotations", key] => self.target.annotations.get(*key).cloned(),
            ["labels", key] => self.labels.get(*key).cloned(),
            _ => None,
        }
    }
}

pub(super) fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(IMAGES)?;
    Ok(())
}

pub(super) fn namespace_has_images(txn: &WriteTransaction, namespace: &str) -> Result<bool> {
    super::namespace_has_records(txn, IMAGES, namespace)
}

/// Every image of every namespace, for the collector: `(namespace, image)`.
pub(crate) fn all_in(txn: &WriteTransaction) -> Result<Vec<(String, Image)>> {
    let table = txn.open_table(IMAGES)?;
    let mut all = Vec::new();
    for entry in table.iter()? {
        let (key, bytes) = entry?;
        let (namespace, name) = key.value();
        all.push((namespace.to_owned(), decode_image(name, bytes.value())?));
    }
    Ok(all)
}

/// The images service's store.
#[derive(Debug, Clone)]
pub struct ImageStore {
    db: Db,
}

impl ImageStore {
    pub fn new(db: Db) -> Self {
        ImageStore { db }
    }

    /// One image; `NotFound` if `namespace` has no image `name`.
    pub fn get(&self, namespace: &str, name: &str) -> Result<Image> {
        self.db.read(|txn| {
            let table = txn.open_table(IMAGES)?;
            let bytes = table
                .get((namespace, name))?
                .ok_or_else(|| not_found(name))?;
            decode_image(name, bytes.value())
        })
    }

    /// The images of `namespace` that pass `filter`, by name.
    pub fn list(&self, namespace: &str, filter: &Filter) -> Result<Vec<Image>> {
        self.db.read(|txn| {
            let table = txn.open_table(IMAGES)?;
            let mut images = Vec::new();
            for entry in table.range((namespace, "")..)? {
                let (key, bytes) = entry?;
                let (ns, name) = key.value();
                if ns != namespace {
                    break;
                }
                let image = decode_image(name, bytes.value())?;
                if filter.matches(&image) {
                    images.push(image);
                }
            }
            Ok(images)
        })
    }

    /// Stores a new image; `AlreadyExists` if the name is taken.
    pub fn create(&self, namespace: &str, image: Image) -> Result<Image> {
        validate(&image)?;
        self.db.write(|txn| {
            namespaces::ensure(txn, namespace)?;
            let mut table = txn.open_table(IMAGES)?;
            if table.get((namespace, image.name.as_str()))?.is_some() {
                return Err(Error::already_exists(format!(
                    "image {}: already exists",
                    image.name
                )));
            }
            let now = SystemTime::now();
            let image = Image {
                created_at: now,
                updated_at: now,
                ..image
            };
            table.insert((namespace, image.name.as_str()), encode(&image)?.as_slice())?;
            Ok(image)
        })
    }

    /// Updates an image by field mask: `labels`, `labels.<key>`, `target`,
    /// `annotations`, `annotations.<key>` (the target's annotations). No
    /// paths replaces everything but the creation time. `NotFound` if the
    /// image does not exist; other paths are `InvalidArgument`.
    pub fn update(&self, namespace: &str, image: Image, paths: &[String]) -> Result<Image> {
        labels::validate(&image.labels)?;
        self.db.write(|txn| {
            let mut table = txn.open_table(IMAGES)?;
            let name = image.name.as_str();
            let mut stored = {
                let bytes = table
                    .get((namespace, name))?
                    .ok_or_else(|| not_found(name))?;
                decode_image(name, bytes.value())?
            };
            if paths.is_empty() {
                validate(&image)?;
                stored.target = image.target.clone();
                stored.labels = image.labels.clone();
            }
            for path in paths {
                if apply_label_path(&mut stored.labels, &image.labels, path) {
                    continue;
                }
                match path.as_str() {
                    "target" => {
                        validate(&image)?;
                        stored.target = image.target.clone();
                    }
                    "annotations" => stored.target.annotations = image.target.annotations.clone(),
                    other => match other.strip_prefix("annotations.") {
                        Some(key) => match image.target.annotations.get(key) {
                            Some(value) => {
                                stored
                                    .target
                                    .annotations
                                    .insert(key.to_owned(), value.clone());
                            }
                            None => {
                                stored.target.annotations.remove(key);
                            }
                        },
                        None => {
                            return Err(Error::invalid(format!(
                                "image {name}: cannot update field {other:?}"
                            )))
                        }
                    },
                }
            }
            stored.updated_at = SystemTime::now();
            table.insert((namespace, name), encode(&stored)?.as_slice())?;
            Ok(stored)
        })
    }

    /// Removes an image record; `NotFound` if absent. The content it pointed
    /// at stays until garbage collection finds it unreferenced.
    pub fn delete(&self, namespace: &str, name: &str) -> Result<()> {
        self.db.write(|txn| {
            let removed = txn.open_table(IMAGES)?.remove((namespace, name))?.is_some();
            if removed {
                Ok(())
            } else {
                Err(not_found(name))
            }
        })
    }
}

fn validate(image: &Image) -> Result<()> {
    if image.name.is_empty() {
        return Err(Error::invalid("image name must not be empty"));
    }
    if image.target.media_type.is_empty() {
        return Err(Error::invalid(format!(
            "image {}: target media type must be set",
            image.name
        )));
    }
    labels::validate(&image.labels)
}

fn decode_image(name: &str, bytes: &[u8]) -> Result<Image> {
    let image: Image = decode(bytes, format_args!("image {name}"))?;
    Ok(Image {
        name: name.to_owned(),
        ..image
    })
}

fn not_found(name: &str) -> Error {
    Error::not_found(format!("image {name}: not found"))
}
