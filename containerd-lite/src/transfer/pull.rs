//! Pull (with the unpack running alongside the download) and push.

use std::sync::{Arc, Mutex};

use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use tokio_util::sync::CancellationToken;

use super::lease::TransferLease;
use super::resolve::{manifest_parts, platform_image, ImageParts};
use super::unpack::{unpack_image, Arrivals, UnpackTarget};
use super::{BlobProgress, BlobState, ProgressFn, Transferred, Transfers};
use crate::content::{Descriptor, Digest};
use crate::registry::{
    self, Credentials, LayerReady, LayerSink, Platform, ProgressSink, ProgressState,
    RegistryClient, RegistryOptions, MANIFEST_MEDIA_TYPES,
};
use crate::snapshots::Snapshotter;
use crate::{Error, Result};

/// What a pull needs besides the reference.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// The platform whose manifest an index resolves to.
    pub platform: Platform,
    /// Speak plain HTTP to the reference's registry.
    pub insecure: bool,
    pub credentials: Credentials,
    /// Cancelled when whoever asked for the pull is gone: the pull then
    /// fails as any failed pull does, leaving nothing half-made.
    pub cancel: CancellationToken,
}

/// What a push needs besides the image and the destination.
#[derive(Debug, Clone, Default)]
pub struct PushOptions {
    /// Speak plain HTTP to the destination's registry.
    pub insecure: bool,
    pub credentials: Credentials,
}

fn parse_reference(text: &str) -> Result<Reference> {
    text.parse()
        .map_err(|err| Error::invalid(format!("reference {text:?}: {err}")))
}

/// The registry options for one reference: plain HTTP to its registry
/// only when asked.
fn registry_options(reference: &Reference, insecure: bool) -> RegistryOptions {
    let insecure_hosts = if insecure {
        vec![
            reference.registry().to_owned(),
            reference.resolve_registry().to_owned(),
        ]
    } else {
        Vec::new()
    };
    RegistryOptions { insecure_hosts }
}

fn auth_of(credentials: &Credentials) -> RegistryAuth {
    match credentials {
        Credentials::Anonymous => RegistryAuth::Anonymous,
        Credentials::Basic { username, password } => {
            RegistryAuth::Basic(username.clone(), password.clone())
        }
        Credentials::Bearer(token) => RegistryAuth::Bearer(token.clone()),
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal(format!("blocking task: {err}")))?
}

/// Turns the registry client's reports into ours, and tells the unpack
/// when the config lands.
fn progress_sink(progress: ProgressFn, arrivals: Arc<Arrivals>) -> ProgressSink {
    ProgressSink::new(move |report| {
        let state = match report.state {
            ProgressState::Exists => BlobState::Exists,
            ProgressState::Downloading => BlobState::Transferring,
            ProgressState::Done => BlobState::Done,
        };
        if report.kind == "config" && state != BlobState::Transferring {
            arrivals.landed(report.digest.as_str());
        }
        progress(BlobProgress {
            kind: report.kind.clone(),
            digest: report.digest.to_string(),
            done: report.offset,
            total: report.total,
            state,
        });
    })
}

