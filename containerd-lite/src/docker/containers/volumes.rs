//! The volumes a container mounts, made (or found) at create time and
//! filled from the image on first use.

use super::record::{MountKind, Record};
use crate::docker::Frontend;
use crate::{Error, Result};

/// Gives every volume mount of `record` its volume: named ones are made
/// if missing, anonymous ones get a fresh name.
pub fn provide(_frontend: &Frontend, record: &mut Record) -> Result<()> {
    if let Some(volume) = record.mounts.iter().find(|m| m.kind == MountKind::Volume) {
        return Err(Error::unimplemented(format!(
            "volume mount at {}: volumes are not served yet",
            volume.destination
        )));
    }
    Ok(())
}

/// Removes the anonymous volumes of `record` (`docker rm -v`).
pub fn remove_anonymous(_frontend: &Frontend, _record: &Record) -> Result<()> {
    Ok(())
}
