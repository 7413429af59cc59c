//! The `native` snapshotter, for filesystems overlay cannot stack on: each
//! snapshot is a full copy of its parent's tree in `<id>/fs`, mounted by a
//! bind mount.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

use super::backend::{fs_dir, Backend};
use super::tree::{copy_tree, disk_usage};
use super::{Kind, Mount, Usage};

/// Snapshots as plain directory copies.
#[derive(Debug, Default)]
pub struct Native;

impl Backend for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn create(&self, dir: &Path, _kind: Kind, parents: &[PathBuf]) -> Result<()> {
        let fs = fs_dir(dir);
        fs::create_dir(&fs).with_context(|| format!("create {}", fs.display()))?;
        if let Some(parent) = parents.first() {
            copy_tree(&fs_dir(parent), &fs)?;
        }
        Ok(())
    }

    fn mounts(&self, dir: &Path, kind: Kind, _parents: &[PathBuf]) -> Vec<Mount> {
        vec![Mount::bind(&fs_dir(dir), kind == Kind::View)]
    }

    fn usage(&self, dir: &Path) -> Result<Usage> {
        disk_usage(&fs_dir(dir))
    }
}
