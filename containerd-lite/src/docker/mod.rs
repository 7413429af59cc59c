//! The Docker Engine API (v1.41) over berthd's local services: an
//! in-process frontend, as the gRPC API is, so the docker CLI and SDKs
//! work against berthd with no second daemon.
//!
//! Paths are answered with a version prefix from `/v1.24` to `/v1.41` and
//! without one (the newest); a client asking for a newer version gets 400
//! naming the highest this server speaks, and negotiates down through
//! `/_ping`'s `API-Version` header. Errors become `{"message": ...}`
//! bodies in one place ([`error`]).
//!
//! Docker's objects live in the `moby` containerd namespace ([`NAMESPACE`]),
//! so `berthctl -n moby` and `ctr -n moby` see what the docker CLI made.
//!
//! Served now: system (`/_ping`, `/version`, `/info`, `/events`,
//! `/system/df`), images (list, inspect, history, tag, remove, prune,
//! pull, push, save, load), containers ([`containers`]: create, start,
//! stop, kill, restart, pause, update, rename, wait, remove, prune, list,
//! inspect, stats, top), [`attach`] and logs, [`exec`], [`volumes`] and
//! [`networks`]. Build comes next, as a further module beside these.

pub mod attach;
pub mod build;
pub mod containers;
pub mod error;
pub mod events;
pub mod exchange;
pub mod exec;
pub mod hijack;
pub mod images;
pub mod networks;
pub mod progress;
pub mod query;
pub mod reference;
pub mod system;
pub mod volumes;

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::http::{StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Router, ServiceExt};
use tokio::net::UnixListener;
use tower::Layer;

use crate::grpc::Backend;
use crate::network::{NetworkConfig, NetworkManager};
use crate::transfer::Transfers;
use crate::{Error, Result};
use error::message_response;
use events::Journal;
use images::catalog::Catalog;

/// The containerd namespace docker's images (and later containers) live
/// in: dockerd's own (`moby`), so tools that know dockerd-on-containerd
/// find them where they expect.
pub const NAMESPACE: &str = "moby";

/// The API version served, and the oldest one still answered.
pub const API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 41,
};
/// The oldest API version answered (older clients get 400).
pub const MIN_API_VERSION: ApiVersion = ApiVersion {
    major: 1,
    minor: 24,
};

/// The logging program's file name.
const LOGGER_BINARY: &str = "berth-logger";

/// How long requests in flight may take to finish once berthd stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// A Docker API version, `1.41`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

impl ApiVersion {
    fn parse(text: &str) -> Option<ApiVersion> {
        let (major, minor) = text.split_once('.')?;
        Some(ApiVersion {
            major: major.parse().ok()?,
            minor: minor.parse().ok()?,
        })
    }
}

/// What the frontend reports about the daemon besides its stores.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// berthd's data directory (`DockerRootDir`).
    pub root: PathBuf,
    /// berthd's state directory (bundles, network namespaces; tmpfs).
    pub state: PathBuf,
    /// The default network's bridge and subnet (configured or picked).
    pub network_bridge: String,
    pub network_subnet: Option<ipnet::Ipv4Net>,
    /// Runtime name -> shim binary, as configured.
    pub runtimes: BTreeMap<String, String>,
    /// The logging program containers' output goes through
    /// (`berth-logger`, found beside berthd or on PATH).
    pub logger: PathBuf,
    /// Where containers' cgroups go unless they name a parent ("/moby";
    /// "" is the root).
    pub cgroup_parent: String,
}

impl Settings {
    /// What the frontend reports of berthd's configuration.
    pub fn from_config(config: &crate::config::Config) -> Settings {
        Settings {
            root: config.root.clone(),
            state: config.state.clone(),
            network_bridge: config.network_bridge.clone(),
            network_subnet: config.network_subnet,
            runtimes: config.runtimes.clone(),
            logger: crate::runtime::shim::find_binary(LOGGER_BINARY)
                .unwrap_or_else(|| PathBuf::from(LOGGER_BINARY)),
            cgroup_parent: config.docker_cgroup_parent.clone(),
        }
    }
}

