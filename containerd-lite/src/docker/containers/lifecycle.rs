//! Running docker containers: start (network, spec, task, log), the
//! watch over each running task that records its exit and applies the
//! restart policy, stop, kill, pause, resume, and re-adopting the running
//! ones when berthd starts again.
//!
//! Every operation that changes what runs holds the container's
//! operation lock. The exit watcher does not: it only records the exit,
//! cleans up the task and asks for a restart or removal through the same
//! locked operations, so a `stop` waiting for the exit under the lock
//! cannot dead-lock with it.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim_protos::api;
use time::OffsetDateTime;

use super::record::{now_rfc3339, rfc3339, Record, Status};
use super::registry::Container;
use super::spec::{self, Netns, Prepared};
use super::stdin::StdinPipe;
use crate::docker::{Frontend, NAMESPACE};
use crate::logs::{logger_uri, LoggerConfig, Rotation};
use crate::network::{EndpointName, NetworkMode, SetupRequest};
use crate::oci::{ResolvedUser, UserDb};
use crate::runtime::shim::{ctx, ctx_forever, status_error, to_system_time};
use crate::runtime::{CreateOptions, Task};
use crate::snapshots::mount::TempMount;
use crate::{Error, ErrorKind, Result};

/// The first pause before a restart; doubled after each quick exit.
const RESTART_BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest pause before a restart.
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(60);
/// A run at least this long resets the backoff.
const RESTART_RESET_AFTER: Duration = Duration::from_secs(10);
/// How long a SIGKILL waits for the exit to be recorded.
const KILL_WAIT: Duration = Duration::from_secs(10);
/// The exit recorded for a task whose shim vanished without saying.
const LOST_EXIT: u32 = 255;
/// How long a failed Wait gives the shim to be found dead before it is
/// asked again.
const WAIT_RETRY: Duration = Duration::from_secs(1);

/// Why an operation did nothing: dockerd answers 304 for these.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Done,
    NotModified,
}

/// Starts `container` (`docker start`). `NotModified` when it runs
/// already.
pub async fn start(frontend: &Frontend, container: &Arc<Container>) -> Result<Outcome> {
    let _operation = container.operation().await;
    match container.status() {
        Status::Running | Status::Paused => return Ok(Outcome::NotModified),
        Status::Removing => {
            return Err(Error::precondition(
                "container is marked for removal and cannot be started",
            ))
        }
        Status::Dead => return Err(Error::precondition("cannot start a dead container")),
        Status::Restarting | Status::Created | Status::Exited => {}
    }
    container.update(|r| r.manually_stopped = false)?;
    if let Err(err) = start_locked(frontend, container).await {
        // As dockerd: an AutoRemove container whose start failed is
        // removed (its `wait?condition=removed` then ends).
        if container.record().host_config.auto_remove == Some(true) {
            drop(_operation);
            let how = super::remove::Removal {
                force: true,
                volumes: true,
            };
            if let Err(removal) = super::remove::remove(frontend, container, how).await {
                tracing::warn!(id = %container.id, "auto-remove after a failed start: {removal}");
            }
        }
        return Err(err);
    }
    Ok(Outcome::Done)
}

/// Starts the task; the caller holds the operation lock. On failure the
/// record says why (`State.Error`, an exit code as dockerd gives: 127 for
/// a missing command, 126 for one that cannot run, 128 otherwise) and
/// nothing is left running.
async fn start_locked(frontend: &Frontend, container: &Arc<Container>) -> Result<()> {
    container.cleaned().await;
    let record = container.record();
    let ports = match publishes(&record) {
        Ok(true) => super::ports::mappings(&record.host_config, record.exposed()),
        Ok(false) => Ok(Vec::new()),
        Err(err) => Err(err),
    };
    let launched = match ports {
        Ok(ports) => launch(frontend, container, &record, &ports)
            .await
            .map(|(task, stdin)| (task, stdin, ports)),
        Err(err) => Err(err),
    };
    match launched {
        Ok((task, stdin, ports)) => {
            let pid = task.pid();
            let started = container.update(|r| {
                r.published = ports;
                r.state.status = Status::Running;
                r.state.pid = pid;
                r.state.exit_code = 0;
                r.state.error.clear();
                r.state.oom_killed = false;
                r.state.started_at = Some(now_rfc3339());
                r.last_start_unix_ms = unix_ms(SystemTime::now());
            });
            // Input written from now on reaches a fifo the shim reads.
            container.set_stdin(stdin);
            watch(frontend.clone(), container.clone(), task.clone());
            if let Err(err) = started {
                // The task runs but its record could not say so: stop it
                // (the watcher records the exit and cleans up).
                let _ = kill_task(&task, libc_signal::SIGKILL, true).await;
                return Err(err);
            }
            Ok(())
        }
        Err(err) => {
            let code = start_failure_code(&err.message);
            let message = err.message.clone();
            let _ = container.update(|r| {
                r.state.error = message;
                r.state.exit_code = code;
                if r.state.status == Status::Restarting {
                    r.state.status = Status::Exited;
                    r.state.finished_at = Some(now_rfc3339());
                }
            });
            Err(match err.kind {
                ErrorKind::Internal | ErrorKind::Unavailable => err,
                _ => Error::invalid(err.message),
            })
        }
    }
}

