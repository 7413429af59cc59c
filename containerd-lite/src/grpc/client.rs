//! The client side, for berthctl and tests: a channel to a daemon's unix
//! socket, and an interceptor that puts the namespace on every call.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Request, Status};

use super::request::NAMESPACE_HEADER;
use crate::{Error, Result};

/// Connects to the gRPC API on the unix socket at `path`.
pub async fn connect(path: &Path) -> Result<Channel> {
    let path: PathBuf = path.to_path_buf();
    let shown = path.display().to_string();
    // The URI is required by the API but unused: the connector dials the socket.
    Endpoint::from_static("http://berthd.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { UnixStream::connect(path).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| Error::unavailable(format!("connecting to {shown}: {e}")))
}

/// Adds the `containerd-namespace` header to every request.
#[derive(Debug, Clone)]
pub struct WithNamespace {
    value: MetadataValue<tonic::metadata::Ascii>,
}

impl WithNamespace {
    /// Fails on a namespace that cannot be a header value.
    pub fn new(namespace: &str) -> Result<Self> {
        let value = namespace
            .parse()
            .map_err(|_| Error::invalid(format!("namespace {namespace:?}: not a valid header")))?;
        Ok(WithNamespace { value })
    }
}

impl Interceptor for WithNamespace {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert(NAMESPACE_HEADER, self.value.clone());
        Ok(request)
    }
}
