//! `docker exec`: `POST /containers/{id}/exec` makes an exec instance,
//! `POST /exec/{id}/start` runs it in the container's task (through the
//! shim's Exec, as `ctr task exec` does), `POST /exec/{id}/resize` sizes
//! its terminal, `GET /exec/{id}/json` reports it (the CLI reads the exit
//! code there once the stream ends).
//!
//! Unlike a container's output, an exec's output does not go through a
//! log: the shim writes it into fifos berthd made in its state directory,
//! and berthd relays them to the client (framed unless the exec has a
//! terminal); the client's input goes into a stdin fifo. A supervising
//! task owns the process from start to exit: it relays, records the exit
//! code before the stream ends, deletes the process in the shim and
//! removes the fifos. Exec instances live in memory, as dockerd's do.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use bollard_stubs::models::{ExecConfig, ExecStartConfig, HostConfig};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::any::Any as ShimAny;
use containerd_shim_protos::protobuf::MessageField;
use oci_spec::runtime::{Process, Spec};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, watch};
use tokio_stream::StreamExt as _;

use super::containers::registry::{new_id, Container};
use super::containers::stdin::StdinPipe;
use super::containers::Status;
use super::error::ApiResult;
use super::hijack::{self, DetachWatch};
use super::query::Query;
use super::{Frontend, NAMESPACE};
use crate::logs::frame::frame_header;
use crate::logs::LogStream;
use crate::oci::user::UserDb;
use crate::runtime::shim::{ctx, ctx_forever, status_error};
use crate::runtime::Task;
use crate::{Error, Result};

/// The detach keys unless the exec names others.
const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// The type of an exec's process spec in the shim's Exec request.
const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";

/// How long an exited exec instance stays inspectable.
const KEEP_EXITED: Duration = Duration::from_secs(5 * 60);

/// The exit code of an exec whose process could not be started, as
/// dockerd records it: 127 for a command not found, 126 otherwise.
fn start_failure_code(message: &str) -> i64 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else {
        126
    }
}

/// Where an exec instance is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Created,
    Running,
    Exited,
}

#[derive(Debug)]
struct ExecState {
    phase: Phase,
    pid: u32,
    exit_code: Option<i64>,
    exited_at: Option<Instant>,
}

/// One exec instance.
#[derive(Debug)]
pub struct Exec {
    pub id: String,
    pub container_id: String,
    config: ExecConfig,
    detach_keys: Vec<u8>,
    state: Mutex<ExecState>,
}

impl Exec {
    fn state(&self) -> std::sync::MutexGuard<'_, ExecState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn tty(&self) -> bool {
        self.config.tty == Some(true)
    }

    fn cmd(&self) -> &[String] {
        self.config.cmd.as_deref().unwrap_or_default()
    }

    /// Claims a created instance for a start.
    fn claim(&self) -> Result<()> {
        let mut state = self.state();
        match state.phase {
            Phase::Created => {
                state.phase = Phase::Running;
                Ok(())
            }
            Phase::Running => Err(Error::precondition(format!(
                "Error: Exec command {} is already running",
                self.id
            ))),
            Phase::Exited => Err(Error::precondition(format!(
                "Error: Exec command {} has already run",
                self.id
            ))),
        }
    }

    /// Gives a claim back (the start did not get as far as the shim).
    fn unclaim(&self) {
        self.state().phase = Phase::Created;
    }

    fn started(&self, pid: u32) {
        self.state().pid = pid;
    }

    fn finish(&self, exit_code: i64) {
        let mut state = self.state();
        state.phase = Phase::Exited;
        state.exit_code = Some(exit_code);
        state.exited_at = Some(Instant::now());
    }

    fn is_running(&self) -> bool {
        self.state().phase == Phase::Running
    }

    /// `GET /exec/{id}/json`'s body.
    fn inspect(&self) -> Value {
        let state = self.state();
        let cmd = self.cmd();
        json!({
            "ID": self.id,
            "ContainerID": self.container_id,
            "Running": state.phase == Phase::Running,
            "ExitCode": state.exit_code,
            "Pid": state.pid,
            "CanRemove": false,
            "DetachKeys": self.config.detach_keys.clone().unwrap_or_default(),
            "OpenStdin": self.config.attach_stdin == Some(true),
            "OpenStdout": self.config.attach_stdout == Some(true),
            "OpenStderr": self.config.attach_stderr == Some(true),
            "ProcessConfig": {
                "privileged": self.config.privileged == Some(true),
                "user": self.config.user.clone().unwrap_or_default(),
                "tty": self.tty(),
                "entrypoint": cmd.first().cloned().unwrap_or_default(),
                "arguments": cmd.iter().skip(1).collect::<Vec<_>>(),
            },
        })
    }
}

