//! The registry client: pull images into the content store and push them
//! back out, over the OCI distribution API.
//!
//! HTTP, token auth and the distribution protocol come from `oci-client`
//! (maintained by the oras-project, used by wasmtime's and Krustlet's
//! tooling): it speaks bearer-token challenges and basic auth, streams
//! blobs, and supports ranged (resumed) downloads. What it does not decide
//! is ours: which manifest of an index to take, how blobs land (always
//! through a content-store ingest that verifies size and digest), the
//! labels that let the garbage collector see an image's blobs, and the
//! lease that protects a pull in progress.
//!
//! A pull, step by step:
//! 1. fetch the manifest the reference names (by tag or digest) and check
//!    it against the digest asked for; an index is resolved to the
//!    manifest for the wanted platform;
//! 2. fetch the config and the layers in parallel, each through its own
//!    ingest (`layer-<digest>`, `config-<digest>`): an ingest left by an
//!    interrupted pull resumes with a ranged request; a blob already
//!    present is not fetched again;
//! 3. store the manifest (and index) labelled `containerd.io/gc.ref.content.*`
//!    towards their children, then create or update the image record;
//!
//! all under a lease that expires on its own if berthd dies mid-pull, and
//! is released once the image record holds everything.

mod manifest;
mod platform;
mod pull;
mod push;

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use tokio_util::sync::CancellationToken;

pub use platform::Platform;

use crate::content::{Descriptor, Digest};
use crate::metadata::{ContentStore, ImageStore, LeaseManager};
use crate::Error;

/// The most bytes a manifest or index may take (containerd's bound too).
pub const MAX_MANIFEST_SIZE: usize = 4 << 20;

/// The manifest media types a pull accepts.
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    manifest::OCI_INDEX,
    manifest::DOCKER_LIST,
    manifest::OCI_MANIFEST,
    manifest::DOCKER_MANIFEST,
];

/// How the client reaches registries.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistryOptions {
    /// Registries (`host[:port]`) spoken to over plain HTTP. Every other
    /// registry is HTTPS only.
    pub insecure_hosts: Vec<String>,
}

/// Credentials for one registry.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum Credentials {
    #[default]
    Anonymous,
    /// HTTP basic auth, or the credentials traded for a bearer token when
    /// the registry asks for one.
    Basic { username: String, password: String },
    /// A ready-made bearer token.
    Bearer(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets never reach logs.
        match self {
            Credentials::Anonymous => f.write_str("Anonymous"),
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::Bearer(_) => f.write_str("Bearer(***)"),
        }
    }
}

impl Credentials {
    fn to_auth(&self) -> RegistryAuth {
        match self {
            Credentials::Anonymous => RegistryAuth::Anonymous,
            Credentials::Basic { username, password } => {
                RegistryAuth::Basic(username.clone(), password.clone())
            }
            Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
        }
    }
}

/// What a pull needs besides the reference.
#[derive(Debug, Clone)]
pub struct PullOptions {
    pub credentials: Credentials,
    /// The platform whose manifest is taken from an index.
    pub platform: Platform,
    /// How many blobs download at once.
    pub max_concurrent_downloads: usize,
    /// Told how each config and layer download advances.
    pub progress: Option<ProgressSink>,
    /// Told as each layer lands in the content store, so that layers can
    /// be unpacked while others still download.
    pub on_layer: Option<LayerSink>,
    /// Cancelled when whoever asked for the pull is gone: the pull then
    /// fails (`Unavailable`), its ingests aborted, no image recorded.
    pub cancel: CancellationToken,
}

/// A layer of the manifest being pulled, now readable in the namespace
/// (and held by the pull's lease until the image record holds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerReady {
    /// The platform manifest the layer belongs to.
    pub manifest: Digest,
    /// That manifest's config (it may still be downloading).
    pub config: Descriptor,
    /// The layer's place in the manifest, from 0 (the base).
    pub position: usize,
    /// How many layers the manifest has.
    pub count: usize,
    pub layer: Descriptor,
}

/// Receives [`LayerReady`] notices, in completion order (not layer order);
/// called from the pull's tasks, so it should only hand the work on.
#[derive(Clone)]
pub struct LayerSink(std::sync::Arc<dyn Fn(&LayerReady) + Send + Sync>);

