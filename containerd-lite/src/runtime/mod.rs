//! The runtime manager: one shim per task, as containerd's
//! `io.containerd.runtime.v2.task` plugin does it.
//!
//! berthd keeps no process state of its own. Each task has a bundle
//! directory `<state>/<namespace>/<id>` holding what the shim needs
//! (config.json, rootfs/) and what berthd needs to find the shim again
//! (`address`, `shim-binary-path`). On start, [`TaskManager::restore`]
//! re-adopts every shim that still answers and cleans up after the ones that
//! died meanwhile. Shims forward their events to the ttrpc endpoint served
//! by [`forward`]; the death of a shim is noticed through a pidfd and turned
//! into the exit (and cleanup) containerd would report.

pub mod bundle;
pub mod forward;
pub mod shim;

use crate::error::{Error, Result};
use bundle::Bundle;
use containerd_shim_protos::api;
use containerd_shim_protos::events::task::{TaskDelete, TaskExit};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::{Message, MessageField};
use shim::{Shim, ShimBinaries};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::sync::watch;

/// An event from a shim (or made up for a dead one), in the wire form
/// containerd uses.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskEvent {
    pub namespace: String,
    pub topic: String,
    pub timestamp: SystemTime,
    pub type_url: String,
    pub value: Vec<u8>,
}

/// Where task events go (berthd's event exchange).
pub trait EventSink: Send + Sync + 'static {
    fn publish(&self, event: TaskEvent);
}

/// How the manager finds and starts shims.
#[derive(Debug, Clone)]
pub struct Config {
    /// Bundles live in `<state_dir>/<namespace>/<id>`.
    pub state_dir: PathBuf,
    /// berthd's gRPC socket (`-address` for shims).
    pub grpc_address: PathBuf,
    /// The ttrpc socket shims forward events to (`TTRPC_ADDRESS`).
    pub ttrpc_address: PathBuf,
    /// `-publish-binary` for shims.
    pub publish_binary: PathBuf,
    pub binaries: ShimBinaries,
    pub debug: bool,
}

/// What `create` needs besides the spec.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub runtime: String,
    pub rootfs: Vec<api::Mount>,
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
    pub terminal: bool,
    /// Runtime options (e.g. `containerd.runc.v1.Options`), passed on to
    /// the shim at start and create.
    pub options: Option<Any>,
}

/// The exit berthd reports for a task whose shim died.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShimGone {
    pub exit_status: u32,
    pub exited_at: SystemTime,
}

/// A task: its bundle and the shim serving it.
pub struct Task {
    pub namespace: String,
    pub id: String,
    pub runtime: String,
    pub bundle: Bundle,
    pub shim: Shim,
    /// The init process's pid, once known (0 before).
    pid: AtomicU32,
    /// Set once the shim is gone (after cleanup).
    gone: watch::Sender<Option<ShimGone>>,
}

impl std::fmt::Debug for Task {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Task")
            .field("namespace", &self.namespace)
            .field("id", &self.id)
            .field("runtime", &self.runtime)
            .field("bundle", &self.bundle.path())
            .field("shim_pid", &self.shim.pid())
            .finish()
    }
}

impl Task {
    /// The task API of the shim.
    pub fn client(&self) -> &containerd_shim_protos::shim_async::TaskClient {
        self.shim.client()
    }

    /// The pid of the task's init process (0 if not known yet).
    pub fn pid(&self) -> u32 {
        match self.pid.load(Ordering::Relaxed) {
            0 => self.shim.task_pid(),
            pid => pid,
        }
    }

    /// Resolves when the shim has died and been cleaned up.
    pub async fn shim_gone(&self) -> ShimGone {
        let mut rx = self.gone.subscribe();
        loop {
            if let Some(gone) = *rx.borrow_and_update() {
                return gone;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}

type Key = (String, String);

pub struct TaskManager {
    config: Config,
    tasks: Mutex<HashMap<Key, Arc<Task>>>,
    /// Tasks whose shim died, cleaned up but not yet deleted by a client:
    /// what they are reported as (stopped, with this exit) until then.
    exited: Mutex<HashMap<Key, ExitedTask>>,
    /// Deleted tasks whose shim was asked to exit and has not yet: a new
    /// task of the same id waits for it, since its shim would take the
    /// same socket and find the old one still answering.
    exiting: Mutex<HashMap<Key, Arc<Task>>>,
    events: Arc<dyn EventSink>,
}

/// A task whose shim died: cleaned up, kept only as its exit until a
/// client deletes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExitedTask {
    pub namespace: String,
    pub id: String,
    /// The pid its init process had.
    pub pid: u32,
    pub exit: ShimGone,
}

impl std::fmt::Debug for TaskManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskManager")
            .field("state_dir", &self.config.state_dir)
            .finish_non_exhaustive()
    }
}