/// The exit code dockerd records when a start fails with `message`.
fn start_failure_code(message: &str) -> i64 {
    if message.contains("executable file not found")
        || message.contains("no such file or directory")
    {
        127
    } else if message.contains("permission denied") {
        126
    } else {
        128
    }
}

/// Network, spec, task, start: the task and the write end of its stdin
/// (`OpenStdin`). Undoes its own steps on failure.
async fn launch(
    frontend: &Frontend,
    container: &Arc<Container>,
    record: &Record,
    ports: &[crate::network::PortMapping],
) -> Result<(Arc<Task>, Option<Arc<StdinPipe>>)> {
    let network = prepare_network(frontend, record, ports).await?;
    match launch_task(frontend, container, record, network).await {
        Ok(launched) => Ok(launched),
        Err(err) => {
            if needs_teardown(record) {
                if let Err(teardown) = frontend.network.teardown(&record.id).await {
                    tracing::warn!(id = %record.id, "after a failed start: {teardown}");
                }
            }
            // A shim that died on the way leaves its exit with the manager.
            let _ = frontend.backend.tasks.delete_exited(NAMESPACE, &record.id);
            Err(err)
        }
    }
}

async fn launch_task(
    frontend: &Frontend,
    container: &Arc<Container>,
    record: &Record,
    network: Prepared,
) -> Result<(Arc<Task>, Option<Arc<StdinPipe>>)> {
    let backend = &frontend.backend;
    let snapshotter = backend.snapshotters.get(&record.snapshotter)?;
    let (ns, key) = (NAMESPACE.to_owned(), record.snapshot_key.clone());
    let user_text = record.config.user.clone().unwrap_or_default();
    let (rootfs, user) = tokio::task::spawn_blocking(move || -> Result<_> {
        let mounts = snapshotter.mounts(&ns, &key)?;
        let user = resolve_user(&mounts, &user_text)?;
        Ok((mounts, user))
    })
    .await
    .map_err(|err| Error::internal(format!("preparing a start: {err}")))??;
    let prepared = Prepared { user, ..network };
    let spec = spec::build(record, &prepared, &frontend.settings.cgroup_parent)?;
    let spec = crate::oci::to_json(&spec)?;

    // The fifo is made and held open before the shim opens it; the
    // container shows it to attaches only once the task has started (input
    // written into a fifo nobody reads yet would be lost with it).
    let pipe = match record.config.open_stdin {
        Some(true) => Some(Arc::new(StdinPipe::create(container.dir())?)),
        _ => None,
    };
    let stdin = pipe
        .as_ref()
        .map(|p| p.path().to_string_lossy().into_owned())
        .unwrap_or_default();
    let logger = logger_uri(
        &frontend.settings.logger,
        &LoggerConfig {
            path: record.log_path.clone(),
            rotation: rotation_of(record)?,
            raw: record.tty(),
        },
    );
    let options = CreateOptions {
        runtime: super::create::runtime_name(&record.host_config),
        rootfs: rootfs
            .into_iter()
            .map(|m| api::Mount {
                type_: m.r#type,
                source: m.source,
                target: m.target.unwrap_or_default(),
                options: m.options,
                ..Default::default()
            })
            .collect(),
        stdin,
        stdout: logger.clone(),
        stderr: logger,
        terminal: record.tty(),
        options: None,
    };
    let task = backend
        .tasks
        .create(NAMESPACE, &record.id, &spec, options)
        .await?;
    let started = task
        .client()
        .start(
            ctx(),
            &api::StartRequest {
                id: record.id.clone(),
                ..Default::default()
            },
        )
        .await;
    if let Err(err) = started {
        let err = status_error(err);
        if let Err(cleanup) = backend.tasks.delete(NAMESPACE, &record.id).await {
            tracing::warn!(id = %record.id, "after a failed start: {cleanup}");
        }
        return Err(err);
    }
    Ok((task, pipe))
}

