//! Pulling: manifest, index resolution, parallel verified blob downloads,
//! image record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use oci_client::client::BlobResponse;
use oci_client::manifest::{OciImageIndex, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Reference, RegistryOperation};
use time::format_description::well_known::Rfc3339;

use super::manifest::{classify, descriptor, parse, to_wire, Kind};
use super::{
    blocking, parse_reference, registry_error, LayerReady, Progress, ProgressState, PullOptions,
    RegistryClient, MANIFEST_MEDIA_TYPES, MAX_MANIFEST_SIZE,
};
use crate::content::{Descriptor, Digest, WriterOptions};
use crate::metadata::leases::EXPIRE_LABEL;
use crate::metadata::{Image, Labels, NamespacedWriter};
use crate::{Error, ErrorKind, Result};

/// How long a pull's lease protects its content if berthd dies mid-pull.
const PULL_LEASE_TTL: Duration = Duration::from_secs(60 * 60);
/// How long a pull waits for another pull that is fetching the same blob.
const LOCKED_INGEST_WAIT: Duration = Duration::from_secs(300);
/// Chunks in flight between a download and its ingest.
const CHUNKS_IN_FLIGHT: usize = 16;

impl RegistryClient {
    /// Pulls `reference` (by tag or digest) into `namespace` and records it
    /// as the image named by the full reference. An index is resolved to
    /// the manifest for `options.platform`; the index is kept too, and is
    /// the image's target. Returns the image record.
    ///
    /// Errors: `InvalidArgument` for a malformed reference, manifest or
    /// descriptor, or an unsupported media type; `NotFound` when the
    /// registry has no such image or platform; `FailedPrecondition` when
    /// content does not match its digest or size, or auth is refused;
    /// `Unavailable` when the registry cannot be reached.
    pub async fn pull(
        &self,
        namespace: &str,
        reference: &str,
        options: &PullOptions,
    ) -> Result<Image> {
        let reference = parse_reference(reference)?;
        let auth = options.credentials.to_auth();
        self.client
            .auth(&reference, &auth, RegistryOperation::Pull)
            .await
            .map_err(|err| registry_error(format!("pull {reference}: auth"), err))?;
        let lease = self.begin_lease(namespace, "pull").await?;
        let pull = Pull {
            registry: self,
            namespace: namespace.to_owned(),
            lease: lease.clone(),
            reference: &reference,
            auth: &auth,
            options,
        };
        let pulled = pull.run().await;
        self.end_lease(namespace, &lease).await;
        pulled.map_err(|err| err.context(format!("pull {reference}")))
    }

    /// Creates a lease that ends by itself after [`PULL_LEASE_TTL`].
    pub(super) async fn begin_lease(&self, namespace: &str, purpose: &str) -> Result<String> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!(
            "{purpose}-{}-{}-{}",
            now.as_nanos(),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let expires = time::OffsetDateTime::now_utc() + PULL_LEASE_TTL;
        let expires = expires
            .format(&Rfc3339)
            .map_err(|err| Error::internal(format!("format lease expiry: {err}")))?;
        let labels = Labels::from([(EXPIRE_LABEL.to_owned(), expires)]);
        let (leases, namespace, lease) = (self.leases.clone(), namespace.to_owned(), id.clone());
        blocking(move || leases.create(&namespace, &lease, labels)).await?;
        Ok(id)
    }

    /// Releases a lease. Failing to is harmless (it expires), so it is
    /// only logged.
    pub(super) async fn end_lease(&self, namespace: &str, lease: &str) {
        let (leases, ns, id) = (self.leases.clone(), namespace.to_owned(), lease.to_owned());
        if let Err(err) = blocking(move || leases.delete(&ns, &id)).await {
            tracing::warn!(lease, error = %err, "cannot release a lease; it will expire");
        }
    }
}

/// One pull in progress.
struct Pull<'a> {
    registry: &'a RegistryClient,
    namespace: String,
    lease: String,
    reference: &'a Reference,
    auth: &'a RegistryAuth,
    options: &'a PullOptions,
}