/// What every handler works with. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Frontend {
    pub backend: Backend,
    pub transfers: Transfers,
    pub catalog: Catalog,
    pub containers: containers::Registry,
    /// Exec instances (in memory, as dockerd keeps them).
    pub execs: exec::Execs,
    /// Volumes (`<root>/volumes`).
    pub volumes: volumes::Store,
    /// Networks and the containers' network namespaces.
    pub network: Arc<NetworkManager>,
    pub journal: Journal,
    pub settings: Arc<Settings>,
}

impl Frontend {
    /// The frontend over `backend`, with an empty event journal and the
    /// containers recorded under `<root>/docker/containers`.
    pub fn new(backend: Backend, settings: Settings) -> Result<Frontend> {
        let containers = containers::Registry::open(settings.root.join("docker/containers"))?;
        exec::remove_stale_fifos(&settings.state);
        build::remove_stale_contexts(&settings.root);
        let network = Arc::new(NetworkManager::open(
            backend.db.clone(),
            NetworkConfig {
                default_bridge: settings.network_bridge.clone(),
                default_subnet: settings.network_subnet,
                ..NetworkConfig::new(&settings.state)
            },
        )?);
        let transfers = Transfers::new(
            backend.content.clone(),
            backend.images.clone(),
            backend.leases.clone(),
        );
        Ok(Frontend {
            catalog: Catalog::new(backend.clone()),
            containers,
            execs: exec::Execs::default(),
            volumes: volumes::Store::open(settings.root.join("volumes"))?,
            network,
            journal: Journal::new(),
            transfers,
            backend,
            settings: Arc::new(settings),
        })
    }
}

/// Every route, unprefixed; [`versioned`] strips the `/vX.Y` prefix
/// before routing.
pub fn router(frontend: Frontend) -> Router {
    Router::new()
        .route("/_ping", get(system::ping))
        .route("/version", get(system::version))
        .route("/info", get(system::info))
        .route("/events", get(events::events))
        .route("/system/df", get(system::disk_usage))
        .route("/containers/json", get(containers::api::list))
        .route("/containers/create", post(containers::create::create))
        .route("/containers/prune", post(containers::api::prune))
        .route(
            "/containers/{id}",
            axum::routing::delete(containers::api::delete),
        )
        .route("/containers/{id}/json", get(containers::api::inspect))
        .route("/containers/{id}/start", post(containers::api::start))
        .route("/containers/{id}/stop", post(containers::api::stop))
        .route("/containers/{id}/restart", post(containers::api::restart))
        .route("/containers/{id}/kill", post(containers::api::kill))
        .route("/containers/{id}/pause", post(containers::api::pause))
        .route("/containers/{id}/unpause", post(containers::api::unpause))
        .route("/containers/{id}/rename", post(containers::api::rename))
        .route("/containers/{id}/wait", post(containers::api::wait))
        .route("/containers/{id}/update", post(containers::api::update))
        .route("/containers/{id}/attach", post(attach::attach))
        .route("/containers/{id}/resize", post(attach::resize))
        .route("/containers/{id}/logs", get(attach::logs))
        .route("/containers/{id}/stats", get(containers::stats::stats))
        .route("/containers/{id}/top", get(containers::top::top))
        .route("/containers/{id}/exec", post(exec::create))
        .route("/exec/{id}/start", post(exec::start))
        .route("/exec/{id}/resize", post(exec::resize))
        .route("/exec/{id}/json", get(exec::inspect))
        .route("/networks", get(networks::list))
        .route("/networks/create", post(networks::create))
        .route("/networks/prune", post(networks::prune))
        .route(
            "/networks/{id}",
            get(networks::inspect).delete(networks::remove),
        )
        .route("/networks/{id}/connect", post(networks::connect))
        .route("/networks/{id}/disconnect", post(networks::disconnect))
        .route("/volumes", get(volumes::list))
        .route("/volumes/create", post(volumes::create))
        .route("/volumes/prune", post(volumes::prune))
        .route(
            "/volumes/{name}",
            get(volumes::inspect).delete(volumes::remove),
        )
        .route("/build", post(build::build))
        .route("/build/prune", post(build::prune))
        .route("/images/json", get(images::list))
        .route("/images/create", post(images::pull::create))
        .route("/images/get", get(images::archive::save_many))
        .route("/images/load", post(images::archive::load))
        .route("/images/prune", post(images::remove::prune))
        .route(
            "/images/{*path}",
            get(images::by_name_get)
                .post(images::by_name_post)
                .delete(images::remove::remove),
        )
        .fallback(|| async { message_response(StatusCode::NOT_FOUND, "page not found") })
        .with_state(frontend)
}

