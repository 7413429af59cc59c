//! The `overlayfs` snapshotter: each snapshot holds only its own changes in
//! `<id>/fs` (an overlay upper dir, with `<id>/work` as its work dir when
//! active); parents are stacked as overlay lower dirs, newest first.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::{Context, Result};

use super::backend::{fs_dir, Backend};
use super::tree::disk_usage;
use super::{Kind, Mount, Usage};

/// Stacks snapshots with the kernel's overlay filesystem.
#[derive(Debug)]
pub struct Overlay {
    /// Mount with `index=off` where the kernel knows the option: with the
    /// inode index on, a layer could not be a lower dir of several mounts
    /// whose upper dirs differ.
    index_off: bool,
}

impl Overlay {
    /// The backend, with the mount options this kernel supports.
    pub fn new() -> Self {
        Overlay {
            index_off: Path::new("/sys/module/overlay/parameters/index").exists(),
        }
    }

    fn overlay(&self, mut options: Vec<String>) -> Mount {
        if self.index_off {
            options.insert(0, "index=off".into());
        }
        Mount {
            r#type: "overlay".into(),
            source: "overlay".into(),
            target: None,
            options,
        }
    }
}

impl Default for Overlay {
    fn default() -> Self {
        Self::new()
    }
}

impl Backend for Overlay {
    fn name(&self) -> &'static str {
        "overlayfs"
    }

    fn create(&self, dir: &Path, kind: Kind, _parents: &[PathBuf]) -> Result<()> {
        let fs = fs_dir(dir);
        fs::create_dir(&fs).with_context(|| format!("create {}", fs.display()))?;
        if kind == Kind::Active {
            let work = dir.join("work");
            fs::create_dir(&work).with_context(|| format!("create {}", work.display()))?;
        }
        Ok(())
    }

    fn mounts(&self, dir: &Path, kind: Kind, parents: &[PathBuf]) -> Vec<Mount> {
        let lower = || {
            let dirs: Vec<String> = parents
                .iter()
                .map(|p| fs_dir(p).display().to_string())
                .collect();
            format!("lowerdir={}", dirs.join(":"))
        };
        match (kind, parents) {
            // Nothing below: the snapshot's own dir is the whole tree.
            (_, []) => vec![Mount::bind(&fs_dir(dir), kind == Kind::View)],
            // A view of one layer needs no overlay: bind it read-only.
            (Kind::View, [parent]) => vec![Mount::bind(&fs_dir(parent), true)],
            // A view of a stack: overlay with lower dirs only is read-only.
            (Kind::View, _) => vec![self.overlay(vec![lower()])],
            _ => vec![self.overlay(vec![
                format!("workdir={}", dir.join("work").display()),
                format!("upperdir={}", fs_dir(dir).display()),
                lower(),
            ])],
        }
    }

    fn usage(&self, dir: &Path) -> Result<Usage> {
        disk_usage(&fs_dir(dir))
    }

    fn can_rebase(&self) -> bool {
        true
    }
}