impl Transfers {
    /// Pulls `reference` into `namespace` and unpacks it into
    /// `snapshotter`, layers unpacking as they land. Returns the image.
    ///
    /// Errors keep the registry client's kinds (see
    /// [`RegistryClient::pull`]); a layer that does not unpack (bad tar,
    /// wrong diffID) is `InvalidArgument`. Nothing half-made stays
    /// visible: ingests are aborted, extraction snapshots removed, and what
    /// was committed is held only by an expiring lease.
    pub async fn pull(
        &self,
        namespace: &str,
        reference: &str,
        snapshotter: Arc<Snapshotter>,
        options: &PullOptions,
        progress: ProgressFn,
    ) -> Result<Transferred> {
        let parsed = parse_reference(reference)?;
        let registry_options = registry_options(&parsed, options.insecure);
        let client = RegistryClient::new(
            &registry_options,
            self.content.clone(),
            self.images.clone(),
            self.leases.clone(),
        );
        let lease = {
            let (leases, ns) = (self.leases.clone(), namespace.to_owned());
            Arc::new(blocking(move || TransferLease::begin(&leases, &ns, "transfer-pull")).await?)
        };

        // The first layer to land starts the unpack (it names the platform
        // manifest); every landing wakes it.
        let arrivals = Arc::new(Arrivals::default());
        let (first_tx, first_rx) = tokio::sync::oneshot::channel::<LayerReady>();
        let first_tx = Mutex::new(Some(first_tx));
        let on_layer = {
            let arrivals = arrivals.clone();
            LayerSink::new(move |ready| {
                arrivals.landed(ready.layer.digest.as_str());
                if let Some(tx) = first_tx.lock().ok().and_then(|mut tx| tx.take()) {
                    let _ = tx.send(ready.clone());
                }
            })
        };
        let pull_options = registry::PullOptions {
            credentials: options.credentials.clone(),
            platform: options.platform.clone(),
            progress: Some(progress_sink(progress.clone(), arrivals.clone())),
            on_layer: Some(on_layer),
            cancel: options.cancel.clone(),
            ..registry::PullOptions::default()
        };

        let streaming = StreamingUnpack {
            transfers: self.clone(),
            namespace: namespace.to_owned(),
            reference: parsed.clone(),
            auth: auth_of(&options.credentials),
            registry: registry_options,
            snapshotter: snapshotter.clone(),
            lease: lease.clone(),
            arrivals: arrivals.clone(),
            progress: progress.clone(),
        };
        let unpacking = tokio::spawn(streaming.run(first_rx));
        let pulled = client.pull(namespace, reference, &pull_options).await;
        drop(pull_options); // ends the first-layer channel if none landed
        if let Err(err) = &pulled {
            arrivals.fail(&err.message);
        }
        let unpacked = unpacking
            .await
            .map_err(|err| Error::internal(format!("unpack task: {err}")))?;

        let result = match pulled {
            Err(err) => Err(err),
            Ok(image) => {
                let snapshot = match unpacked {
                    Ok(Some(chain_id)) => Ok(chain_id),
                    // The download gave no chance to unpack alongside it:
                    // unpack what is now stored.
                    Ok(None) => {
                        let (transfers, ns, target, platform) = (
                            self.clone(),
                            namespace.to_owned(),
                            image.target.clone(),
                            options.platform.clone(),
                        );
                        let (lease, snapshotter) = (lease.clone(), snapshotter.clone());
                        let progress = progress.clone();
                        blocking(move || {
                            let parts =
                                platform_image(&transfers.content, &ns, &target, &platform)?;
                            let target = UnpackTarget {
                                content: &transfers.content,
                                namespace: &ns,
                                lease: &lease,
                                snapshotter: &snapshotter,
                                progress: Some(&progress),
                            };
                            unpack_image(&target, &parts, None)
                        })
                        .await
                    }
                    Err(err) => Err(err),
                };
                snapshot.map(|snapshot| Transferred {
                    name: image.name,
                    target: image.target,
                    snapshot,
                })
            }
        };
        if let Ok(lease) = Arc::try_unwrap(lease) {
            let _ = blocking(move || {
                lease.release();
                Ok(())
            })
            .await;
        }
        result.map_err(|err| err.context(format!("pull {reference}")))
    }