impl Pull<'_> {
    async fn run(&self) -> Result<Image> {
        let wanted = self.reference.digest().map(Digest::parse).transpose()?;
        let (bytes, root) = self
            .fetch_manifest(self.reference, wanted.as_ref(), None)
            .await?;
        let (kind, media_type) = classify(&bytes, &root)?;
        let target = Descriptor {
            media_type,
            digest: root.clone(),
            size: bytes.len() as u64,
            annotations: Default::default(),
        };
        match kind {
            Kind::Manifest => self.store_manifest(&target, bytes).await?,
            Kind::Index => {
                let index: OciImageIndex = parse(&bytes, &root)?;
                let (position, entry) = self.options.platform.select(&index.manifests)?;
                let child = descriptor(&entry.media_type, &entry.digest, entry.size)?;
                let by_digest = self.reference.clone_with_digest(child.digest.to_string());
                let (child_bytes, _) = self
                    .fetch_manifest(&by_digest, Some(&child.digest), Some(child.size))
                    .await?;
                let (child_kind, _) = classify(&child_bytes, &child.digest)?;
                if !matches!(child_kind, Kind::Manifest) {
                    return Err(Error::invalid(format!(
                        "index {root}: entry {} is not an image manifest",
                        child.digest
                    )));
                }
                self.store_manifest(&child, child_bytes).await?;
                let labels = Labels::from([(
                    format!("containerd.io/gc.ref.content.m.{position}"),
                    child.digest.to_string(),
                )]);
                self.store_bytes("index", &target, bytes, labels).await?;
            }
        }
        // Cancelled after the last download: the image is not named.
        self.check_cancelled()?;
        self.record_image(target).await
    }

    /// `Unavailable` once the pull is cancelled.
    fn check_cancelled(&self) -> Result<()> {
        if self.options.cancel.is_cancelled() {
            return Err(cancelled());
        }
        Ok(())
    }

    /// Fetches a manifest document, bounded in size and checked against
    /// the digest (and size) asked for. Returns it with its digest.
    async fn fetch_manifest(
        &self,
        reference: &Reference,
        wanted: Option<&Digest>,
        size: Option<u64>,
    ) -> Result<(Bytes, Digest)> {
        let (bytes, _) = self
            .registry
            .client
            .pull_manifest_raw(reference, self.auth, MANIFEST_MEDIA_TYPES)
            .await
            .map_err(|err| registry_error(format!("manifest {reference}"), err))?;
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(Error::invalid(format!(
                "manifest {reference}: {} bytes, more than the {MAX_MANIFEST_SIZE} allowed",
                bytes.len()
            )));
        }
        let digest = Digest::sha256_of(&bytes);
        if let Some(wanted) = wanted {
            if *wanted != digest {
                return Err(Error::precondition(format!(
                    "manifest {reference}: the registry sent {digest}, not {wanted}"
                )));
            }
        }
        if let Some(size) = size {
            if size != bytes.len() as u64 {
                return Err(Error::precondition(format!(
                    "manifest {digest}: {} bytes, but its descriptor says {size}",
                    bytes.len()
                )));
            }
        }
        Ok((bytes, digest))
    }

    /// Downloads a manifest's config and layers (in parallel), then stores
    /// the manifest labelled towards them.
    async fn store_manifest(&self, manifest_descriptor: &Descriptor, bytes: Bytes) -> Result<()> {
        let manifest: OciImageManifest = parse(&bytes, &manifest_descriptor.digest)?;
        let config = descriptor(
            &manifest.config.media_type,
            &manifest.config.digest,
            manifest.config.size,
        )?;
        let layers = manifest
            .layers
            .iter()
            .map(|layer| descriptor(&layer.media_type, &layer.digest, layer.size))
            .collect::<Result<Vec<_>>>()?;

        let mut labels = Labels::from([(
            "containerd.io/gc.ref.content.config".to_owned(),
            config.digest.to_string(),
        )]);
        for (position, layer) in layers.iter().enumerate() {
            labels.insert(
                format!("containerd.io/gc.ref.content.l.{position}"),
                layer.digest.to_string(),
            );
        }

        let config_download = async { self.fetch_blob("config", &config).await };
        let layer_downloads = layers.iter().enumerate().map(|(position, layer)| {
            let ready = LayerReady {
                manifest: manifest_descriptor.digest.clone(),
                config: config.clone(),
                position,
                count: layers.len(),
                layer: layer.clone(),
            };
            async move {
                self.fetch_blob("layer", layer).await?;
                if let Some(sink) = &self.options.on_layer {
                    sink.ready(&ready);
                }
                Ok(())
            }
        });
        let downloads = std::iter::once(futures::future::Either::Left(config_download))
            .chain(layer_downloads.map(futures::future::Either::Right));
        futures::stream::iter(downloads)
            .buffer_unordered(self.options.max_concurrent_downloads.max(1))
            .try_collect::<Vec<()>>()
            .await?;
        self.store_bytes("manifest", manifest_descriptor, bytes, labels)
            .await
    }

    /// Opens the ingest `<kind>-<digest>` for a blob; `None` when the
    /// blob is already here. While another pull holds the ingest, waits for
    /// it (up to [`LOCKED_INGEST_WAIT`]): it is fetching the same blob.
    async fn open_writer(&self, kind: &str, blob: &Descriptor) -> Result<Option<NamespacedWriter>> {
        let options = WriterOptions {
            reference: format!("{kind}-{}", blob.digest),
            total: blob.size,
            expected: Some(blob.digest.clone()),
        };
        let deadline = tokio::time::Instant::now() + LOCKED_INGEST_WAIT;
        let mut pause = Duration::from_millis(20);
        loop {
            let content = self.registry.content.clone();
            let (namespace, lease) = (self.namespace.clone(), self.lease.clone());
            let options = options.clone();
            match blocking(move || content.writer(&namespace, Some(&lease), options)).await {
                Ok(writer) => return Ok(Some(writer)),
                Err(err) if err.kind == ErrorKind::AlreadyExists => return Ok(None),
                Err(err)
                    if err.kind == ErrorKind::Unavailable
                        && tokio::time::Instant::now() + pause < deadline =>
                {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
                Err(err) => return Err(err),
            }
        }
    }

    /// Stores a document already in memory (a manifest or index) with
    /// `labels`, or sets those labels if the namespace has it already.
    async fn store_bytes(
        &self,
        kind: &str,
        descriptor: &Descriptor,
        bytes: Bytes,
        labels: Labels,
    ) -> Result<()> {
        let digest = descriptor.digest.clone();
        if let Some(mut writer) = self.open_writer(kind, descriptor).await? {
            let (digest, labels) = (digest.clone(), labels.clone());
            let committed = blocking(move || {
                writer.write_at(0, &bytes)?;
                writer.commit(bytes.len() as u64, Some(&digest), labels)
            })
            .await;
            match committed {
                Ok(_) => return Ok(()),
                Err(err) if err.kind == ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
        }
        // The namespace has it already: it must carry this pull's labels.
        let content = self.registry.content.clone();
        let namespace = self.namespace.clone();
        let paths: Vec<String> = labels.keys().map(|k| format!("labels.{k}")).collect();
        blocking(move || {
            content
                .update(&namespace, &digest, labels, &paths)
                .map(|_| ())
        })
        .await
    }

    /// Downloads one blob through its ingest; a blob the namespace (or any
    /// namespace) has already is not fetched. Any error aborts the ingest.
    async fn fetch_blob(&self, kind: &str, blob: &Descriptor) -> Result<()> {
        self.check_cancelled()?;
        let reference = format!("{kind}-{}", blob.digest);
        let Some(writer) = self.open_writer(kind, blob).await? else {
            self.report(kind, blob, blob.size, ProgressState::Exists);
            return Ok(());
        };
        let fetched = self.download(kind, writer, blob).await;
        if fetched.is_err() {
            let (content, namespace) = (self.registry.content.clone(), self.namespace.clone());
            let aborted = blocking(move || content.abort(&namespace, &reference)).await;
            if let Err(err) = aborted {
                if !matches!(err.kind, ErrorKind::NotFound) {
                    tracing::warn!(error = %err, "cannot abort a failed download's ingest");
                }
            }
        }
        fetched.map_err(|err| err.context(format!("{kind} {}", blob.digest)))
    }

    /// Streams the blob into `writer`, resuming at its offset when the
    /// registry honours a range, and commits it (size and digest checked).
    async fn download(
        &self,
        kind: &str,
        writer: NamespacedWriter,
        blob: &Descriptor,
    ) -> Result<()> {
        let resume_at = writer.offset();
        let wire = to_wire(blob);
        let client = &self.registry.client;
        let (stream, start) = if resume_at > 0 && resume_at < blob.size {
            match client
                .pull_blob_stream_partial(self.reference, &wire, resume_at, None)
                .await
                .map_err(|err| registry_error("download", err))?
            {
                BlobResponse::Partial(stream) => (Some(stream), resume_at),
                BlobResponse::Full(stream) => (Some(stream), 0),
            }
        } else if resume_at == blob.size && resume_at > 0 {
            (None, resume_at)
        } else {
            let stream = client
                .pull_blob_stream(self.reference, &wire)
                .await
                .map_err(|err| registry_error("download", err))?;
            (Some(stream), 0)
        };

        // The ingest is written on a blocking thread fed through a channel.
        let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(CHUNKS_IN_FLIGHT);
        let sink = tokio::task::spawn_blocking(move || -> Result<NamespacedWriter> {
            let mut writer = writer;
            if start < writer.offset() {
                writer.truncate(start)?;
            }
            while let Some(chunk) = receiver.blocking_recv() {
                writer.write(&chunk)?;
            }
            Ok(writer)
        });

        let mut received = start;
        let pumped: Result<()> = async {
            let Some(mut stream) = stream else {
                return Ok(());
            };
            loop {
                let next = tokio::select! {
                    next = stream.stream.try_next() => next,
                    () = self.options.cancel.cancelled() => return Err(cancelled()),
                };
                let Some(chunk) = next.map_err(|err| {
                    Error::unavailable(format!("download interrupted at {received}: {err}"))
                })?
                else {
                    break;
                };
                received += chunk.len() as u64;
                if received > blob.size {
                    return Err(Error::precondition(format!(
                        "the registry sent more than the descriptor's {} bytes",
                        blob.size
                    )));
                }
                if sender.send(chunk).await.is_err() {
                    break; // the sink failed: its error is the one to report
                }
                self.report(kind, blob, received, ProgressState::Downloading);
            }
            Ok(())
        }
        .await;
        drop(sender);
        let writer = sink
            .await
            .map_err(|err| Error::internal(format!("ingest task: {err}")))??;
        pumped?;

        let (size, digest) = (blob.size, blob.digest.clone());
        let committed = blocking(move || writer.commit(size, Some(&digest), Labels::new())).await;
        match committed {
            Ok(_) => {}
            Err(err) if err.kind == ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        self.report(kind, blob, blob.size, ProgressState::Done);
        Ok(())
    }

    fn report(&self, kind: &str, blob: &Descriptor, offset: u64, state: ProgressState) {
        if let Some(sink) = &self.options.progress {
            sink.report(&Progress {
                kind: kind.to_owned(),
                digest: blob.digest.clone(),
                offset,
                total: blob.size,
                state,
            });
        }
    }

    /// Creates the image record, or points an existing one at `target`.
    async fn record_image(&self, target: Descriptor) -> Result<Image> {
        let images = self.registry.images.clone();
        let namespace = self.namespace.clone();
        let image = Image::new(self.reference.whole(), target);
        blocking(move || match images.create(&namespace, image.clone()) {
            Err(err) if err.kind == ErrorKind::AlreadyExists => {
                images.update(&namespace, image, &["target".to_owned()])
            }
            other => other,
        })
        .await
    }
}

/// The error of a cancelled pull.
fn cancelled() -> Error {
    Error::unavailable("cancelled: whoever asked for the pull is gone")
}
