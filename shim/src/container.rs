//! One container: its init process and execs, driven through the runtime
//! binary. Every lifecycle step checks the state first (so misuse gets a
//! precise error kind) and publishes its event in containerd's order.

use crate::error::{Context, Error, Result};
use crate::events::{timestamp, Publisher};
use crate::oom::OomMonitor;
use crate::options::Options;
use crate::process::{Process, Status};
use crate::reaper::{Exit, Reaper};
use crate::rootfs::{self, Mount};
use crate::runtime::{LaunchOptions, Runtime};
use crate::stdio::{self, StdioPaths};
use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskIO, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::MessageField;
use containerd_shim_protos::types::mount::Mount as ProtoMount;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::oneshot;

/// What every container of this shim shares.
#[derive(Clone)]
pub struct Shared {
    pub reaper: Reaper,
    pub events: Publisher,
    pub namespace: String,
}

/// How long a deleted process's output may take to drain.
const IO_DRAIN: Duration = Duration::from_secs(2);
/// How long `delete` of a created container waits for the killed init.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A create request, decoded.
pub struct CreateRequest {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: Vec<Mount>,
    pub stdio: StdioPaths,
    pub options: Options,
}

pub struct Container {
    pub id: String,
    pub bundle: PathBuf,
    runtime: Runtime,
    shared: Shared,
    /// Whether the shim mounted `<bundle>/rootfs` (and so unmounts it).
    mounted_rootfs: bool,
    /// With its own pid namespace the kernel kills the rest when init dies;
    /// without, the shim must.
    own_pid_namespace: bool,
    io_owner: Option<(u32, u32)>,
    pub init: Arc<Process>,
    execs: Mutex<HashMap<String, Arc<Process>>>,
    oom: Mutex<Option<OomMonitor>>,
}

/// containerd's identifier rules (the runtime writes files named by them).
pub fn validate_id(what: &str, id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 76
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && id.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} {id:?}: must be 1-76 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

pub fn to_mounts(mounts: &[ProtoMount]) -> Vec<Mount> {
    mounts
        .iter()
        .map(|m| Mount {
            kind: m.type_.clone(),
            source: m.source.clone(),
            options: m.options.clone(),
        })
        .collect()
}

fn has_own_pid_namespace(bundle: &Path) -> Result<bool> {
    let path = bundle.join("config.json");
    let data = std::fs::read(&path)
        .context(format!("bundle {}: reading config.json", bundle.display()))?;
    let spec: serde_json::Value = serde_json::from_slice(&data)
        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
    let namespaces = spec.pointer("/linux/namespaces").and_then(|n| n.as_array());
    Ok(namespaces.is_some_and(|list| {
        list.iter().any(|ns| {
            ns.get("type").and_then(|t| t.as_str()) == Some("pid")
                && ns
                    .get("path")
                    .and_then(|p| p.as_str())
                    .unwrap_or("")
                    .is_empty()
        })
    }))
}

fn read_pid_file(path: &Path) -> Result<i32> {
    let text =
        std::fs::read_to_string(path).context(format!("reading pid file {}", path.display()))?;
    text.trim().parse().map_err(|_| {
        Error::internal(format!(
            "pid file {}: {text:?} is not a pid",
            path.display()
        ))
    })
}