/// The json-file log's rotation from `LogConfig`.
fn rotation_of(record: &Record) -> Result<Rotation> {
    let options = record
        .host_config
        .log_config
        .as_ref()
        .and_then(|l| l.config.clone())
        .unwrap_or_default();
    Rotation::from_log_opts(options.iter().map(|(k, v)| (k.as_str(), v.as_str())))
}

/// The user the process runs as: the image's `/etc/passwd` and
/// `/etc/group` are read (through a read-only mount of the rootfs) only
/// when the user is a name or has no group given.
fn resolve_user(mounts: &[crate::snapshots::mount::Mount], user: &str) -> Result<ResolvedUser> {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((uid, gid)) = user.split_once(':') {
        if numeric(uid) && numeric(gid) {
            return UserDb::default().resolve(user);
        }
    }
    let readonly: Vec<_> = mounts.iter().map(readonly_mount).collect();
    let mounted = TempMount::new(&readonly)?;
    let users = UserDb::from_rootfs(mounted.path());
    mounted.release()?;
    users?.resolve(user)
}

/// A read-only form of a snapshot mount (an overlay's upper dir becomes
/// one more lower dir).
pub(super) fn readonly_mount(
    mount: &crate::snapshots::mount::Mount,
) -> crate::snapshots::mount::Mount {
    let mut mount = mount.clone();
    if mount.r#type == "overlay" {
        let upper = mount
            .options
            .iter()
            .find_map(|o| o.strip_prefix("upperdir=").map(str::to_owned));
        mount
            .options
            .retain(|o| !o.starts_with("upperdir=") && !o.starts_with("workdir="));
        if let Some(upper) = upper {
            for option in mount.options.iter_mut() {
                if let Some(lower) = option.strip_prefix("lowerdir=") {
                    *option = format!("lowerdir={upper}:{lower}");
                }
            }
        }
    } else {
        mount.options.retain(|o| o != "rw");
        mount.options.push("ro".to_owned());
    }
    mount
}

/// Whether the container's ports are published: only on a network of
/// its own (not `host`, `none` or another container's).
fn publishes(record: &Record) -> Result<bool> {
    Ok(matches!(network_mode(record)?, NetworkMode::Network(_)))
}

/// Whether a start made network state that an exit must undo.
fn needs_teardown(record: &Record) -> bool {
    !matches!(network_mode(record), Ok(NetworkMode::Container(_)))
}

fn network_mode(record: &Record) -> Result<NetworkMode> {
    record
        .host_config
        .network_mode
        .as_deref()
        .unwrap_or("")
        .parse()
}

/// The container's network as its mode says: its own namespace (on a
/// network, or with only lo), the host's, or another container's.
async fn prepare_network(
    frontend: &Frontend,
    record: &Record,
    ports: &[crate::network::PortMapping],
) -> Result<Prepared> {
    let hostname = spec::hostname_of(record);
    let mode = match network_mode(record)? {
        NetworkMode::Container(other) => {
            let owner = frontend.containers.resolve(&other)?;
            let owner_record = owner.record();
            if owner_record.state.status != Status::Running {
                return Err(Error::precondition(format!(
                    "cannot join network of a non running container: {}",
                    owner.id
                )));
            }
            NetworkMode::Container(owner.id.clone())
        }
        mode => mode,
    };
    let aliases: Vec<String> = record
        .networking
        .as_ref()
        .and_then(|n| n.endpoints_config.as_ref())
        .and_then(|endpoints| endpoints.get(&mode.to_string()))
        .and_then(|settings| settings.aliases.clone())
        .unwrap_or_default();
    let request = SetupRequest {
        endpoint: EndpointName {
            container_id: record.id.clone(),
            name: record.name.clone(),
            aliases,
        },
        hostname: hostname.clone(),
        mode: mode.clone(),
        ports: ports.to_vec(),
    };
    let network = frontend.network.setup(&request).await?;
    if let (NetworkMode::Network(primary), Some(netns)) = (&mode, &network.netns) {
        if let Err(err) = join_connected(frontend, record, primary, netns).await {
            if let Err(teardown) = frontend.network.teardown(&record.id).await {
                tracing::warn!(id = %record.id, "after a failed start: {teardown}");
            }
            return Err(err);
        }
    }
    if let NetworkMode::Container(owner) = &mode {
        // Its namespace is the owner's task's.
        let task = frontend.backend.tasks.get(NAMESPACE, owner)?;
        return Ok(Prepared {
            netns: Netns::Join(format!("/proc/{}/ns/net", task.pid()).into()),
            hosts: network.files.hosts,
            resolv_conf: network.files.resolv_conf,
            hostname_file: network.files.hostname,
            hostname,
            user: ResolvedUser::default(),
        });
    }
    Ok(Prepared {
        netns: match network.netns {
            Some(path) => Netns::Join(path),
            None => Netns::Host,
        },
        hosts: network.files.hosts,
        resolv_conf: network.files.resolv_conf,
        hostname_file: network.files.hostname,
        hostname,
        user: ResolvedUser::default(),
    })
}

