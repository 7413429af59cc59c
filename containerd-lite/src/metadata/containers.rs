//! Container records: what a task is made from, per namespace.
//!
//! A container is metadata only (spec, runtime, root filesystem snapshot,
//! labels, client extensions); it has no running state. Its snapshot is
//! kept from the garbage collector for as long as the record exists.
//!
//! ```text
//! containers   (<ns>, <id>) -> { labels, image, runtime: { name, options },
//!                  spec, snapshotter, snapshot_key, extensions,
//!                  created_at, updated_at }
//! ```
//! `options`, `spec` and each extension are protobuf `Any`s kept as
//! `{ type_url, value }` with the value in base64.

use std::collections::BTreeMap;
use std::time::SystemTime;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::codec::{decode, encode};
use super::filter::{labels_field, Fields, Filter};
use super::labels::{self, apply_label_path, validate_identifier, Labels};
use super::{namespaces, Db};
use crate::{Error, Result};

/// (namespace, container id) -> [`Container`].
pub(crate) const CONTAINERS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("containers");

/// A typed, opaque payload: a protobuf `Any` as the record keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    pub type_url: String,
    #[serde(with = "base64_bytes")]
    pub value: Vec<u8>,
}

/// Which runtime runs the container's tasks, and its options.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Runtime {
    /// e.g. `io.containerd.runc.v2`.
    pub name: String,
    pub options: Option<Payload>,
}

/// A container in a namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Container {
    #[serde(skip)]
    pub id: String,
    pub labels: Labels,
    /// The image reference it was made from (may be empty).
    pub image: String,
    pub runtime: Runtime,
    /// The OCI runtime spec (required).
    pub spec: Option<Payload>,
    pub snapshotter: String,
    /// The active snapshot holding its root filesystem (may be empty).
    pub snapshot_key: String,
    pub extensions: BTreeMap<String, Payload>,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl Container {
    /// A new record with no labels, image, snapshot or extensions; the
    /// times are set when it is stored.
    pub fn new(id: impl Into<String>, runtime: Runtime, spec: Payload) -> Container {
        Container {
            id: id.into(),
            labels: Labels::new(),
            image: String::new(),
            runtime,
            spec: Some(spec),
            snapshotter: String::new(),
            snapshot_key: String::new(),
            extensions: BTreeMap::new(),
            created_at: SystemTime::UNIX_EPOCH,
            updated_at: SystemTime::UNIX_EPOCH,
        }
    }
}

/// Filter fields, with containerd's names.
impl Fields for Container {
    fn field(&self, path: &[String]) -> Option<String> {
        let segments: Vec<&str> = path.iter().map(String::as_str).collect();
        match segments.as_slice() {
            ["id"] => Some(self.id.clone()),
            ["image"] => Some(self.image.clone()),
            ["runtime", "name"] => Some(self.runtime.name.clone()),
            ["snapshotter"] => Some(self.snapshotter.clone()),
            ["snapshotkey" | "snapshot_key"] => Some(self.snapshot_key.clone()),
            _ => labels_field(&self.labels, path),
        }
    }
}

fn create_tables(txn: &WriteTransaction) -> Result<()> {
    txn.open_table(CONTAINERS)?;
    Ok(())
}

/// Whether `namespace` still has containers (it may not be deleted then).
pub fn namespace_has_containers(txn: &WriteTransaction, namespace: &str) -> Result<bool> {
    super::namespace_has_records(txn, CONTAINERS, namespace)
}

/// Every container of every namespace, for the collector:
/// `(namespace, container)`.
pub(crate) fn all_in(txn: &WriteTransaction) -> Result<Vec<(String, Container)>> {
    let table = txn.open_table(CONTAINERS)?;
    let mut all = Vec::new();
    for entry in table.iter()? {
        let (key, bytes) = entry?;
        let (namespace, id) = key.value();
        all.push((namespace.to_owned(), decode_container(id, bytes.value())?));
    }
    Ok(all)
}

