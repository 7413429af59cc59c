//! Unpack on both snapshotters: chain IDs, reuse, diffID checks, failures
//! that leave no extraction snapshot behind, and lease holds.

use super::*;
use std::collections::HashMap;
use std::fs;
use std::io::{Cursor, Write};
use std::path::Path;
use std::sync::Arc;

use crate::diff::stream::{MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP};
use crate::snapshots::TempMount;

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

fn tar_of(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (path, content) in entries {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1);
        header.set_size(content.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, path, content.as_bytes())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// An image of four layers: blobs by digest, descriptors, diff_ids.
struct Image {
    blobs: HashMap<String, Vec<u8>>,
    layers: Vec<LayerDescriptor>,
    diff_ids: Vec<String>,
}

fn image() -> Image {
    let tars = [
        tar_of(&[("etc/os", "base"), ("etc/gone", "x"), ("bin/sh", "sh")]),
        tar_of(&[("etc/os", "v2"), ("etc/.wh.gone", "")]),
        tar_of(&[("app/main", "main")]),
        tar_of(&[("app/config", "cfg"), ("bin/.wh.sh", "")]),
    ];
    let mut image = Image {
        blobs: HashMap::new(),
        layers: Vec::new(),
        diff_ids: Vec::new(),
    };
    for (i, tar) in tars.iter().enumerate() {
        let (blob, media_type) = if i % 2 == 0 {
            (gzip(tar), MEDIA_TYPE_TAR_GZIP)
        } else {
            (tar.clone(), MEDIA_TYPE_TAR)
        };
        let digest = sha256(&blob);
        image.layers.push(LayerDescriptor {
            media_type: media_type.into(),
            digest: digest.clone(),
            size: blob.len() as u64,
        });
        image.blobs.insert(digest, blob);
        image.diff_ids.push(sha256(tar));
    }
    image
}

impl Image {
    fn open(&self) -> impl Fn(&LayerDescriptor) -> Result<Cursor<Vec<u8>>> + Sync + '_ {
        |layer| {
            self.blobs
                .get(&layer.digest)
                .map(|b| Cursor::new(b.clone()))
                .ok_or_else(|| Error::not_found(format!("blob {}", layer.digest)))
        }
    }
}

type Make = fn(Arc<redb::Database>, &Path) -> Result<Snapshotter>;

fn snapshotter(dir: &Path, make: Make) -> Snapshotter {
    let db = Arc::new(redb::Database::create(dir.join("meta.redb")).unwrap());
    make(db, &dir.join("root")).unwrap()
}

fn listing(root: &Path) -> Vec<String> {
    let mut out: Vec<String> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| {
            e.unwrap()
                .path()
                .strip_prefix(root)
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn chain_ids_follow_the_image_spec() {
    let d: Vec<String> = ["a", "b", "c"]
        .iter()
        .map(|x| sha256(x.as_bytes()))
        .collect();
    let chain = chain_ids(&d);
    assert_eq!(chain[0], d[0]);
    assert_eq!(chain[1], sha256(format!("{} {}", d[0], d[1]).as_bytes()));
    assert_eq!(
        chain[2],
        sha256(format!("{} {}", chain[1], d[2]).as_bytes())
    );
}

fn unpacks_and_reuses(make: Make) {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshotter(dir.path(), make);
    let image = image();
    let options = UnpackOptions::default();
    let done = unpack(
        &s,
        "default",
        &image.layers,
        &image.diff_ids,
        &image.open(),
        &options,
    )
    .unwrap();
    let chain = chain_ids(&image.diff_ids);
    assert_eq!(done.chain_id, chain[3]);
    assert!(done.layers.iter().all(|l| l.applied));

    let infos = s.walk::<&str>("default", &[]).unwrap();
    assert_eq!(
        infos.len(),
        4,
        "only the layers, no extraction snapshots left: {infos:?}"
    );
    for (i, chain_id) in chain.iter().enumerate() {
        let info = s.stat("default", chain_id).unwrap();
        assert_eq!(info.kind, Kind::Committed);
        assert_eq!(
            info.parent.as_deref(),
            i.checked_sub(1).map(|p| chain[p].as_str())
        );
        assert_eq!(info.labels.get(SNAPSHOT_REF_LABEL), Some(chain_id));
    }
    let view = s
        .view("default", "look", Some(&chain[3]), BTreeMap::new())
        .unwrap();
    let mounted = TempMount::new(&view).unwrap();
    assert_eq!(
        listing(mounted.path()),
        ["app", "app/config", "app/main", "bin", "etc", "etc/os"]
    );
    assert_eq!(
        fs::read_to_string(mounted.path().join("etc/os")).unwrap(),
        "v2"
    );
    mounted.release().unwrap();

    // Again: nothing to do, and the blobs are not even opened.
    let again = unpack(
        &s,
        "default",
        &image.layers,
        &image.diff_ids,
        &|_: &LayerDescriptor| -> Result<Cursor<Vec<u8>>> { panic!("opened") },
        &options,
    )
    .unwrap();
    assert_eq!(again.chain_id, chain[3]);
    assert!(again.layers.iter().all(|l| !l.applied));
}

fn refuses_a_wrong_diff_id(make: Make) {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshotter(dir.path(), make);
    let mut image = image();
    image.diff_ids[2] = sha256(b"something else");
    let err = unpack(
        &s,
        "default",
        &image.layers,
        &image.diff_ids,
        &image.open(),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("diff_id"), "{err}");
    let names: Vec<String> = s
        .walk::<&str>("default", &[])
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with("extract-")),
        "{names:?}"
    );
    let chain = chain_ids(&image.diff_ids);
    assert!(
        names.len() <= 2 && names.iter().all(|n| chain[..2].contains(n)),
        "{names:?}"
    );
}

