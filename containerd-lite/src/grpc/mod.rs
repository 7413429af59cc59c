//! containerd's gRPC API on a unix socket: thin adapters from the wire
//! types of `berth-proto` to berthd's local services.
//!
//! Each service lives in its own module and does three things only: turn
//! the request into the local service's types (the namespace from the
//! `containerd-namespace` header, see [`request`]), call it (on the
//! blocking pool: the stores fsync), and publish the event containerd
//! publishes for the change. Errors become gRPC statuses in one place,
//! [`status`].

pub mod backend;
pub mod client;
pub mod containers;
pub mod content;
pub mod diff;
pub mod events;
pub mod images;
pub mod introspection;
pub mod leases;
pub mod namespaces;
pub mod request;
pub mod snapshots;
pub mod socket;
pub mod status;
pub mod tasks;
pub mod transfer;
pub mod version;

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::Path;
use std::time::Duration;

use berth_proto::containerd::services::containers::v1::containers_server::ContainersServer;
use berth_proto::containerd::services::content::v1::content_server::ContentServer;
use berth_proto::containerd::services::diff::v1::diff_server::DiffServer;
use berth_proto::containerd::services::events::v1::events_server::EventsServer;
use berth_proto::containerd::services::images::v1::images_server::ImagesServer;
use berth_proto::containerd::services::introspection::v1::introspection_server::IntrospectionServer;
use berth_proto::containerd::services::leases::v1::leases_server::LeasesServer;
use berth_proto::containerd::services::namespaces::v1::namespaces_server::NamespacesServer;
use berth_proto::containerd::services::snapshots::v1::snapshots_server::SnapshotsServer;
use berth_proto::containerd::services::tasks::v1::tasks_server::TasksServer;
use berth_proto::containerd::services::version::v1::version_server::VersionServer;
use tokio::sync::oneshot;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;
use tonic::transport::Server;
use tonic::Status;
use tower::layer::util::{Identity, Stack};
use tower_http::classify::{GrpcErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultMakeSpan, OnResponse, TraceLayer};
use tracing::Level;

use crate::diff::ApplyOptions;
use crate::{Error, Result};
pub use backend::Backend;
use introspection::{IntrospectionService, Plugin};
use socket::BoundSocket;

/// containerd's plugin type for gRPC services.
const GRPC_PLUGIN: &str = "io.containerd.grpc.v1";

/// What introspection reports: exactly the services [`router`] adds and the
/// local plugins behind them, under containerd's plugin names.
fn plugins(backend: &Backend) -> Vec<Plugin> {
    let mut plugins = vec![
        Plugin::new("io.containerd.content.v1", "content"),
        Plugin::new("io.containerd.differ.v1", "walking").on_host_platform(),
        Plugin::new("io.containerd.metadata.v1", "redb")
            .requiring(&["io.containerd.content.v1", "io.containerd.snapshotter.v1"]),
        Plugin::new("io.containerd.event.v1", "exchange"),
        Plugin::new("io.containerd.gc.v1", "scheduler"),
        Plugin::new("io.containerd.lease.v1", "manager"),
        Plugin::new("io.containerd.runtime.v2", "task").on_host_platform(),
    ];
    for name in backend.snapshotters.names() {
        plugins.push(Plugin::new("io.containerd.snapshotter.v1", name).on_host_platform());
    }
    for id in [
        "containers",
        "content",
        "diff",
        "events",
        "images",
        "introspection",
        "leases",
        "namespaces",
        "snapshots",
        "tasks",
        "version",
    ] {
        plugins.push(Plugin::new(GRPC_PLUGIN, id));
    }
    plugins
}

/// The request-logging layer: one debug line per request, in a span naming
/// the method, with its latency and, for errors, the gRPC status.
type RequestLog = TraceLayer<
    SharedClassifier<GrpcErrorsAsFailures>,
    DefaultMakeSpan,
    (),
    LogResponse,
    (),
    (),
    (),
>;

/// The router of every service behind the request log.
pub type ApiRouter = Router<Stack<RequestLog, Identity>>;

