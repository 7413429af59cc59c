//! `containerd.services.containers.v1.Containers` over [`ContainerStore`].

use std::pin::Pin;

use berth_proto::containerd::events::{
    container_create, ContainerCreate, ContainerDelete, ContainerUpdate,
};
use berth_proto::containerd::services::containers::v1::{
    container, containers_server, Container as WireContainer, CreateContainerRequest,
    CreateContainerResponse, DeleteContainerRequest, GetContainerRequest, GetContainerResponse,
    ListContainerMessage, ListContainersRequest, ListContainersResponse, UpdateContainerRequest,
    UpdateContainerResponse,
};
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::backend::Gc;
use super::{blocking, field_paths, labels_from_wire, labels_to_wire, request, timestamp};
use crate::events::Exchange;
use crate::metadata::containers::{Payload, Runtime};
use crate::metadata::{Container, ContainerStore, Filter};
use crate::Error;

/// The Containers service.
#[derive(Debug, Clone)]
pub struct ContainersService {
    store: ContainerStore,
    events: Exchange,
    gc: Gc,
}

impl ContainersService {
    pub fn new(store: ContainerStore, events: Exchange, gc: Gc) -> Self {
        ContainersService { store, events, gc }
    }
}

/// An `Any` as the record keeps it.
pub fn payload_from_wire(any: prost_types::Any) -> Payload {
    Payload {
        type_url: any.type_url,
        value: any.value,
    }
}

/// A kept payload as the wire's `Any`.
pub fn payload_to_wire(payload: Payload) -> prost_types::Any {
    prost_types::Any {
        type_url: payload.type_url,
        value: payload.value,
    }
}

fn container_to_wire(container: Container) -> WireContainer {
    WireContainer {
        id: container.id,
        labels: labels_to_wire(container.labels),
        image: container.image,
        runtime: Some(container::Runtime {
            name: container.runtime.name,
            options: container.runtime.options.map(payload_to_wire),
        }),
        spec: container.spec.map(payload_to_wire),
        snapshotter: container.snapshotter,
        snapshot_key: container.snapshot_key,
        created_at: timestamp(container.created_at),
        updated_at: timestamp(container.updated_at),
        extensions: container
            .extensions
            .into_iter()
            .map(|(name, payload)| (name, payload_to_wire(payload)))
            .collect(),
    }
}

fn container_from_wire(container: WireContainer) -> Container {
    let runtime = container.runtime.unwrap_or_default();
    Container {
        id: container.id,
        labels: labels_from_wire(container.labels),
        image: container.image,
        runtime: Runtime {
            name: runtime.name,
            options: runtime.options.map(payload_from_wire),
        },
        spec: container.spec.map(payload_from_wire),
        snapshotter: container.snapshotter,
        snapshot_key: container.snapshot_key,
        extensions: container
            .extensions
            .into_iter()
            .map(|(name, any)| (name, payload_from_wire(any)))
            .collect(),
        created_at: std::time::SystemTime::UNIX_EPOCH,
        updated_at: std::time::SystemTime::UNIX_EPOCH,
    }
}

