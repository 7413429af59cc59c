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