fn reports_a_blob_that_cannot_be_opened(make: Make) {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshotter(dir.path(), make);
    let mut image = image();
    let missing = image.layers[1].digest.clone();
    image.blobs.remove(&missing);
    let err = unpack(
        &s,
        "default",
        &image.layers,
        &image.diff_ids,
        &image.open(),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
    assert!(err.message.contains(&missing), "{err}");
    let names: Vec<String> = s
        .walk::<&str>("default", &[])
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .collect();
    assert!(
        names.iter().all(|n| !n.starts_with("extract-")),
        "{names:?}"
    );
}

#[test]
fn refuses_mismatched_manifest_and_config() {
    let dir = tempfile::tempdir().unwrap();
    let s = snapshotter(dir.path(), Snapshotter::overlayfs);
    let image = image();
    let err = unpack(
        &s,
        "default",
        &image.layers,
        &image.diff_ids[..3],
        &image.open(),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    let mut bad = image.diff_ids.clone();
    bad[0] = "md5:abc".into();
    let err = unpack(
        &s,
        "default",
        &image.layers,
        &bad,
        &image.open(),
        &UnpackOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
}

/// A source that records what it was asked to hold.
struct Holding<'a> {
    image: &'a Image,
    held: std::sync::Mutex<Vec<String>>,
}

impl LayerSource for Holding<'_> {
    type Reader = Cursor<Vec<u8>>;
    fn open(&self, layer: &LayerDescriptor) -> Result<Self::Reader> {
        (self.image.open())(layer)
    }
    fn hold_snapshot(&self, key: &str) -> Result<()> {
        self.held.lock().unwrap().push(key.to_string());
        Ok(())
    }
}

#[test]
fn every_snapshot_is_held_before_it_is_made() {
    for make in [Snapshotter::overlayfs as Make, Snapshotter::native] {
        let dir = tempfile::tempdir().unwrap();
        let s = snapshotter(dir.path(), make);
        let image = image();
        let source = Holding {
            image: &image,
            held: Default::default(),
        };
        unpack(
            &s,
            "default",
            &image.layers,
            &image.diff_ids,
            &source,
            &UnpackOptions::default(),
        )
        .unwrap();
        let held = source.held.into_inner().unwrap();
        for chain_id in chain_ids(&image.diff_ids) {
            assert!(held.contains(&chain_id), "{chain_id} not held: {held:?}");
        }
        assert_eq!(held.iter().filter(|k| k.starts_with("extract-")).count(), 4);
    }
}

#[test]
fn overlayfs_unpacks_in_parallel_and_reuses() {
    unpacks_and_reuses(Snapshotter::overlayfs)
}
#[test]
fn native_unpacks_in_sequence_and_reuses() {
    unpacks_and_reuses(Snapshotter::native)
}
#[test]
fn overlayfs_refuses_a_wrong_diff_id() {
    refuses_a_wrong_diff_id(Snapshotter::overlayfs)
}
#[test]
fn native_refuses_a_wrong_diff_id() {
    refuses_a_wrong_diff_id(Snapshotter::native)
}
#[test]
fn overlayfs_reports_a_blob_that_cannot_be_opened() {
    reports_a_blob_that_cannot_be_opened(Snapshotter::overlayfs)
}
#[test]
fn native_reports_a_blob_that_cannot_be_opened() {
    reports_a_blob_that_cannot_be_opened(Snapshotter::native)
}

#[test]
fn gc_labels_are_containerds() {
    assert_eq!(
        gc_snapshot_label("overlayfs"),
        "containerd.io/gc.ref.snapshot.overlayfs"
    );
    assert_eq!(UNCOMPRESSED_LABEL, "containerd.io/uncompressed");
}
