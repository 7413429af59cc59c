//! Changes to the `moby` namespace's image records, made as dockerd makes
//! them: a name moved to another image leaves the old one as a dangling
//! record (`moby-dangling@<digest>`) rather than letting it be collected,
//! a named image drops its dangling record, and every change is published
//! on the event exchange as containerd's images service publishes it.
//! Blocking (the stores fsync).
//!
//! Each change reads the store before it writes (is the name there, where
//! does it point, does any other name keep the old image), so changes are
//! made one at a time, as dockerd's reference store makes them: two tags
//! of one name at once would otherwise both create it, and one fail.

use berth_proto::containerd::services::images::v1::{ImageCreate, ImageDelete, ImageUpdate};

use crate::content::{Descriptor, Digest};
use crate::docker::reference::{dangling_name, is_dangling};
use crate::docker::NAMESPACE;
use crate::grpc::Backend;
use crate::metadata::leases::EXPIRE_LABEL;
use crate::metadata::{Filter, Image, Labels, LeaseResource};
use crate::{Error, ErrorKind, Result};
use std::sync::{Mutex, MutexGuard};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Taken by every change of a name (see the module's doc).
static NAME_CHANGES: Mutex<()> = Mutex::new(());

fn one_change_at_a_time() -> MutexGuard<'static, ()> {
    // The lock guards no data: a change that panicked left nothing half
    // written in it.
    NAME_CHANGES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

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
        // From here on, dropping the hold (an error below) deletes the lease.
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
        let _change = one_change_at_a_time();
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
            self.keep_unnamed(&previous)?;
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
        let _change = one_change_at_a_time();
        let current = self.backend.images.get(NAMESPACE, name)?;
        match previous {
            Some(previous) if previous.digest == current.target.digest => {}
            Some(previous) => {
                self.publish_update(name);
                self.keep_unnamed(previous)?;
            }
            None => self.publish_create(name),
        }
        if !is_dangling(name) {
            self.drop_dangling(&current.target.digest)?;
        }
        Ok(())
    }

    /// Undoes what a failed transfer did to `name`: it points at
    /// `previous` again (or is gone, if it did not exist), so a pull that
    /// stored the record but failed to unpack leaves no half-made image
    /// under the name. What it made is left to the collector.
    pub fn restore(&self, name: &str, previous: Option<&Descriptor>) -> Result<()> {
        let _change = one_change_at_a_time();
        let current = self.target_of(name)?;
        match (current, previous) {
            (Some(current), Some(previous)) if current.digest != previous.digest => {
                let record = Image::new(name, previous.clone());
                self.backend
                    .images
                    .update(NAMESPACE, record, &["target".to_owned()])?;
                self.publish_update(name);
            }
            (Some(_), None) => self.remove_record(name)?,
            _ => {}
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
        let _change = one_change_at_a_time();
        self.remove_record(name)
    }

    fn remove_record(&self, name: &str) -> Result<()> {
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
        let _change = one_change_at_a_time();
        self.keep_unnamed(target)
    }

    fn keep_unnamed(&self, target: &Descriptor) -> Result<()> {
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
        match self.remove_record(&dangling_name(target.as_str())) {
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
    /// them). Dropping a hold does the same, so an early return releases
    /// it too. A lease that cannot be deleted expires by itself.
    pub fn release(self) {}
}

impl Drop for Hold {
    fn drop(&mut self) {
        if let Err(err) = self.backend.leases.delete(NAMESPACE, &self.id) {
            tracing::warn!("releasing lease {}: {err}", self.id);
        }
    }
}
