//! The container lifecycle, one verb per file. Each verb locks the
//! container's directory for its whole duration.

mod checkpoint;
mod create;
mod delete;
mod events;
mod exec;
mod kill;
mod pause;
mod ps;
mod restore;
mod run;
mod signal;
mod start;
mod update;

pub use checkpoint::{
    checkpoint, parse_cgroup_mode, parse_empty_ns, parse_page_server, CheckpointOptions,
    CriuOptions,
};
pub use create::{create, socket_activation_fds, CreateOptions, Created, Launch};
pub use delete::delete;
pub use events::{stats, watch, Event};
pub use exec::{exec, ExecOptions};
pub use kill::{kill, signal_init};
pub use pause::{pause, resume};
pub use ps::pids;
pub use restore::{restore, RestoreOptions};
pub use run::run;
pub use signal::parse_signal;
pub use start::start;
pub use update::update;

use crate::error::Result;
use crate::state::{ContainerDir, ContainerState, StateStore, Status};

/// A locked container with its state and current status.
#[derive(Debug)]
pub struct Loaded {
    pub dir: ContainerDir,
    pub state: ContainerState,
    pub status: Status,
}

/// Lock and load container `id`.
pub fn load(store: &StateStore, id: &str) -> Result<Loaded> {
    let dir = store.get(id)?;
    let state = dir.load()?;
    let status = state.status(dir.path());
    Ok(Loaded { dir, state, status })
}

/// The OCI state of every container in the store (for `list`). Containers
/// being created (no state.json yet) are skipped.
pub fn list(store: &StateStore) -> Result<Vec<crate::state::OciState>> {
    let mut out = Vec::new();
    for id in store.ids()? {
        let dir = store.root().join(&id);
        let Ok(text) = std::fs::read(dir.join("state.json")) else {
            continue;
        };
        let Ok(state) = serde_json::from_slice::<ContainerState>(&text) else {
            continue;
        };
        let status = state.status(&dir);
        let mut oci = state.oci_state(status);
        oci.owner = owner_of(&dir);
        out.push(oci);
    }
    Ok(out)
}

/// Read container `id`'s state without taking its lock: state.json is
/// only ever replaced by rename, so a reader sees one version or the other.
fn read_state(store: &StateStore, id: &str) -> Result<(std::path::PathBuf, ContainerState)> {
    crate::state::validate_id(id)?;
    let dir = store.root().join(id);
    let text = std::fs::read(dir.join("state.json")).map_err(|_| crate::Error::not_found(id))?;
    let state = serde_json::from_slice(&text)
        .map_err(|e| crate::Error::internal(format!("{id}: corrupt state: {e}")))?;
    Ok((dir, state))
}

/// The OCI state of container `id` (what `state` prints).
pub fn state(store: &StateStore, id: &str) -> Result<crate::state::OciState> {
    let (dir, state) = read_state(store, id)?;
    let status = state.status(&dir);
    Ok(state.oci_state(status))
}

/// The config a container was created with.
pub fn spec_of(store: &StateStore, id: &str) -> Result<oci_spec::runtime::Spec> {
    Ok(read_state(store, id)?.1.spec)
}

/// The user name owning a state directory (what `list` shows as OWNER).
fn owner_of(dir: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::metadata(dir) else {
        return String::new();
    };
    let uid = nix::unistd::Uid::from_raw(meta.uid());
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(user)) => user.name,
        _ => format!("#{uid}"),
    }
}
