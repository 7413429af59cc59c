//! `containerd.services.namespaces.v1.Namespaces` over [`NamespaceStore`].

use berth_proto::containerd::events::{NamespaceCreate, NamespaceDelete, NamespaceUpdate};
use berth_proto::containerd::services::namespaces::v1::{
    namespaces_server, CreateNamespaceRequest, CreateNamespaceResponse, DeleteNamespaceRequest,
    GetNamespaceRequest, GetNamespaceResponse, ListNamespacesRequest, ListNamespacesResponse,
    Namespace as WireNamespace, UpdateNamespaceRequest, UpdateNamespaceResponse,
};
use tonic::{Request, Response, Status};

use super::{blocking, field_paths, labels_from_wire, labels_to_wire, request};
use crate::events::Exchange;
use crate::metadata::{Filter, Namespace, NamespaceStore};
use crate::Error;

/// Namespaces are not themselves namespaced: the header only says where the
/// change is announced (the caller's namespace, as containerd publishes it;
/// the namespace itself when the caller sent none).
#[derive(Debug, Clone)]
pub struct NamespacesService {
    store: NamespaceStore,
    events: Exchange,
}

impl NamespacesService {
    pub fn new(store: NamespaceStore, events: Exchange) -> Self {
        NamespacesService { store, events }
    }
}

fn to_wire(namespace: Namespace) -> WireNamespace {
    WireNamespace {
        name: namespace.name,
        labels: labels_to_wire(namespace.labels),
    }
}

#[tonic::async_trait]
impl namespaces_server::Namespaces for NamespacesService {
    async fn get(
        &self,
        request: Request<GetNamespaceRequest>,
    ) -> Result<Response<GetNamespaceResponse>, Status> {
        let store = self.store.clone();
        let name = request.into_inner().name;
        let namespace = blocking(move || store.get(&name)).await?;
        Ok(Response::new(GetNamespaceResponse {
            namespace: Some(to_wire(namespace)),
        }))
    }

    async fn list(
        &self,
        request: Request<ListNamespacesRequest>,
    ) -> Result<Response<ListNamespacesResponse>, Status> {
        let filter = Filter::parse_all(&[request.into_inner().filter])?;
        let store = self.store.clone();
        let all = blocking(move || store.list()).await?;
        let namespaces = all
            .into_iter()
            .filter(|namespace| filter.matches(namespace))
            .map(to_wire)
            .collect();
        Ok(Response::new(ListNamespacesResponse { namespaces }))
    }

    async fn create(
        &self,
        request: Request<CreateNamespaceRequest>,
    ) -> Result<Response<CreateNamespaceResponse>, Status> {
        let announce_in = request::namespace(request.metadata()).ok();
        let wanted = request
            .into_inner()
            .namespace
            .ok_or_else(|| Error::invalid("create namespace: no namespace given"))?;
        let store = self.store.clone();
        let labels = labels_from_wire(wanted.labels);
        let created = blocking(move || store.create(&wanted.name, labels)).await?;
        self.events.publish(
            announce_in.as_deref().unwrap_or(&created.name),
            "/namespaces/create",
            &NamespaceCreate {
                name: created.name.clone(),
                labels: labels_to_wire(created.labels.clone()),
            },
        )?;
        Ok(Response::new(CreateNamespaceResponse {
            namespace: Some(to_wire(created)),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateNamespaceRequest>,
    ) -> Result<Response<UpdateNamespaceResponse>, Status> {
        let announce_in = request::namespace(request.metadata()).ok();
        let UpdateNamespaceRequest {
            namespace,
            update_mask,
        } = request.into_inner();
        let wanted =
            namespace.ok_or_else(|| Error::invalid("update namespace: no namespace given"))?;
        let paths = field_paths(update_mask);
        let store = self.store.clone();
        let labels = labels_from_wire(wanted.labels);
        let updated = blocking(move || store.update(&wanted.name, labels, &paths)).await?;
        self.events.publish(
            announce_in.as_deref().unwrap_or(&updated.name),
            "/namespaces/update",
            &NamespaceUpdate {
                name: updated.name.clone(),
                labels: labels_to_wire(updated.labels.clone()),
            },
        )?;
        Ok(Response::new(UpdateNamespaceResponse {
            namespace: Some(to_wire(updated)),
        }))
    }

    async fn delete(
        &self,
        request: Request<DeleteNamespaceRequest>,
    ) -> Result<Response<()>, Status> {
        let name = request.into_inner().name;
        let store = self.store.clone();
        let deleted = name.clone();
        blocking(move || store.delete(&deleted)).await?;
        self.events.publish(
            &name,
            "/namespaces/delete",
            &NamespaceDelete { name: name.clone() },
        )?;
        Ok(Response::new(()))
    }
}
