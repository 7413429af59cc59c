//! Pushing: blobs first (in parallel, skipping those the registry has),
//! then each manifest, then the index, so the registry never sees a
//! document pointing at something it lacks.

use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use http::HeaderValue;
use oci_client::errors::OciDistributionError;
use oci_client::manifest::{OciImageIndex, OciImageManifest};
use oci_client::{Reference, RegistryOperation};

use super::manifest::{classify, descriptor, parse, Kind};
use super::{
    blocking, parse_reference, registry_error, PushOptions, RegistryClient, MAX_MANIFEST_SIZE,
};
use crate::content::{BlobReader, Descriptor, Digest};
use crate::{Error, Result};

/// The bytes read from the content store per upload chunk.
const UPLOAD_CHUNK: usize = 1 << 20;
/// Blobs uploaded at once.
const PARALLEL_UPLOADS: usize = 4;

impl RegistryClient {
    /// Pushes image `name` of `namespace` to `destination` (a reference
    /// with a tag) and returns the digest of what the tag now names. For an
    /// index, every manifest it lists must be in the namespace (an image
    /// pulled for one platform cannot be pushed as its full index:
    /// `FailedPrecondition`).
    pub async fn push(
        &self,
        namespace: &str,
        name: &str,
        destination: &str,
        options: &PushOptions,
    ) -> Result<Digest> {
        let destination = parse_reference(destination)?;
        let auth = options.credentials.to_auth();
        // Pushing asks the registry what it has (a pull-scoped request)
        // before it uploads: both need a token.
        for operation in [RegistryOperation::Pull, RegistryOperation::Push] {
            self.client
                .auth(&destination, &auth, operation)
                .await
                .map_err(|err| registry_error(format!("push {destination}: auth"), err))?;
        }
        let push = Push {
            registry: self,
            namespace: namespace.to_owned(),
            destination: &destination,
        };
        push.run(name)
            .await
            .map_err(|err| err.context(format!("push {name} to {destination}")))
    }
}

struct Push<'a> {
    registry: &'a RegistryClient,
    namespace: String,
    destination: &'a Reference,
}