/// Joins the networks `docker network connect` added besides the
/// container's own (`primary`).
async fn join_connected(
    frontend: &Frontend,
    record: &Record,
    primary: &str,
    netns: &std::path::Path,
) -> Result<()> {
    let Some(endpoints) = record
        .networking
        .as_ref()
        .and_then(|n| n.endpoints_config.as_ref())
    else {
        return Ok(());
    };
    let primary = frontend.network.network(primary).await?;
    for (key, settings) in endpoints {
        // Keys are network names or IDs, or a mode (`default`, `host`...).
        let NetworkMode::Network(name) = key.parse()? else {
            continue;
        };
        let network = frontend.network.network(&name).await?;
        if network.id == primary.id {
            continue;
        }
        let endpoint = EndpointName {
            container_id: record.id.clone(),
            name: record.name.clone(),
            aliases: settings.aliases.clone().unwrap_or_default(),
        };
        frontend
            .network
            .attach(&endpoint, &network.id, netns, &[])
            .await?;
    }
    Ok(())
}

/// Watches a running task until it exits, then records the exit.
fn watch(frontend: Frontend, container: Arc<Container>, task: Arc<Task>) {
    tokio::spawn(async move {
        let (status, exited_at) = wait_task(&frontend, &task).await;
        after_exit(&frontend, &container, status, exited_at).await;
    });
}

/// The task's exit status and time, however it ends (its shim dying
/// too). A Wait that fails while the shim lives is asked again.
async fn wait_task(frontend: &Frontend, task: &Arc<Task>) -> (u32, SystemTime) {
    let request = api::WaitRequest {
        id: task.id.clone(),
        ..Default::default()
    };
    loop {
        let waited = tokio::select! {
            waited = task.client().wait(ctx_forever(), &request) => waited,
            gone = task.shim_gone() => {
                let _ = frontend.backend.tasks.delete_exited(NAMESPACE, &task.id);
                return (gone.exit_status, gone.exited_at);
            }
        };
        match waited {
            Ok(waited) => {
                let at = waited
                    .exited_at
                    .as_ref()
                    .map(to_system_time)
                    .unwrap_or_else(SystemTime::now);
                return (waited.exit_status, at);
            }
            Err(err) => {
                // Most likely the shim is dying: the manager reports how
                // the task ended. Otherwise, ask again.
                tracing::debug!(id = %task.id, "waiting for the task: {err}");
                if let Ok(gone) = tokio::time::timeout(WAIT_RETRY, task.shim_gone()).await {
                    let _ = frontend.backend.tasks.delete_exited(NAMESPACE, &task.id);
                    return (gone.exit_status, gone.exited_at);
                }
            }
        }
    }
}

/// After the task ended: the exit is recorded and waiters told at once;
/// then the task and network are cleaned up (starts and removals wait
/// for that, see [`Container::cleaned`]); then the restart policy or
/// AutoRemove acts.
async fn after_exit(
    frontend: &Frontend,
    container: &Arc<Container>,
    status: u32,
    exited_at: SystemTime,
) {
    let id = container.id.clone();
    let record = container.record();
    let ran_for =
        Duration::from_millis((unix_ms(exited_at) - record.last_start_unix_ms).max(0) as u64);
    let restart = record.state.status != Status::Removing
        && !record.manually_stopped
        && should_restart(&record, status);
    let exit_code = i64::from(status);
    container.begin_cleanup();
    let recorded = container.update(|r| {
        if r.state.status != Status::Removing {
            r.state.status = if restart {
                Status::Restarting
            } else {
                Status::Exited
            };
        }
        r.state.pid = 0;
        r.published.clear();
        r.state.exit_code = exit_code;
        r.state.finished_at = Some(rfc3339(OffsetDateTime::from(exited_at)));
    });
    if let Err(err) = recorded {
        tracing::error!(%id, "recording the exit: {err}");
    }
    container.notify_exit(exit_code);
    clean_up_task(frontend, container, &record).await;
    container.end_cleanup();
    if restart {
        let pause = backoff(&record, ran_for);
        let frontend = frontend.clone();
        let container = container.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            restart_by_policy(&frontend, &container).await;
        });
    } else if record.host_config.auto_remove == Some(true)
        && record.state.status != Status::Removing
    {
        // As dockerd: --rm takes the anonymous volumes along.
        let how = super::remove::Removal {
            volumes: true,
            ..Default::default()
        };
        if let Err(err) = super::remove::remove(frontend, container, how).await {
            if err.kind != ErrorKind::NotFound {
                tracing::warn!(%id, "auto-remove: {err}");
            }
        }
    }
}

