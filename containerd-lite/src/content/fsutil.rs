//! Crash-safe file primitives shared by the content store.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

use crate::error::Context;
use crate::{Error, Result};

/// Writes `bytes` to `path` so that a crash leaves either the old file or
/// the new one: temp file beside it, fsync, rename, fsync the directory.
/// Callers serialise writers of one path (the content store's ref lock).
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::internal(format!(
            "{}: not a file path",
            path.display()
        )));
    };
    let temp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .with_context(|| temp.display())?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| temp.display())?;
    drop(file);
    fs::rename(&temp, path).with_context(|| format!("rename to {}", path.display()))?;
    sync_dir(dir)
}

/// Flushes a directory's entries (a rename or create within it) to disk.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync {}", dir.display()))
}
