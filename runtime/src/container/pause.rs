//! `pause` and `resume`: freeze and thaw every process of the container
//! through its cgroup's freezer (v1 `freezer.state`, v2 `cgroup.freeze`).

use crate::cgroups;
use crate::error::{Error, Result};
use crate::state::{StateStore, Status};

pub fn pause(store: &StateStore, id: &str) -> Result<()> {
    let c = super::load(store, id)?;
    if c.status != Status::Running {
        return Err(Error::precondition(format!(
            "cannot pause container {id:?}: it is {}, not running",
            c.status
        )));
    }
    cgroups::from_state(&c.state.cgroup).freeze(true)?;
    Ok(())
}

pub fn resume(store: &StateStore, id: &str) -> Result<()> {
    let c = super::load(store, id)?;
    if c.status != Status::Paused {
        return Err(Error::precondition(format!(
            "cannot resume container {id:?}: it is {}, not paused",
            c.status
        )));
    }
    cgroups::from_state(&c.state.cgroup).freeze(false)?;
    Ok(())
}
