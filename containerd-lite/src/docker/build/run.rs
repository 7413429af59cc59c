//! RUN: the command runs in a real docker container made from the step's
//! image (so it gets the network, hosts files and confinement any
//! container gets), its output is relayed into the build's stream, and
//! once it exits its writable layer becomes the step's layer. As with
//! dockerd, the image's entrypoint is not used.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use serde_json::json;

use super::image::{commit_snapshot, copy_snapshot, BaseImage, NewLayer};
use super::output::Output;
use crate::docker::containers::registry::Container;
use crate::docker::containers::remove::{self, Removal};
use crate::docker::containers::{create, lifecycle};
use crate::docker::{Frontend, NAMESPACE};
use crate::grpc::backend::DEFAULT_SNAPSHOTTER;
use crate::logs::{LogReader, ReadOptions};
use crate::transfer::lease::TransferLease;
use crate::{Error, Result};

/// Mount points a runtime may create in a container's rootfs (when the
/// image lacks them); empty ones are left out of the step's layer, as
/// dockerd's init layer keeps them out of commits.
const RUNTIME_MOUNTPOINTS: &[&str] = &[
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/proc",
    "/sys",
    "/dev",
];

/// How the step ended when it did not make a layer.
#[derive(Debug)]
pub enum RunFailure {
    /// The command exited with this code.
    Exited(i64),
    /// Something else failed.
    Error(Error),
}

impl From<Error> for RunFailure {
    fn from(err: Error) -> Self {
        RunFailure::Error(err)
    }
}

/// What a RUN step runs.
#[derive(Debug, Clone)]
pub struct RunSpec {
    pub argv: Vec<String>,
    /// The image's environment plus the build arguments in scope.
    pub env: Vec<String>,
    /// `HostConfig.NetworkMode` (empty: the default network).
    pub network_mode: String,
    /// Remove the container after a success (`rm`).
    pub remove: bool,
    /// Remove the container after a failure too (`forcerm`, or `rm`: a
    /// failed build leaves nothing behind).
    pub remove_on_failure: bool,
}

/// Runs `spec` on `image` and returns the layer it made. The container is
/// removed afterwards as `spec` says.
pub async fn run(
    frontend: &Frontend,
    out: &Output,
    lease: &Arc<TransferLease>,
    image: &BaseImage,
    spec: RunSpec,
) -> std::result::Result<NewLayer, RunFailure> {
    let image_id = image
        .id
        .as_ref()
        .ok_or_else(|| Error::invalid("RUN needs a base image with a shell, not scratch"))?
        .to_string();
    let mut host_config = json!({});
    if !spec.network_mode.is_empty() {
        host_config["NetworkMode"] = json!(spec.network_mode);
    }
    let body = json!({
        "Image": image_id,
        "Cmd": spec.argv,
        "Entrypoint": [],
        "Env": spec.env,
        "AttachStdout": true,
        "AttachStderr": true,
        "HostConfig": host_config,
    });
    let body = serde_json::from_value(body)
        .map_err(|err| Error::internal(format!("a RUN container's config: {err}")))?;
    let record = image
        .record
        .clone()
        .ok_or_else(|| Error::internal("a build step's image has no record"))?;
    let creator = frontend.clone();
    let created = tokio::task::spawn_blocking(move || {
        let image = creator.catalog.by_record(&record)?;
        create::create_from_image(&creator, None, body, image)
    })
    .await
    .map_err(|err| Error::internal(format!("container create task: {err}")))??;
    let container = frontend.containers.resolve(&created.id)?;
    frontend
        .journal
        .record(crate::docker::containers::api::event(
            &container,
            "create",
            &[],
        ));
    out.step(format!(" ---> Running in {}\n", short(&container.id)));
    let ran = run_container(frontend, out, &container).await;
    let layer = match ran {
        Ok(0) => commit(frontend, lease, image, &container, !spec.remove).await,
        Ok(code) => Err(RunFailure::Exited(code)),
        Err(err) => Err(RunFailure::Error(err)),
    };
    let remove = if layer.is_ok() {
        spec.remove
    } else {
        spec.remove_on_failure
    };
    if remove {
        let removal = Removal {
            force: true,
            volumes: true,
        };
        if let Err(err) = remove::remove(frontend, &container, removal).await {
            tracing::warn!(id = %container.id, "removing a build container: {err}");
        } else if layer.is_ok() {
            out.step(format!(
                "Removing intermediate container {}\n",
                short(&container.id)
            ));
        }
    }
    layer
}