fn request_log() -> RequestLog {
    TraceLayer::new_for_grpc()
        .make_span_with(DefaultMakeSpan::new().level(Level::DEBUG))
        .on_request(())
        .on_response(LogResponse)
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

/// Logs an answered request. Errors are answers too (a NotFound is routine
/// for clients that probe), so they are logged at debug level like the rest;
/// an error of a unary call travels in the response headers, which is where
/// its status is read from.
#[derive(Debug, Clone, Copy)]
pub struct LogResponse;

impl<B> OnResponse<B> for LogResponse {
    fn on_response(self, response: &http::Response<B>, latency: Duration, _: &tracing::Span) {
        let latency_us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        match response
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
        {
            Some(status) => tracing::debug!(latency_us, grpc_status = status, "answered"),
            None => tracing::debug!(latency_us, "answered"),
        }
    }
}

/// Every service, ready to serve; each request is logged at debug level
/// with its latency and gRPC status.
pub fn router(backend: &Backend) -> ApiRouter {
    let introspection = IntrospectionService::new(plugins(backend), backend.uuid.clone());
    let events = backend.events.clone();
    Server::builder()
        .layer(request_log())
        .add_service(VersionServer::new(version::VersionService))
        .add_service(IntrospectionServer::new(introspection))
        .add_service(EventsServer::new(events::EventsService::new(
            events.clone(),
        )))
        .add_service(NamespacesServer::new(namespaces::NamespacesService::new(
            backend.namespaces.clone(),
            events.clone(),
        )))
        .add_service(ContentServer::new(content::ContentService::new(
            backend.content.clone(),
            events.clone(),
            backend.gc.clone(),
        )))
        .add_service(ImagesServer::new(images::ImagesService::new(
            backend.images.clone(),
            events.clone(),
            backend.gc.clone(),
        )))
        .add_service(SnapshotsServer::new(snapshots::SnapshotsService::new(
            backend.snapshotters.clone(),
            backend.db.clone(),
            events,
        )))
        .add_service(DiffServer::new(diff::DiffService::new(
            backend.content.clone(),
            ApplyOptions::default(),
        )))
        .add_service(LeasesServer::new(leases::LeasesService::new(
            backend.leases.clone(),
            backend.gc.clone(),
        )))
        .add_service(ContainersServer::new(containers::ContainersService::new(
            backend.containers.clone(),
            backend.events.clone(),
            backend.gc.clone(),
        )))
        .add_service(TasksServer::new(tasks::TasksService::new(
            backend.tasks.clone(),
            backend.containers.clone(),
            backend.snapshotters.clone(),
        )))
        .add_service(transfer::server(backend))
}

/// How long calls in flight may take to finish once the daemon stops.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the API on the unix socket at `address` until `shutdown`
/// completes; then ends event subscriptions, stops accepting, gives calls
/// in flight [`DRAIN_TIMEOUT`] to finish, and removes the socket.
pub async fn serve(
    address: &Path,
    backend: &Backend,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let mut socket = BoundSocket::bind(address)?;
    let listener = socket
        .take_listener()
        .ok_or_else(|| Error::internal("socket listener already taken"))?;
    tracing::info!(address = %address.display(), "serving containerd's gRPC API");
    let events = backend.events.clone();
    let (draining, drain_started) = oneshot::channel();
    let shutdown = async move {
        shutdown.await;
        events.close();
        let _ = draining.send(());
    };
    let server =
        router(backend).serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown);
    let served = tokio::select! {
        biased;
        served = server => served,
        () = async {
            if drain_started.await.is_ok() {
                tokio::time::sleep(DRAIN_TIMEOUT).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => {
            tracing::warn!("calls still in flight after {DRAIN_TIMEOUT:?}: stopping anyway");
            Ok(())
        }
    };
    drop(socket);
    served.map_err(|e| Error::internal(format!("gRPC server on {}: {e}", address.display())))
}

/// Runs a call into a local (synchronous, fsyncing) service on the blocking
/// pool, so it never stalls the reactor.
pub(crate) async fn blocking<T: Send + 'static>(
    call: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, Status> {
    match tokio::task::spawn_blocking(call).await {
        Ok(result) => result.map_err(Status::from),
        Err(join) => Err(Error::internal(format!("service call failed: {join}")).into()),
    }
}

/// The paths of an update's field mask (empty when there is none).
pub(crate) fn field_paths(mask: Option<prost_types::FieldMask>) -> Vec<String> {
    mask.map(|mask| mask.paths).unwrap_or_default()
}

/// Labels as the local services keep them (ordered).
pub(crate) fn labels_from_wire(labels: HashMap<String, String>) -> BTreeMap<String, String> {
    labels.into_iter().collect()
}

/// Labels as the wire carries them.
pub(crate) fn labels_to_wire(labels: BTreeMap<String, String>) -> HashMap<String, String> {
    labels.into_iter().collect()
}

/// A time as the wire carries it.
pub(crate) fn timestamp(time: std::time::SystemTime) -> Option<prost_types::Timestamp> {
    Some(time.into())
}

#[cfg(test)]
mod tests;
