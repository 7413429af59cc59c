//! Starting, reaching and cleaning up after shims, by containerd's shim v2
//! contract: `BINARY -namespace NS -address GRPC -publish-binary BIN -id ID
//! start` in the bundle prints the ttrpc address; `... delete` cleans up
//! after a dead shim and prints a protobuf DeleteResponse.

use super::bundle::Bundle;
use super::Config;
use crate::error::{Context, Error, Result};
use containerd_shim_protos::api;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim_async::TaskClient;
use containerd_shim_protos::ttrpc;
use containerd_shim_protos::ttrpc::asynchronous::Client;
use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, SystemTime};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};

/// How long a shim may take to print its address, or to exit on Shutdown.
const START_TIMEOUT: Duration = Duration::from_secs(20);
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Which shim binary serves which runtime name.
#[derive(Debug, Clone)]
pub struct ShimBinaries {
    names: BTreeMap<String, String>,
}

impl Default for ShimBinaries {
    /// What ctr asks for by default (`io.containerd.runc.v2`) and our own
    /// name both go to our shim.
    fn default() -> Self {
        let mut names = BTreeMap::new();
        for runtime in ["io.containerd.runc.v2", "io.containerd.berth.v2"] {
            names.insert(runtime.to_string(), "containerd-shim-berth-v2".to_string());
        }
        ShimBinaries { names }
    }
}

impl ShimBinaries {
    /// Map `runtime` to `binary` (a name looked up on PATH, or a path).
    pub fn set(&mut self, runtime: &str, binary: &str) {
        self.names.insert(runtime.to_string(), binary.to_string());
    }

    /// The shim binary for a runtime name: the configured one, else
    /// containerd's convention (`io.containerd.NAME.VERSION` ->
    /// `containerd-shim-NAME-VERSION`), else the name as a path.
    pub fn resolve(&self, runtime: &str) -> Result<PathBuf> {
        let name = match self.names.get(runtime) {
            Some(binary) => binary.clone(),
            None if runtime.starts_with('/') => runtime.to_string(),
            None => conventional_name(runtime)?,
        };
        find_binary(&name).ok_or_else(|| {
            Error::not_found(format!(
                "runtime {runtime:?}: shim binary {name} not found (searched PATH)"
            ))
        })
    }
}

fn conventional_name(runtime: &str) -> Result<String> {
    let parts: Vec<&str> = runtime.split('.').collect();
    match parts.as_slice() {
        [.., name, version] if parts.len() >= 3 && !name.is_empty() && version.starts_with('v') => {
            Ok(format!("containerd-shim-{name}-{version}"))
        }
        _ => Err(Error::invalid(format!(
            "runtime {runtime:?}: not of the form io.containerd.NAME.vN and not configured"
        ))),
    }
}

