//! `containerd.services.images.v1.Images` over [`ImageStore`].

use berth_proto::containerd::services::images::v1::{
    images_server, CreateImageRequest, CreateImageResponse, DeleteImageRequest, GetImageRequest,
    GetImageResponse, Image as WireImage, ImageCreate, ImageDelete, ImageUpdate, ListImagesRequest,
    ListImagesResponse, UpdateImageRequest, UpdateImageResponse,
};
use berth_proto::containerd::types::Descriptor as WireDescriptor;
use tonic::{Request, Response, Status};

use super::backend::Gc;
use super::{blocking, field_paths, labels_from_wire, labels_to_wire, request, timestamp};
use crate::content::{Descriptor, Digest};
use crate::events::Exchange;
use crate::metadata::{Filter, Image, ImageStore};
use crate::Error;

/// The Images service.
#[derive(Debug, Clone)]
pub struct ImagesService {
    store: ImageStore,
    events: Exchange,
    gc: Gc,
}

impl ImagesService {
    pub fn new(store: ImageStore, events: Exchange, gc: Gc) -> Self {
        ImagesService { store, events, gc }
    }
}

/// A descriptor as the wire carries it.
pub fn descriptor_to_wire(descriptor: Descriptor) -> WireDescriptor {
    WireDescriptor {
        media_type: descriptor.media_type,
        digest: descriptor.digest.to_string(),
        size: i64::try_from(descriptor.size).unwrap_or(i64::MAX),
        annotations: labels_to_wire(descriptor.annotations),
    }
}

/// A descriptor from the wire; `what` names its owner in errors.
pub fn descriptor_from_wire(descriptor: WireDescriptor, what: &str) -> Result<Descriptor, Error> {
    Ok(Descriptor {
        digest: Digest::parse(&descriptor.digest).map_err(|e| e.context(what))?,
        size: u64::try_from(descriptor.size)
            .map_err(|_| Error::invalid(format!("{what}: negative size {}", descriptor.size)))?,
        media_type: descriptor.media_type,
        annotations: labels_from_wire(descriptor.annotations),
    })
}

fn image_to_wire(image: Image) -> WireImage {
    WireImage {
        name: image.name,
        labels: labels_to_wire(image.labels),
        target: Some(descriptor_to_wire(image.target)),
        created_at: timestamp(image.created_at),
        updated_at: timestamp(image.updated_at),
    }
}

/// An image from the wire. Update may leave the target out (when its mask
/// does not touch it): `placeholder` is used then and ignored by the store.
fn image_from_wire(image: WireImage, target_required: bool) -> Result<Image, Error> {
    if image.name.is_empty() {
        return Err(Error::invalid("image: the name is required"));
    }
    let what = format!("image {:?} target", image.name);
    // Go clients always send a target, empty when they mean none.
    let target = image
        .target
        .filter(|t| !(t.digest.is_empty() && t.media_type.is_empty()));
    let target = match target {
        Some(target) => descriptor_from_wire(target, &what)?,
        None if target_required => {
            return Err(Error::invalid(format!("{what}: required")));
        }
        None => Descriptor {
            media_type: String::new(),
            digest: Digest::sha256_of(b""),
            size: 0,
            annotations: Default::default(),
        },
    };
    let mut record = Image::new(image.name, target);
    record.labels = labels_from_wire(image.labels);
    Ok(record)
}

#[tonic::async_trait]
impl images_server::Images for ImagesService {
    async fn get(
        &self,
        request: Request<GetImageRequest>,
    ) -> Result<Response<GetImageResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let name = request.into_inner().name;
        let store = self.store.clone();
        let image = blocking(move || store.get(&namespace, &name)).await?;
        Ok(Response::new(GetImageResponse {
            image: Some(image_to_wire(image)),
        }))
    }

    async fn list(
        &self,
        request: Request<ListImagesRequest>,
    ) -> Result<Response<ListImagesResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let filter = Filter::parse_all(&request.get_ref().filters)?;
        let store = self.store.clone();
        let images = blocking(move || store.list(&namespace, &filter)).await?;
        Ok(Response::new(ListImagesResponse {
            images: images.into_iter().map(image_to_wire).collect(),
        }))
    }

    async fn create(
        &self,
        request: Request<CreateImageRequest>,
    ) -> Result<Response<CreateImageResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let image = request
            .into_inner()
            .image
            .ok_or_else(|| Error::invalid("create image: no image given"))?;
        let image = image_from_wire(image, true)?;
        let store = self.store.clone();
        let ns = namespace.clone();
        let created = blocking(move || store.create(&ns, image)).await?;
        self.events.publish(
            &namespace,
            "/images/create",
            &ImageCreate {
                name: created.name.clone(),
                labels: labels_to_wire(created.labels.clone()),
            },
        )?;
        Ok(Response::new(CreateImageResponse {
            image: Some(image_to_wire(created)),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateImageRequest>,
    ) -> Result<Response<UpdateImageResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let UpdateImageRequest { image, update_mask } = request.into_inner();
        let image = image.ok_or_else(|| Error::invalid("update image: no image given"))?;
        let paths = field_paths(update_mask);
        let touches_target = paths.is_empty() || paths.iter().any(|p| p == "target");
        let image = image_from_wire(image, touches_target)?;
        let store = self.store.clone();
        let ns = namespace.clone();
        let updated = blocking(move || store.update(&ns, image, &paths)).await?;
        self.events.publish(
            &namespace,
            "/images/update",
            &ImageUpdate {
                name: updated.name.clone(),
                labels: labels_to_wire(updated.labels.clone()),
            },
        )?;
        Ok(Response::new(UpdateImageResponse {
            image: Some(image_to_wire(updated)),
        }))
    }

    async fn delete(&self, request: Request<DeleteImageRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let DeleteImageRequest { name, sync } = request.into_inner();
        let store = self.store.clone();
        let (ns, deleted) = (namespace.clone(), name.clone());
        blocking(move || store.delete(&ns, &deleted)).await?;
        self.events
            .publish(&namespace, "/images/delete", &ImageDelete { name })?;
        if sync {
            self.gc.collect().await?;
        } else {
            self.gc.schedule();
        }
        Ok(Response::new(()))
    }
}
