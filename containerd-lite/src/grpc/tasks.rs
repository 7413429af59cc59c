//! `containerd.services.tasks.v1.Tasks` over the runtime manager
//! ([`TaskManager`]): one shim per task, reached over ttrpc.
//!
//! Requests are translated to the shim's task API (containerd's
//! `containerd.task.v2.Task`); a shim's error keeps its kind (NotFound,
//! FailedPrecondition, ...) on the gRPC side. A task whose shim died is
//! reported STOPPED with the exit the manager recorded until it is deleted.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use berth_proto::containerd::services::tasks::v1::{
    tasks_server, CheckpointTaskRequest, CheckpointTaskResponse, CloseIoRequest, CreateTaskRequest,
    CreateTaskResponse, DeleteProcessRequest, DeleteResponse, DeleteTaskRequest,
    ExecProcessRequest, GetRequest, GetResponse, KillRequest, ListPidsRequest, ListPidsResponse,
    ListTasksRequest, ListTasksResponse, MetricsRequest, MetricsResponse, PauseTaskRequest,
    ResizePtyRequest, ResumeTaskRequest, StartRequest, StartResponse, UpdateTaskRequest,
    WaitRequest, WaitResponse,
};
use berth_proto::containerd::types::{Metric, Mount as WireMount};
use berth_proto::containerd::v1::types::{Process, ProcessInfo, Status as ProcessStatus};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any as ShimAny;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp as ShimTimestamp;
use containerd_shim_protos::protobuf::MessageField;
use tonic::{Request, Response, Status};

use super::backend::Snapshotters;
use super::{blocking, request};
use crate::events::{Envelope, Exchange};
use crate::metadata::{ContainerStore, Fields, Filter};
use crate::runtime::shim::{self, ctx, ctx_forever, status_error};
use crate::runtime::{CreateOptions, EventSink, ExitedTask, Task, TaskEvent, TaskManager};
use crate::{Error, ErrorKind, Result};

/// How long Wait gives the manager to clean up after a shim whose
/// connection broke, before reporting the broken connection instead.
const SHIM_GONE_GRACE: Duration = Duration::from_secs(15);

/// The Tasks service.
#[derive(Clone)]
pub struct TasksService {
    manager: Arc<TaskManager>,
    containers: ContainerStore,
    snapshotters: Snapshotters,
}

impl std::fmt::Debug for TasksService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TasksService").finish_non_exhaustive()
    }
}

impl TasksService {
    pub fn new(
        manager: Arc<TaskManager>,
        containers: ContainerStore,
        snapshotters: Snapshotters,
    ) -> Self {
        TasksService {
            manager,
            containers,
            snapshotters,
        }
    }

    /// The live task `id`. A task whose shim died can only be waited for,
    /// inspected or deleted: anything else is NotFound "process already
    /// finished", as containerd answers for a stopped process.
    fn live(&self, namespace: &str, id: &str) -> Result<Arc<Task>> {
        self.manager.get(namespace, id).map_err(|err| {
            if self.manager.exited(namespace, id).is_some() {
                Error::not_found(format!("task {id}: process already finished"))
            } else {
                err
            }
        })
    }

    /// The mounts of the container's root filesystem snapshot.
    async fn rootfs(
        &self,
        namespace: &str,
        snapshotter: &str,
        key: &str,
    ) -> Result<Vec<api::Mount>, Status> {
        let snapshotter = self.snapshotters.get(snapshotter)?;
        let (ns, key) = (namespace.to_string(), key.to_string());
        let mounts = blocking(move || snapshotter.mounts(&ns, &key)).await?;
        Ok(mounts
            .into_iter()
            .map(|m| api::Mount {
                type_: m.r#type,
                source: m.source,
                target: m.target.unwrap_or_default(),
                options: m.options,
                ..Default::default()
            })
            .collect())
    }
}

/// The shim events as envelopes on berthd's exchange.
#[derive(Debug, Clone)]
pub struct ExchangeSink(pub Exchange);

impl EventSink for ExchangeSink {
    fn publish(&self, event: TaskEvent) {
        let topic = event.topic.clone();
        let forwarded = self.0.forward(Envelope {
            timestamp: event.timestamp,
            namespace: event.namespace,
            topic: event.topic,
            event: prost_types::Any {
                type_url: event.type_url,
                value: event.value,
            },
        });
        if let Err(err) = forwarded {
            tracing::warn!(%topic, "dropping a shim event: {err}");
        }
    }
}