impl TaskManager {
    pub fn new(config: Config, events: Arc<dyn EventSink>) -> Arc<TaskManager> {
        Arc::new(TaskManager {
            config,
            tasks: Mutex::new(HashMap::new()),
            exited: Mutex::new(HashMap::new()),
            exiting: Mutex::new(HashMap::new()),
            events,
        })
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Task>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_exited(&self) -> std::sync::MutexGuard<'_, HashMap<Key, ExitedTask>> {
        self.exited.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_exiting(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Task>>> {
        self.exiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks a deleted task's shim to exit, and remembers it until it has
    /// (bounded), for [`Self::create`] of the same id to wait on.
    async fn let_shim_exit(self: &Arc<Self>, key: Key, task: Arc<Task>) {
        task.shim.request_shutdown().await;
        self.lock_exiting().insert(key.clone(), task.clone());
        let manager = self.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(shim::SHUTDOWN_TIMEOUT, task.shim.exited()).await;
            let mut exiting = manager.lock_exiting();
            if exiting.get(&key).is_some_and(|t| Arc::ptr_eq(t, &task)) {
                exiting.remove(&key);
            }
        });
    }

    /// The task `id` if its shim died and nobody deleted it yet.
    pub fn exited(&self, namespace: &str, id: &str) -> Option<ExitedTask> {
        self.lock_exited()
            .get(&(namespace.to_string(), id.to_string()))
            .cloned()
    }

    /// Every task of `namespace` whose shim died and that is not deleted
    /// yet, by id.
    pub fn list_exited(&self, namespace: &str) -> Vec<ExitedTask> {
        let mut exited: Vec<_> = self
            .lock_exited()
            .values()
            .filter(|t| t.namespace == namespace)
            .cloned()
            .collect();
        exited.sort_by(|a, b| a.id.cmp(&b.id));
        exited
    }

    /// Forget a task whose shim died (its delete), publishing the
    /// `/tasks/delete` its shim can no longer send: its exit, or NotFound.
    pub fn delete_exited(&self, namespace: &str, id: &str) -> Result<ExitedTask> {
        let exited = self
            .lock_exited()
            .remove(&(namespace.to_string(), id.to_string()))
            .ok_or_else(|| {
                Error::not_found(format!("task {id} in namespace {namespace}: not found"))
            })?;
        self.publish(
            namespace,
            "/tasks/delete",
            "containerd.events.TaskDelete",
            TaskDelete {
                container_id: exited.id.clone(),
                id: exited.id.clone(),
                pid: exited.pid,
                exit_status: exited.exit.exit_status,
                exited_at: MessageField::some(shim::timestamp(exited.exit.exited_at)),
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap_or_default(),
        );
        Ok(exited)
    }

    pub fn get(&self, namespace: &str, id: &str) -> Result<Arc<Task>> {
        self.lock()
            .get(&(namespace.to_string(), id.to_string()))
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!("task {id} in namespace {namespace}: not found"))
            })
    }

    pub fn list(&self, namespace: &str) -> Vec<Arc<Task>> {
        let mut tasks: Vec<_> = self
            .lock()
            .values()
            .filter(|t| t.namespace == namespace)
            .cloned()
            .collect();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        tasks
    }

    /// Write the bundle, start the shim and create the task in it. On
    /// failure the shim is stopped and the bundle removed.
    pub async fn create(
        self: &Arc<Self>,
        namespace: &str,
        id: &str,
        spec: &[u8],
        opts: CreateOptions,
    ) -> Result<Arc<Task>> {
        let key = (namespace.to_string(), id.to_string());
        if self.lock().contains_key(&key) || self.lock_exited().contains_key(&key) {
            return Err(Error::already_exists(format!(
                "task {id} in namespace {namespace}: already exists"
            )));
        }
        let binary = self.config.binaries.resolve(&opts.runtime)?;
        let previous = self.lock_exiting().get(&key).cloned();
        if let Some(previous) = previous {
            let _ = tokio::time::timeout(shim::SHUTDOWN_TIMEOUT, previous.shim.exited()).await;
        }
        let began = std::time::Instant::now();
        let bundle = Bundle::create(
            &self.config.state_dir,
            namespace,
            id,
            spec,
            &binary,
            &opts.runtime,
        )?;
        // `start` gets the options as a marshalled Any on stdin, as from containerd.
        let options_bytes = opts
            .options
            .as_ref()
            .and_then(|a| a.write_to_bytes().ok())
            .unwrap_or_default();
        let bundle_written = began.elapsed();
        let shim = match Shim::start(
            &self.config,
            &binary,
            namespace,
            id,
            &bundle,
            &options_bytes,
        )
        .await
        {
            Ok(shim) => shim,
            Err(e) => {
                let _ = shim::cleanup(&self.config, &binary, namespace, id, &bundle).await;
                let _ = bundle.remove();
                return Err(e);
            }
        };
        let request = api::CreateTaskRequest {
            id: id.to_string(),
            bundle: bundle.path().to_string_lossy().into_owned(),
            rootfs: opts.rootfs.clone(),
            terminal: opts.terminal,
            stdin: opts.stdin.clone(),
            stdout: opts.stdout.clone(),
            stderr: opts.stderr.clone(),
            options: opts.options.clone().into(),
            ..Default::default()
        };
        let shim_started = began.elapsed();
        let created = match shim.client().create(shim::ctx(), &request).await {
            Ok(created) => created,
            Err(e) => {
                let err = shim::status_error(e).context(format!("creating task {id}"));
                shim.shutdown().await;
                let _ = shim::cleanup(&self.config, &binary, namespace, id, &bundle).await;
                let _ = bundle.remove();
                return Err(err);
            }
        };
        tracing::debug!(
            namespace,
            id,
            ?bundle_written,
            ?shim_started,
            created = ?began.elapsed(),
            "task created"
        );
        let task = self.adopt(namespace, id, &opts.runtime, bundle, shim);
        task.pid.store(created.pid, Ordering::Relaxed);
        Ok(task)
    }

    /// Track a task and watch its shim.
    fn adopt(
        self: &Arc<Self>,
        namespace: &str,
        id: &str,
        runtime: &str,
        bundle: Bundle,
        shim: Shim,
    ) -> Arc<Task> {
        let task = Arc::new(Task {
            namespace: namespace.to_string(),
            id: id.to_string(),
            runtime: runtime.to_string(),
            bundle,
            shim,
            pid: AtomicU32::new(0),
            gone: watch::channel(None).0,
        });
        self.lock()
            .insert((namespace.to_string(), id.to_string()), task.clone());
        let manager = Arc::downgrade(self);
        let watched = task.clone();
        tokio::spawn(async move {
            watched.shim.exited().await;
            if let Some(manager) = manager.upgrade() {
                manager.after_shim_death(&watched).await;
            }
        });
        task
    }

    /// Delete the task in its shim, stop the shim, remove the bundle.
    pub async fn delete(
        self: &Arc<Self>,
        namespace: &str,
        id: &str,
    ) -> Result<api::DeleteResponse> {
        let task = self.get(namespace, id)?;
        let answer = task
            .client()
            .delete(
                shim::ctx(),
                &api::DeleteRequest {
                    id: id.to_string(),
                    ..Default::default()
                },
            )
            .await
            .map_err(shim::status_error);
        // A shim that does not know its task (a create cut short when
        // berthd died) is shut down and cleaned up after as a dead one
        // is, as containerd does; any other error keeps the task.
        if let Err(err) = &answer {
            if err.kind != crate::ErrorKind::NotFound {
                return Err(err.clone().context(format!("deleting task {id}")));
            }
        }
        let key = (namespace.to_string(), id.to_string());
        self.lock().remove(&key);
        self.let_shim_exit(key, task.clone()).await;
        let response = match answer {
            Ok(response) => response,
            Err(_) => {
                tracing::warn!(%namespace, %id, "the shim does not know its task: cleaning up after it");
                let binary = task.bundle.shim_binary();
                shim::cleanup(&self.config, &binary, namespace, id, &task.bundle)
                    .await
                    .map_err(|err| err.context(format!("deleting task {id}")))?
            }
        };
        task.bundle.remove()?;
        Ok(response)
    }

    /// After a shim died on its own: clean up as `shim delete` does, report
    /// the exit containerd would, drop the task.
    async fn after_shim_death(&self, task: &Arc<Task>) {
        let key = (task.namespace.clone(), task.id.clone());
        let still_ours = self.lock().get(&key).is_some_and(|t| Arc::ptr_eq(t, task));
        if !still_ours {
            return; // deleted normally
        }
        tracing::warn!(namespace = %task.namespace, id = %task.id, "shim died; cleaning up");
        let binary = task.bundle.shim_binary();
        let response = shim::cleanup(
            &self.config,
            &binary,
            &task.namespace,
            &task.id,
            &task.bundle,
        )
        .await;
        self.lock().remove(&key);
        let _ = task.bundle.remove();
        let gone = self.record_exit(&task.namespace, &task.id, task.pid(), &response);
        task.gone.send_replace(Some(gone));
    }

    /// Keep a dead shim's task as exited (with the exit its `shim delete`
    /// reported, or SIGKILL's 137 when it could not say) and publish the
    /// `/tasks/exit` the shim could not.
    fn record_exit(
        &self,
        namespace: &str,
        id: &str,
        pid: u32,
        cleanup: &Result<api::DeleteResponse>,
    ) -> ShimGone {
        let (exit_status, exited_at, pid) = match cleanup {
            Ok(r) => (
                r.exit_status,
                r.exited_at
                    .as_ref()
                    .map(shim::to_system_time)
                    .unwrap_or_else(SystemTime::now),
                if pid == 0 { r.pid } else { pid },
            ),
            Err(_) => (128 + 9, SystemTime::now(), pid),
        };
        let gone = ShimGone {
            exit_status,
            exited_at,
        };
        self.lock_exited().insert(
            (namespace.to_string(), id.to_string()),
            ExitedTask {
                namespace: namespace.to_string(),
                id: id.to_string(),
                pid,
                exit: gone,
            },
        );
        self.publish(
            namespace,
            "/tasks/exit",
            "containerd.events.TaskExit",
            TaskExit {
                container_id: id.to_string(),
                id: id.to_string(),
                pid,
                exit_status,
                exited_at: MessageField::some(shim::timestamp(exited_at)),
                ..Default::default()
            }
            .write_to_bytes()
            .unwrap_or_default(),
        );
        gone
    }

    fn publish(&self, namespace: &str, topic: &str, type_url: &str, value: Vec<u8>) {
        self.events.publish(TaskEvent {
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            timestamp: SystemTime::now(),
            type_url: type_url.to_string(),
            value,
        });
    }

    /// Re-adopt the shims of a previous berthd; clean up after dead ones
    /// (whose tasks are then reported exited until deleted).
    /// Returns how many tasks were adopted and how many cleaned up.
    pub async fn restore(self: &Arc<Self>) -> Result<(usize, usize)> {
        let (mut adopted, mut cleaned) = (0, 0);
        for bundle in Bundle::scan(&self.config.state_dir)? {
            let (namespace, id) = (bundle.namespace().to_string(), bundle.id().to_string());
            let binary = bundle.shim_binary();
            let reconnected = match Shim::reconnect(&bundle).await {
                Ok(shim) => match knows_its_task(&shim, &id).await {
                    Ok(()) => Ok(shim),
                    Err(err) => {
                        // A create cut short: nobody will start it.
                        shim.shutdown().await;
                        Err(err)
                    }
                },
                Err(err) => Err(err),
            };
            match reconnected {
                Ok(shim) => {
                    let runtime = bundle.runtime();
                    self.adopt(&namespace, &id, &runtime, bundle, shim);
                    adopted += 1;
                }
                Err(e) => {
                    tracing::warn!(%namespace, %id, error = %e, "shim of a previous run is gone or lost its task; cleaning up");
                    let response =
                        shim::cleanup(&self.config, &binary, &namespace, &id, &bundle).await;
                    let _ = bundle.remove();
                    // Reported stopped, with its exit, until deleted.
                    self.record_exit(&namespace, &id, 0, &response);
                    cleaned += 1;
                }
            }
        }
        Ok((adopted, cleaned))
    }
}

