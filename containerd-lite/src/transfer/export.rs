//! Exporting images as an OCI layout tar that also holds docker's
//! manifest.json, so both `berthctl images import` / `ctr images import`
//! and `docker load` take it.

use std::collections::BTreeSet;
use std::io::{self, Write};

use serde_json::json;

use super::import::{CONTAINERD_NAME, OCI_REF_NAME};
use super::resolve::{is_index, parse, platform_image, read_document, OCI_INDEX};
use super::Transfers;
use crate::content::Digest;
use crate::error::Context;
use crate::registry::Platform;
use crate::{Error, ErrorKind, Result};

/// The short name docker shows for a reference (`busybox:latest` for
/// `docker.io/library/busybox:latest`); `None` for a name with no tag.
fn docker_tag(name: &str) -> Option<String> {
    let reference: oci_client::Reference = name.parse().ok()?;
    let tag = reference.tag()?;
    let repository = reference.repository();
    let registry = reference.registry();
    let short = match (registry, repository.strip_prefix("library/")) {
        ("docker.io", Some(official)) => official.to_owned(),
        ("docker.io", None) => repository.to_owned(),
        _ => format!("{registry}/{repository}"),
    };
    Some(format!("{short}:{tag}"))
}

fn tag_of(name: &str) -> Option<String> {
    name.parse::<oci_client::Reference>()
        .ok()
        .and_then(|reference| reference.tag().map(str::to_owned))
}

impl Transfers {
    /// Writes images `names` of `namespace` to `out` as a tar. Blocking.
    /// An image whose manifest, config or layers are not all here is
    /// `NotFound`; for an index, the manifests present are exported and
    /// the host platform's is the one docker's manifest.json lists.
    pub fn export(&self, namespace: &str, names: &[String], out: impl Write) -> Result<()> {
        export(self, namespace, names, out)
    }
}

fn export(transfers: &Transfers, namespace: &str, names: &[String], out: impl Write) -> Result<()> {
    if names.is_empty() {
        return Err(Error::invalid("export: no image named"));
    }
    let content = &transfers.content;
    let platform = Platform::host();
    let mut blobs: BTreeSet<Digest> = BTreeSet::new();
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    for name in names {
        let image = transfers.images.get(namespace, name)?;
        let target = image.target;
        blobs.insert(target.digest.clone());
        let root = read_document(content, namespace, &target.digest)?;
        if is_index(&super::resolve::media_type_of(&target.media_type, &root)) {
            let index: oci_client::manifest::OciImageIndex =
                parse(&root, &format!("index {}", target.digest))?;
            for entry in &index.manifests {
                let digest = Digest::parse(&entry.digest)?;
                match content.info(namespace, &digest) {
                    Ok(_) => {
                        blobs.insert(digest);
                    }
                    Err(err) if err.kind == ErrorKind::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
        let parts = platform_image(content, namespace, &target, &platform)
            .map_err(|err| err.context(format!("export {name}")))?;
        blobs.insert(parts.manifest.digest.clone());
        blobs.insert(parts.config.digest.clone());
        blobs.extend(parts.layers.iter().map(|layer| layer.digest.clone()));

        let mut annotations = serde_json::Map::new();
        annotations.insert(CONTAINERD_NAME.into(), name.clone().into());
        if let Some(tag) = tag_of(name) {
            annotations.insert(OCI_REF_NAME.into(), tag.into());
        }
        index_entries.push(json!({
            "mediaType": target.media_type,
            "digest": target.digest.to_string(),
            "size": target.size,
            "annotations": annotations,
        }));
        let blob = |digest: &Digest| format!("blobs/{}/{}", digest.algorithm(), digest.encoded());
        docker_entries.push(json!({
            "Config": blob(&parts.config.digest),
            "RepoTags": docker_tag(name).into_iter().collect::<Vec<_>>(),
            "Layers": parts.layers.iter().map(|layer| blob(&layer.digest)).collect::<Vec<_>>(),
        }));
    }

    let mut tar = tar::Builder::new(out);
    let fail = |err: io::Error| Error::unavailable(format!("export: writing the archive: {err}"));
    let layout = json!({"imageLayoutVersion": "1.0.0"});
    append(&mut tar, "oci-layout", &json_bytes(&layout)?).map_err(fail)?;
    let mut dirs = BTreeSet::new();
    for digest in &blobs {
        let dir = format!("blobs/{}", digest.algorithm());
        if dirs.insert(dir.clone()) {
            let mut header = header(0, tar::EntryType::Directory);
            header.set_mode(0o755);
            tar.append_data(&mut header, format!("{dir}/"), io::empty())
                .map_err(fail)?;
        }
        let reader = content.reader(namespace, digest)?;
        let mut header = header(reader.size(), tar::EntryType::Regular);
        let path = format!("{dir}/{}", digest.encoded());
        tar.append_data(&mut header, &path, reader.into_file())
            .with_context(|| format!("export: writing {path}"))?;
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": index_entries,
    });
    append(&mut tar, "index.json", &json_bytes(&index)?).map_err(fail)?;
    append(&mut tar, "manifest.json", &json_bytes(&docker_entries)?).map_err(fail)?;
    tar.into_inner()
        .and_then(|mut out| out.flush())
        .map_err(fail)
}

fn json_bytes(value: &impl serde::Serialize) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|err| Error::internal(format!("encode JSON: {err}")))
}

/// A header with fixed owner and time, so exports are reproducible.
fn header(size: u64, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(kind);
    header.set_size(size);
    header.set_mode(0o444);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header
}

fn append<W: Write>(tar: &mut tar::Builder<W>, path: &str, bytes: &[u8]) -> io::Result<()> {
    let mut header = header(bytes.len() as u64, tar::EntryType::Regular);
    tar.append_data(&mut header, path, bytes)
}