/// Where exec fifos are made, under berthd's state directory.
fn fifo_root(state: &std::path::Path) -> PathBuf {
    state.join("docker-exec")
}

/// Removes the fifo directories a previous berthd left (its exec
/// instances are gone with it; processes that still run keep their open
/// fifos).
pub fn remove_stale_fifos(state: &std::path::Path) {
    let root = fifo_root(state);
    match std::fs::remove_dir_all(&root) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => tracing::warn!("removing {}: {err}", root.display()),
    }
}

/// Every exec instance, by ID. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Execs {
    all: Arc<Mutex<HashMap<String, Arc<Exec>>>>,
}

impl Execs {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Exec>>> {
        self.all.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The instance `id` names (IDs only, as dockerd looks them up).
    pub fn get(&self, id: &str) -> Result<Arc<Exec>> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found(format!("No such exec instance: {id}")))
    }

    fn insert(&self, exec: Arc<Exec>) {
        let mut all = self.lock();
        // Instances that exited long ago are forgotten.
        all.retain(|_, e| {
            e.state()
                .exited_at
                .is_none_or(|at| at.elapsed() < KEEP_EXITED)
        });
        all.insert(exec.id.clone(), exec);
    }

    /// The instances of a container that have not exited, for its
    /// inspect's `ExecIDs`.
    pub fn live_of(&self, container_id: &str) -> Vec<String> {
        let mut ids: Vec<String> = self
            .lock()
            .values()
            .filter(|e| e.container_id == container_id && e.state().phase != Phase::Exited)
            .map(|e| e.id.clone())
            .collect();
        ids.sort();
        ids
    }

    /// Forgets a removed container's instances.
    pub fn forget_container(&self, container_id: &str) {
        self.lock().retain(|_, e| e.container_id != container_id);
    }
}

/// Refuses an exec into a container that is not running, in dockerd's
/// words.
fn check_running(container: &Container) -> Result<()> {
    let id = &container.id;
    match container.status() {
        Status::Running => Ok(()),
        Status::Paused => Err(Error::precondition(format!(
            "Container {id} is paused, unpause the container before exec"
        ))),
        Status::Restarting => Err(Error::precondition(format!(
            "Container {id} is restarting, wait until the container is running"
        ))),
        _ => Err(Error::precondition(format!(
            "Container {id} is not running"
        ))),
    }
}

fn parse_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> Result<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|err| Error::invalid(format!("invalid JSON body: {err}")))
}

/// An exec event for `/events`, on the container.
fn event(frontend: &Frontend, container: &Container, action: String, exec_id: &str) {
    let event =
        super::containers::api::event(container, &action, &[("execID", exec_id.to_owned())]);
    frontend.journal.record(event);
}

/// `POST /containers/{id}/exec`.
pub async fn create(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let config: ExecConfig = parse_json(&body)?;
    if config.cmd.as_ref().is_none_or(|cmd| cmd.is_empty()) {
        return Err(Error::invalid("No exec command specified").into());
    }
    let detach_keys = hijack::detach_keys(
        config
            .detach_keys
            .as_deref()
            .filter(|k| !k.is_empty())
            .unwrap_or(DEFAULT_DETACH_KEYS),
    )?;
    if let Some(dir) = config.working_dir.as_deref().filter(|d| !d.is_empty()) {
        if !dir.starts_with('/') {
            return Err(Error::invalid(format!(
                "the working directory '{dir}' is invalid, it needs to be an absolute path"
            ))
            .into());
        }
    }
    let container = frontend.containers.resolve(&id)?;
    check_running(&container)?;
    let exec = Arc::new(Exec {
        id: new_id(),
        container_id: container.id.clone(),
        config,
        detach_keys,
        state: Mutex::new(ExecState {
            phase: Phase::Created,
            pid: 0,
            exit_code: None,
            exited_at: None,
        }),
    });
    frontend.execs.insert(exec.clone());
    event(
        &frontend,
        &container,
        format!("exec_create: {}", exec.cmd().join(" ")),
        &exec.id,
    );
    Ok((StatusCode::CREATED, Json(json!({ "Id": exec.id }))))
}