impl Push<'_> {
    async fn run(&self, name: &str) -> Result<Digest> {
        let (images, namespace, image_name) = (
            self.registry.images.clone(),
            self.namespace.clone(),
            name.to_owned(),
        );
        let image = blocking(move || images.get(&namespace, &image_name)).await?;
        let target = image.target;
        let bytes = self.read_document(&target.digest).await?;
        let (kind, media_type) = classify(&bytes, &target.digest)?;
        match kind {
            Kind::Manifest => self.push_manifest_blobs(&target.digest, &bytes).await?,
            Kind::Index => {
                let index: OciImageIndex = parse(&bytes, &target.digest)?;
                for entry in &index.manifests {
                    let child = descriptor(&entry.media_type, &entry.digest, entry.size)?;
                    let child_bytes = self.read_document(&child.digest).await.map_err(|err| {
                        Error::precondition(format!(
                            "index {}: manifest {} is not here ({})",
                            target.digest, child.digest, err.message
                        ))
                    })?;
                    self.push_manifest_blobs(&child.digest, &child_bytes)
                        .await?;
                    let by_digest = self.destination.clone_with_digest(child.digest.to_string());
                    self.put_manifest(&by_digest, &child, child_bytes).await?;
                }
            }
        }
        let root = Descriptor {
            media_type,
            ..target
        };
        self.put_manifest(self.destination, &root, bytes).await?;
        Ok(root.digest)
    }

    /// Reads a manifest or index from the namespace, bounded in size.
    async fn read_document(&self, digest: &Digest) -> Result<Bytes> {
        let reader = self.open(digest).await?;
        if reader.size() > MAX_MANIFEST_SIZE as u64 {
            return Err(Error::invalid(format!(
                "manifest {digest}: {} bytes, more than the {MAX_MANIFEST_SIZE} allowed",
                reader.size()
            )));
        }
        let digest = digest.clone();
        blocking(move || {
            let mut bytes = vec![0; reader.size() as usize];
            let mut filled = 0;
            while filled < bytes.len() {
                match reader.read_at(&mut bytes[filled..], filled as u64)? {
                    0 => {
                        return Err(Error::internal(format!(
                            "content {digest}: shorter than its size"
                        )))
                    }
                    n => filled += n,
                }
            }
            Ok(Bytes::from(bytes))
        })
        .await
    }

    async fn open(&self, digest: &Digest) -> Result<BlobReader> {
        let (content, namespace, digest) = (
            self.registry.content.clone(),
            self.namespace.clone(),
            digest.clone(),
        );
        blocking(move || content.reader(&namespace, &digest)).await
    }

    /// Uploads a manifest's config and layers, in parallel.
    async fn push_manifest_blobs(&self, digest: &Digest, bytes: &[u8]) -> Result<()> {
        let manifest: OciImageManifest = parse(bytes, digest)?;
        let mut blobs = vec![descriptor(
            &manifest.config.media_type,
            &manifest.config.digest,
            manifest.config.size,
        )?];
        for layer in &manifest.layers {
            blobs.push(descriptor(&layer.media_type, &layer.digest, layer.size)?);
        }
        futures::stream::iter(blobs.iter().map(|blob| self.push_blob(blob)))
            .buffer_unordered(PARALLEL_UPLOADS)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(())
    }

    /// Uploads one blob from the content store, unless the registry has it.
    async fn push_blob(&self, blob: &Descriptor) -> Result<()> {
        let client = &self.registry.client;
        let exists = client
            .blob_exists(self.destination, blob.digest.as_str())
            .await
            .map_err(|err| registry_error(format!("blob {}", blob.digest), err))?;
        if exists {
            return Ok(());
        }
        let reader = Arc::new(self.open(&blob.digest).await?);
        let chunks = futures::stream::try_unfold(0u64, move |offset| {
            let reader = Arc::clone(&reader);
            async move {
                if offset >= reader.size() {
                    return Ok(None);
                }
                let chunk = tokio::task::spawn_blocking(move || {
                    let want = usize::try_from(reader.size() - offset)
                        .unwrap_or(UPLOAD_CHUNK)
                        .min(UPLOAD_CHUNK);
                    let mut buf = vec![0; want];
                    let n = reader.read_at(&mut buf, offset)?;
                    if n == 0 {
                        return Err(Error::internal(format!(
                            "content {}: shorter than its size",
                            reader.digest()
                        )));
                    }
                    buf.truncate(n);
                    Ok(Bytes::from(buf))
                })
                .await
                .map_err(|err| Error::internal(format!("read task: {err}")))
                .and_then(|read| read)
                .map_err(|err| OciDistributionError::GenericError(Some(err.message)))?;
                let next = offset + chunk.len() as u64;
                Ok(Some((chunk, next)))
            }
        });
        client
            .push_blob_stream(
                self.destination,
                chunks,
                blob.digest.as_str(),
                Some(blob.size),
            )
            .await
            .map_err(|err| registry_error(format!("upload {}", blob.digest), err))?;
        Ok(())
    }

    async fn put_manifest(
        &self,
        reference: &Reference,
        descriptor: &Descriptor,
        bytes: Bytes,
    ) -> Result<()> {
        let content_type = HeaderValue::from_str(&descriptor.media_type).map_err(|_| {
            Error::invalid(format!(
                "manifest {}: media type {:?} is not a header value",
                descriptor.digest, descriptor.media_type
            ))
        })?;
        self.registry
            .client
            .push_manifest_raw(reference, bytes, content_type)
            .await
            .map_err(|err| registry_error(format!("manifest {}", descriptor.digest), err))?;
        Ok(())
    }
}
