//! From an image name to what a container needs of it: its config and the
//! chain ID of its layers (the snapshot to start from), read through the
//! images and content services as containerd's client reads them.

use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::ReadContentRequest;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::GetImageRequest;
use berth_proto::containerd::types::Descriptor;
use berthd::registry::{Platform, MAX_MANIFEST_SIZE};
use oci_client::manifest::{OciImageIndex, OciImageManifest};
use oci_spec::image::ImageConfiguration;
use serde::Deserialize;
use tokio_stream::StreamExt;

use crate::{readable, Namespaced};

const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";

/// An image, resolved for this host.
pub(crate) struct ResolvedImage {
    pub(crate) name: String,
    pub(crate) config: ImageConfiguration,
    /// The chain ID of the top layer: the committed snapshot unpacking made.
    pub(crate) chain_id: String,
}

/// Resolves image `name`: its manifest for the host's platform (picked
/// from an index if need be), its config and its layers' chain ID.
pub(crate) async fn resolve(client: &Namespaced, name: &str) -> Result<ResolvedImage, String> {
    let image = ImagesClient::new(client.clone())
        .get(GetImageRequest {
            name: name.to_owned(),
        })
        .await
        .map_err(readable)?
        .into_inner()
        .image
        .ok_or_else(|| format!("image {name:?}: the daemon sent no image"))?;
    let target = image
        .target
        .ok_or_else(|| format!("image {name:?}: no target"))?;
    let mut content = ContentClient::new(client.clone());
    let manifest_digest = if target.media_type == OCI_INDEX || target.media_type == DOCKER_LIST {
        let index: OciImageIndex = read_json(&mut content, &target, "index").await?;
        let (_, entry) = Platform::host()
            .select(&index.manifests)
            .map_err(|e| format!("image {name:?}: {e}"))?;
        entry.digest.clone()
    } else {
        target.digest.clone()
    };
    let manifest: OciImageManifest = read_json(
        &mut content,
        &Descriptor {
            digest: manifest_digest,
            ..Default::default()
        },
        "manifest",
    )
    .await?;
    let config: ImageConfiguration = read_json(
        &mut content,
        &Descriptor {
            digest: manifest.config.digest.clone(),
            ..Default::default()
        },
        "config",
    )
    .await?;
    let chain_id = berthd::unpack::chain_ids(config.rootfs().diff_ids())
        .pop()
        .ok_or_else(|| format!("image {name:?}: its config lists no layers"))?;
    Ok(ResolvedImage {
        name: image.name,
        config,
        chain_id,
    })
}

/// Reads a JSON document from the content store, bounded in size.
async fn read_json<T: for<'de> Deserialize<'de>>(
    content: &mut ContentClient<Namespaced>,
    descriptor: &Descriptor,
    what: &str,
) -> Result<T, String> {
    let digest = &descriptor.digest;
    let mut stream = content
        .read(ReadContentRequest {
            digest: digest.clone(),
            offset: 0,
            size: 0,
        })
        .await
        .map_err(|e| format!("{what} {digest}: {}", readable(e)))?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        bytes.extend(
            chunk
                .map_err(|e| format!("{what} {digest}: {}", readable(e)))?
                .data,
        );
        if bytes.len() > MAX_MANIFEST_SIZE {
            return Err(format!(
                "{what} {digest}: more than the {MAX_MANIFEST_SIZE} bytes allowed"
            ));
        }
    }
    serde_json::from_slice(&bytes).map_err(|e| format!("{what} {digest}: malformed: {e}"))
}
