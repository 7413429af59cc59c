//! The ttrpc endpoint shims forward their events to
//! (`containerd.services.events.ttrpc.v1.Events/Forward` on
//! `<grpc socket>.ttrpc`), handing each envelope to the event sink.

use super::{EventSink, TaskEvent};
use crate::error::{Context, Result};
use async_trait::async_trait;
use containerd_shim_protos::api::Empty;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::{create_events, Events};
use containerd_shim_protos::ttrpc::asynchronous::transport::Listener;
use containerd_shim_protos::ttrpc::asynchronous::Server;
use containerd_shim_protos::ttrpc::r#async::TtrpcContext;
use containerd_shim_protos::ttrpc::{self, Code};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

struct Forwarder {
    sink: Arc<dyn EventSink>,
}

#[async_trait]
impl Events for Forwarder {
    async fn forward(&self, _ctx: &TtrpcContext, req: ForwardRequest) -> ttrpc::Result<Empty> {
        let Some(envelope) = req.envelope.into_option() else {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                Code::INVALID_ARGUMENT,
                "forward: no envelope",
            )));
        };
        let Some(event) = envelope.event.into_option() else {
            return Err(ttrpc::Error::RpcStatus(ttrpc::get_status(
                Code::INVALID_ARGUMENT,
                "forward: no event",
            )));
        };
        let timestamp = envelope
            .timestamp
            .as_ref()
            .map(super::shim::to_system_time)
            .unwrap_or_else(std::time::SystemTime::now);
        self.sink.publish(TaskEvent {
            namespace: envelope.namespace,
            topic: envelope.topic,
            timestamp,
            type_url: event.type_url,
            value: event.value,
        });
        Ok(Empty::new())
    }
}

/// Serve the endpoint on `socket` (mode 0600, a stale file replaced). The
/// returned server stops when dropped.
pub async fn serve(socket: &Path, sink: Arc<dyn EventSink>) -> Result<Server> {
    match std::fs::remove_file(socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(crate::Error::from(e).context(format!("removing {}", socket.display())))
        }
    }
    let listener =
        tokio::net::UnixListener::bind(socket).context(format!("binding {}", socket.display()))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .context(format!("chmod {}", socket.display()))?;
    serve_on(listener, sink)
        .await
        .map_err(|e| e.context(socket.display()))
}

/// Serve the endpoint on a listener the caller bound (berthd binds it like
/// its gRPC socket: parents created, a live socket refused). The returned
/// server stops when dropped.
pub async fn serve_on(
    listener: tokio::net::UnixListener,
    sink: Arc<dyn EventSink>,
) -> Result<Server> {
    let mut server = Server::new()
        .add_listener(Listener::from(listener))
        .register_service(create_events(Arc::new(Forwarder { sink })));
    server
        .start()
        .await
        .map_err(|e| crate::Error::internal(format!("serving shim events: {e}")))?;
    Ok(server)
}
