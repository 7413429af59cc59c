//! `containerd.task.v2.Task` over ttrpc: decodes requests, finds the
//! container, calls it, encodes the answer. No lifecycle logic lives here.

use crate::container::{to_mounts, Container, CreateRequest, Shared};
use crate::error::{Error, Result};
use crate::events::{timestamp, to_any};
use crate::options::Options;
use crate::stdio::StdioPaths;
use async_trait::async_trait;
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::shim::oci::ProcessDetails;
use containerd_shim_protos::shim_async::Task;
use containerd_shim_protos::ttrpc::{self, r#async::TtrpcContext};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// Type URLs containerd uses for the JSON-encoded OCI types it sends.
const PROCESS_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
const RESOURCES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

pub struct Service {
    containers: Mutex<HashMap<String, Arc<Container>>>,
    shared: Shared,
    /// Notified when the shim should exit (Shutdown with nothing left).
    pub shutdown: Arc<Notify>,
}

type TtrpcResult<T> = ttrpc::Result<T>;

impl Service {
    pub fn new(shared: Shared, shutdown: Arc<Notify>) -> Service {
        Service {
            containers: Mutex::new(HashMap::new()),
            shared,
            shutdown,
        }
    }

    fn container(&self, id: &str) -> Result<Arc<Container>> {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("container {id} not found in this shim")))
    }
}

fn json_payload(
    any: Option<&containerd_shim_protos::protobuf::well_known_types::any::Any>,
    want: &str,
    what: &str,
) -> Result<Vec<u8>> {
    let Some(any) = any else {
        return Err(Error::invalid(format!("{what}: missing")));
    };
    if any.type_url != want {
        return Err(Error::invalid(format!(
            "{what}: unsupported type {:?} (want {want})",
            any.type_url
        )));
    }
    Ok(any.value.clone())
}

#[async_trait]
impl Task for Service {
    async fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        crate::log::info(format!("create {} bundle {}", req.id, req.bundle));
        if !req.checkpoint.is_empty() {
            return Err(Error::new(
                crate::error::Kind::Unimplemented,
                "restoring from a checkpoint is not supported",
            )
            .into());
        }
        let options = Options::from_any(req.options.as_ref())?;
        if self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(&req.id)
        {
            return Err(
                Error::already_exists(format!("container {} already exists", req.id)).into(),
            );
        }
        let request = CreateRequest {
            id: req.id.clone(),
            bundle: PathBuf::from(&req.bundle),
            rootfs: to_mounts(&req.rootfs),
            stdio: StdioPaths {
                stdin: req.stdin.clone(),
                stdout: req.stdout.clone(),
                stderr: req.stderr.clone(),
                terminal: req.terminal,
            },
            options,
        };
        let container = Container::create(request, self.shared.clone())
            .await
            .map_err(|e| {
                crate::log::error(format!("create {}: {e}", req.id));
                e
            })?;
        let pid = container.init.pid() as u32;
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(req.id.clone(), container);
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    async fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        let pid = self.container(&req.id)?.start(&req.exec_id).await?;
        Ok(api::StartResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }

    async fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        let container = self.container(&req.id)?;
        let process = container.process(&req.exec_id)?;
        let exit = process.exit();
        Ok(api::StateResponse {
            id: if req.exec_id.is_empty() {
                req.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: container.bundle.to_string_lossy().into_owned(),
            pid: process.pid() as u32,
            status: process.status().as_proto().into(),
            stdin: process.stdio.stdin.clone(),
            stdout: process.stdio.stdout.clone(),
            stderr: process.stdio.stderr.clone(),
            terminal: process.stdio.terminal,
            exit_status: exit.map(|e| e.status).unwrap_or(0),
            exited_at: exit.map(|e| timestamp(e.at)).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        let container = self.container(&req.id)?;
        let (pid, exit) = if req.exec_id.is_empty() {
            let result = container.delete().await?;
            self.containers
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&req.id);
            result
        } else {
            container.delete_exec(&req.exec_id).await?
        };
        Ok(api::DeleteResponse {
            pid: pid as u32,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn pids(
        &self,
        _ctx: &TtrpcContext,
        req: api::PidsRequest,
    ) -> TtrpcResult<api::PidsResponse> {
        let pids = self.container(&req.id)?.pids().await?;
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|(pid, exec_id)| api::ProcessInfo {
                    pid: pid as u32,
                    info: exec_id
                        .map(|exec_id| {
                            to_any(&ProcessDetails {
                                exec_id,
                                ..Default::default()
                            })
                        })
                        .into(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    async fn pause(&self, _ctx: &TtrpcContext, req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        self.container(&req.id)?.pause().await?;
        Ok(api::Empty::new())
    }

    async fn resume(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResumeRequest,
    ) -> TtrpcResult<api::Empty> {
        self.container(&req.id)?.resume().await?;
        Ok(api::Empty::new())
    }

    async fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        self.container(&req.id)?;
        Err(Error::new(
            crate::error::Kind::Unimplemented,
            format!(
                "checkpoint of container {}: not supported by containerd-shim-berth-v2",
                req.id
            ),
        )
        .into())
    }

    async fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        self.container(&req.id)?
            .kill(&req.exec_id, req.signal, req.all)
            .await?;
        Ok(api::Empty::new())
    }

    async fn exec(
        &self,
        _ctx: &TtrpcContext,
        req: api::ExecProcessRequest,
    ) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        let spec = json_payload(
            req.spec.as_ref(),
            PROCESS_TYPE,
            &format!("exec {} spec", req.exec_id),
        )?;
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
            terminal: req.terminal,
        };
        container.add_exec(&req.exec_id, stdio, spec)?;
        Ok(api::Empty::new())
    }

    async fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        let process = self.container(&req.id)?.process(&req.exec_id)?;
        process.resize(req.width, req.height).await?;
        Ok(api::Empty::new())
    }

    async fn close_io(
        &self,
        _ctx: &TtrpcContext,
        req: api::CloseIORequest,
    ) -> TtrpcResult<api::Empty> {
        let process = self.container(&req.id)?.process(&req.exec_id)?;
        if req.stdin {
            process.close_stdin().await;
        }
        Ok(api::Empty::new())
    }

    async fn update(
        &self,
        _ctx: &TtrpcContext,
        req: api::UpdateTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        let container = self.container(&req.id)?;
        let resources = json_payload(req.resources.as_ref(), RESOURCES_TYPE, "update resources")?;
        container.update(&resources).await?;
        Ok(api::Empty::new())
    }

    async fn wait(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitRequest,
    ) -> TtrpcResult<api::WaitResponse> {
        let process = self.container(&req.id)?.process(&req.exec_id)?;
        let exit = process.wait().await;
        Ok(api::WaitResponse {
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        })
    }

    async fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let stats = self.container(&req.id)?.stats()?;
        Ok(api::StatsResponse {
            stats: MessageField::some(stats),
            ..Default::default()
        })
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let task_pid = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&req.id)
            .map(|c| c.init.pid() as u32)
            .unwrap_or(0);
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid,
            version: format!("containerd-shim-berth-v2 {}", env!("CARGO_PKG_VERSION")),
            ..Default::default()
        })
    }

    async fn shutdown(
        &self,
        _ctx: &TtrpcContext,
        req: api::ShutdownRequest,
    ) -> TtrpcResult<api::Empty> {
        let empty = self
            .containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        if empty || req.now {
            // After this reply has gone out.
            self.shutdown.notify_one();
        }
        Ok(api::Empty::new())
    }
}