/// Deletes an exited task and tears down its network and stdin.
async fn clean_up_task(frontend: &Frontend, container: &Container, record: &Record) {
    let id = &container.id;
    if let Err(err) = frontend.backend.tasks.delete(NAMESPACE, id).await {
        if err.kind != ErrorKind::NotFound {
            tracing::warn!(%id, "deleting the exited task: {err}");
        }
    }
    let _ = frontend.backend.tasks.delete_exited(NAMESPACE, id);
    if needs_teardown(record) {
        if let Err(err) = frontend.network.teardown(id).await {
            tracing::warn!(%id, "network teardown after exit: {err}");
        }
    }
    if let Some(stdin) = container.stdin() {
        stdin.close().await;
    }
    container.set_stdin(None);
}

/// Whether the restart policy brings the container back after `status`.
fn should_restart(record: &Record, status: u32) -> bool {
    use bollard_stubs::models::RestartPolicyNameEnum as Policy;
    let Some(policy) = &record.host_config.restart_policy else {
        return false;
    };
    match policy.name {
        Some(Policy::ALWAYS) | Some(Policy::UNLESS_STOPPED) => true,
        Some(Policy::ON_FAILURE) => {
            let max = policy.maximum_retry_count.unwrap_or(0);
            status != 0 && (max <= 0 || i64::from(record.restart_count) < max)
        }
        _ => false,
    }
}

/// The pause before the next restart: doubling from 100 ms while runs
/// are short, back to the start after a run of 10 s.
fn backoff(record: &Record, ran_for: Duration) -> Duration {
    if ran_for >= RESTART_RESET_AFTER {
        return RESTART_BACKOFF_START;
    }
    let doublings = record.restart_count.min(16);
    (RESTART_BACKOFF_START * 2u32.pow(doublings)).min(RESTART_BACKOFF_MAX)
}

/// A restart the policy asked for, unless the container was stopped or
/// removed meanwhile.
async fn restart_by_policy(frontend: &Frontend, container: &Arc<Container>) {
    let _operation = container.operation().await;
    if container.progress().borrow().removed || container.status() != Status::Restarting {
        return;
    }
    if let Err(err) = container.update(|r| r.restart_count += 1) {
        tracing::warn!(id = %container.id, "restart policy: {err}");
        return;
    }
    if let Err(err) = start_locked(frontend, container).await {
        tracing::warn!(id = %container.id, "restart policy: the start failed: {err}");
    }
}

/// The stop signal: the config's (`STOPSIGNAL`, `--stop-signal`) or
/// SIGTERM.
fn stop_signal(record: &Record) -> Result<u32> {
    match record
        .config
        .stop_signal
        .as_deref()
        .filter(|s| !s.is_empty())
    {
        Some(text) => parse_signal(text),
        None => Ok(libc_signal::SIGTERM),
    }
}

/// A signal by name (`SIGTERM`, `TERM`) or number.
pub fn parse_signal(text: &str) -> Result<u32> {
    if let Ok(number) = text.parse::<u32>() {
        if (1..=64).contains(&number) {
            return Ok(number);
        }
    }
    let upper = text.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .map(|s| s as u32)
        .map_err(|_| Error::invalid(format!("Invalid signal: {text}")))
}

/// Signal numbers used here.
mod libc_signal {
    pub const SIGKILL: u32 = 9;
    pub const SIGTERM: u32 = 15;
}

