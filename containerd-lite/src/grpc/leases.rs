//! `containerd.services.leases.v1.Leases` over [`LeaseManager`].

use berth_proto::containerd::services::leases::v1::{
    leases_server, AddResourceRequest, CreateRequest, CreateResponse, DeleteRequest,
    DeleteResourceRequest, Lease as WireLease, ListRequest, ListResourcesRequest,
    ListResourcesResponse, ListResponse, Resource,
};
use tonic::{Request, Response, Status};

use super::backend::Gc;
use super::{blocking, labels_from_wire, labels_to_wire, request, timestamp};
use crate::metadata::{Filter, Lease, LeaseManager, LeaseResource};
use crate::Error;

/// The Leases service.
#[derive(Debug, Clone)]
pub struct LeasesService {
    store: LeaseManager,
    gc: Gc,
}

impl LeasesService {
    pub fn new(store: LeaseManager, gc: Gc) -> Self {
        LeasesService { store, gc }
    }
}

fn lease_to_wire(lease: Lease) -> WireLease {
    WireLease {
        id: lease.id,
        created_at: timestamp(lease.created_at),
        labels: labels_to_wire(lease.labels),
    }
}

fn resource_from_wire(resource: Option<Resource>) -> Result<LeaseResource, Error> {
    let resource = resource.ok_or_else(|| Error::invalid("lease resource: none given"))?;
    LeaseResource::parse(&resource.r#type, &resource.id)
}

fn resource_to_wire(resource: LeaseResource) -> Resource {
    Resource {
        id: resource.id().to_string(),
        r#type: resource.kind(),
    }
}

#[tonic::async_trait]
impl leases_server::Leases for LeasesService {
    async fn create(
        &self,
        request: Request<CreateRequest>,
    ) -> Result<Response<CreateResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let CreateRequest { id, labels } = request.into_inner();
        // containerd makes up an id when the client gives none.
        let id = if id.is_empty() {
            uuid::Uuid::new_v4().simple().to_string()
        } else {
            id
        };
        let store = self.store.clone();
        let lease =
            blocking(move || store.create(&namespace, &id, labels_from_wire(labels))).await?;
        Ok(Response::new(CreateResponse {
            lease: Some(lease_to_wire(lease)),
        }))
    }

    async fn delete(&self, request: Request<DeleteRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let DeleteRequest { id, sync } = request.into_inner();
        let store = self.store.clone();
        blocking(move || store.delete(&namespace, &id)).await?;
        if sync {
            self.gc.collect().await?;
        } else {
            self.gc.schedule();
        }
        Ok(Response::new(()))
    }

    async fn list(&self, request: Request<ListRequest>) -> Result<Response<ListResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let filter = Filter::parse_all(&request.get_ref().filters)?;
        let store = self.store.clone();
        let leases = blocking(move || store.list(&namespace, &filter)).await?;
        Ok(Response::new(ListResponse {
            leases: leases.into_iter().map(lease_to_wire).collect(),
        }))
    }

    async fn add_resource(
        &self,
        request: Request<AddResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let AddResourceRequest { id, resource } = request.into_inner();
        let resource = resource_from_wire(resource)?;
        let store = self.store.clone();
        blocking(move || store.add_resource(&namespace, &id, &resource)).await?;
        Ok(Response::new(()))
    }

    async fn delete_resource(
        &self,
        request: Request<DeleteResourceRequest>,
    ) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let DeleteResourceRequest { id, resource } = request.into_inner();
        let resource = resource_from_wire(resource)?;
        let store = self.store.clone();
        blocking(move || store.delete_resource(&namespace, &id, &resource)).await?;
        Ok(Response::new(()))
    }

    async fn list_resources(
        &self,
        request: Request<ListResourcesRequest>,
    ) -> Result<Response<ListResourcesResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let id = request.into_inner().id;
        let store = self.store.clone();
        let resources = blocking(move || store.list_resources(&namespace, &id)).await?;
        Ok(Response::new(ListResourcesResponse {
            resources: resources.into_iter().map(resource_to_wire).collect(),
        }))
    }
}