    /// Pushes image `name` of `namespace` to `destination` (empty: the
    /// image's own name). Reports the image as one unit: the registry
    /// client uploads its blobs in parallel and tells nothing per blob.
    pub async fn push(
        &self,
        namespace: &str,
        name: &str,
        destination: &str,
        options: &PushOptions,
        progress: ProgressFn,
    ) -> Result<Transferred> {
        let destination = if destination.is_empty() {
            name
        } else {
            destination
        };
        let parsed = parse_reference(destination)?;
        let client = RegistryClient::new(
            &registry_options(&parsed, options.insecure),
            self.content.clone(),
            self.images.clone(),
            self.leases.clone(),
        );
        let (images, ns, image_name) = (self.images.clone(), namespace.to_owned(), name.to_owned());
        let image = blocking(move || images.get(&ns, &image_name)).await?;
        let report = |state, done| {
            progress(BlobProgress {
                kind: "image".to_owned(),
                digest: image.target.digest.to_string(),
                done,
                total: image.target.size,
                state,
            })
        };
        report(BlobState::Transferring, 0);
        let push_options = registry::PushOptions {
            credentials: options.credentials.clone(),
        };
        let digest = client
            .push(namespace, name, destination, &push_options)
            .await?;
        report(BlobState::Done, image.target.size);
        Ok(Transferred {
            name: destination.to_owned(),
            target: Descriptor {
                digest,
                ..image.target
            },
            snapshot: String::new(),
        })
    }
}

/// The unpack that runs while a pull downloads.
struct StreamingUnpack {
    transfers: Transfers,
    namespace: String,
    reference: Reference,
    auth: RegistryAuth,
    registry: RegistryOptions,
    snapshotter: Arc<Snapshotter>,
    lease: Arc<TransferLease>,
    arrivals: Arc<Arrivals>,
    progress: ProgressFn,
}

impl StreamingUnpack {
    /// Waits for the first layer, learns the platform manifest's layers
    /// and unpacks them as they land. `Ok(None)` when it could not start
    /// (no layer landed, or the manifest could not be fetched again): the
    /// caller unpacks after the download instead.
    async fn run(
        self,
        first: tokio::sync::oneshot::Receiver<LayerReady>,
    ) -> Result<Option<String>> {
        let Ok(first) = first.await else {
            return Ok(None);
        };
        let parts = match self.manifest(&first.manifest).await {
            Ok(parts) => parts,
            Err(err) => {
                tracing::debug!(error = %err, "unpacking after the download instead");
                return Ok(None);
            }
        };
        let chain_id = blocking(move || {
            let target = UnpackTarget {
                content: &self.transfers.content,
                namespace: &self.namespace,
                lease: &self.lease,
                snapshotter: &self.snapshotter,
                progress: Some(&self.progress),
            };
            unpack_image(&target, &parts, Some(&self.arrivals))
        })
        .await?;
        Ok(Some(chain_id))
    }

    /// The platform manifest the pull is downloading, fetched by digest
    /// (the registry client keeps it to itself until the end) and checked.
    async fn manifest(&self, digest: &Digest) -> Result<ImageParts> {
        let client = oci_client::Client::new(ClientConfig {
            protocol: ClientProtocol::HttpsExcept(self.registry.insecure_hosts.clone()),
            platform_resolver: None,
            ..ClientConfig::default()
        });
        let by_digest = self.reference.clone_with_digest(digest.to_string());
        let unavailable = |err: oci_client::errors::OciDistributionError| {
            Error::unavailable(format!("manifest {digest}: {err}"))
        };
        client
            .auth(&by_digest, &self.auth, RegistryOperation::Pull)
            .await
            .map_err(unavailable)?;
        let (bytes, _) = client
            .pull_manifest_raw(&by_digest, &self.auth, MANIFEST_MEDIA_TYPES)
            .await
            .map_err(unavailable)?;
        if Digest::sha256_of(&bytes) != *digest {
            return Err(Error::precondition(format!(
                "manifest {digest}: the registry sent other bytes"
            )));
        }
        let descriptor = Descriptor {
            media_type: String::new(),
            digest: digest.clone(),
            size: bytes.len() as u64,
            annotations: Default::default(),
        };
        manifest_parts(descriptor, &bytes)
    }
}
