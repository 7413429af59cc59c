//! The volumes a container mounts, given at create time: a named volume
//! is made if missing, an anonymous one (`-v /path`, an image's `VOLUME`)
//! is made under a random name; a volume still empty gets what the image
//! holds at the mount's destination (unless `nocopy`), owners and modes
//! kept, as dockerd does.

use std::collections::BTreeMap;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::record::{MountKind, Record};
use crate::docker::volumes::store::{is_empty_dir, Claims, ANONYMOUS_LABEL};
use crate::docker::volumes::{create_volume, remove_volume};
use crate::docker::{Frontend, NAMESPACE};
use crate::snapshots::mount::TempMount;
use crate::{Error, Result};

/// What [`provide`] made and holds: the volumes it created (removed again
/// if the create fails) and its claims on every volume it mounts
/// (released once the container is recorded).
#[derive(Debug)]
pub struct Provided {
    pub created: Vec<String>,
    pub claims: Claims,
}

/// Gives every volume mount of `record` its volume and source, filling
/// empty ones from the image (whose snapshot is `record.snapshot_key`).
pub fn provide(frontend: &Frontend, record: &mut Record) -> Result<Provided> {
    let mut created = Vec::new();
    // Anonymous mounts are the ones still without a name.
    let mut anonymous = Vec::new();
    let mut names = Vec::new();
    for mount in record
        .mounts
        .iter_mut()
        .filter(|m| m.kind == MountKind::Volume)
    {
        anonymous.push(mount.name.is_none());
        names.push(
            mount
                .name
                .get_or_insert_with(super::registry::new_id)
                .clone(),
        );
    }
    let claims = frontend.volumes.claim(names);
    let mut rootfs: Option<TempMount> = None;
    let filled = (|| -> Result<()> {
        let (snapshotter, key) = (record.snapshotter.clone(), record.snapshot_key.clone());
        for (mount, anonymous) in record
            .mounts
            .iter_mut()
            .filter(|m| m.kind == MountKind::Volume)
            .zip(anonymous)
        {
            let name = mount.name.clone().unwrap_or_default();
            let labels = if anonymous {
                BTreeMap::from([(ANONYMOUS_LABEL.to_owned(), String::new())])
            } else {
                BTreeMap::new()
            };
            let (volume, made) = create_volume(frontend, &name, labels, anonymous)?;
            if made {
                created.push(name.clone());
            }
            mount.source = volume.mountpoint.clone();
            if !mount.copy_image_data {
                continue;
            }
            let fill = frontend.volumes.fill_lock(&name);
            let _filling = fill.lock().unwrap_or_else(|e| e.into_inner());
            if is_empty_dir(&volume.mountpoint) {
                if rootfs.is_none() {
                    rootfs = Some(mount_image(frontend, &snapshotter, &key)?);
                }
                if let Some(root) = &rootfs {
                    copy_from_image(root.path(), &mount.destination, &volume.mountpoint)?;
                }
            }
        }
        Ok(())
    })();
    let released = match rootfs.take() {
        Some(mounted) => mounted.release(),
        None => Ok(()),
    };
    let outcome = filled.and(released);
    match outcome {
        Ok(()) => Ok(Provided { created, claims }),
        Err(err) => {
            drop(claims);
            undo(frontend, &created);
            Err(err)
        }
    }
}

/// Removes the volumes a failed create made.
pub fn undo(frontend: &Frontend, created: &[String]) {
    for name in created {
        if let Err(err) = remove_volume(frontend, name) {
            tracing::warn!(volume = %name, "undoing a container create: {err}");
        }
    }
}

/// The container's root filesystem, read-only, on a temporary directory.
fn mount_image(frontend: &Frontend, snapshotter: &str, key: &str) -> Result<TempMount> {
    let mounts = frontend
        .backend
        .snapshotters
        .get(snapshotter)?
        .mounts(NAMESPACE, key)?;
    let readonly: Vec<_> = mounts
        .iter()
        .map(super::lifecycle::readonly_mount)
        .collect();
    TempMount::new(&readonly)
}

/// Copies what the image holds at `destination` (resolved inside `root`,
/// symlinks never leading out of it) into the volume's `data` directory;
/// nothing when the image has nothing there.
fn copy_from_image(root: &Path, destination: &str, data: &Path) -> Result<()> {
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::from(std::io::Error::from(e)).context(root.display()))?;
    let relative = destination.trim_start_matches('/');
    if relative.is_empty() {
        return Ok(());
    }
    let source = match rustix::fs::openat2(
        &dir,
        relative,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    ) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::NOENT | rustix::io::Errno::NOTDIR) => return Ok(()),
        Err(e) => {
            return Err(
                Error::from(std::io::Error::from(e)).context(format!("the image's {destination}"))
            )
        }
    };
    // "/." so the walk starts at the directory, not at the fd's link.
    let path = format!(
        "/proc/self/fd/{}/.",
        std::os::fd::AsRawFd::as_raw_fd(&source)
    );
    crate::snapshots::tree::copy_tree(Path::new(&path), data)
        .map_err(|err| err.context(format!("copying the image's {destination} into a volume")))
}

/// Removes the anonymous volumes of `record` (`docker rm -v`, `--rm`);
/// ones another container still mounts stay.
pub fn remove_anonymous(frontend: &Frontend, record: &Record) -> Result<()> {
    for mount in record.mounts.iter().filter(|m| m.kind == MountKind::Volume) {
        let Some(name) = &mount.name else { continue };
        match frontend.volumes.get(name) {
            Ok(volume) if volume.anonymous => {}
            _ => continue,
        }
        let users: Vec<String> = frontend
            .containers
            .volume_users(name)
            .into_iter()
            .filter(|id| *id != record.id)
            .collect();
        if !users.is_empty() {
            continue;
        }
        if let Err(err) = remove_volume(frontend, name) {
            tracing::warn!(volume = %name, "removing an anonymous volume: {err}");
        }
    }
    Ok(())
}