fn any_to_shim(any: Option<prost_types::Any>) -> MessageField<ShimAny> {
    match any {
        Some(any) => MessageField::some(ShimAny {
            type_url: any.type_url,
            value: any.value,
            ..Default::default()
        }),
        None => MessageField::none(),
    }
}

fn any_from_shim(any: MessageField<ShimAny>) -> Option<prost_types::Any> {
    any.into_option().map(|any| prost_types::Any {
        type_url: any.type_url,
        value: any.value,
    })
}

fn time_from_shim(ts: &MessageField<ShimTimestamp>) -> Option<prost_types::Timestamp> {
    ts.as_ref().map(|ts| prost_types::Timestamp {
        seconds: ts.seconds,
        nanos: ts.nanos,
    })
}

fn time_to_wire(at: SystemTime) -> Option<prost_types::Timestamp> {
    Some(at.into())
}

fn mount_from_wire(mount: WireMount) -> api::Mount {
    api::Mount {
        type_: mount.r#type,
        source: mount.source,
        target: mount.target,
        options: mount.options,
        ..Default::default()
    }
}

fn process_from_state(container_id: &str, state: api::StateResponse) -> Process {
    Process {
        container_id: container_id.to_string(),
        id: if state.exec_id.is_empty() {
            container_id.to_string()
        } else {
            state.exec_id.clone()
        },
        pid: state.pid,
        // The shim's task.Status uses containerd's numbers.
        status: state.status.value(),
        stdin: state.stdin,
        stdout: state.stdout,
        stderr: state.stderr,
        terminal: state.terminal,
        exit_status: state.exit_status,
        exited_at: time_from_shim(&state.exited_at),
    }
}

fn process_of_exited(task: &ExitedTask) -> Process {
    Process {
        container_id: task.id.clone(),
        id: task.id.clone(),
        pid: task.pid,
        status: ProcessStatus::Stopped as i32,
        exit_status: task.exit.exit_status,
        exited_at: time_to_wire(task.exit.exited_at),
        ..Default::default()
    }
}

async fn state(task: &Task, exec_id: &str) -> Result<api::StateResponse> {
    task.client()
        .state(
            ctx(),
            &api::StateRequest {
                id: task.id.clone(),
                exec_id: exec_id.to_string(),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| status_error(e).context(format!("task {}", task.id)))
}

/// What metrics filters see of a task.
struct TaskFields<'a> {
    id: &'a str,
    namespace: &'a str,
}

impl Fields for TaskFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [one] if one == "id" || one == "container_id" => Some(self.id.to_string()),
            [one] if one == "namespace" => Some(self.namespace.to_string()),
            _ => None,
        }
    }
}

/// What ListTasks filters see of a task: `id`, `container_id`, `pid`,
/// `status` (`running`, `stopped`, ... as `ctr task ls` prints them, in
/// lower case) and `exit_status`.
struct ProcessFields<'a>(&'a Process);

impl Fields for ProcessFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let process = self.0;
        match path {
            [one] => match one.as_str() {
                "id" => Some(process.id.clone()),
                "container_id" => Some(process.container_id.clone()),
                "pid" => Some(process.pid.to_string()),
                "status" => ProcessStatus::try_from(process.status)
                    .ok()
                    .map(|status| status.as_str_name().to_ascii_lowercase()),
                "exit_status" => Some(process.exit_status.to_string()),
                _ => None,
            },
            _ => None,
        }
    }
}

