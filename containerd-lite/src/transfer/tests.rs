//! Import and export against real stores in a temp dir (the native
//! snapshotter: no mounts needed): formats, names, labels, and archives
//! that must be refused with nothing recorded.

use std::io::{Seek, Write};

use serde_json::json;
use sha2::{Digest as _, Sha256};

use super::*;
use crate::config::Config;
use crate::grpc::Backend;
use crate::metadata::Filter;
use crate::snapshots::Snapshotter;
use crate::ErrorKind;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

struct Fixture {
    _dir: tempfile::TempDir,
    backend: Backend,
    transfers: Transfers,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let config = Config {
            root: dir.path().join("root"),
            state: dir.path().join("state"),
            ..Config::default()
        };
        let backend = Backend::open(&config).unwrap();
        let transfers = Transfers::new(
            backend.content.clone(),
            backend.images.clone(),
            backend.leases.clone(),
        );
        Fixture {
            _dir: dir,
            backend,
            transfers,
        }
    }

    fn native(&self) -> std::sync::Arc<Snapshotter> {
        self.backend.snapshotters.get("native").unwrap()
    }

    fn import(&self, namespace: &str, archive: std::fs::File) -> crate::Result<Vec<Transferred>> {
        self.transfers.import(
            namespace,
            archive,
            &self.native(),
            &ImportOptions::default(),
        )
    }

    fn image_names(&self, namespace: &str) -> Vec<String> {
        self.backend
            .images
            .list(namespace, &Filter::default())
            .unwrap()
            .into_iter()
            .map(|image| image.name)
            .collect()
    }
}

fn layer(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Writes a tar of `members`; `links` are symlinks (path, target).
fn archive(members: &[(&str, &[u8])], links: &[(&str, &str)]) -> std::fs::File {
    let mut file = tempfile::tempfile().unwrap();
    {
        let mut builder = tar::Builder::new(&mut file);
        for (path, data) in members {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o644);
            header.set_size(data.len() as u64);
            header.set_entry_type(tar::EntryType::Regular);
            builder.append_data(&mut header, path, *data).unwrap();
        }
        for (path, target) in links {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Symlink);
            header.set_size(0);
            builder.append_link(&mut header, path, target).unwrap();
        }
        builder.finish().unwrap();
    }
    file.flush().unwrap();
    file.rewind().unwrap();
    file
}

fn config_for(layers: &[&[u8]]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

#[test]
fn a_docker_save_with_a_linked_layer_imports_under_its_tags() {
    let fixture = Fixture::new();
    let base = layer(&[("etc/base", b"base")]);
    let config = config_for(&[&base, &base]);
    let manifest = json!([{
        "Config": "abc.json",
        "RepoTags": ["busybox:1", "example.com/team/app:2"],
        "Layers": ["one/layer.tar", "two/layer.tar"],
    }]);
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let file = archive(
        &[
            ("manifest.json", &manifest),
            ("abc.json", &config),
            ("one/layer.tar", &base),
        ],
        &[("two/layer.tar", "../one/layer.tar")],
    );
    let imported = fixture.import("ns", file).unwrap();
    let names: Vec<&str> = imported.iter().map(|i| i.name.as_str()).collect();
    assert_eq!(
        names,
        ["docker.io/library/busybox:1", "example.com/team/app:2"]
    );
    assert!(!imported[0].snapshot.is_empty());
    let mut listed = fixture.image_names("ns");
    listed.sort();
    assert_eq!(listed, names);
    // The config holds the snapshot; the layer says its diffID.
    let config_info = fixture
        .backend
        .content
        .info(
            "ns",
            &crate::content::Digest::parse(&sha256(&config)).unwrap(),
        )
        .unwrap();
    assert_eq!(
        config_info.labels["containerd.io/gc.ref.snapshot.native"],
        imported[0].snapshot
    );
}

#[test]
fn an_export_imports_again_into_another_namespace() {
    let fixture = Fixture::new();
    let one = layer(&[("a", b"1")]);
    let config = config_for(&[&one]);
    let manifest = json!([{"Config": "c.json", "RepoTags": ["x/y:z"], "Layers": ["l.tar"]}]);
    let file = archive(
        &[
            ("manifest.json", &serde_json::to_vec(&manifest).unwrap()),
            ("c.json", &config),
            ("l.tar", &one),
        ],
        &[],
    );
    let first = fixture.import("a", file).unwrap();
    let mut out = tempfile::tempfile().unwrap();
    fixture
        .transfers
        .export("a", &["docker.io/x/y:z".to_owned()], &mut out)
        .unwrap();
    out.rewind().unwrap();
    let second = fixture.import("b", out).unwrap();
    assert_eq!(second, first);
    assert_eq!(fixture.image_names("b"), ["docker.io/x/y:z"]);

    let missing =
        fixture
            .transfers
            .export("a", &["docker.io/x/none:1".to_owned()], std::io::sink());
    assert_eq!(missing.unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn archives_that_are_not_images_or_escape_are_refused() {
    let fixture = Fixture::new();
    let neither = archive(&[("hello.txt", b"hi")], &[]);
    let err = fixture.import("ns", neither).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("neither"), "{err}");

    let escaping = archive(&[("index.json", b"{}")], &[("blobs", "../../etc")]);
    let err = fixture.import("ns", escaping).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("escapes"), "{err}");

    // A layer whose bytes are not its digest: refused at the ingest.
    let good = layer(&[("f", b"x")]);
    let config = config_for(&[&good]);
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": sha256(&good), "size": good.len()}],
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sha256(&manifest), "size": manifest.len()}],
    }))
    .unwrap();
    let mut bad = good.clone();
    bad[600] ^= 1;
    let blob = |bytes: &[u8]| format!("blobs/sha256/{}", &sha256(bytes)[7..]);
    let (m, c, l) = (blob(&manifest), blob(&config), blob(&good));
    let file = archive(
        &[
            ("index.json", &index),
            (&m, &manifest),
            (&c, &config),
            (&l, &bad),
        ],
        &[],
    );
    let err = fixture.import("ns", file).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    assert!(fixture.image_names("ns").is_empty());
}