impl Container {
    /// Mount the rootfs, run `runtime create`, wire stdio, publish
    /// `/tasks/create`. On failure nothing is left behind.
    pub async fn create(req: CreateRequest, shared: Shared) -> Result<Arc<Container>> {
        validate_id("container id", &req.id)?;
        if !req.bundle.is_absolute() {
            return Err(Error::invalid(format!(
                "bundle {:?}: must be an absolute path",
                req.bundle
            )));
        }
        if !req.bundle.is_dir() {
            return Err(Error::not_found(format!(
                "bundle {}: no such directory",
                req.bundle.display()
            )));
        }
        let own_pid_namespace = has_own_pid_namespace(&req.bundle)?;
        req.options.store(&req.bundle)?;
        let runtime = Runtime::new(
            req.options.binary(),
            req.options.runtime_root(&shared.namespace),
            &req.bundle,
            req.options.systemd_cgroup,
            shared.reaper.clone(),
        );
        let rootfs_dir = req.bundle.join("rootfs");
        let began = Instant::now();
        rootfs::mount_all(&req.rootfs, &rootfs_dir)?;
        let mounted = began.elapsed();
        let io_owner = (req.options.io_uid != 0 || req.options.io_gid != 0)
            .then_some((req.options.io_uid, req.options.io_gid));
        let container = Arc::new(Container {
            id: req.id.clone(),
            bundle: req.bundle.clone(),
            runtime,
            shared: shared.clone(),
            mounted_rootfs: !req.rootfs.is_empty(),
            own_pid_namespace,
            io_owner,
            init: Arc::new(Process::new("", req.stdio.clone(), None)),
            execs: Mutex::new(HashMap::new()),
            oom: Mutex::new(None),
        });
        let init = container.init.clone();
        let _order = init.lifecycle.lock().await;
        let exit = match container.launch_init(&req.options).await {
            Ok(exit) => exit,
            Err(e) => {
                container.undo_create().await;
                return Err(e);
            }
        };
        crate::log::debug(format!(
            "create {}: rootfs mounted in {:?}, created in {:?}",
            req.id,
            mounted,
            began.elapsed()
        ));
        shared.events.publish(&TaskCreate {
            container_id: req.id.clone(),
            bundle: req.bundle.to_string_lossy().into_owned(),
            rootfs: req
                .rootfs
                .iter()
                .map(|m| ProtoMount {
                    type_: m.kind.clone(),
                    source: m.source.clone(),
                    options: m.options.clone(),
                    ..Default::default()
                })
                .collect(),
            io: MessageField::some(TaskIO {
                stdin: req.stdio.stdin.clone(),
                stdout: req.stdio.stdout.clone(),
                stderr: req.stdio.stderr.clone(),
                terminal: req.stdio.terminal,
                ..Default::default()
            }),
            pid: init.pid() as u32,
            ..Default::default()
        });
        container.watch_oom();
        container.monitor(init.clone(), exit);
        Ok(container)
    }

    async fn launch_init(&self, options: &Options) -> Result<oneshot::Receiver<Exit>> {
        let pid_file = self.bundle.join("init.pid");
        let env = [
            ("CONTAINER_ID", self.id.as_str()),
            ("CONTAINER_NAMESPACE", self.shared.namespace.as_str()),
        ];
        let began = Instant::now();
        let mut prepared = stdio::prepare(&self.init.stdio, self.io_owner, &env)?;
        let stdio_ready = began.elapsed();
        let launch = LaunchOptions {
            pid_file: pid_file.clone(),
            console_socket: prepared.console_socket.clone(),
            no_pivot: options.no_pivot_root,
            no_new_keyring: options.no_new_keyring,
        };
        let since = Instant::now();
        let process_stdio = prepared.take_stdio();
        if let Err(e) = self
            .runtime
            .create(&self.id, &self.bundle, &launch, process_stdio)
            .await
        {
            prepared.abandon();
            return Err(e);
        }
        let pid = match read_pid_file(&pid_file) {
            Ok(pid) => pid,
            Err(e) => {
                prepared.abandon();
                return Err(e);
            }
        };
        let exit = self.shared.reaper.subscribe(pid, since);
        self.init.set_pid(pid);
        let runtime_done = began.elapsed();
        let io = prepared.finish().await?;
        self.init.set_io(io).await;
        crate::log::debug(format!(
            "init of {}: stdio ready in {stdio_ready:?}, runtime done at {runtime_done:?}, relays at {:?}",
            self.id,
            began.elapsed()
        ));
        Ok(exit)
    }

    /// After a failed create: remove the runtime's container, unmount.
    async fn undo_create(&self) {
        let _ = self.runtime.delete(&self.id, true).await;
        self.init.finish_io(Duration::ZERO).await;
        if self.mounted_rootfs {
            if let Err(e) = rootfs::unmount_all_off_loop(self.bundle.join("rootfs")).await {
                crate::log::error(format!("{e}"));
            }
        }
    }