/// Whether a shim found at start knows the task it was started for: one
/// whose create was cut short by a crash does not.
async fn knows_its_task(shim: &Shim, id: &str) -> Result<()> {
    let request = api::StateRequest {
        id: id.to_owned(),
        ..Default::default()
    };
    match shim.client().state(shim::ctx(), &request).await {
        Ok(_) => Ok(()),
        Err(err) => match shim::status_error(err) {
            err if err.kind == crate::ErrorKind::NotFound => {
                Err(err.context(format!("the shim of task {id} does not know it")))
            }
            // Any other answer: it is there; adopt it as before.
            _ => Ok(()),
        },
    }
}

/// The error kind a ttrpc status code stands for.
pub fn kind_of(code: containerd_shim_protos::ttrpc::Code) -> crate::error::ErrorKind {
    use crate::error::ErrorKind as K;
    use containerd_shim_protos::ttrpc::Code as C;
    match code {
        C::NOT_FOUND => K::NotFound,
        C::ALREADY_EXISTS => K::AlreadyExists,
        C::INVALID_ARGUMENT => K::InvalidArgument,
        C::FAILED_PRECONDITION => K::FailedPrecondition,
        C::UNAVAILABLE => K::Unavailable,
        C::UNIMPLEMENTED => K::Unimplemented,
        _ => K::Internal,
    }
}