/// Strips a `/vX.Y` prefix, refusing versions outside
/// [`MIN_API_VERSION`]..=[`API_VERSION`] as dockerd does, and records the
/// version the client speaks as an extension.
async fn versioned(mut request: Request, next: Next) -> Response {
    let path = request.uri().path();
    let mut version = API_VERSION;
    if let Some(rest) = path.strip_prefix("/v") {
        let (number, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        if let Some(asked) = ApiVersion::parse(number) {
            if asked > API_VERSION {
                let message = format!(
                    "client version {asked} is too new. Maximum supported API version is {API_VERSION}"
                );
                return message_response(StatusCode::BAD_REQUEST, &message);
            }
            if asked < MIN_API_VERSION {
                let message = format!(
                    "client version {asked} is too old. Minimum supported API version is {MIN_API_VERSION}, please upgrade your client to a newer version"
                );
                return message_response(StatusCode::BAD_REQUEST, &message);
            }
            version = asked;
            let tail = if tail.is_empty() { "/" } else { tail };
            let path_and_query = match request.uri().query() {
                Some(query) => format!("{tail}?{query}"),
                None => tail.to_owned(),
            };
            match path_and_query.parse::<Uri>() {
                Ok(uri) => *request.uri_mut() = uri,
                Err(err) => {
                    return message_response(
                        StatusCode::BAD_REQUEST,
                        &format!("invalid request path: {err}"),
                    )
                }
            }
        }
    }
    request.extensions_mut().insert(version);
    next.run(request).await
}

/// Serves the API on `listener` until `shutdown` completes; then ends
/// `/events` streams, stops accepting, and gives requests in flight
/// [`DRAIN_TIMEOUT`] to finish.
pub async fn serve(
    listener: UnixListener,
    backend: Backend,
    settings: Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let frontend = Frontend::new(backend, settings)?;
    let journal = frontend.journal.clone();
    containers::api::follow_oom(&frontend);
    containers::lifecycle::restore(&frontend).await;
    exchange::follow(
        &frontend.backend.events,
        frontend.backend.containers.clone(),
        journal.clone(),
    );
    // One debug line per request with its latency (to the headers: a
    // stream's body may last much longer), like the gRPC side's.
    let logged = router(frontend).layer(
        tower_http::trace::TraceLayer::new_for_http()
            .make_span_with(tower_http::trace::DefaultMakeSpan::new().level(tracing::Level::DEBUG))
            .on_request(())
            .on_response(crate::grpc::LogResponse)
            .on_body_chunk(())
            .on_eos(())
            .on_failure(()),
    );
    let app = middleware::from_fn(versioned).layer(logged);
    let (draining, drain_started) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        journal.close();
        let _ = draining.send(());
    };
    let server = axum::serve(listener, ServiceExt::<Request>::into_make_service(app))
        .with_graceful_shutdown(shutdown);
    tokio::select! {
        biased;
        served = server => served.map_err(|err| Error::internal(format!("docker API server: {err}"))),
        () = async {
            if drain_started.await.is_ok() {
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!("docker API requests still in flight after {DRAIN_TIMEOUT:?}: stopping anyway");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests;