pub fn find_binary(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    // Installed side by side with berthd, as the release layout has it.
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        dirs.push(dir);
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

/// A ttrpc context for calls that finish promptly; Wait uses [`ctx_forever`].
pub fn ctx() -> ttrpc::context::Context {
    ttrpc::context::with_timeout(Duration::from_secs(60).as_nanos() as i64)
}

pub fn ctx_forever() -> ttrpc::context::Context {
    ttrpc::context::Context::default()
}

/// A ttrpc failure as a berthd error, keeping the status code's meaning.
pub fn status_error(err: ttrpc::Error) -> Error {
    match err {
        ttrpc::Error::RpcStatus(s) => Error::new(super::kind_of(s.code()), s.message().to_string()),
        other => Error::unavailable(format!("shim: {other}")),
    }
}

pub fn timestamp(at: SystemTime) -> Timestamp {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

pub fn to_system_time(ts: &Timestamp) -> SystemTime {
    let secs = u64::try_from(ts.seconds).unwrap_or(0);
    let nanos = u32::try_from(ts.nanos).unwrap_or(0);
    SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
}

/// The shim's command line for `action`.
fn command(
    config: &Config,
    binary: &Path,
    namespace: &str,
    id: &str,
    bundle: &Bundle,
    action: &str,
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("-namespace").arg(namespace);
    cmd.arg("-address").arg(&config.grpc_address);
    cmd.arg("-publish-binary").arg(&config.publish_binary);
    cmd.arg("-id").arg(id);
    if action == "delete" {
        cmd.arg("-bundle").arg(bundle.path());
    }
    if config.debug {
        cmd.arg("-debug");
    }
    cmd.arg(action);
    cmd.current_dir(bundle.path());
    cmd.env("TTRPC_ADDRESS", &config.ttrpc_address);
    cmd.env("GRPC_ADDRESS", &config.grpc_address);
    cmd.env("NAMESPACE", namespace);
    cmd.kill_on_drop(true);
    cmd
}

/// A running shim and the task client connected to it.
pub struct Shim {
    client: TaskClient,
    pid: u32,
    task_pid: u32,
    pidfd: Option<AsyncFd<Pollable>>,
    _log: Option<LogRelay>,
}

/// A pidfd for tokio's reactor; it owns the fd it lends.
pub struct Pollable(OwnedFd);

impl AsRawFd for Pollable {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

impl Shim {
    /// Run `start` in the bundle and connect to the address it prints.
    pub async fn start(
        config: &Config,
        binary: &Path,
        namespace: &str,
        id: &str,
        bundle: &Bundle,
        options: &[u8],
    ) -> Result<Shim> {
        let log = relay_log(bundle);
        let mut cmd = command(config, binary, namespace, id, bundle, "start");
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .context(format!("starting shim {}", binary.display()))?;
        if let Some(mut stdin) = child.stdin.take() {
            // containerd passes the runtime options on start's stdin.
            let _ = stdin.write_all(options).await;
        }
        let out = tokio::time::timeout(START_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "shim {} start: no answer in {START_TIMEOUT:?}",
                    binary.display()
                ))
            })?
            .context(format!("shim {} start", binary.display()))?;
        // Read stdout and stderr together, as containerd does.
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        let text = text.trim();
        if !out.status.success() {
            return Err(Error::internal(format!(
                "shim {} start failed ({}): {text}",
                binary.display(),
                out.status
            )));
        }
        let address = parse_address(text).ok_or_else(|| {
            Error::internal(format!(
                "shim {} start printed no address: {text:?}",
                binary.display()
            ))
        })?;
        Shim::connect(&address, id, log).await
    }

    /// Connect to the shim of a bundle a previous berthd started.
    pub async fn reconnect(bundle: &Bundle) -> Result<Shim> {
        let address = bundle.address()?;
        let log = relay_log(bundle);
        Shim::connect(&address, bundle.id(), log).await
    }

    async fn connect(address: &str, id: &str, log: Option<LogRelay>) -> Result<Shim> {
        let client = Client::connect(address)
            .await
            .map_err(|e| Error::unavailable(format!("connecting to shim at {address}: {e}")))?;
        let client = TaskClient::new(client);
        let info = client
            .connect(
                ctx(),
                &api::ConnectRequest {
                    id: id.to_string(),
                    ..Default::default()
                },
            )
            .await
            .map_err(|e| status_error(e).context(format!("shim at {address}")))?;
        let pidfd = rustix::process::Pid::from_raw(info.shim_pid as i32)
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            })
            // `AsyncFd::new` is deprecated because a raw fd may close under
            // it; `Pollable` owns its fd for the AsyncFd's whole life.
            .and_then(|fd| {
                #[allow(deprecated)]
                let fd = AsyncFd::new(Pollable(fd));
                fd.ok()
            });
        Ok(Shim {
            client,
            pid: info.shim_pid,
            task_pid: info.task_pid,
            pidfd,
            _log: log,
        })
    }

    pub fn client(&self) -> &TaskClient {
        &self.client
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn task_pid(&self) -> u32 {
        self.task_pid
    }

    /// Resolves once the shim process has exited.
    pub async fn exited(&self) {
        match &self.pidfd {
            // A pidfd turns readable when its process exits.
            Some(fd) => {
                let _ = fd.readable().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Ask the shim to exit and wait (bounded) until it has.
    pub async fn shutdown(&self) {
        self.request_shutdown().await;
        let _ = tokio::time::timeout(SHUTDOWN_TIMEOUT, self.exited()).await;
    }

    /// Ask the shim to exit, without waiting until it has: after a normal
    /// Delete nothing of the task depends on the shim process any more (its
    /// rootfs is unmounted, its socket is its own to remove), and the pidfd
    /// watch still notices the exit.
    pub async fn request_shutdown(&self) {
        let _ = self
            .client
            .shutdown(
                ctx(),
                &api::ShutdownRequest {
                    ..Default::default()
                },
            )
            .await;
    }
}

/// `unix://...` (containerd 1.6) or a JSON bootstrap with an `address`.
fn parse_address(text: &str) -> Option<String> {
    if text.starts_with('{') {
        let value: serde_json::Value = serde_json::from_str(text).ok()?;
        return value.get("address")?.as_str().map(str::to_string);
    }
    let line = text.lines().rev().find(|l| l.starts_with("unix://"))?;
    Some(line.trim().to_string())
}

/// Copies what the shim writes to the bundle's `log` fifo into our log;
/// stops when the shim closes it (exits) or when dropped.
pub struct LogRelay(tokio::task::JoinHandle<()>);

impl Drop for LogRelay {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Start relaying the bundle's `log` fifo (made if missing). Opened
/// read-only and non-blocking: it waits in the reactor until the shim opens
/// it and ends when the shim closes it, so no fd outlives the shim.
fn relay_log(bundle: &Bundle) -> Option<LogRelay> {
    let path = bundle.path().join("log");
    if !path.exists()
        && nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).is_err()
    {
        return None;
    }
    let reader = tokio::net::unix::pipe::OpenOptions::new()
        .open_receiver(&path)
        .ok()?;
    let id = bundle.id().to_string();
    Some(LogRelay(tokio::spawn(async move {
        let mut lines = tokio::io::BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "shim", task = %id, "{line}");
        }
    })))
}

/// Run the shim's `delete` action: what containerd does after a shim died.
pub async fn cleanup(
    config: &Config,
    binary: &Path,
    namespace: &str,
    id: &str,
    bundle: &Bundle,
) -> Result<api::DeleteResponse> {
    if binary.as_os_str().is_empty() {
        return Err(Error::not_found(format!(
            "task {id}: no shim binary recorded in its bundle"
        )));
    }
    let mut cmd = command(config, binary, namespace, id, bundle, "delete");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = tokio::time::timeout(START_TIMEOUT, cmd.output())
        .await
        .map_err(|_| Error::unavailable(format!("shim {} delete: no answer", binary.display())))?
        .context(format!("shim {} delete", binary.display()))?;
    if !out.status.success() {
        return Err(Error::internal(format!(
            "shim {} delete failed ({}): {}",
            binary.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    api::DeleteResponse::parse_from_bytes(&out.stdout).map_err(|e| {
        Error::internal(format!(
            "shim {} delete: bad response: {e}",
            binary.display()
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_names_to_binaries() {
        assert_eq!(
            conventional_name("io.containerd.runc.v2").unwrap(),
            "containerd-shim-runc-v2"
        );
        assert_eq!(
            conventional_name("io.containerd.kata.v2").unwrap(),
            "containerd-shim-kata-v2"
        );
        assert!(conventional_name("runc").is_err());
        let mut b = ShimBinaries::default();
        b.set("io.containerd.x.v2", "/nonexistent/shim");
        let e = b.resolve("io.containerd.x.v2").unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::NotFound);
        assert!(e.message.contains("/nonexistent/shim"), "{}", e.message);
        assert_eq!(b.resolve("/bin/sh").unwrap(), PathBuf::from("/bin/sh"));
    }

    #[test]
    fn addresses() {
        assert_eq!(
            parse_address("unix:///run/x/s/ab").as_deref(),
            Some("unix:///run/x/s/ab")
        );
        assert_eq!(
            parse_address("{\"version\":3,\"address\":\"unix:///a\"}").as_deref(),
            Some("unix:///a")
        );
        assert_eq!(
            parse_address("time=... level=info\nunix:///b").as_deref(),
            Some("unix:///b")
        );
        assert_eq!(parse_address("error: something"), None);
    }
}
