//! `update`: change a running container's resource limits.

use oci_spec::runtime::LinuxResources;

use crate::cgroups;
use crate::error::{Error, Result};
use crate::state::{StateStore, Status};

/// Apply `resources` to the container's cgroup and remember them. Device
/// rules are left as they are unless `resources` carries some.
pub fn update(store: &StateStore, id: &str, resources: &LinuxResources) -> Result<()> {
    let c = super::load(store, id)?;
    if c.status == Status::Stopped {
        return Err(Error::precondition(format!(
            "cannot update container {id:?}: it is stopped"
        )));
    }
    cgroups::from_state(&c.state.cgroup).apply(resources)?;
    let mut state = c.state;
    let mut linux = state.spec.linux().clone().unwrap_or_default();
    linux.set_resources(Some(merge(
        linux.resources().clone().unwrap_or_default(),
        resources,
    )));
    state.spec.set_linux(Some(linux));
    c.dir.save(&state)
}

/// `base` with every section `update` sets replaced.
fn merge(mut base: LinuxResources, update: &LinuxResources) -> LinuxResources {
    if update.memory().is_some() {
        base.set_memory(*update.memory());
    }
    if update.cpu().is_some() {
        base.set_cpu(update.cpu().clone());
    }
    if update.pids().is_some() {
        base.set_pids(*update.pids());
    }
    if update.block_io().is_some() {
        base.set_block_io(update.block_io().clone());
    }
    if update.hugepage_limits().is_some() {
        base.set_hugepage_limits(update.hugepage_limits().clone());
    }
    if update.network().is_some() {
        base.set_network(update.network().clone());
    }
    if update.unified().is_some() {
        base.set_unified(update.unified().clone());
    }
    if update.devices().is_some() {
        base.set_devices(update.devices().clone());
    }
    base
}
