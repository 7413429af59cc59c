//! `containerd.services.snapshots.v1.Snapshots` over the [`Snapshotters`].
//! New snapshots join the lease named in the `containerd-lease` header and
//! create their namespace on first use, as containerd's do.

use std::pin::Pin;
use std::sync::Arc;

use berth_proto::containerd::events::{SnapshotCommit, SnapshotPrepare, SnapshotRemove};
use berth_proto::containerd::services::snapshots::v1::{
    snapshots_server, CleanupRequest, CommitSnapshotRequest, Info as WireInfo, Kind as WireKind,
    ListSnapshotsRequest, ListSnapshotsResponse, MountsRequest, MountsResponse,
    PrepareSnapshotRequest, PrepareSnapshotResponse, RemoveSnapshotRequest, StatSnapshotRequest,
    StatSnapshotResponse, UpdateSnapshotRequest, UpdateSnapshotResponse, UsageRequest,
    UsageResponse, ViewSnapshotRequest, ViewSnapshotResponse,
};
use berth_proto::containerd::types::Mount as WireMount;
use tokio_stream::Stream;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};

use super::backend::Snapshotters;
use super::{blocking, field_paths, labels_from_wire, labels_to_wire, request, timestamp};
use crate::events::Exchange;
use crate::metadata::leases::add_resource_in;
use crate::metadata::{namespaces, Db, LeaseResource};
use crate::snapshots::{Info, Kind, Mount, Snapshotter};
use crate::{Error, Result};

/// How many infos one List response carries.
const LIST_CHUNK: usize = 100;

/// The Snapshots service.
#[derive(Debug, Clone)]
pub struct SnapshotsService {
    snapshotters: Snapshotters,
    db: Db,
    events: Exchange,
}

impl SnapshotsService {
    pub fn new(snapshotters: Snapshotters, db: Db, events: Exchange) -> Self {
        SnapshotsService {
            snapshotters,
            db,
            events,
        }
    }

    /// The namespace and snapshotter a request addresses.
    fn target(
        &self,
        metadata: &MetadataMap,
        name: &str,
    ) -> Result<(String, Arc<Snapshotter>), Status> {
        Ok((request::namespace(metadata)?, self.snapshotters.get(name)?))
    }

    /// Creates the namespace if this is its first use and adds the
    /// snapshot `key` to the request's lease, if any.
    fn record(
        db: &Db,
        namespace: &str,
        lease: Option<&str>,
        snapshotter: &str,
        key: &str,
    ) -> Result<()> {
        // One commit (one flush) for both, and none when there is nothing
        // to write: a snapshot into an existing namespace outside a lease.
        if lease.is_none() && namespaces::exists(db, namespace)? {
            return Ok(());
        }
        db.write(|txn| {
            namespaces::ensure(txn, namespace)?;
            match lease {
                Some(lease) => add_resource_in(
                    txn,
                    namespace,
                    lease,
                    &LeaseResource::Snapshot {
                        snapshotter: snapshotter.to_string(),
                        key: key.to_string(),
                    },
                ),
                None => Ok(()),
            }
        })
    }

    /// Prepare and View: the same but for the kind and the event.
    async fn create(
        &self,
        metadata: &MetadataMap,
        snapshotter: &str,
        key: String,
        parent: String,
        labels: std::collections::HashMap<String, String>,
        kind: Kind,
    ) -> Result<Vec<WireMount>, Status> {
        let (namespace, snapshotter) = self.target(metadata, snapshotter)?;
        let lease = request::lease(metadata)?;
        if key.is_empty() {
            return Err(Error::invalid("snapshot key: must not be empty").into());
        }
        let db = self.db.clone();
        let (ns, k, p, s) = (
            namespace.clone(),
            key.clone(),
            parent.clone(),
            snapshotter.clone(),
        );
        let mounts = blocking(move || {
            Self::record(&db, &ns, lease.as_deref(), s.name(), &k)?;
            let parent = (!p.is_empty()).then_some(p.as_str());
            let labels = labels_from_wire(labels);
            match kind {
                Kind::View => s.view(&ns, &k, parent, labels),
                _ => s.prepare(&ns, &k, parent, labels),
            }
        })
        .await?;
        if kind == Kind::Active {
            self.events.publish(
                &namespace,
                "/snapshot/prepare",
                &SnapshotPrepare {
                    key,
                    parent,
                    snapshotter: snapshotter.name().to_string(),
                },
            )?;
        }
        Ok(mounts.into_iter().map(mount_to_wire).collect())
    }
}

/// A mount as the wire carries it.
pub fn mount_to_wire(mount: Mount) -> WireMount {
    WireMount {
        r#type: mount.r#type,
        source: mount.source,
        target: mount.target.unwrap_or_default(),
        options: mount.options,
    }
}

/// A mount from the wire.
pub fn mount_from_wire(mount: WireMount) -> Mount {
    Mount {
        r#type: mount.r#type,
        source: mount.source,
        target: (!mount.target.is_empty()).then_some(mount.target),
        options: mount.options,
    }
}

fn kind_to_wire(kind: Kind) -> WireKind {
    match kind {
        Kind::View => WireKind::View,
        Kind::Active => WireKind::Active,
        Kind::Committed => WireKind::Committed,
    }
}

fn info_to_wire(info: Info) -> WireInfo {
    WireInfo {
        name: info.name,
        parent: info.parent.unwrap_or_default(),
        kind: kind_to_wire(info.kind) as i32,
        created_at: timestamp(info.created),
        updated_at: timestamp(info.updated),
        labels: labels_to_wire(info.labels),
    }
}