    fn watch_oom(&self) {
        let events = self.shared.events.clone();
        let id = self.id.clone();
        match crate::oom::watch(self.init.pid(), move || {
            events.publish(&TaskOOM {
                container_id: id.clone(),
                ..Default::default()
            })
        }) {
            Ok(monitor) => *self.oom.lock().unwrap_or_else(|p| p.into_inner()) = Some(monitor),
            Err(e) => crate::log::warn(format!("container {}: no OOM events: {e}", self.id)),
        }
    }

    /// Record the exit and publish `/tasks/exit` once the step that started
    /// the process has published its own event.
    fn monitor(self: &Arc<Self>, process: Arc<Process>, exit: oneshot::Receiver<Exit>) {
        let container = self.clone();
        tokio::spawn(async move {
            let Ok(exit) = exit.await else { return };
            let _order = process.lifecycle.lock().await;
            process.set_exited(exit);
            let is_init = process.exec_id.is_empty();
            if is_init && !container.own_pid_namespace {
                // Nothing else reaps the container's other processes.
                let _ = container
                    .runtime
                    .kill(&container.id, libc::SIGKILL as u32, true)
                    .await;
            }
            container.shared.events.publish(&TaskExit {
                container_id: container.id.clone(),
                id: if is_init {
                    container.id.clone()
                } else {
                    process.exec_id.clone()
                },
                pid: exit.pid as u32,
                exit_status: exit.status,
                exited_at: MessageField::some(timestamp(exit.at)),
                ..Default::default()
            });
        });
    }

    /// The init (`exec_id` empty) or an exec.
    pub fn process(&self, exec_id: &str) -> Result<Arc<Process>> {
        if exec_id.is_empty() {
            return Ok(self.init.clone());
        }
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(exec_id)
            .cloned()
            .ok_or_else(|| {
                Error::not_found(format!(
                    "exec {exec_id:?} not found in container {}",
                    self.id
                ))
            })
    }

    pub async fn start(self: &Arc<Self>, exec_id: &str) -> Result<i32> {
        if !exec_id.is_empty() {
            return self.start_exec(exec_id).await;
        }
        let init = self.init.clone();
        let _order = init.lifecycle.lock().await;
        match init.status() {
            Status::Created => {}
            Status::Stopped => {
                return Err(Error::precondition(format!(
                    "container {} has already exited",
                    self.id
                )))
            }
            _ => {
                return Err(Error::precondition(format!(
                    "container {} is already started",
                    self.id
                )))
            }
        }
        self.runtime.start(&self.id).await?;
        init.set_running();
        self.shared.events.publish(&TaskStart {
            container_id: self.id.clone(),
            pid: init.pid() as u32,
            ..Default::default()
        });
        Ok(init.pid())
    }

