//! One module per `berth` command.

pub mod checkpoint;
pub mod create;
pub mod delete;
pub mod events;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod restore;
pub mod run;
pub mod spec;
pub mod start;
pub mod state;
pub mod update;

use std::path::Path;

use berth_runtime::state::StateStore;

/// Open the state store at `--root`.
pub fn store(root: &Path) -> anyhow::Result<StateStore> {
    Ok(StateStore::open(root)?)
}