type ListStream = Pin<Box<dyn Stream<Item = Result<ListSnapshotsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl snapshots_server::Snapshots for SnapshotsService {
    async fn prepare(
        &self,
        request: Request<PrepareSnapshotRequest>,
    ) -> Result<Response<PrepareSnapshotResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let mounts = self
            .create(
                &metadata,
                &message.snapshotter,
                message.key,
                message.parent,
                message.labels,
                Kind::Active,
            )
            .await?;
        Ok(Response::new(PrepareSnapshotResponse { mounts }))
    }

    async fn view(
        &self,
        request: Request<ViewSnapshotRequest>,
    ) -> Result<Response<ViewSnapshotResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let mounts = self
            .create(
                &metadata,
                &message.snapshotter,
                message.key,
                message.parent,
                message.labels,
                Kind::View,
            )
            .await?;
        Ok(Response::new(ViewSnapshotResponse { mounts }))
    }

    async fn mounts(
        &self,
        request: Request<MountsRequest>,
    ) -> Result<Response<MountsResponse>, Status> {
        let (namespace, snapshotter) =
            self.target(request.metadata(), &request.get_ref().snapshotter)?;
        let key = request.into_inner().key;
        let mounts = blocking(move || snapshotter.mounts(&namespace, &key)).await?;
        Ok(Response::new(MountsResponse {
            mounts: mounts.into_iter().map(mount_to_wire).collect(),
        }))
    }

    async fn commit(
        &self,
        request: Request<CommitSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let (namespace, snapshotter) =
            self.target(request.metadata(), &request.get_ref().snapshotter)?;
        let lease = request::lease(request.metadata())?;
        let CommitSnapshotRequest {
            name, key, labels, ..
        } = request.into_inner();
        let db = self.db.clone();
        let (ns, n, k, s) = (
            namespace.clone(),
            name.clone(),
            key.clone(),
            snapshotter.clone(),
        );
        blocking(move || {
            s.commit(&ns, &n, &k, labels_from_wire(labels))?;
            Self::record(&db, &ns, lease.as_deref(), s.name(), &n)
        })
        .await?;
        self.events.publish(
            &namespace,
            "/snapshot/commit",
            &SnapshotCommit {
                key,
                name,
                snapshotter: snapshotter.name().to_string(),
            },
        )?;
        Ok(Response::new(()))
    }

    async fn remove(
        &self,
        request: Request<RemoveSnapshotRequest>,
    ) -> Result<Response<()>, Status> {
        let (namespace, snapshotter) =
            self.target(request.metadata(), &request.get_ref().snapshotter)?;
        let key = request.into_inner().key;
        let (ns, k, s) = (namespace.clone(), key.clone(), snapshotter.clone());
        blocking(move || s.remove(&ns, &k)).await?;
        self.events.publish(
            &namespace,
            "/snapshot/remove",
            &SnapshotRemove {
                key,
                snapshotter: snapshotter.name().to_string(),
            },
        )?;
        Ok(Response::new(()))
    }

    async fn stat(
        &self,
        request: Request<StatSnapshotRequest>,
    ) -> Result<Response<StatSnapshotResponse>, Status> {
        let (namespace, snapshotter) =
            self.target(request.metadata(), &request.get_ref().snapshotter)?;
        let key = request.into_inner().key;
        let info = blocking(move || snapshotter.stat(&namespace, &key)).await?;
        Ok(Response::new(StatSnapshotResponse {
            info: Some(info_to_wire(info)),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateSnapshotRequest>,
    ) -> Result<Response<UpdateSnapshotResponse>, Status> {
        let (namespace, snapshotter) =
            self.target(request.metadata(), &request.get_ref().snapshotter)?;
        let UpdateSnapshotRequest {
            info, update_mask, ..
        } = request.into_inner();
        let info = info.ok_or_else(|| Error::invalid("update snapshot: no info given"))?;
        let paths = field_paths(update_mask);
        let updated = blocking(move || {
            let wanted = Info {
                labels: labels_from_wire(info.labels),
                ..snapshotter.stat(&namespace, &info.name)?
            };
            snapshotter.update(&namespace, &wanted, &paths)
        })
        .await?;
        Ok(Response::new(UpdateSnapshotResponse {
            info: Some(info_to_wire(updated)),
        }))
    }

    type ListStream = ListStream;

    async fn list(
        &self,
        request: Request<ListSnapshotsRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let (namespace, snapshotter) =
            self.target(request.metadata(), &request.get_ref().snapshotter)?;
        let filters = request.into_inner().filters;
        let infos = blocking(move || snapshotter.walk(&namespace, &filters)).await?;
        let chunks: Vec<_> = infos
            .chunks(LIST_CHUNK)
            .map(|chunk| {
                Ok(ListSnapshotsResponse {
                    info: chunk.iter().cloned().map(info_to_wire).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn usage(
        &self,
        request: Request<UsageRequest>,
    ) -> Result<Response<UsageResponse>, Status> {
        let (namespace, snapshotter) =
            self.target(request.metadata(), &request.get_ref().snapshotter)?;
        let key = request.into_inner().key;
        let usage = blocking(move || snapshotter.usage(&namespace, &key)).await?;
        Ok(Response::new(UsageResponse {
            size: i64::try_from(usage.size).unwrap_or(i64::MAX),
            inodes: i64::try_from(usage.inodes).unwrap_or(i64::MAX),
        }))
    }

    async fn cleanup(&self, request: Request<CleanupRequest>) -> Result<Response<()>, Status> {
        let (_, snapshotter) = self.target(request.metadata(), &request.get_ref().snapshotter)?;
        blocking(move || snapshotter.cleanup()).await?;
        Ok(Response::new(()))
    }
}
