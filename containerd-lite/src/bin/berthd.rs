//! `berthd`: images, content, snapshots, containers and tasks
//! behind containerd's own gRPC API, and the Docker Engine API. Takes containerd's flags; see
//! docs/berthd.md.
#![forbid(unsafe_code)]

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use berthd::config::{Config, Overrides, DEFAULT_DOCKER_ADDRESS};
use berthd::docker;
use berthd::grpc::socket::BoundSocket;
use berthd::grpc::{self, Backend};
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// The Berth daemon: containerd's gRPC API over berthd's stores.
#[derive(Debug, Parser)]
#[command(name = "berthd", version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("BERTHD_GIT_COMMIT"), ")"))]
struct Flags {
    /// TOML configuration file [default: /etc/berth/berthd.toml, if present]
    #[arg(short, long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Persistent data: content, metadata, snapshots [default: /var/lib/berth]
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Runtime state, gone at reboot [default: /run/berth]
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// gRPC socket; shims' ttrpc socket is this plus .ttrpc [default: /run/berth/berthd.sock]
    #[arg(short, long, value_name = "SOCK")]
    address: Option<PathBuf>,
    /// error, warn, info, debug or trace [default: info]
    #[arg(short, long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Docker API socket; "" serves none [default: /run/berth/docker.sock]
    // A String, not a PathBuf: clap refuses an empty path, and "" is meaningful.
    #[arg(long, value_name = "SOCK")]
    docker_address: Option<String>,
}

fn main() -> ExitCode {
    let flags = Flags::parse();
    let overrides = Overrides {
        root: flags.root,
        state: flags.state,
        address: flags.address,
        docker_address: flags.docker_address.map(PathBuf::from),
        log_level: flags.log_level,
    };
    let config = match Config::load(flags.config.as_deref(), overrides) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("berthd: {err}");
            return ExitCode::from(2);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::new(format!(
            "berthd={0},berth_proto={0},shim={0},tower_http::trace={0},warn",
            config.log_level
        )))
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("starting the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            ExitCode::FAILURE
        }
    }
}

/// The Docker API server running beside the gRPC one, and its socket
/// (removed when dropped).
type DockerApi = (BoundSocket, tokio::task::JoinHandle<berthd::Result<()>>);

/// Serves the Docker API on `address` (made and removed as the gRPC socket
/// is) until `shutdown`; `None` when another daemon holds the default
/// socket.
fn start_docker_api(
    address: &Path,
    config: &Config,
    backend: &Backend,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> berthd::Result<Option<DockerApi>> {
    let Some(mut socket) = bind_docker_socket(address)? else {
        return Ok(None);
    };
    let listener = socket
        .take_listener()
        .ok_or_else(|| berthd::Error::internal("docker API listener already taken"))?;
    tracing::info!(address = %address.display(), "serving the Docker Engine API");
    let served = tokio::spawn(docker::serve(
        listener,
        backend.clone(),
        docker::Settings::from_config(config),
        shutdown,
    ));
    Ok(Some((socket, served)))
}

/// Binds the Docker API socket. A daemon already serving on the default
/// path (another berthd started without `--docker-address`) is not fatal:
/// this one serves no Docker API and says so. Any other failure, or a
/// socket asked for explicitly, is.
fn bind_docker_socket(address: &Path) -> berthd::Result<Option<BoundSocket>> {
    match BoundSocket::bind(address) {
        Ok(socket) => Ok(Some(socket)),
        // Refused as live, or lost a race to another daemon binding it
        // at the same moment: either way someone answers there now.
        Err(err)
            if address == Path::new(DEFAULT_DOCKER_ADDRESS)
                && std::os::unix::net::UnixStream::connect(address).is_ok() =>
        {
            tracing::warn!("not serving the Docker API: {err}");
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

async fn run(config: Config) -> berthd::Result<()> {
    tracing::info!(
        root = %config.root.display(),
        state = %config.state.display(),
        "berthd starting"
    );
    let backend = Backend::open(&config)?;
    // Shims forward their events here; it is up before any shim is
    // re-adopted, so none of theirs is lost to a missing endpoint.
    let mut ttrpc_socket = BoundSocket::bind(&config.ttrpc_address())?;
    let listener = ttrpc_socket
        .take_listener()
        .ok_or_else(|| berthd::Error::internal("ttrpc listener already taken"))?;
    let forward = berthd::runtime::forward::serve_on(
        listener,
        Arc::new(grpc::tasks::ExchangeSink(backend.events.clone())),
    )
    .await?;
    let (adopted, cleaned) = backend.tasks.restore().await?;
    tracing::info!(adopted, cleaned, "tasks of a previous run restored");
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let (stop, stopping) = watch::channel(false);
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!("{name}: stopping");
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopping: watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stopped| *stopped).await;
    };
    let docker_api = match &config.docker_address {
        Some(address) => {
            start_docker_api(address, &config, &backend, until_stopped(stopping.clone()))?
        }
        None => None,
    };
    let served = grpc::serve(&config.address, &backend, until_stopped(stopping)).await;
    if let Some((socket, docker_served)) = docker_api {
        if served.is_err() {
            // The gRPC side failed without a signal: nothing else stops it.
            docker_served.abort();
        }
        match docker_served.await {
            Ok(Err(err)) => tracing::error!("{err}"),
            Err(err) if !err.is_cancelled() => tracing::error!("docker API task: {err}"),
            Err(_) => {}
            Ok(Ok(())) => {}
        }
        drop(socket);
    }
    // Shims keep running without berthd; a later berthd re-adopts them.
    drop(forward);
    drop(ttrpc_socket);
    served?;
    tracing::info!("berthd stopped");
    Ok(())
}