/// The containers service's store.
#[derive(Debug, Clone)]
pub struct ContainerStore {
    db: Db,
}

impl ContainerStore {
    /// The store over `db`, its table created if the database predates
    /// it. Registers the check that keeps a namespace holding containers
    /// from being deleted.
    pub fn open(db: Db) -> Result<Self> {
        db.write(create_tables)?;
        db.register_namespace_usage("containers", Box::new(namespace_has_containers));
        Ok(ContainerStore { db })
    }

    /// One container; `NotFound` if `namespace` has no container `id`.
    pub fn get(&self, namespace: &str, id: &str) -> Result<Container> {
        self.db.read(|txn| {
            let table = txn.open_table(CONTAINERS)?;
            let bytes = table.get((namespace, id))?.ok_or_else(|| not_found(id))?;
            decode_container(id, bytes.value())
        })
    }

    /// The containers of `namespace` that pass `filter`, by id.
    pub fn list(&self, namespace: &str, filter: &Filter) -> Result<Vec<Container>> {
        self.db.read(|txn| {
            let table = txn.open_table(CONTAINERS)?;
            let mut containers = Vec::new();
            for entry in table.range((namespace, "")..)? {
                let (key, bytes) = entry?;
                let (ns, id) = key.value();
                if ns != namespace {
                    break;
                }
                let container = decode_container(id, bytes.value())?;
                if filter.matches(&container) {
                    containers.push(container);
                }
            }
            Ok(containers)
        })
    }

    /// Stores a new container; `AlreadyExists` if the id is taken.
    pub fn create(&self, namespace: &str, container: Container) -> Result<Container> {
        validate(&container)?;
        self.db.write(|txn| {
            namespaces::ensure(txn, namespace)?;
            let mut table = txn.open_table(CONTAINERS)?;
            let id = container.id.clone();
            if table.get((namespace, id.as_str()))?.is_some() {
                return Err(Error::already_exists(format!(
                    "container {id}: already exists"
                )));
            }
            let now = SystemTime::now();
            let container = Container {
                created_at: now,
                updated_at: now,
                ..container
            };
            table.insert((namespace, id.as_str()), encode(&container)?.as_slice())?;
            Ok(container)
        })
    }

    /// Updates a container by field mask: `labels`, `labels.<key>`, `spec`,
    /// `image`, `snapshotkey`, `extensions`, `extensions.<name>`. No paths
    /// updates all of these. The runtime and the snapshotter cannot change
    /// (`InvalidArgument` when asked to); `NotFound` if the container does
    /// not exist.
    pub fn update(
        &self,
        namespace: &str,
        container: Container,
        paths: &[String],
    ) -> Result<Container> {
        labels::validate(&container.labels)?;
        let id = container.id.clone();
        self.db.write(|txn| {
            let mut table = txn.open_table(CONTAINERS)?;
            let mut stored = {
                let bytes = table
                    .get((namespace, id.as_str()))?
                    .ok_or_else(|| not_found(&id))?;
                decode_container(&id, bytes.value())?
            };
            let all;
            let paths = if paths.is_empty() {
                immutable_unchanged(&stored, &container)?;
                all = ["labels", "spec", "image", "snapshotkey", "extensions"].map(String::from);
                &all[..]
            } else {
                paths
            };
            for path in paths {
                if apply_label_path(&mut stored.labels, &container.labels, path) {
                    continue;
                }
                match path.as_str() {
                    "spec" => stored.spec = container.spec.clone(),
                    "image" => stored.image = container.image.clone(),
                    "snapshotkey" | "snapshot_key" => {
                        stored.snapshot_key = container.snapshot_key.clone()
                    }
                    "extensions" => stored.extensions = container.extensions.clone(),
                    other => match other.strip_prefix("extensions.") {
                        Some(name) => match container.extensions.get(name) {
                            Some(value) => {
                                stored.extensions.insert(name.to_owned(), value.clone());
                            }
                            None => {
                                stored.extensions.remove(name);
                            }
                        },
                        None => {
                            return Err(Error::invalid(format!(
                                "container {id}: cannot update field {other:?}"
                            )))
                        }
                    },
                }
            }
            validate(&stored)?;
            stored.updated_at = SystemTime::now();
            table.insert((namespace, id.as_str()), encode(&stored)?.as_slice())?;
            Ok(stored)
        })
    }