type ContainerStream =
    Pin<Box<dyn Stream<Item = Result<ListContainerMessage, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl containers_server::Containers for ContainersService {
    async fn get(
        &self,
        request: Request<GetContainerRequest>,
    ) -> Result<Response<GetContainerResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let id = request.into_inner().id;
        let store = self.store.clone();
        let container = blocking(move || store.get(&namespace, &id)).await?;
        Ok(Response::new(GetContainerResponse {
            container: Some(container_to_wire(container)),
        }))
    }

    async fn list(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<ListContainersResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let filter = Filter::parse_all(&request.get_ref().filters)?;
        let store = self.store.clone();
        let containers = blocking(move || store.list(&namespace, &filter)).await?;
        Ok(Response::new(ListContainersResponse {
            containers: containers.into_iter().map(container_to_wire).collect(),
        }))
    }

    type ListStreamStream = ContainerStream;

    async fn list_stream(
        &self,
        request: Request<ListContainersRequest>,
    ) -> Result<Response<Self::ListStreamStream>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let filter = Filter::parse_all(&request.get_ref().filters)?;
        let store = self.store.clone();
        let containers = blocking(move || store.list(&namespace, &filter)).await?;
        let messages = containers.into_iter().map(|container| {
            Ok(ListContainerMessage {
                container: Some(container_to_wire(container)),
            })
        });
        Ok(Response::new(Box::pin(tokio_stream::iter(messages))))
    }

    async fn create(
        &self,
        request: Request<CreateContainerRequest>,
    ) -> Result<Response<CreateContainerResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let container = request
            .into_inner()
            .container
            .ok_or_else(|| Error::invalid("create container: no container given"))?;
        let container = container_from_wire(container);
        let store = self.store.clone();
        let ns = namespace.clone();
        let created = blocking(move || store.create(&ns, container)).await?;
        self.events.publish(
            &namespace,
            "/containers/create",
            &ContainerCreate {
                id: created.id.clone(),
                image: created.image.clone(),
                runtime: Some(container_create::Runtime {
                    name: created.runtime.name.clone(),
                    options: created.runtime.options.clone().map(payload_to_wire),
                }),
            },
        )?;
        Ok(Response::new(CreateContainerResponse {
            container: Some(container_to_wire(created)),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateContainerRequest>,
    ) -> Result<Response<UpdateContainerResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let UpdateContainerRequest {
            container,
            update_mask,
        } = request.into_inner();
        let container =
            container.ok_or_else(|| Error::invalid("update container: no container given"))?;
        if container.id.is_empty() {
            return Err(Error::invalid("update container: the id is required").into());
        }
        let container = container_from_wire(container);
        let paths = field_paths(update_mask);
        let store = self.store.clone();
        let ns = namespace.clone();
        let updated = blocking(move || store.update(&ns, container, &paths)).await?;
        self.events.publish(
            &namespace,
            "/containers/update",
            &ContainerUpdate {
                id: updated.id.clone(),
                image: updated.image.clone(),
                labels: labels_to_wire(updated.labels.clone()),
                snapshot_key: updated.snapshot_key.clone(),
            },
        )?;
        Ok(Response::new(UpdateContainerResponse {
            container: Some(container_to_wire(updated)),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteContainerRequest>,
    ) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let id = request.into_inner().id;
        let store = self.store.clone();
        let (ns, deleted) = (namespace.clone(), id.clone());
        blocking(move || store.delete(&ns, &deleted)).await?;
        self.events
            .publish(&namespace, "/containers/delete", &ContainerDelete { id })?;
        // Its snapshot may now be unreferenced.
        self.gc.schedule();
        Ok(Response::new(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::events::Received;
    use crate::grpc::Backend;
    use berth_proto::containerd::services::containers::v1::containers_server::Containers;
    use tokio_stream::StreamExt;
    use tonic::Code;

    fn backend(dir: &std::path::Path) -> Backend {
        Backend::open(&Config::in_dir(dir, dir.join("berthd.sock"))).unwrap()
    }

    fn service(backend: &Backend) -> ContainersService {
        ContainersService::new(
            backend.containers.clone(),
            backend.events.clone(),
            backend.gc.clone(),
        )
    }

    fn in_ns<T>(namespace: &str, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(request::NAMESPACE_HEADER, namespace.parse().unwrap());
        request
    }

    fn wire(id: &str) -> WireContainer {
        WireContainer {
            id: id.into(),
            image: "docker.io/library/busybox:latest".into(),
            runtime: Some(container::Runtime {
                name: "io.containerd.runc.v2".into(),
                options: Some(prost_types::Any {
                    type_url: "containerd.runc.v1.Options".into(),
                    value: vec![0x0a, 0],
                }),
            }),
            spec: Some(prost_types::Any {
                type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                value: b"{}".to_vec(),
            }),
            snapshotter: "overlayfs".into(),
            snapshot_key: id.into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn records_round_trip_and_publish_events() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        let svc = service(&backend);
        let mut events = backend.events.subscribe();

        let created = svc
            .create(in_ns(
                "default",
                CreateContainerRequest {
                    container: Some(wire("c1")),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .container
            .unwrap();
        assert!(created.created_at.is_some());
        let Some(Received::Event(envelope)) = events.next().await else {
            panic!("no event");
        };
        assert_eq!(envelope.topic, "/containers/create");
        assert_eq!(envelope.event.type_url, "containerd.events.ContainerCreate");

        let got = svc
            .get(in_ns("default", GetContainerRequest { id: "c1".into() }))
            .await
            .unwrap()
            .into_inner()
            .container
            .unwrap();
        assert_eq!(got, created);
        assert_eq!(got.runtime.unwrap().options.unwrap().value, vec![0x0a, 0]);

        let err = svc
            .create(in_ns(
                "default",
                CreateContainerRequest {
                    container: Some(wire("c1")),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);

        let listed = svc
            .list(in_ns(
                "default",
                ListContainersRequest {
                    filters: vec!["labels.app==web".into()],
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert_eq!(listed.len(), 1);
        let streamed: Vec<_> = svc
            .list_stream(in_ns("default", ListContainersRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .collect()
            .await;
        assert_eq!(streamed.len(), 1);
        assert_eq!(
            streamed[0].as_ref().unwrap().container.as_ref().unwrap().id,
            "c1"
        );
        // Other namespaces see nothing.
        let other = svc
            .list(in_ns("other", ListContainersRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .containers;
        assert!(other.is_empty());

        let mut change = wire("c1");
        change.labels = [("tier".to_string(), "front".to_string())].into();
        let updated = svc
            .update(in_ns(
                "default",
                UpdateContainerRequest {
                    container: Some(change),
                    update_mask: Some(prost_types::FieldMask {
                        paths: vec!["labels.tier".into()],
                    }),
                },
            ))
            .await
            .unwrap()
            .into_inner()
            .container
            .unwrap();
        assert_eq!(updated.labels.len(), 2);

        svc.delete(in_ns("default", DeleteContainerRequest { id: "c1".into() }))
            .await
            .unwrap();
        let err = svc
            .get(in_ns("default", GetContainerRequest { id: "c1".into() }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(err.message().contains("c1"), "{}", err.message());
    }

    #[tokio::test]
    async fn bad_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        let svc = service(&backend);
        let err = svc
            .create(Request::new(CreateContainerRequest {
                container: Some(wire("c1")),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition, "no namespace");
        let err = svc
            .create(in_ns("default", CreateContainerRequest { container: None }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let mut no_spec = wire("c2");
        no_spec.spec = None;
        let err = svc
            .create(in_ns(
                "default",
                CreateContainerRequest {
                    container: Some(no_spec),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = svc
            .create(in_ns(
                "default",
                CreateContainerRequest {
                    container: Some(wire("../escape")),
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = svc
            .update(in_ns(
                "default",
                UpdateContainerRequest {
                    container: Some(wire("missing")),
                    update_mask: None,
                },
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
    }
}