async fn kill_task(task: &Task, signal: u32, all: bool) -> Result<()> {
    task.client()
        .kill(
            ctx(),
            &api::KillRequest {
                id: task.id.clone(),
                signal,
                all,
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
        .map_err(|err| status_error(err).context(format!("signalling container {}", task.id)))
}

/// `docker stop`: the stop signal, then SIGKILL after `timeout` (the
/// config's `StopTimeout`, else 10 s; negative waits forever).
/// `NotModified` when it was not running.
pub async fn stop(
    frontend: &Frontend,
    container: &Arc<Container>,
    timeout: Option<i64>,
    signal: Option<&str>,
) -> Result<Outcome> {
    let _operation = container.operation().await;
    stop_locked(frontend, container, timeout, signal).await
}

/// [`stop`] under the operation lock (restart and remove use it).
pub async fn stop_locked(
    frontend: &Frontend,
    container: &Arc<Container>,
    timeout: Option<i64>,
    signal: Option<&str>,
) -> Result<Outcome> {
    let record = container.record();
    match record.state.status {
        Status::Restarting => {
            // Between two runs: cancel the pending restart.
            container.update(|r| {
                r.manually_stopped = true;
                r.state.status = Status::Exited;
            })?;
            return Ok(Outcome::Done);
        }
        Status::Running | Status::Paused => {}
        _ => return Ok(Outcome::NotModified),
    }
    container.update(|r| r.manually_stopped = true)?;
    let signal = match signal.filter(|s| !s.is_empty()) {
        Some(text) => parse_signal(text)?,
        None => stop_signal(&record)?,
    };
    let timeout = timeout.or(record.config.stop_timeout).unwrap_or(10);
    let task = match frontend.backend.tasks.get(NAMESPACE, &container.id) {
        Ok(task) => task,
        Err(_) => return Ok(Outcome::Done),
    };
    let seen = container.progress().borrow().exits;
    if record.state.status == Status::Paused {
        resume_task(&task).await?;
    }
    if let Err(err) = kill_task(&task, signal, false).await {
        tracing::debug!(id = %container.id, "stop signal: {err}");
    }
    let exited = container.exited_after(seen);
    if timeout >= 0 {
        if tokio::time::timeout(Duration::from_secs(timeout as u64), exited)
            .await
            .is_ok()
        {
            return Ok(Outcome::Done);
        }
        tracing::info!(id = %container.id, "container did not stop within {timeout}s: killing it");
        if let Err(err) = kill_task(&task, libc_signal::SIGKILL, true).await {
            tracing::debug!(id = %container.id, "SIGKILL: {err}");
        }
        container.exited_after(seen).await;
    } else {
        exited.await;
    }
    // Stopped means cleaned up too (network gone), as with dockerd.
    container.cleaned().await;
    Ok(Outcome::Done)
}

/// `docker kill`: `signal` (default SIGKILL) to the init process. 409
/// when not running.
pub async fn kill(
    frontend: &Frontend,
    container: &Arc<Container>,
    signal: Option<&str>,
) -> Result<()> {
    let _operation = container.operation().await;
    let record = container.record();
    let signal = match signal.filter(|s| !s.is_empty()) {
        Some(text) => parse_signal(text)?,
        None => libc_signal::SIGKILL,
    };
    if !matches!(record.state.status, Status::Running | Status::Paused) {
        return Err(Error::precondition(format!(
            "Container {} is not running",
            container.id
        )));
    }
    let task = frontend.backend.tasks.get(NAMESPACE, &container.id)?;
    if signal == libc_signal::SIGKILL
        || signal == stop_signal(&record).unwrap_or(libc_signal::SIGTERM)
    {
        // Killed by the user: no restart policy brings it back.
        container.update(|r| r.manually_stopped = true)?;
    }
    let seen = container.progress().borrow().exits;
    kill_task(&task, signal, false).await?;
    if signal == libc_signal::SIGKILL {
        // As dockerd: a SIGKILL returns once the exit is recorded.
        if tokio::time::timeout(KILL_WAIT, container.exited_after(seen))
            .await
            .is_err()
        {
            tracing::warn!(id = %container.id, "no exit reported {KILL_WAIT:?} after SIGKILL");
        }
        container.cleaned().await;
    }
    Ok(())
}

/// `docker restart`: stop (as [`stop`]) then start.
pub async fn restart(
    frontend: &Frontend,
    container: &Arc<Container>,
    timeout: Option<i64>,
    signal: Option<&str>,
) -> Result<()> {
    let _operation = container.operation().await;
    stop_locked(frontend, container, timeout, signal).await?;
    if container.status() == Status::Removing {
        return Err(Error::precondition(
            "container is marked for removal and cannot be started",
        ));
    }
    container.update(|r| r.manually_stopped = false)?;
    start_locked(frontend, container).await
}

/// `docker pause`.
pub async fn pause(frontend: &Frontend, container: &Arc<Container>) -> Result<()> {
    let _operation = container.operation().await;
    match container.status() {
        Status::Running => {}
        Status::Paused => {
            return Err(Error::precondition(format!(
                "Container {} is already paused",
                container.id
            )))
        }
        _ => {
            return Err(Error::precondition(format!(
                "Container {} is not running",
                container.id
            )))
        }
    }
    let task = frontend.backend.tasks.get(NAMESPACE, &container.id)?;
    task.client()
        .pause(
            ctx(),
            &api::PauseRequest {
                id: container.id.clone(),
                ..Default::default()
            },
        )
        .await
        .map_err(|err| status_error(err).context(format!("pausing container {}", container.id)))?;
    container.update(|r| r.state.status = Status::Paused)?;
    Ok(())
}

/// `docker unpause`.
pub async fn unpause(frontend: &Frontend, container: &Arc<Container>) -> Result<()> {
    let _operation = container.operation().await;
    if container.status() != Status::Paused {
        return Err(Error::precondition(format!(
            "Container {} is not paused",
            container.id
        )));
    }
    let task = frontend.backend.tasks.get(NAMESPACE, &container.id)?;
    resume_task(&task).await?;
    container.update(|r| r.state.status = Status::Running)?;
    Ok(())
}

async fn resume_task(task: &Task) -> Result<()> {
    task.client()
        .resume(
            ctx(),
            &api::ResumeRequest {
                id: task.id.clone(),
                ..Default::default()
            },
        )
        .await
        .map(|_| ())
        .map_err(|err| status_error(err).context(format!("resuming container {}", task.id)))
}

/// After berthd starts: every container that was running is watched
/// again if its task survived (its stdin reopened), or has its exit
/// recorded if not; then the restart policies act as at a daemon start:
/// `always` containers start, and `unless-stopped` ones not stopped by
/// the user.
pub async fn restore(frontend: &Frontend) {
    let unfinished = frontend.clone();
    if let Err(err) =
        tokio::task::spawn_blocking(move || super::create::remove_unfinished(&unfinished)).await
    {
        tracing::warn!("removing unfinished creates: {err}");
    }
    // Tasks of containers the records say are not running: a start (a
    // restart policy's too), or an exit's cleanup, cut short by a crash.
    // A restarting container then restarts as below.
    for container in frontend.containers.all() {
        let status = container.status();
        if matches!(status, Status::Running | Status::Paused) {
            continue;
        }
        if let Ok(task) = frontend.backend.tasks.get(NAMESPACE, &container.id) {
            tracing::info!(id = %container.id, status = status.as_str(), "removing a task its container does not run");
            remove_stale_task(frontend, &container.id, &task).await;
        }
    }
    // Network state of containers whose task is gone (a cleanup cut short
    // by a crash or a stop) goes first, so their next start finds none.
    let live: std::collections::HashSet<String> = frontend
        .containers
        .all()
        .into_iter()
        .filter(|c| frontend.backend.tasks.get(NAMESPACE, &c.id).is_ok())
        .map(|c| c.id.clone())
        .collect();
    match frontend.network.cleanup(&live).await {
        Ok(cleaned) if !cleaned.is_empty() => {
            tracing::info!(
                containers = cleaned.len(),
                "network state of stopped containers removed"
            )
        }
        Ok(_) => {}
        Err(err) => tracing::warn!("cleaning up network state: {err}"),
    }
    for container in frontend.containers.all() {
        let record = container.record();
        let task = frontend.backend.tasks.get(NAMESPACE, &container.id).ok();
        match (record.state.status, task) {
            (Status::Running | Status::Paused, Some(task)) => {
                if record.config.open_stdin == Some(true) {
                    match StdinPipe::reopen(container.dir()) {
                        Ok(pipe) => container.set_stdin(Some(Arc::new(pipe))),
                        Err(err) => tracing::warn!(id = %container.id, "reopening stdin: {err}"),
                    }
                }
                watch(frontend.clone(), container.clone(), task);
            }
            (Status::Running | Status::Paused | Status::Restarting, None) => {
                let exit = frontend
                    .backend
                    .tasks
                    .exited(NAMESPACE, &container.id)
                    .map(|e| (e.exit.exit_status, e.exit.exited_at))
                    .unwrap_or((LOST_EXIT, SystemTime::now()));
                let frontend = frontend.clone();
                tokio::spawn(async move {
                    after_exit(&frontend, &container, exit.0, exit.1).await;
                });
            }
            (Status::Exited | Status::Created, _)
                if starts_with_daemon(&record) && record.state.started_at.is_some() =>
            {
                let frontend = frontend.clone();
                tokio::spawn(async move {
                    let _operation = container.operation().await;
                    if let Err(err) = start_locked(&frontend, &container).await {
                        tracing::warn!(id = %container.id, "restart policy at daemon start: {err}");
                    }
                });
            }
            _ => {}
        }
    }
}

/// How long a stale task gets to die after SIGKILL before its delete.
const STALE_KILL_WAIT: Duration = Duration::from_secs(10);

/// Kills and deletes the task of a container that is not running.
async fn remove_stale_task(frontend: &Frontend, id: &str, task: &Task) {
    let client = task.client();
    let kill = api::KillRequest {
        id: id.to_owned(),
        signal: 9,
        all: true,
        ..Default::default()
    };
    if let Err(err) = client.kill(ctx(), &kill).await {
        tracing::debug!(%id, "stale task: SIGKILL: {err}");
    }
    let wait = api::WaitRequest {
        id: id.to_owned(),
        ..Default::default()
    };
    let _ = tokio::time::timeout(STALE_KILL_WAIT, client.wait(ctx_forever(), &wait)).await;
    match frontend.backend.tasks.delete(NAMESPACE, id).await {
        Ok(_) => {}
        Err(err) if err.kind == ErrorKind::NotFound => {}
        Err(err) => tracing::warn!(%id, "removing a stale task: {err}"),
    }
    let _ = frontend.backend.tasks.delete_exited(NAMESPACE, id);
}

/// Whether the restart policy starts this stopped container when the
/// daemon starts.
fn starts_with_daemon(record: &Record) -> bool {
    use bollard_stubs::models::RestartPolicyNameEnum as Policy;
    match record
        .host_config
        .restart_policy
        .as_ref()
        .and_then(|p| p.name)
    {
        Some(Policy::ALWAYS) => true,
        Some(Policy::UNLESS_STOPPED) => !record.manually_stopped,
        _ => false,
    }
}

fn unix_ms(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `docker update`: new limits and restart policy, checked as at create,
/// kept in the record and applied to the running task (if any). Zero and
/// absent values leave a setting as it was, as dockerd reads them.
pub async fn update(
    frontend: &Frontend,
    container: &Arc<Container>,
    change: bollard_stubs::models::ContainerUpdateBody,
) -> Result<()> {
    let _operation = container.operation().await;
    let mut host = container.record().host_config;
    fn set<T: PartialEq + Default>(slot: &mut Option<T>, value: Option<T>) {
        if let Some(value) = value.filter(|v| *v != T::default()) {
            *slot = Some(value);
        }
    }
    set(&mut host.memory, change.memory);
    set(&mut host.memory_swap, change.memory_swap);
    set(&mut host.memory_reservation, change.memory_reservation);
    set(&mut host.nano_cpus, change.nano_cpus);
    set(&mut host.cpu_shares, change.cpu_shares);
    set(&mut host.cpu_period, change.cpu_period);
    set(&mut host.cpu_quota, change.cpu_quota);
    set(&mut host.cpuset_cpus, change.cpuset_cpus);
    set(&mut host.cpuset_mems, change.cpuset_mems);
    set(&mut host.pids_limit, change.pids_limit);
    if let Some(policy) = change.restart_policy {
        host.restart_policy = Some(policy);
    }
    let host = super::create::check_host_config(host)?;
    if container.status().is_active() {
        if let Ok(task) = frontend.backend.tasks.get(NAMESPACE, &container.id) {
            let mut resources = oci_spec::runtime::LinuxResources::default();
            spec::apply_limits(&mut resources, &host)?;
            let json = serde_json::to_vec(&resources)
                .map_err(|err| Error::internal(format!("encoding resources: {err}")))?;
            task.client()
                .update(
                    ctx(),
                    &api::UpdateTaskRequest {
                        id: container.id.clone(),
                        resources: containerd_shim_protos::protobuf::MessageField::some(
                            containerd_shim_protos::protobuf::well_known_types::any::Any {
                                type_url: RESOURCES_TYPE.to_owned(),
                                value: json,
                                ..Default::default()
                            },
                        ),
                        ..Default::default()
                    },
                )
                .await
                .map_err(|err| {
                    status_error(err).context(format!("updating container {}", container.id))
                })?;
        }
    }
    container.update(|r| r.host_config = host)?;
    Ok(())
}

/// The type of the resources a task update carries.
const RESOURCES_TYPE: &str = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";