    pub fn add_exec(&self, exec_id: &str, stdio: StdioPaths, spec: Vec<u8>) -> Result<()> {
        validate_id("exec id", exec_id)?;
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&spec).map_err(
            |e| {
                Error::invalid(format!(
                    "exec {exec_id}: the process spec is not a JSON object: {e}"
                ))
            },
        )?;
        if self.init.status() == Status::Stopped {
            return Err(Error::precondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        {
            let mut execs = self.execs.lock().unwrap_or_else(|p| p.into_inner());
            if execs.contains_key(exec_id) {
                return Err(Error::already_exists(format!(
                    "exec {exec_id} already exists in container {}",
                    self.id
                )));
            }
            execs.insert(
                exec_id.to_string(),
                Arc::new(Process::new(exec_id, stdio, Some(spec))),
            );
        }
        self.shared.events.publish(&TaskExecAdded {
            container_id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        });
        Ok(())
    }

    async fn start_exec(self: &Arc<Self>, exec_id: &str) -> Result<i32> {
        let process = self.process(exec_id)?;
        let _order = process.lifecycle.lock().await;
        if process.status() != Status::Created {
            return Err(Error::precondition(format!(
                "exec {exec_id} in container {} was already started",
                self.id
            )));
        }
        if !matches!(self.init.status(), Status::Running) {
            return Err(Error::precondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        let spec_file = self.bundle.join(format!(".exec-{exec_id}.json"));
        let pid_file = self.bundle.join(format!(".exec-{exec_id}.pid"));
        let result = self.launch_exec(&process, &spec_file, &pid_file).await;
        let _ = std::fs::remove_file(&spec_file);
        let _ = std::fs::remove_file(&pid_file);
        let exit = match result {
            Ok(exit) => exit,
            Err(e) => {
                // The exec never ran: it is over, with the status runc's
                // shim reports for that.
                process.set_exited(Exit {
                    pid: 0,
                    status: 255,
                    at: SystemTime::now(),
                });
                return Err(e);
            }
        };
        process.set_running();
        self.shared.events.publish(&TaskExecStarted {
            container_id: self.id.clone(),
            exec_id: exec_id.to_string(),
            pid: process.pid() as u32,
            ..Default::default()
        });
        self.monitor(process.clone(), exit);
        Ok(process.pid())
    }

    async fn launch_exec(
        &self,
        process: &Process,
        spec_file: &Path,
        pid_file: &Path,
    ) -> Result<oneshot::Receiver<Exit>> {
        let spec = process.spec.as_deref().unwrap_or(b"{}");
        std::fs::write(spec_file, spec).context(format!("writing {}", spec_file.display()))?;
        let env = [
            ("CONTAINER_ID", self.id.as_str()),
            ("CONTAINER_NAMESPACE", self.shared.namespace.as_str()),
        ];
        let mut prepared = stdio::prepare(&process.stdio, self.io_owner, &env)?;
        let launch = LaunchOptions {
            pid_file: pid_file.to_path_buf(),
            console_socket: prepared.console_socket.clone(),
            ..Default::default()
        };
        let since = Instant::now();
        let process_stdio = prepared.take_stdio();
        if let Err(e) = self
            .runtime
            .exec(&self.id, spec_file, &launch, process_stdio)
            .await
        {
            prepared.abandon();
            return Err(e);
        }
        let pid = match read_pid_file(pid_file) {
            Ok(pid) => pid,
            Err(e) => {
                prepared.abandon();
                return Err(e);
            }
        };
        let exit = self.shared.reaper.subscribe(pid, since);
        process.set_pid(pid);
        process.set_io(prepared.finish().await?).await;
        Ok(exit)
    }

    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<()> {
        let process = self.process(exec_id)?;
        if exec_id.is_empty() {
            if process.status() == Status::Stopped && !all {
                return Err(Error::not_found(format!(
                    "container {}: process already finished",
                    self.id
                )));
            }
            return self.runtime.kill(&self.id, signal, all).await;
        }
        if process.status() == Status::Stopped {
            return Err(Error::not_found(format!(
                "exec {exec_id}: process already finished"
            )));
        }
        if process.status() == Status::Created {
            return Err(Error::precondition(format!(
                "exec {exec_id} is not started"
            )));
        }
        let signal = nix::sys::signal::Signal::try_from(signal as i32)
            .map_err(|_| Error::invalid(format!("signal {signal} is not a valid signal")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(process.pid()), signal)
            .map_err(|e| Error::from(e).context(format!("signalling exec {exec_id}")))
    }

    /// Delete an exec: it must have exited (or never started).
    pub async fn delete_exec(&self, exec_id: &str) -> Result<(i32, Exit)> {
        let process = self.process(exec_id)?;
        let status = process.status();
        if matches!(status, Status::Running | Status::Paused) {
            return Err(Error::precondition(format!(
                "exec {exec_id} is still running"
            )));
        }
        self.execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(exec_id);
        process.finish_io(IO_DRAIN).await;
        let exit = process.exit().unwrap_or(Exit {
            pid: 0,
            status: 0,
            at: SystemTime::now(),
        });
        Ok((process.pid(), exit))
    }

    /// Delete the container: refused while it runs; a created one is killed.
    pub async fn delete(&self) -> Result<(i32, Exit)> {
        let began = Instant::now();
        let init = self.init.clone();
        match init.status() {
            Status::Running | Status::Paused => {
                return Err(Error::precondition(format!(
                    "container {} is running: kill it before deleting",
                    self.id
                )))
            }
            Status::Created => {
                self.runtime.delete(&self.id, true).await?;
                if init.wait_for(KILL_WAIT).await.is_none() {
                    return Err(Error::internal(format!(
                        "container {}: init did not exit after delete",
                        self.id
                    )));
                }
            }
            Status::Stopped => {
                // Nothing runs on the rootfs any more: it is unmounted while
                // the runtime deletes the container.
                let delete = async {
                    if self.runtime.delete(&self.id, false).await.is_err() {
                        self.runtime.delete(&self.id, true).await?;
                    }
                    Ok::<(), Error>(())
                };
                let (deleted, unmounted) = tokio::join!(delete, self.unmount_rootfs());
                deleted?;
                unmounted?;
            }
        }
        let runtime_done = began.elapsed();
        self.oom.lock().unwrap_or_else(|p| p.into_inner()).take();
        let execs: Vec<_> = self
            .execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, p)| p)
            .collect();
        for exec in execs {
            exec.finish_io(Duration::ZERO).await;
        }
        init.finish_io(IO_DRAIN).await;
        let io_done = began.elapsed();
        self.unmount_rootfs().await?;
        crate::log::debug(format!(
            "delete {}: runtime done at {runtime_done:?}, io at {io_done:?}, unmounted at {:?}",
            self.id,
            began.elapsed()
        ));
        let exit = init.exit().unwrap_or(Exit {
            pid: init.pid(),
            status: 0,
            at: SystemTime::now(),
        });
        self.shared.events.publish(&TaskDelete {
            container_id: self.id.clone(),
            pid: init.pid() as u32,
            exit_status: exit.status,
            exited_at: MessageField::some(timestamp(exit.at)),
            id: self.id.clone(),
            ..Default::default()
        });
        Ok((init.pid(), exit))
    }

    /// Unmounts the rootfs the shim mounted (once; later calls find it
    /// unmounted and do nothing).
    async fn unmount_rootfs(&self) -> Result<()> {
        if self.mounted_rootfs {
            rootfs::unmount_all_off_loop(self.bundle.join("rootfs")).await?;
        }
        Ok(())
    }

    pub async fn pause(&self) -> Result<()> {
        if self.init.status() != Status::Running {
            return Err(Error::precondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        self.runtime.pause(&self.id).await?;
        self.init.set_paused(true);
        self.shared.events.publish(&TaskPaused {
            container_id: self.id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    pub async fn resume(&self) -> Result<()> {
        if self.init.status() != Status::Paused {
            return Err(Error::precondition(format!(
                "container {} is not paused",
                self.id
            )));
        }
        self.runtime.resume(&self.id).await?;
        self.init.set_paused(false);
        self.shared.events.publish(&TaskResumed {
            container_id: self.id.clone(),
            ..Default::default()
        });
        Ok(())
    }

    /// The container's pids, with the exec id of those that are execs.
    pub async fn pids(&self) -> Result<Vec<(i32, Option<String>)>> {
        if self.init.status() == Status::Stopped {
            return Ok(Vec::new());
        }
        let pids = self.runtime.ps(&self.id).await?;
        let execs: HashMap<i32, String> = self
            .execs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .filter(|p| p.pid() > 0)
            .map(|p| (p.pid(), p.exec_id.clone()))
            .collect();
        Ok(pids
            .into_iter()
            .map(|pid| (pid, execs.get(&pid).cloned()))
            .collect())
    }

    /// `update -r` with LinuxResources JSON.
    pub async fn update(&self, resources: &[u8]) -> Result<()> {
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(resources).map_err(
            |e| Error::invalid(format!("update: the resources are not a JSON object: {e}")),
        )?;
        if self.init.status() == Status::Stopped {
            return Err(Error::precondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        let file = self.bundle.join(".update-resources.json");
        std::fs::write(&file, resources).context(format!("writing {}", file.display()))?;
        let result = self.runtime.update(&self.id, &file).await;
        let _ = std::fs::remove_file(&file);
        result
    }

    pub fn stats(&self) -> Result<containerd_shim_protos::protobuf::well_known_types::any::Any> {
        if matches!(self.init.status(), Status::Stopped) {
            return Err(Error::precondition(format!(
                "container {} is not running",
                self.id
            )));
        }
        crate::metrics::collect(self.init.pid())
    }
}