#[tonic::async_trait]
impl tasks_server::Tasks for TasksService {
    async fn create(
        &self,
        request: Request<CreateTaskRequest>,
    ) -> Result<Response<CreateTaskResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let req = request.into_inner();
        if req.checkpoint.is_some() {
            return Err(Error::unimplemented(format!(
                "task {}: restoring from a checkpoint is not supported",
                req.container_id
            ))
            .into());
        }
        let store = self.containers.clone();
        let (ns, id) = (namespace.clone(), req.container_id.clone());
        let container = blocking(move || store.get(&ns, &id)).await?;
        let spec = container
            .spec
            .as_ref()
            .map(|spec| spec.value.clone())
            .ok_or_else(|| Error::invalid(format!("container {}: no spec", container.id)))?;
        let rootfs = if req.rootfs.is_empty() && !container.snapshot_key.is_empty() {
            self.rootfs(&namespace, &container.snapshotter, &container.snapshot_key)
                .await?
        } else {
            req.rootfs.into_iter().map(mount_from_wire).collect()
        };
        let options = req.options.or_else(|| {
            container
                .runtime
                .options
                .clone()
                .map(super::containers::payload_to_wire)
        });
        let options = any_to_shim(options).into_option();
        let task = self
            .manager
            .create(
                &namespace,
                &container.id,
                &spec,
                CreateOptions {
                    runtime: container.runtime.name.clone(),
                    rootfs,
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    terminal: req.terminal,
                    options,
                },
            )
            .await?;
        Ok(Response::new(CreateTaskResponse {
            container_id: container.id,
            pid: task.pid(),
        }))
    }

    async fn start(
        &self,
        request: Request<StartRequest>,
    ) -> Result<Response<StartResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let req = request.into_inner();
        let task = self.live(&namespace, &req.container_id)?;
        let started = task
            .client()
            .start(
                ctx(),
                &api::StartRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| status_error(e).context(format!("starting task {}", req.container_id)))?;
        Ok(Response::new(StartResponse { pid: started.pid }))
    }

    async fn delete(
        &self,
        request: Request<DeleteTaskRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let id = request.into_inner().container_id;
        let Ok(task) = self.manager.get(&namespace, &id) else {
            // Not running: a task whose shim died, or NotFound.
            let exited = self.manager.delete_exited(&namespace, &id)?;
            return Ok(Response::new(DeleteResponse {
                id: exited.id,
                pid: exited.pid,
                exit_status: exited.exit.exit_status,
                exited_at: time_to_wire(exited.exit.exited_at),
            }));
        };
        let pid = task.pid();
        let deleted = self.manager.delete(&namespace, &id).await?;
        Ok(Response::new(DeleteResponse {
            id,
            pid: if deleted.pid == 0 { pid } else { deleted.pid },
            exit_status: deleted.exit_status,
            exited_at: time_from_shim(&deleted.exited_at),
        }))
    }

    async fn delete_process(
        &self,
        request: Request<DeleteProcessRequest>,
    ) -> Result<Response<DeleteResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let req = request.into_inner();
        if req.exec_id.is_empty() {
            return Err(Error::invalid(format!(
                "task {}: delete process needs an exec id (delete the task instead)",
                req.container_id
            ))
            .into());
        }
        let task = self.live(&namespace, &req.container_id)?;
        let deleted = task
            .client()
            .delete(
                ctx(),
                &api::DeleteRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                status_error(e).context(format!(
                    "deleting process {} of task {}",
                    req.exec_id, req.container_id
                ))
            })?;
        Ok(Response::new(DeleteResponse {
            id: req.exec_id,
            pid: deleted.pid,
            exit_status: deleted.exit_status,
            exited_at: time_from_shim(&deleted.exited_at),
        }))
    }

    async fn get(&self, request: Request<GetRequest>) -> Result<Response<GetResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let req = request.into_inner();
        let process = match self.manager.get(&namespace, &req.container_id) {
            Ok(task) => process_from_state(&req.container_id, state(&task, &req.exec_id).await?),
            Err(err) => match self.manager.exited(&namespace, &req.container_id) {
                Some(exited) if req.exec_id.is_empty() => process_of_exited(&exited),
                Some(_) => {
                    return Err(Error::not_found(format!(
                        "process {} of task {}: not found (the shim is gone)",
                        req.exec_id, req.container_id
                    ))
                    .into())
                }
                None => return Err(err.into()),
            },
        };
        Ok(Response::new(GetResponse {
            process: Some(process),
        }))
    }

    async fn list(
        &self,
        request: Request<ListTasksRequest>,
    ) -> Result<Response<ListTasksResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let filter = match request.get_ref().filter.as_str() {
            "" => Filter::default(),
            text => Filter::parse(text)?,
        };
        let mut tasks = Vec::new();
        for task in self.manager.list(&namespace) {
            match state(&task, "").await {
                Ok(state) => tasks.push(process_from_state(&task.id, state)),
                // A shim that stopped answering is still listed.
                Err(_) => tasks.push(Process {
                    container_id: task.id.clone(),
                    id: task.id.clone(),
                    pid: task.pid(),
                    status: ProcessStatus::Unknown as i32,
                    ..Default::default()
                }),
            }
        }
        tasks.extend(
            self.manager
                .list_exited(&namespace)
                .iter()
                .map(process_of_exited),
        );
        tasks.retain(|process| filter.matches(&ProcessFields(process)));
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(Response::new(ListTasksResponse { tasks }))
    }

    async fn kill(&self, request: Request<KillRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let req = request.into_inner();
        let task = self.live(&namespace, &req.container_id)?;
        task.client()
            .kill(
                ctx(),
                &api::KillRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id,
                    signal: req.signal,
                    all: req.all,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| status_error(e).context(format!("killing task {}", req.container_id)))?;
        Ok(Response::new(()))
    }

    async fn exec(&self, request: Request<ExecProcessRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let req = request.into_inner();
        if req.exec_id.is_empty() {
            return Err(Error::invalid(format!(
                "exec into task {}: an exec id is required",
                req.container_id
            ))
            .into());
        }
        if req.spec.is_none() {
            return Err(Error::invalid(format!(
                "exec {} into task {}: a process spec is required",
                req.exec_id, req.container_id
            ))
            .into());
        }
        let task = self.live(&namespace, &req.container_id)?;
        task.client()
            .exec(
                ctx(),
                &api::ExecProcessRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id.clone(),
                    terminal: req.terminal,
                    stdin: req.stdin,
                    stdout: req.stdout,
                    stderr: req.stderr,
                    spec: any_to_shim(req.spec),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                status_error(e).context(format!(
                    "exec {} into task {}",
                    req.exec_id, req.container_id
                ))
            })?;
        Ok(Response::new(()))
    }

    async fn resize_pty(&self, request: Request<ResizePtyRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let req = request.into_inner();
        let task = self.live(&namespace, &req.container_id)?;
        task.client()
            .resize_pty(
                ctx(),
                &api::ResizePtyRequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id,
                    width: req.width,
                    height: req.height,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| status_error(e).context(format!("resizing task {}", req.container_id)))?;
        Ok(Response::new(()))
    }

    async fn close_io(&self, request: Request<CloseIoRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let req = request.into_inner();
        let task = self.live(&namespace, &req.container_id)?;
        task.client()
            .close_io(
                ctx(),
                &api::CloseIORequest {
                    id: req.container_id.clone(),
                    exec_id: req.exec_id,
                    stdin: req.stdin,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| {
                status_error(e).context(format!("closing the io of task {}", req.container_id))
            })?;
        Ok(Response::new(()))
    }

    async fn pause(&self, request: Request<PauseTaskRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let id = request.into_inner().container_id;
        let task = self.live(&namespace, &id)?;
        task.client()
            .pause(
                ctx(),
                &api::PauseRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| status_error(e).context(format!("pausing task {id}")))?;
        Ok(Response::new(()))
    }

    async fn resume(&self, request: Request<ResumeTaskRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let id = request.into_inner().container_id;
        let task = self.live(&namespace, &id)?;
        task.client()
            .resume(
                ctx(),
                &api::ResumeRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| status_error(e).context(format!("resuming task {id}")))?;
        Ok(Response::new(()))
    }

    async fn list_pids(
        &self,
        request: Request<ListPidsRequest>,
    ) -> Result<Response<ListPidsResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let id = request.into_inner().container_id;
        let task = self.live(&namespace, &id)?;
        let pids = task
            .client()
            .pids(
                ctx(),
                &api::PidsRequest {
                    id: id.clone(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| status_error(e).context(format!("listing the processes of task {id}")))?;
        Ok(Response::new(ListPidsResponse {
            processes: pids
                .processes
                .into_iter()
                .map(|p| ProcessInfo {
                    pid: p.pid,
                    info: any_from_shim(p.info),
                })
                .collect(),
        }))
    }

    async fn checkpoint(
        &self,
        request: Request<CheckpointTaskRequest>,
    ) -> Result<Response<CheckpointTaskResponse>, Status> {
        Err(Error::unimplemented(format!(
            "checkpoint of task {}: not supported by berthd",
            request.get_ref().container_id
        ))
        .into())
    }

    async fn update(&self, request: Request<UpdateTaskRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let req = request.into_inner();
        let task = self.live(&namespace, &req.container_id)?;
        task.client()
            .update(
                ctx(),
                &api::UpdateTaskRequest {
                    id: req.container_id.clone(),
                    resources: any_to_shim(req.resources),
                    annotations: req.annotations,
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| status_error(e).context(format!("updating task {}", req.container_id)))?;
        Ok(Response::new(()))
    }

    async fn metrics(
        &self,
        request: Request<MetricsRequest>,
    ) -> Result<Response<MetricsResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let filter = Filter::parse_all(&request.get_ref().filters)?;
        let mut metrics = Vec::new();
        for task in self.manager.list(&namespace) {
            let fields = TaskFields {
                id: &task.id,
                namespace: &namespace,
            };
            if !filter.matches(&fields) {
                continue;
            }
            let stats = task
                .client()
                .stats(
                    ctx(),
                    &api::StatsRequest {
                        id: task.id.clone(),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| status_error(e).context(format!("metrics of task {}", task.id)))?;
            metrics.push(Metric {
                timestamp: time_to_wire(SystemTime::now()),
                id: task.id.clone(),
                data: any_from_shim(stats.stats),
            });
        }
        Ok(Response::new(MetricsResponse { metrics }))
    }

    async fn wait(&self, request: Request<WaitRequest>) -> Result<Response<WaitResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let req = request.into_inner();
        let task = match self.manager.get(&namespace, &req.container_id) {
            Ok(task) => task,
            Err(err) => {
                return match self.manager.exited(&namespace, &req.container_id) {
                    Some(exited) => Ok(Response::new(WaitResponse {
                        exit_status: exited.exit.exit_status,
                        exited_at: time_to_wire(exited.exit.exited_at),
                    })),
                    None => Err(err.into()),
                };
            }
        };
        let wait_request = api::WaitRequest {
            id: req.container_id.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        let wait = task.client().wait(ctx_forever(), &wait_request);
        let gone = tokio::select! {
            waited = wait => match waited {
                Ok(waited) => {
                    return Ok(Response::new(WaitResponse {
                        exit_status: waited.exit_status,
                        exited_at: time_from_shim(&waited.exited_at),
                    }))
                }
                Err(err) => {
                    let err = status_error(err);
                    if err.kind != ErrorKind::Unavailable {
                        return Err(err.context(format!("waiting for task {}", req.container_id)).into());
                    }
                    // The connection broke: most likely the shim died, and
                    // the manager is about to report how the task ended.
                    tokio::time::timeout(SHIM_GONE_GRACE, task.shim_gone())
                        .await
                        .map_err(|_| err.context(format!("waiting for task {}", req.container_id)))?
                }
            },
            gone = task.shim_gone() => gone,
        };
        Ok(Response::new(WaitResponse {
            exit_status: gone.exit_status,
            exited_at: time_to_wire(gone.exited_at),
        }))
    }
}

/// The manager's configuration for a daemon: bundles under
/// `<state>/io.containerd.runtime.v2.task`, events to `<address>.ttrpc`,
/// shims chosen by `binaries`.
pub fn runtime_config(
    config: &crate::config::Config,
    binaries: shim::ShimBinaries,
) -> crate::runtime::Config {
    crate::runtime::Config {
        state_dir: config.state.join("io.containerd.runtime.v2.task"),
        grpc_address: config.address.clone(),
        ttrpc_address: config.ttrpc_address(),
        publish_binary: std::env::current_exe().unwrap_or_else(|_| "berthd".into()),
        binaries,
        debug: matches!(config.log_level.as_str(), "debug" | "trace"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::grpc::Backend;
    use crate::metadata::containers::{Payload, Runtime};
    use crate::metadata::Container;
    use berth_proto::containerd::services::tasks::v1::tasks_server::Tasks;
    use tonic::Code;

    fn backend(dir: &std::path::Path) -> Backend {
        Backend::open(&Config::in_dir(dir, dir.join("berthd.sock"))).unwrap()
    }

    fn in_ns<T>(message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(request::NAMESPACE_HEADER, "default".parse().unwrap());
        request
    }

    fn service(backend: &Backend) -> TasksService {
        TasksService::new(
            backend.tasks.clone(),
            backend.containers.clone(),
            backend.snapshotters.clone(),
        )
    }

    #[tokio::test]
    async fn unknown_tasks_are_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let svc = service(&backend(dir.path()));
        let id = || "nosuch".to_string();
        let codes = [
            svc.get(in_ns(GetRequest {
                container_id: id(),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            svc.start(in_ns(StartRequest {
                container_id: id(),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            svc.kill(in_ns(KillRequest {
                container_id: id(),
                signal: 9,
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            svc.wait(in_ns(WaitRequest {
                container_id: id(),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
            svc.delete(in_ns(DeleteTaskRequest { container_id: id() }))
                .await
                .unwrap_err(),
            // Task create for a container that does not exist.
            svc.create(in_ns(CreateTaskRequest {
                container_id: id(),
                ..Default::default()
            }))
            .await
            .unwrap_err(),
        ];
        for status in codes {
            assert_eq!(status.code(), Code::NotFound, "{status:?}");
            assert!(status.message().contains("nosuch"), "{status:?}");
        }
        let listed = svc
            .list(in_ns(ListTasksRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert!(listed.tasks.is_empty());
    }

    #[tokio::test]
    async fn refusals_name_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let backend = backend(dir.path());
        let svc = service(&backend);
        let err = svc
            .checkpoint(in_ns(CheckpointTaskRequest {
                container_id: "c1".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unimplemented);
        let err = svc
            .delete_process(in_ns(DeleteProcessRequest {
                container_id: "c1".into(),
                exec_id: String::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = svc
            .exec(in_ns(ExecProcessRequest {
                container_id: "c1".into(),
                exec_id: "e1".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument, "no process spec");

        // A container whose runtime has no shim: NotFound naming the
        // binary, and no bundle left behind.
        let container = Container::new(
            "c1",
            Runtime {
                name: "io.containerd.nosuch.v7".into(),
                options: None,
            },
            Payload {
                type_url: "spec".into(),
                value: b"{}".to_vec(),
            },
        );
        backend.containers.create("default", container).unwrap();
        let err = svc
            .create(in_ns(CreateTaskRequest {
                container_id: "c1".into(),
                ..Default::default()
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert!(
            err.message().contains("containerd-shim-nosuch-v7"),
            "{}",
            err.message()
        );
        let bundles = dir
            .path()
            .join("state/io.containerd.runtime.v2.task/default");
        assert!(
            std::fs::read_dir(&bundles).map_or(true, |mut d| d.next().is_none()),
            "bundle left in {}",
            bundles.display()
        );
    }

    #[test]
    fn list_filters_see_ids_pids_and_statuses() {
        let process = |id: &str, pid: u32, status: ProcessStatus| Process {
            container_id: id.into(),
            id: id.into(),
            pid,
            status: status as i32,
            ..Default::default()
        };
        let tasks = [
            process("web-1", 41, ProcessStatus::Running),
            process("web-2", 42, ProcessStatus::Stopped),
            process("db", 43, ProcessStatus::Paused),
        ];
        let matching = |filter: &str| -> Vec<&str> {
            let filter = Filter::parse(filter).unwrap();
            tasks
                .iter()
                .filter(|p| filter.matches(&ProcessFields(p)))
                .map(|p| p.id.as_str())
                .collect()
        };
        assert_eq!(matching("status==running"), ["web-1"]);
        assert_eq!(matching("status!=running"), ["web-2", "db"]);
        assert_eq!(matching("id~=^web"), ["web-1", "web-2"]);
        assert_eq!(matching("container_id==db"), ["db"]);
        assert_eq!(matching("pid==42"), ["web-2"]);
        assert_eq!(matching("id~=^web,status==stopped"), ["web-2"]);
        assert!(matching("nosuchfield==x").is_empty());
    }

    #[test]
    fn shim_states_keep_containerds_numbers() {
        for (shim, ours) in [
            (api::Status::UNKNOWN, ProcessStatus::Unknown),
            (api::Status::CREATED, ProcessStatus::Created),
            (api::Status::RUNNING, ProcessStatus::Running),
            (api::Status::STOPPED, ProcessStatus::Stopped),
            (api::Status::PAUSED, ProcessStatus::Paused),
            (api::Status::PAUSING, ProcessStatus::Pausing),
        ] {
            let state = api::StateResponse {
                status: shim.into(),
                ..Default::default()
            };
            assert_eq!(process_from_state("c", state).status, ours as i32);
        }
    }
}