/// Starts the container, relays its output until it exits and returns
/// its exit code (once its task is cleaned up and its rootfs unmounted).
async fn run_container(
    frontend: &Frontend,
    out: &Output,
    container: &Arc<Container>,
) -> Result<i64> {
    let seen = container.progress().borrow().exits;
    let log_path = container.record().log_path;
    lifecycle::start(frontend, container).await?;
    let reader = tokio::task::spawn_blocking(move || LogReader::open(&log_path))
        .await
        .map_err(|err| Error::internal(format!("opening a build log: {err}")))??;
    let watched = container.clone();
    let exited = async move { watched.exited_after(seen).await };
    let mut entries = Box::pin(reader.follow(ReadOptions::default(), exited));
    let mut cancelled = false;
    loop {
        tokio::select! {
            entry = entries.next() => match entry {
                Some(Ok(entry)) => out.step(String::from_utf8_lossy(&entry.bytes).into_owned()),
                Some(Err(err)) => {
                    tracing::debug!("reading a build container's log: {err}");
                    break;
                }
                None => break,
            },
            // The client went away (docker build interrupted): the step
            // stops now rather than when its command would have ended.
            () = out.closed(), if !cancelled => {
                cancelled = true;
                if let Err(err) = lifecycle::kill(frontend, container, None).await {
                    tracing::debug!(id = %container.id, "killing a cancelled build step: {err}");
                }
            }
        }
    }
    container.exited_after(seen).await;
    container.cleaned().await;
    if cancelled {
        return Err(Error::unavailable("the client went away: build cancelled"));
    }
    Ok(container.record().state.exit_code)
}

/// Makes the exited container's writable layer the step's layer.
async fn commit(
    frontend: &Frontend,
    lease: &Arc<TransferLease>,
    image: &BaseImage,
    container: &Arc<Container>,
    keep_container: bool,
) -> std::result::Result<NewLayer, RunFailure> {
    let record = container.record();
    let backend = frontend.backend.clone();
    let lease = lease.clone();
    let image = image.clone();
    let mut mountpoints: Vec<String> = RUNTIME_MOUNTPOINTS.iter().map(|m| m.to_string()).collect();
    mountpoints.extend(record.mounts.iter().map(|m| m.destination.clone()));
    let key = record.snapshot_key.clone();
    let layer = tokio::task::spawn_blocking(move || -> Result<NewLayer> {
        let snapshotter = backend.snapshotters.get(DEFAULT_SNAPSHOTTER)?;
        let mounts = snapshotter.mounts(NAMESPACE, &key)?;
        if keep_container {
            // The container keeps its filesystem as it is, mount points too.
            return copy_snapshot(&backend, &lease, &image, &key);
        }
        if let Some(upper) = upper_dir(&mounts) {
            drop_mountpoints(&upper, &mountpoints)?;
        }
        commit_snapshot(&backend, &lease, &image, &key)
    })
    .await
    .map_err(|err| Error::internal(format!("build commit task: {err}")))??;
    Ok(layer)
}

/// The directory a snapshot's writes land in.
fn upper_dir(mounts: &[crate::snapshots::mount::Mount]) -> Option<PathBuf> {
    match mounts {
        [m] if m.r#type == "overlay" => m.option("upperdir").map(PathBuf::from),
        [m] if m.is_bind() => Some(PathBuf::from(&m.source)),
        _ => None,
    }
}

/// Removes from `upper` the empty files and directories a runtime made as
/// mount points, and then the directories made only to hold them.
fn drop_mountpoints(upper: &Path, mountpoints: &[String]) -> Result<()> {
    for mountpoint in mountpoints {
        let relative = mountpoint.trim_start_matches('/');
        if relative.is_empty() {
            continue;
        }
        let mut path = upper.join(relative);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let empty = if meta.is_dir() {
            is_plain_empty_dir(&path)
        } else {
            meta.is_file() && meta.len() == 0
        };
        if !empty {
            continue;
        }
        let removed = if meta.is_dir() {
            std::fs::remove_dir(&path)
        } else {
            std::fs::remove_file(&path)
        };
        if let Err(err) = removed {
            tracing::debug!(path = %path.display(), "leaving a mount point in the layer: {err}");
            continue;
        }
        while let Some(parent) = path.parent().map(Path::to_path_buf) {
            if parent == upper
                || !is_plain_empty_dir(&parent)
                || std::fs::remove_dir(&parent).is_err()
            {
                break;
            }
            path = parent;
        }
    }
    Ok(())
}

/// An empty directory that is not an overlay opaque one (removing that
/// would bring back what it hides).
fn is_plain_empty_dir(path: &Path) -> bool {
    let empty = std::fs::read_dir(path).is_ok_and(|mut entries| entries.next().is_none());
    let opaque =
        rustix::fs::lgetxattr(path, crate::diff::OVERLAY_OPAQUE_XATTR, &mut [0u8; 4]).is_ok();
    empty && !opaque
}

/// The 12 characters docker shows of an ID.
pub fn short(id: &str) -> String {
    id.trim_start_matches("sha256:").chars().take(12).collect()
}
