//! `ps`: the processes of a container (every pid in its cgroup).

use crate::cgroups;
use crate::error::{Error, Result};
use crate::state::StateStore;

/// Host pids of every process in the container's cgroup, sorted.
pub fn pids(store: &StateStore, id: &str) -> Result<Vec<i32>> {
    let (_, state) = super::read_state(store, id)?;
    let mut pids = cgroups::from_state(&state.cgroup)
        .pids()
        .map_err(|e| Error::internal(format!("container {id:?}: {e}")))?;
    pids.sort_unstable();
    Ok(pids)
}
