//! What differs between snapshotters: how a snapshot's directory is laid
//! out and how it is mounted. Everything else (metadata, ids, the rules of
//! the contract) is shared in [`super::Snapshotter`].

use std::fmt;
use std::path::{Path, PathBuf};

use crate::error::Result;

use super::{Kind, Mount, Usage};

/// A storage layout for snapshots. `dir` is a snapshot's own directory,
/// `<root>/snapshots/<id>`; `parents` are the directories of its ancestors,
/// nearest first.
pub trait Backend: Send + Sync + fmt::Debug {
    /// The snapshotter's name as clients select it (`overlayfs`, `native`).
    fn name(&self) -> &'static str;

    /// Fills the new, empty directory `dir` for a snapshot of `kind`.
    fn create(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Result<()>;

    /// The mounts that present the snapshot's tree.
    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Vec<Mount>;

    /// Space and inodes the snapshot itself uses (not its parents).
    fn usage(&self, dir: &Path) -> Result<Usage>;

    /// Whether a snapshot holds only its own changes, independent of its
    /// parents, so one made without a parent can be committed onto one
    /// (layers can then be applied in parallel). `upper_dir` is then where
    /// those changes live.
    fn can_rebase(&self) -> bool {
        false
    }

    /// Where a rebasable snapshot's own changes live.
    fn upper_dir(&self, dir: &Path) -> PathBuf {
        fs_dir(dir)
    }
}

/// The directory holding a snapshot's tree (or its upper layer).
pub fn fs_dir(dir: &Path) -> PathBuf {
    dir.join("fs")
}
