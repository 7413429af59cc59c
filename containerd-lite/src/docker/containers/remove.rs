//! Removing docker containers: `docker rm` (with `--force`, `-v`) and
//! `docker container prune`. A removal takes down, in order, the task,
//! the network, the snapshot, the containerd record, the anonymous
//! volumes asked for, and the container's directory (its log with it).

use std::sync::Arc;
use std::time::Duration;

use super::record::Status;
use super::registry::Container;
use crate::docker::{Frontend, NAMESPACE};
use crate::{Error, ErrorKind, Result};

/// How long a forced removal waits for the killed task to be reported.
const KILL_WAIT: Duration = Duration::from_secs(30);

/// What `docker rm` asked for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Removal {
    /// Kill it first if it runs.
    pub force: bool,
    /// Remove its anonymous volumes too.
    pub volumes: bool,
}

/// Removes `container`. A running (or paused) one is refused with 409
/// unless forced.
pub async fn remove(frontend: &Frontend, container: &Arc<Container>, how: Removal) -> Result<()> {
    let _operation = container.operation().await;
    if container.progress().borrow().removed {
        return Err(Error::not_found(format!(
            "No such container: {}",
            container.id
        )));
    }
    let status = container.status();
    if status.is_active() && !how.force {
        let what = if status == Status::Paused {
            "paused"
        } else {
            "running"
        };
        return Err(Error::precondition(format!(
            "You cannot remove a {what} container {}. Stop the container before attempting removal or force remove",
            container.id
        )));
    }
    let seen = container.progress().borrow().exits;
    container.update(|r| r.state.status = Status::Removing)?;
    if matches!(status, Status::Running | Status::Paused) {
        if let Ok(task) = frontend.backend.tasks.get(NAMESPACE, &container.id) {
            if status == Status::Paused {
                let _ = task
                    .client()
                    .resume(
                        crate::runtime::shim::ctx(),
                        &containerd_shim_protos::api::ResumeRequest {
                            id: container.id.clone(),
                            ..Default::default()
                        },
                    )
                    .await;
            }
            let killed = task
                .client()
                .kill(
                    crate::runtime::shim::ctx(),
                    &containerd_shim_protos::api::KillRequest {
                        id: container.id.clone(),
                        signal: 9,
                        all: true,
                        ..Default::default()
                    },
                )
                .await;
            if let Err(err) = killed {
                tracing::debug!(id = %container.id, "force remove: SIGKILL: {err}");
            }
            if tokio::time::timeout(KILL_WAIT, container.exited_after(seen))
                .await
                .is_err()
            {
                tracing::warn!(id = %container.id, "force remove: no exit reported after SIGKILL; removing the task anyway");
            }
        }
    }
    dismantle(frontend, container, how).await
}

/// Takes down what the container holds and forgets it.
async fn dismantle(frontend: &Frontend, container: &Arc<Container>, how: Removal) -> Result<()> {
    container.cleaned().await;
    let id = container.id.clone();
    let record = container.record();
    match frontend.backend.tasks.delete(NAMESPACE, &id).await {
        Ok(_) => {}
        Err(err) if err.kind == ErrorKind::NotFound => {}
        Err(err) => return Err(err.context(format!("removing the task of container {id}"))),
    }
    let _ = frontend.backend.tasks.delete_exited(NAMESPACE, &id);
    frontend.network.teardown(&id).await?;
    let backend = frontend.backend.clone();
    let (snapshotter, key) = (record.snapshotter.clone(), record.snapshot_key.clone());
    let blocking_id = id.clone();
    tokio::task::spawn_blocking(move || -> Result<()> {
        match backend
            .snapshotters
            .get(&snapshotter)?
            .remove(NAMESPACE, &key)
        {
            Ok(()) => {}
            Err(err) if err.kind == ErrorKind::NotFound => {}
            Err(err) => {
                return Err(err.context(format!("removing the rootfs of container {blocking_id}")))
            }
        }
        match backend.containers.delete(NAMESPACE, &blocking_id) {
            Ok(()) => {}
            Err(err) if err.kind == ErrorKind::NotFound => {}
            Err(err) => return Err(err),
        }
        Ok(())
    })
    .await
    .map_err(|err| Error::internal(format!("container removal task: {err}")))??;
    frontend.containers.remove(container)?;
    frontend.execs.forget_container(&container.id);
    if how.volumes {
        super::volumes::remove_anonymous(frontend, &record)?;
    }
    frontend.backend.gc.schedule();
    Ok(())
}

/// `docker container prune`: every container not running that
/// `keep` does not hold back. Returns the IDs removed.
pub async fn prune(
    frontend: &Frontend,
    keep: impl Fn(&super::record::Record) -> bool,
) -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for container in frontend.containers.all() {
        let record = container.record();
        if record.state.status.is_active()
            || record.state.status == Status::Removing
            || keep(&record)
        {
            continue;
        }
        match remove(frontend, &container, Removal::default()).await {
            Ok(()) => removed.push(container.id.clone()),
            // Started or removed meanwhile.
            Err(err)
                if matches!(
                    err.kind,
                    ErrorKind::FailedPrecondition | ErrorKind::NotFound
                ) => {}
            Err(err) => return Err(err),
        }
    }
    Ok(removed)
}