    /// Removes a container record; `NotFound` if absent. Its snapshot stays
    /// until removed or garbage collected.
    pub fn delete(&self, namespace: &str, id: &str) -> Result<()> {
        self.db.write(|txn| {
            let removed = txn
                .open_table(CONTAINERS)?
                .remove((namespace, id))?
                .is_some();
            if removed {
                Ok(())
            } else {
                Err(not_found(id))
            }
        })
    }
}

/// A full update may restate the runtime and snapshotter, not change them.
fn immutable_unchanged(stored: &Container, wanted: &Container) -> Result<()> {
    let id = &stored.id;
    if !wanted.runtime.name.is_empty() && wanted.runtime.name != stored.runtime.name {
        return Err(Error::invalid(format!(
            "container {id}: the runtime cannot be changed ({} to {})",
            stored.runtime.name, wanted.runtime.name
        )));
    }
    if !wanted.snapshotter.is_empty() && wanted.snapshotter != stored.snapshotter {
        return Err(Error::invalid(format!(
            "container {id}: the snapshotter cannot be changed ({} to {})",
            stored.snapshotter, wanted.snapshotter
        )));
    }
    Ok(())
}

fn validate(container: &Container) -> Result<()> {
    let id = &container.id;
    validate_identifier("container id", id)?;
    labels::validate(&container.labels)?;
    if container.runtime.name.is_empty() {
        return Err(Error::invalid(format!(
            "container {id}: a runtime name is required"
        )));
    }
    if container.spec.as_ref().is_none_or(|s| s.value.is_empty()) {
        return Err(Error::invalid(format!(
            "container {id}: a spec is required"
        )));
    }
    if !container.snapshot_key.is_empty() && container.snapshotter.is_empty() {
        return Err(Error::invalid(format!(
            "container {id}: snapshot key {:?} given without a snapshotter",
            container.snapshot_key
        )));
    }
    if container.extensions.keys().any(String::is_empty) {
        return Err(Error::invalid(format!(
            "container {id}: an extension name must not be empty"
        )));
    }
    Ok(())
}

fn decode_container(id: &str, bytes: &[u8]) -> Result<Container> {
    let container: Container = decode(bytes, format_args!("container {id}"))?;
    Ok(Container {
        id: id.to_owned(),
        ..container
    })
}

fn not_found(id: &str) -> Error {
    Error::not_found(format!("container {id}: not found"))
}