impl LayerSink {
    /// A sink calling `ready` for every layer that lands.
    pub fn new(ready: impl Fn(&LayerReady) + Send + Sync + 'static) -> Self {
        LayerSink(std::sync::Arc::new(ready))
    }

    fn ready(&self, layer: &LayerReady) {
        (self.0)(layer)
    }
}

impl std::fmt::Debug for LayerSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LayerSink")
    }
}

/// Where one blob of a pull stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressState {
    /// Already in the content store: nothing to fetch.
    Exists,
    /// Bytes arriving; `offset` of `total` are stored.
    Downloading,
    /// Verified and committed.
    Done,
}

/// A progress report for one blob, for progress bars.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    /// `config` or `layer`.
    pub kind: String,
    pub digest: Digest,
    pub offset: u64,
    pub total: u64,
    pub state: ProgressState,
}

/// Receives [`Progress`] reports; called from the pull's tasks, so it
/// should be quick (update a bar, send on a channel).
#[derive(Clone)]
pub struct ProgressSink(std::sync::Arc<dyn Fn(&Progress) + Send + Sync>);

impl ProgressSink {
    /// A sink calling `report` for every progress report.
    pub fn new(report: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        ProgressSink(std::sync::Arc::new(report))
    }

    fn report(&self, progress: &Progress) {
        (self.0)(progress)
    }
}

impl std::fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressSink")
    }
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            credentials: Credentials::Anonymous,
            platform: Platform::host(),
            max_concurrent_downloads: 4,
            progress: None,
            on_layer: None,
            cancel: CancellationToken::new(),
        }
    }
}

/// What a push needs besides the image and the destination.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    pub credentials: Credentials,
}

/// Pulls and pushes images for the services of one berthd.
#[derive(Clone)]
pub struct RegistryClient {
    client: std::sync::Arc<oci_client::Client>,
    content: ContentStore,
    images: ImageStore,
    leases: LeaseManager,
}

impl std::fmt::Debug for RegistryClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegistryClient").finish_non_exhaustive()
    }
}

impl RegistryClient {
    /// A client storing pulled content in `content`, image records in
    /// `images`, and holding pulls in progress with `leases`.
    pub fn new(
        options: &RegistryOptions,
        content: ContentStore,
        images: ImageStore,
        leases: LeaseManager,
    ) -> Self {
        let config = ClientConfig {
            protocol: ClientProtocol::HttpsExcept(options.insecure_hosts.clone()),
            // Index resolution is ours (see `Platform::select`).
            platform_resolver: None,
            ..ClientConfig::default()
        };
        RegistryClient {
            client: std::sync::Arc::new(oci_client::Client::new(config)),
            content,
            images,
            leases,
        }
    }
}

/// Parses a reference the way docker and ctr do (`busybox` is
/// `docker.io/library/busybox:latest`).
fn parse_reference(text: &str) -> crate::Result<oci_client::Reference> {
    text.parse()
        .map_err(|err| Error::invalid(format!("reference {text:?}: {err}")))
}

/// Maps a registry client error to our kinds, naming what was asked for.
fn registry_error(what: impl std::fmt::Display, err: OciDistributionError) -> Error {
    use OciDistributionError as E;
    let message = format!("{what}: {err}");
    match &err {
        E::ImageManifestNotFoundError(_) => Error::not_found(message),
        E::RegistryError { envelope, .. } => {
            let not_found = envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::BlobUnknown
                        | OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                )
            });
            if not_found {
                Error::not_found(message)
            } else {
                Error::unavailable(message)
            }
        }
        E::ServerError { code: 404, .. } => Error::not_found(message),
        E::AuthenticationFailure(_) | E::UnauthorizedError { .. } => Error::precondition(message),
        E::RequestError(_) | E::ServerError { .. } | E::IoError(_) => Error::unavailable(message),
        E::UnsupportedMediaTypeError(_)
        | E::ManifestParsingError(_)
        | E::VersionedParsingError(_)
        | E::JsonError(_)
        | E::SpecViolationError(_)
        | E::DigestError(_) => Error::invalid(message),
        _ => Error::internal(message),
    }
}

/// Runs blocking store work off the async runtime's threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal(format!("blocking task: {err}")))?
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod token_server;
