//! Changes to the `moby` namespace's image records, made as dockerd makes
//! them: a name moved to another image leaves the old one as a dangling
//! record (`moby-dangling@<digest>`) rather than letting it be collected,
//! a named image drops its dangling record, and every change is published
//! on the event exchange as containerd's images service publishes it.
//! Blocking (the stores fsync).

use berth_proto::containerd::services::images::v1::{ImageCreate, ImageDelete, ImageUpdate};

use crate::content::{Descriptor, Digest};
use crate::docker::reference::{dangling_name, is_dangling};
use crate::docker::NAMESPACE;
use crate::grpc::Backend;
use crate::metadata::leases::EXPIRE_LABEL;
use crate::metadata::{Filter, Image, Labels, LeaseResource};
use crate::{Error, ErrorKind, Result};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The record store with docker's bookkeeping.
#[derive(Debug, Clone)]
pub struct Records<'a> {
    backend: &'a Backend,
}

impl<'a> Records<'a> {
    /// The records of `backend`'s `moby` namespace.
    pub fn new(backend: &'a Backend) -> Self {
        Records { backend }
    }

    /// Holds `targets` (and what they reference) in a lease of its own
    /// until [`Hold::release`]: names are moved first and the images they
    /// left kept as dangling records after, and a collection running in
    /// between must not take those images.
    pub fn hold<'t>(&self, targets: impl IntoIterator<Item = &'t Descriptor>) -> Result<Hold> {
        let leases = &self.backend.leases;
        let id = format!("moby-hold-{}", uuid::Uuid::new_v4().simple());
        // Should berthd die before the release, the lease expires by itself.
        let expires = OffsetDateTime::now_utc() + HOLD_EXPIRY;
        let expiry = expires
            .format(&Rfc3339)
            .map_err(|err| Error::internal(format!("lease expiry: {err}")))?;
        let labels = Labels::from([(EXPIRE_LABEL.to_owned(), expiry)]);
        leases.create(NAMESPACE, &id, labels)?;
        let hold = Hold {
            backend: self.backend.clone(),
            id,
        };
        for target in targets {
            let resource = LeaseResource::Content(target.digest.clone());
            leases.add_resource(NAMESPACE, &hold.id, &resource)?;
        }
        Ok(hold)
    }

    /// Points `name` at `target` (creating the record or moving it). The
    /// image it pointed at before stays as a dangling record when no other
    /// name keeps it; `target`'s dangling record, if any, goes (unless
    /// `name` is that record).
    pub fn set(&self, name: &str, target: &Descriptor) -> Result<()> {
        let images = &self.backend.images;
        let previous = match images.get(NAMESPACE, name) {
            Ok(previous) => Some(previous.target),
            Err(err) if err.kind == ErrorKind::NotFound => None,
            Err(err) => return Err(err),
        };
        if previous.as_ref().is_some_and(|p| p.digest == target.digest) {
            return Ok(());
        }
        let hold = self.hold(previous.as_ref())?;
        let moved = self.move_name(name, target, previous);
        hold.release();
        moved
    }

    fn move_name(
        &self,
        name: &str,
        target: &Descriptor,
        previous: Option<Descriptor>,
    ) -> Result<()> {
        let images = &self.backend.images;
        let record = Image::new(name, target.clone());
        match previous {
            None => {
                images.create(NAMESPACE, record)?;
                self.publish_create(name);
            }
            Some(_) => {
                images.update(NAMESPACE, record, &["target".to_owned()])?;
                self.publish_update(name);
            }
        }
        if let Some(previous) = previous {
            self.keep_if_unnamed(&previous)?;
        }
        if is_dangling(name) {
            return Ok(());
        }
        self.drop_dangling(&target.digest)
    }

    /// Notes that a transfer moved `name` from `previous` to its current
    /// target: keeps `previous` as dangling if nothing names it, and drops
    /// the dangling record of the new target.
    pub fn moved(&self, name: &str, previous: Option<&Descriptor>) -> Result<()> {
        let current = self.backend.images.get(NAMESPACE, name)?;
        match previous {
            Some(previous) if previous.digest == current.target.digest => {}
            Some(previous) => {
                self.publish_update(name);
                self.keep_if_unnamed(previous)?;
            }
            None => self.publish_create(name),
        }
        if !is_dangling(name) {
            self.drop_dangling(&current.target.digest)?;
        }
        Ok(())
    }

    /// The target `name` points at now, if it exists.
    pub fn target_of(&self, name: &str) -> Result<Option<Descriptor>> {
        match self.backend.images.get(NAMESPACE, name) {
            Ok(image) => Ok(Some(image.target)),
            Err(err) if err.kind == ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }

    /// Removes the record `name`.
    pub fn remove(&self, name: &str) -> Result<()> {
        self.backend.images.delete(NAMESPACE, name)?;
        if let Err(err) = self.backend.events.publish(
            NAMESPACE,
            "/images/delete",
            &ImageDelete {
                name: name.to_owned(),
            },
        ) {
            tracing::debug!("publishing /images/delete: {err}");
        }
        Ok(())
    }

    /// Makes `target` an unnamed (dangling) image unless some record
    /// still points at it.
    pub fn keep_if_unnamed(&self, target: &Descriptor) -> Result<()> {
        let named = self
            .backend
            .images
            .list(NAMESPACE, &Filter::everything())?
            .iter()
            .any(|r| r.target.digest == target.digest);
        if named {
            return Ok(());
        }
        let name = dangling_name(target.digest.as_str());
        match self
            .backend
            .images
            .create(NAMESPACE, Image::new(&name, target.clone()))
        {
            Ok(_) => {
                self.publish_create(&name);
                Ok(())
            }
            Err(err) if err.kind == ErrorKind::AlreadyExists => Ok(()),
            Err(err) => Err(err),
        }
    }

    fn drop_dangling(&self, target: &Digest) -> Result<()> {
        match self.remove(&dangling_name(target.as_str())) {
            Err(err) if err.kind != ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    fn publish_create(&self, name: &str) {
        let event = ImageCreate {
            name: name.to_owned(),
            labels: Default::default(),
        };
        if let Err(err) = self
            .backend
            .events
            .publish(NAMESPACE, "/images/create", &event)
        {
            tracing::debug!("publishing /images/create: {err}");
        }
    }

    fn publish_update(&self, name: &str) {
        let event = ImageUpdate {
            name: name.to_owned(),
            labels: Default::default(),
        };
        if let Err(err) = self
            .backend
            .events
            .publish(NAMESPACE, "/images/update", &event)
        {
            tracing::debug!("publishing /images/update: {err}");
        }
    }
}

/// How long a [`Hold`] protects when it is never released (berthd died).
const HOLD_EXPIRY: time::Duration = time::Duration::hours(1);

/// Images held by [`Records::hold`].
#[must_use = "a hold protects until it is released"]
pub struct Hold {
    backend: Backend,
    id: String,
}

impl Hold {
    /// Lets the held images go (to the collector, if nothing else keeps
    /// them). A lease that cannot be deleted now expires by itself.
    pub fn release(self) {
        if let Err(err) = self.backend.leases.delete(NAMESPACE, &self.id) {
            tracing::warn!("releasing lease {}: {err}", self.id);
        }
    }
}