/// Bytes as a base64 string in the JSON record.
mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn store() -> (tempfile::TempDir, ContainerStore, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("meta.redb")).unwrap();
        (dir, ContainerStore::open(db.clone()).unwrap(), db)
    }

    fn spec() -> Payload {
        Payload {
            type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
            value: b"{\"ociVersion\":\"1.0.2\"}".to_vec(),
        }
    }

    fn container(id: &str) -> Container {
        let mut c = Container::new(
            id,
            Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            },
            spec(),
        );
        c.snapshotter = "overlayfs".into();
        c.snapshot_key = id.into();
        c.image = "docker.io/library/busybox:latest".into();
        c
    }

    #[test]
    fn create_get_list_delete() {
        let (_dir, store, _db) = store();
        let created = store.create("default", container("c1")).unwrap();
        assert!(created.created_at > SystemTime::UNIX_EPOCH);
        store.create("default", container("c2")).unwrap();
        store.create("other", container("c1")).unwrap();
        let got = store.get("default", "c1").unwrap();
        assert_eq!(got, created);
        assert_eq!(got.spec, Some(spec()));
        let ids: Vec<_> = store
            .list("default", &Filter::everything())
            .unwrap()
            .into_iter()
            .map(|c| c.id)
            .collect();
        assert_eq!(ids, ["c1", "c2"]);
        let filtered = store
            .list("default", &Filter::parse("id==c2").unwrap())
            .unwrap();
        assert_eq!(filtered.len(), 1);
        assert_eq!(filtered[0].id, "c2");
        store.delete("default", "c1").unwrap();
        assert_eq!(
            store.get("default", "c1").unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert_eq!(
            store.delete("default", "c1").unwrap_err().kind,
            ErrorKind::NotFound
        );
        assert!(store.get("other", "c1").is_ok());
    }

    #[test]
    fn refusals() {
        let (_dir, store, _db) = store();
        store.create("default", container("c1")).unwrap();
        let err = store.create("default", container("c1")).unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        for bad in ["", "../x", "a/b", "-x"] {
            let err = store.create("default", container(bad)).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad:?}");
        }
        let mut no_runtime = container("c2");
        no_runtime.runtime.name.clear();
        assert_eq!(
            store.create("default", no_runtime).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
        let mut no_spec = container("c2");
        no_spec.spec = None;
        let err = store.create("default", no_spec).unwrap_err();
        assert!(err.message.contains("spec is required"), "{}", err.message);
        let mut key_alone = container("c2");
        key_alone.snapshotter.clear();
        assert_eq!(
            store.create("default", key_alone).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn update_by_field_mask() {
        let (_dir, store, _db) = store();
        let mut c = container("c1");
        c.labels.insert("keep".into(), "1".into());
        c.labels.insert("drop".into(), "1".into());
        let created = store.create("default", c).unwrap();

        let mut wanted = container("c1");
        wanted.labels = [("new".to_string(), "2".to_string())].into();
        wanted.image = "other:latest".into();
        wanted.extensions.insert(
            "ext".into(),
            Payload {
                type_url: "t".into(),
                value: vec![0, 1, 255],
            },
        );
        let paths = ["labels.new", "labels.drop", "extensions.ext"].map(String::from);
        let updated = store.update("default", wanted.clone(), &paths).unwrap();
        assert_eq!(
            updated.labels,
            [
                ("keep".to_string(), "1".to_string()),
                ("new".to_string(), "2".to_string())
            ]
            .into()
        );
        assert_eq!(updated.image, created.image, "image not in the mask");
        assert_eq!(updated.extensions["ext"].value, vec![0, 1, 255]);
        assert_eq!(updated.created_at, created.created_at);
        assert!(updated.updated_at >= created.updated_at);
        assert_eq!(store.get("default", "c1").unwrap(), updated);

        // No mask: every updatable field.
        let all = store.update("default", wanted.clone(), &[]).unwrap();
        assert_eq!(all.image, "other:latest");
        assert_eq!(all.labels, wanted.labels);

        let err = store
            .update("default", wanted.clone(), &["runtime".to_string()])
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        let mut other_runtime = wanted.clone();
        other_runtime.runtime.name = "io.containerd.kata.v2".into();
        let err = store.update("default", other_runtime, &[]).unwrap_err();
        assert!(err.message.contains("runtime cannot be changed"), "{}", err);
        let mut gone = wanted;
        gone.id = "missing".into();
        assert_eq!(
            store.update("default", gone, &[]).unwrap_err().kind,
            ErrorKind::NotFound
        );
    }

    #[test]
    fn a_namespace_with_containers_cannot_be_deleted() {
        let (_dir, store, db) = store();
        let namespaces = super::super::NamespaceStore::new(db);
        store.create("busy", container("c1")).unwrap();
        let err = namespaces.delete("busy").unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert!(err.message.contains("containers"), "{}", err.message);
        store.delete("busy", "c1").unwrap();
        namespaces.delete("busy").unwrap();
    }
}