/// `GET /exec/{id}/json`.
pub async fn inspect(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(frontend.execs.get(&id)?.inspect()))
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn resize(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<StatusCode> {
    let (height, width) = super::attach::terminal_size(&Query::parse(raw.as_deref()))?;
    let exec = frontend.execs.get(&id)?;
    if !exec.is_running() {
        return Err(Error::precondition(format!("Exec {} is not running", exec.id)).into());
    }
    let task = frontend.backend.tasks.get(NAMESPACE, &exec.container_id)?;
    resize_exec(&task, &exec, width, height).await?;
    Ok(StatusCode::OK)
}

async fn resize_exec(task: &Task, exec: &Exec, width: u32, height: u32) -> Result<()> {
    task.client()
        .resize_pty(
            ctx(),
            &api::ResizePtyRequest {
                id: exec.container_id.clone(),
                exec_id: exec.id.clone(),
                width,
                height,
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
        .map_err(|err| status_error(err).context(format!("resizing exec {}", exec.id)))
}

/// `POST /exec/{id}/start`: detached, answered once the process runs;
/// otherwise the connection is taken over (or the output streamed) and a
/// failure to start is written into the stream, as dockerd does.
pub async fn start(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    request: Request,
) -> ApiResult<Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20)
        .await
        .map_err(|err| Error::invalid(format!("reading the request body: {err}")))?;
    let start: ExecStartConfig = parse_json(&body)?;
    let exec = frontend.execs.get(&id)?;
    exec.claim()?;
    let container = match frontend.containers.resolve(&exec.container_id) {
        Ok(container) => container,
        Err(err) => {
            exec.unclaim();
            return Err(err.into());
        }
    };
    if let Err(err) = check_running(&container) {
        exec.unclaim();
        return Err(err.into());
    }
    let size = start
        .console_size
        .or_else(|| exec.config.console_size.clone())
        .and_then(|size| match size[..] {
            [h, w] if h > 0 && w > 0 => Some((u32::try_from(h).ok()?, u32::try_from(w).ok()?)),
            _ => None,
        });

    if start.detach == Some(true) {
        let running = Running::launch(&frontend, &container, &exec, ExecIo::none(), size).await;
        match running {
            Ok(running) => {
                tokio::spawn(running.supervise(None));
                return Ok(Response::new(Body::empty()));
            }
            Err(err) => return Err(err.into()),
        }
    }

    let io = match ExecIo::make(&frontend, &exec) {
        Ok(io) => io,
        Err(err) => {
            exec.unclaim();
            return Err(err.into());
        }
    };
    let stdin = io.stdin.clone();
    let (output_tx, output_rx) = mpsc::channel::<Bytes>(16);
    // Input waits for the process: a fifo closed before the shim opened it
    // would lose what was written and never report its end.
    let (launched_tx, launched) = watch::channel(None);
    {
        let (frontend, container, exec) = (frontend.clone(), container.clone(), exec.clone());
        tokio::spawn(async move {
            let running = Running::launch(&frontend, &container, &exec, io, size).await;
            let _ = launched_tx.send(Some(running.is_ok()));
            match running {
                Ok(running) => running.supervise(Some(output_tx)).await,
                Err(err) => {
                    let text = format!("{}\r\n", err.message);
                    let _ = output_tx
                        .send(frame(exec.tty(), LogStream::Stdout, text.as_bytes()))
                        .await;
                }
            }
        });
    }
    let content_type = hijack::content_type(exec.tty());
    let request = Request::from_parts(parts, Body::empty());
    if !hijack::wants_upgrade(&request) {
        let output =
            tokio_stream::wrappers::ReceiverStream::new(output_rx).map(Ok::<Bytes, std::io::Error>);
        return Ok(hijack::streamed(content_type, output));
    }
    let input = Input {
        stdin,
        launched,
        frontend: frontend.clone(),
        exec: exec.clone(),
        detach: DetachWatch::new(exec.detach_keys.clone()),
    };
    let session: hijack::Session = Box::new(move |io| {
        Box::pin(async move {
            let (reader, writer) = hijack::split(io);
            run_session(reader, writer, output_rx, input).await;
        })
    });
    Ok(hijack::upgrade(request, content_type, session))
}

/// `bytes` as the client reads them: alone with a terminal, in a
/// multiplexed frame without one.
fn frame(tty: bool, stream: LogStream, bytes: &[u8]) -> Bytes {
    if tty {
        return Bytes::copy_from_slice(bytes);
    }
    // Reads are at most a pipe's worth, far below u32::MAX.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    let mut framed = Vec::with_capacity(bytes.len() + 8);
    framed.extend_from_slice(&frame_header(stream, len));
    framed.extend_from_slice(bytes);
    Bytes::from(framed)
}

/// The fifos an exec's stdio goes through, in `<state>/docker-exec/<id>`.
struct ExecIo {
    dir: Option<PathBuf>,
    stdin: Option<Arc<StdinPipe>>,
    stdout: Option<(PathBuf, pipe::Receiver)>,
    stderr: Option<(PathBuf, pipe::Receiver)>,
}

impl ExecIo {
    /// No stdio at all (a detached exec: its output is discarded).
    fn none() -> ExecIo {
        ExecIo {
            dir: None,
            stdin: None,
            stdout: None,
            stderr: None,
        }
    }

    /// The fifos the exec attaches, opened on berthd's side before the
    /// shim opens them (output read ends do not wait for a writer).
    fn make(frontend: &Frontend, exec: &Exec) -> Result<ExecIo> {
        let dir = fifo_root(&frontend.settings.state).join(&exec.id);
        std::fs::create_dir_all(&dir)
            .map_err(|err| Error::internal(format!("making {}: {err}", dir.display())))?;
        let mut io = ExecIo {
            dir: Some(dir.clone()),
            ..ExecIo::none()
        };
        let made = (|| -> Result<()> {
            if exec.config.attach_stdin == Some(true) {
                io.stdin = Some(Arc::new(StdinPipe::create(&dir)?));
            }
            if exec.config.attach_stdout == Some(true) {
                io.stdout = Some(output_fifo(&dir, "stdout")?);
            }
            if exec.config.attach_stderr == Some(true) && !exec.tty() {
                io.stderr = Some(output_fifo(&dir, "stderr")?);
            }
            Ok(())
        })();
        match made {
            Ok(()) => Ok(io),
            Err(err) => {
                io.remove();
                Err(err)
            }
        }
    }

    fn path_of(end: &Option<(PathBuf, pipe::Receiver)>) -> String {
        end.as_ref()
            .map(|(path, _)| path.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn remove(&mut self) {
        self.stdout = None;
        self.stderr = None;
        self.stdin = None;
        if let Some(dir) = self.dir.take() {
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                tracing::warn!("removing {}: {err}", dir.display());
            }
        }
    }
}

/// Makes the fifo `<dir>/<name>` and opens its read end without waiting
/// for the shim (a fifo read end polls as neither readable nor hung up
/// until a writer comes).
fn output_fifo(dir: &std::path::Path, name: &str) -> Result<(PathBuf, pipe::Receiver)> {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
        .map_err(|err| Error::internal(format!("making the fifo {}: {err}", path.display())))?;
    let receiver = pipe::OpenOptions::new()
        .open_receiver(&path)
        .map_err(|err| Error::internal(format!("opening {}: {err}", path.display())))?;
    Ok((path, receiver))
}

/// An exec whose process runs in the shim.
struct Running {
    frontend: Frontend,
    container: Arc<Container>,
    exec: Arc<Exec>,
    task: Arc<Task>,
    io: ExecIo,
}

impl Running {
    /// Asks the shim to make and start the process. On failure the
    /// instance has exited with dockerd's code for it and the fifos are
    /// gone.
    async fn launch(
        frontend: &Frontend,
        container: &Arc<Container>,
        exec: &Arc<Exec>,
        mut io: ExecIo,
        size: Option<(u32, u32)>,
    ) -> Result<Running> {
        match Self::launch_process(frontend, exec, &io, size).await {
            Ok(task) => {
                event(
                    frontend,
                    container,
                    format!("exec_start: {}", exec.cmd().join(" ")),
                    &exec.id,
                );
                Ok(Running {
                    frontend: frontend.clone(),
                    container: container.clone(),
                    exec: exec.clone(),
                    task,
                    io,
                })
            }
            Err(err) => {
                exec.finish(start_failure_code(&err.message));
                io.remove();
                Err(err)
            }
        }
    }

    async fn launch_process(
        frontend: &Frontend,
        exec: &Arc<Exec>,
        io: &ExecIo,
        size: Option<(u32, u32)>,
    ) -> Result<Arc<Task>> {
        let task = frontend.backend.tasks.get(NAMESPACE, &exec.container_id)?;
        let process = {
            let (bundle, pid, exec) = (task.bundle.path().to_owned(), task.pid(), exec.clone());
            tokio::task::spawn_blocking(move || process_spec(&bundle, pid, &exec))
                .await
                .map_err(|err| Error::internal(format!("preparing an exec: {err}")))??
        };
        let spec = serde_json::to_vec(&process)
            .map_err(|err| Error::internal(format!("encoding an exec's process: {err}")))?;
        let container_id = exec.container_id.clone();
        task.client()
            .exec(
                ctx(),
                &api::ExecProcessRequest {
                    id: container_id.clone(),
                    exec_id: exec.id.clone(),
                    terminal: exec.tty(),
                    stdin: io
                        .stdin
                        .as_ref()
                        .map(|p| p.path().to_string_lossy().into_owned())
                        .unwrap_or_default(),
                    stdout: ExecIo::path_of(&io.stdout),
                    stderr: ExecIo::path_of(&io.stderr),
                    spec: MessageField::some(ShimAny {
                        type_url: PROCESS_TYPE_URL.to_owned(),
                        value: spec,
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .map_err(status_error)?;
        let started = task
            .client()
            .start(
                ctx(),
                &api::StartRequest {
                    id: container_id.clone(),
                    exec_id: exec.id.clone(),
                    ..Default::default()
                },
            )
            .await;
        match started {
            Ok(started) => {
                exec.started(started.pid);
                if let (true, Some((height, width))) = (exec.tty(), size) {
                    if let Err(err) = resize_exec(&task, exec, width, height).await {
                        tracing::debug!(exec = %exec.id, "sizing the terminal: {err}");
                    }
                }
                Ok(task)
            }
            Err(err) => {
                delete_process(&task, exec).await;
                Err(status_error(err))
            }
        }
    }

    /// Relays the output into `output` (while the client reads it) until
    /// the process exits and its output ends; records the exit code before
    /// the stream ends; then deletes the process and its fifos.
    async fn supervise(mut self, output: Option<mpsc::Sender<Bytes>>) {
        let tty = self.exec.tty();
        let stdout = self.io.stdout.take().map(|(_, r)| r);
        let stderr = self.io.stderr.take().map(|(_, r)| r);
        let relays = async {
            tokio::join!(
                relay(stdout, LogStream::Stdout, tty, output.clone()),
                relay(stderr, LogStream::Stderr, tty, output.clone()),
            )
        };
        let exit = async {
            let waited = self
                .task
                .client()
                .wait(
                    ctx_forever(),
                    &api::WaitRequest {
                        id: self.exec.container_id.clone(),
                        exec_id: self.exec.id.clone(),
                        ..Default::default()
                    },
                )
                .await;
            match waited {
                Ok(waited) => i64::from(waited.exit_status),
                Err(err) => {
                    tracing::warn!(exec = %self.exec.id, "waiting for an exec: {err}");
                    // The shim went away with the container.
                    137
                }
            }
        };
        let (_, exit_code) = tokio::join!(relays, exit);
        self.exec.finish(exit_code);
        let event = super::containers::api::event(
            &self.container,
            "exec_die",
            &[
                ("execID", self.exec.id.clone()),
                ("exitCode", exit_code.to_string()),
            ],
        );
        self.frontend.journal.record(event);
        // The stream ends here: the client finds the exit code recorded.
        drop(output);
        delete_process(&self.task, &self.exec).await;
        self.io.remove();
    }
}

/// Copies one output fifo into `output` until the shim closes it; once the
/// client is gone the rest is read and dropped (the process must not
/// block on a full fifo).
async fn relay(
    reader: Option<pipe::Receiver>,
    stream: LogStream,
    tty: bool,
    mut output: Option<mpsc::Sender<Bytes>>,
) {
    let Some(mut reader) = reader else { return };
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if let Some(sender) = &output {
            if sender.send(frame(tty, stream, &buf[..n])).await.is_err() {
                output = None;
            }
        }
    }
}

/// Deletes an exec's process in the shim (what remains of it once it has
/// exited or failed to start).
async fn delete_process(task: &Task, exec: &Exec) {
    let deleted = task
        .client()
        .delete(
            ctx(),
            &api::DeleteRequest {
                id: exec.container_id.clone(),
                exec_id: exec.id.clone(),
                ..Default::default()
            },
        )
        .await;
    if let Err(err) = deleted {
        tracing::debug!(exec = %exec.id, "deleting the process: {err}");
    }
}

/// The exec's process: the container's own (from its bundle) with the
/// exec's command, environment, directory, user, terminal and privilege.
fn process_spec(bundle: &std::path::Path, pid: u32, exec: &Exec) -> Result<Process> {
    let config = bundle.join("config.json");
    let spec = Spec::load(&config)
        .map_err(|err| Error::internal(format!("reading {}: {err}", config.display())))?;
    let mut process = spec.process().clone().unwrap_or_default();
    let config = &exec.config;
    process.set_args(config.cmd.clone());
    process.set_terminal(Some(exec.tty()));
    process.set_console_size(None);
    let mut env = process.env().clone().unwrap_or_default();
    let mut extra: Vec<String> = config.env.clone().unwrap_or_default();
    if exec.tty() && !env.iter().chain(&extra).any(|e| e.starts_with("TERM=")) {
        extra.push("TERM=xterm".to_owned());
    }
    for entry in extra {
        let key = entry.split('=').next().unwrap_or_default().to_owned();
        env.retain(|e| e.split('=').next() != Some(key.as_str()));
        env.push(entry);
    }
    process.set_env(Some(env));
    if let Some(dir) = config.working_dir.as_deref().filter(|d| !d.is_empty()) {
        process.set_cwd(dir.into());
    }
    if let Some(user) = config.user.as_deref().filter(|u| !u.is_empty()) {
        let root = PathBuf::from(format!("/proc/{pid}/root"));
        let resolved = UserDb::from_rootfs(&root)?.resolve(user)?;
        let mut spec_user = process.user().clone();
        spec_user.set_uid(resolved.uid);
        spec_user.set_gid(resolved.gid);
        spec_user.set_additional_gids(Some(resolved.additional_gids));
        process.set_user(spec_user);
    }
    if config.privileged == Some(true) {
        let all = super::containers::spec::capabilities(&HostConfig {
            privileged: Some(true),
            ..Default::default()
        })?;
        if let Some(mut caps) = process.capabilities().clone() {
            caps.set_bounding(Some(all.clone()))
                .set_effective(Some(all.clone()))
                .set_permitted(Some(all));
            process.set_capabilities(Some(caps));
        }
    }
    Ok(process)
}

/// Where the client's input goes.
struct Input {
    stdin: Option<Arc<StdinPipe>>,
    /// Whether the process started, once known.
    launched: watch::Receiver<Option<bool>>,
    frontend: Frontend,
    exec: Arc<Exec>,
    detach: DetachWatch,
}

impl Input {
    /// Waits until the process started (true) or failed to (false).
    async fn started(&mut self) -> bool {
        match self.launched.wait_for(Option::is_some).await {
            Ok(launched) => *launched == Some(true),
            Err(_) => false,
        }
    }
}

/// Copies the output to the client and its input to the process until
/// the output ends (the process exited) or the client detaches.
async fn run_session(
    mut reader: impl tokio::io::AsyncRead + Send + Unpin,
    mut writer: impl tokio::io::AsyncWrite + Send + Unpin,
    mut output: mpsc::Receiver<Bytes>,
    mut input: Input,
) {
    let copy_output = async {
        while let Some(chunk) = output.recv().await {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
            let _ = writer.flush().await;
        }
        let _ = writer.shutdown().await;
    };
    let copy_input = async {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let (pass, detached) = input.detach.feed(&buf[..n]);
            if let (false, Some(pipe)) = (pass.is_empty(), input.stdin.clone()) {
                if !input.started().await || pipe.write_all(&pass).await.is_err() {
                    break;
                }
            }
            if detached {
                return;
            }
        }
        // The client's input ended: so does the process's.
        if let Some(pipe) = input.stdin.take() {
            if input.started().await {
                pipe.close().await;
                let exec = &input.exec;
                super::attach::close_stdin(&input.frontend, &exec.container_id, &exec.id).await;
            }
        }
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = copy_output => {}
        () = copy_input => {}
    }
}
