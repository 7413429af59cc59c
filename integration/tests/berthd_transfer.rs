//! berthd's own transfer service end to end, driven by `berthctl` and the
//! real containerd 1.6 `ctr`: a multi-layer image (whiteouts, an opaque
//! directory, hard links, symlinks) pushed to Debian's docker-registry and
//! pulled back unpacks to the tree a reference extraction gives; `docker
//! save` and OCI archives import, export and re-import; bad archives fail
//! cleanly; a pull cut by SIGKILL completes on retry.

// The helpers below are test code too: a panic is how they report.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::berthd::{Berthd, Options};
use berth_integration::containerd::target_binary;
use berth_integration::registry::Registry;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const WHAT: &str = "the berthd transfer tests";
const OCI_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
const OCI_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// Bytes that do not compress (xorshift), `len` of them.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// One entry of a layer.
enum Entry<'a> {
    Dir(&'a str),
    File(&'a str, Vec<u8>),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
}

fn layer_tar(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_700_000_000);
        let (path, data): (&str, &[u8]) = match entry {
            Entry::Dir(path) => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                (path, &[])
            }
            Entry::File(path, data) => {
                header.set_entry_type(tar::EntryType::Regular);
                header.set_mode(0o644);
                (path, data)
            }
            Entry::Symlink(path, target) | Entry::Hardlink(path, target) => {
                let kind = if matches!(entry, Entry::Symlink(..)) {
                    tar::EntryType::Symlink
                } else {
                    tar::EntryType::Link
                };
                header.set_entry_type(kind);
                header.set_mode(0o777);
                header.set_link_name(target).unwrap();
                (path, &[])
            }
        };
        header.set_size(data.len() as u64);
        // The name goes in raw: the tar crate refuses `..`, and the
        // escaping layer needs it.
        let name = &mut header.as_old_mut().name;
        assert!(path.len() < name.len());
        name[..path.len()].copy_from_slice(path.as_bytes());
        header.set_cksum();
        builder.append(&header, data).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// An image's pieces, to write as an OCI layout or a `docker save` tar.
struct Image {
    /// Uncompressed layer tars, bottom first.
    tars: Vec<Vec<u8>>,
    /// Blobs as stored, with their media types.
    layers: Vec<(Vec<u8>, String)>,
    config: Vec<u8>,
}

impl Image {
    fn new(tars: Vec<Vec<u8>>, gzipped: &[bool]) -> Image {
        let layers: Vec<(Vec<u8>, String)> = tars
            .iter()
            .zip(gzipped)
            .map(|(tar, &gz)| {
                if gz {
                    (gzip(tar), OCI_TAR_GZIP.to_owned())
                } else {
                    (tar.clone(), OCI_TAR.to_owned())
                }
            })
            .collect();
        let diff_ids: Vec<String> = tars.iter().map(|tar| sha256(tar)).collect();
        let config = serde_json::to_vec(&json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap();
        Image {
            tars,
            layers,
            config,
        }
    }

    fn manifest(&self) -> Vec<u8> {
        let layers: Vec<Value> = self
            .layers
            .iter()
            .map(|(blob, media_type)| {
                json!({"mediaType": media_type, "digest": sha256(blob), "size": blob.len()})
            })
            .collect();
        serde_json::to_vec(&json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": sha256(&self.config),
                "size": self.config.len(),
            },
            "layers": layers,
        }))
        .unwrap()
    }

    /// An OCI layout tar naming the image `name`; `blobs` overrides what
    /// is stored under a digest, `manifest` the manifest bytes.
    fn oci_archive(&self, path: &Path, name: &str, manifest: Option<Vec<u8>>) {
        let manifest = manifest.unwrap_or_else(|| self.manifest());
        let index = json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": sha256(&manifest),
                "size": manifest.len(),
                "annotations": {"io.containerd.image.name": name},
            }],
        });
        let mut files: Vec<(String, Vec<u8>)> = vec![
            (
                "oci-layout".into(),
                br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
            ),
            ("index.json".into(), serde_json::to_vec(&index).unwrap()),
        ];
        let mut blobs = vec![manifest, self.config.clone()];
        blobs.extend(self.layers.iter().map(|(blob, _)| blob.clone()));
        for blob in blobs {
            let hex = sha256(&blob).trim_start_matches("sha256:").to_owned();
            files.push((format!("blobs/sha256/{hex}"), blob));
        }
        write_tar(path, &files);
    }

    /// A `docker save`-style tar: manifest.json, a config file and one
    /// uncompressed layer.tar per layer.
    fn docker_archive(&self, path: &Path, tag: &str) {
        let config_name = format!("{}.json", &sha256(&self.config)[7..]);
        let mut files = vec![(config_name.clone(), self.config.clone())];
        let mut layer_paths = Vec::new();
        for (i, tar) in self.tars.iter().enumerate() {
            let layer = format!("layer{i}/layer.tar");
            files.push((layer.clone(), tar.clone()));
            layer_paths.push(layer);
        }
        let manifest = json!([{"Config": config_name, "RepoTags": [tag], "Layers": layer_paths}]);
        files.push((
            "manifest.json".into(),
            serde_json::to_vec(&manifest).unwrap(),
        ));
        write_tar(path, &files);
    }
}

fn write_tar(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, name, data.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap().flush().unwrap();
}

/// The multi-layer image: whiteouts, an opaque dir, hard links, symlinks.
fn layered_image() -> Image {
    let base = layer_tar(&[
        Entry::Dir("etc/"),
        Entry::File("etc/gone", b"removed by layer 1".to_vec()),
        Entry::File("etc/kept", b"kept".to_vec()),
        Entry::Dir("etc/opaque/"),
        Entry::File("etc/opaque/old", b"hidden by the opaque dir".to_vec()),
        Entry::Dir("bin/"),
        Entry::File("bin/tool", b"#!/bin/sh\necho tool\n".to_vec()),
        Entry::Hardlink("bin/tool-link", "bin/tool"),
        Entry::Symlink("bin/sh", "tool"),
        Entry::Symlink("bin/abs", "/etc/kept"),
    ]);
    let middle = layer_tar(&[
        Entry::Dir("etc/"),
        Entry::File("etc/.wh.gone", Vec::new()),
        Entry::Dir("etc/opaque/"),
        Entry::File("etc/opaque/.wh..wh..opq", Vec::new()),
        Entry::File("etc/opaque/new", b"the only file left".to_vec()),
        Entry::Dir("usr/"),
        Entry::File("usr/data", noise(3 << 20, 7)),
    ]);
    let top = layer_tar(&[
        Entry::Dir("usr/"),
        Entry::File("usr/.wh.data", Vec::new()),
        Entry::Dir("srv/"),
        Entry::File("srv/one", b"one".to_vec()),
        Entry::Hardlink("srv/two", "srv/one"),
        Entry::Symlink("srv/dangling", "../nowhere"),
    ]);
    Image::new(vec![base, middle, top], &[true, false, true])
}

/// Applies layers the simple way (opaque markers first, then whiteouts
/// and entries), as a reference for what berthd unpacks.
fn reference_extract(tars: &[Vec<u8>], root: &Path) {
    for tar in tars {
        let mut archive = tar::Archive::new(tar.as_slice());
        let mut entries = Vec::new();
        for entry in archive.entries().unwrap() {
            let entry = entry.unwrap();
            entries.push(entry.path().unwrap().into_owned());
        }
        for path in &entries {
            if path.file_name().unwrap() == ".wh..wh..opq" {
                let dir = root.join(path.parent().unwrap());
                if dir.exists() {
                    fs::remove_dir_all(&dir).unwrap();
                    fs::create_dir_all(&dir).unwrap();
                }
            }
        }
        let mut archive = tar::Archive::new(tar.as_slice());
        archive.set_preserve_permissions(true);
        archive.set_preserve_mtime(true);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().into_owned();
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            if name == ".wh..wh..opq" {
                continue;
            }
            if let Some(hidden) = name.strip_prefix(".wh.") {
                let gone = root.join(path.parent().unwrap()).join(hidden);
                let meta = fs::symlink_metadata(&gone).unwrap();
                if meta.is_dir() {
                    fs::remove_dir_all(&gone).unwrap();
                } else {
                    fs::remove_file(&gone).unwrap();
                }
                continue;
            }
            entry.unpack_in(root).unwrap();
        }
    }
}

/// Each path's type, mode, content digest or link target, and which paths
/// share an inode.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut inodes: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let meta = fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                stack.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else {
                inodes.entry(meta.ino()).or_default().push(rel.clone());
                sha256(&fs::read(&path).unwrap())
            };
            out.insert(rel, format!("{what} mode {:o}", meta.mode() & 0o7777));
        }
    }
    for group in inodes.values().filter(|group| group.len() > 1) {
        let mut group = group.clone();
        group.sort();
        for path in &group[1..] {
            let line = out.get_mut(path).unwrap();
            line.push_str(&format!(" =link {}", group[0]));
        }
    }
    out
}

/// The snapshot printed as `unpacked <chain id>` by an import or pull.
fn unpacked(output: &str) -> String {
    output
        .lines()
        .find_map(|line| line.strip_prefix("unpacked "))
        .unwrap_or_else(|| panic!("no unpacked snapshot in {output}"))
        .to_owned()
}

/// Mounts an active snapshot on `chain_id` of `namespace` and
/// describes its tree.
fn describe_snapshot(daemon: &Berthd, namespace: &str, chain_id: &str) -> BTreeMap<String, String> {
    let target = daemon.dir().join(format!("mnt-{namespace}"));
    fs::create_dir_all(&target).unwrap();
    let key = format!("check-{namespace}");
    let mount = daemon.berthctl_ok(&["-n", namespace, "snapshots", "prepare", &key, chain_id]);
    let mut words = mount.split_whitespace();
    assert_eq!(words.next(), Some("mount"));
    let status = Command::new("mount")
        .args(words)
        .arg(&target)
        .status()
        .unwrap();
    assert!(status.success(), "{mount}");
    let tree = describe(&target);
    nix::mount::umount(&target).unwrap();
    daemon.berthctl_ok(&["-n", namespace, "snapshots", "rm", &key]);
    tree
}

#[test]
fn a_layered_image_goes_through_a_registry_and_unpacks_exactly() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let Some(daemon) = Berthd::start_with(Options::empty(WHAT)) else {
        return;
    };
    let image = layered_image();
    let archive = daemon.dir().join("layered.tar");
    let name = "docker.io/berth/layered:1";
    image.oci_archive(&archive, name, None);
    daemon.berthctl_ok(&["-n", "src", "images", "import", archive.to_str().unwrap()]);

    let remote = format!("{}/berth/layered:1", registry.address);
    let pushed =
        daemon.berthctl_ok(&["-n", "src", "images", "push", name, &remote, "--plain-http"]);
    assert!(pushed.contains(&sha256(&image.manifest())), "{pushed}");

    // berthctl prints a line per event when stdout is not a terminal.
    let insecure = format!("--insecure-registry={}", registry.address);
    let pulled = daemon.berthctl_ok(&["-n", "dst", "images", "pull", &remote, &insecure]);
    assert!(pulled.contains(" unpacked "), "{pulled}");
    let chain_id = unpacked(&pulled);

    let reference = daemon.dir().join("reference");
    fs::create_dir_all(&reference).unwrap();
    reference_extract(&image.tars, &reference);
    let expected = describe(&reference);
    assert!(expected.contains_key("srv/two"), "{expected:?}");
    assert!(!expected.contains_key("etc/gone"));
    assert_eq!(describe_snapshot(&daemon, "dst", &chain_id), expected);

    // containerd's clients see it as unpacked.
    let check = daemon.ctr_ok(&["-n", "dst", "images", "check"]);
    assert!(
        check.contains("complete (4/4)") && check.contains("true"),
        "{check}"
    );

    // The real ctr pulls what berthctl pushed.
    daemon.ctr_ok(&["-n", "viactr", "images", "pull", "--plain-http", &remote]);
    let listed = daemon.ctr_ok(&["-n", "viactr", "images", "ls"]);
    assert!(listed.contains(&remote), "{listed}");

    // An unknown registry over HTTPS fails with the registry named.
    let refused = daemon.berthctl_err(&["-n", "dst", "images", "pull", &remote]);
    assert!(refused.contains("pull"), "{refused}");
}

#[test]
fn docker_save_and_oci_archives_import_and_round_trip_through_export() {
    let Some(daemon) = Berthd::start_with(Options::empty(WHAT)) else {
        return;
    };
    let image = layered_image();
    let saved = daemon.dir().join("saved.tar");
    image.docker_archive(&saved, "berth/saved:1");
    let out = daemon.berthctl_ok(&["-n", "docker", "images", "import", saved.to_str().unwrap()]);
    assert!(out.contains("docker.io/berth/saved:1"), "{out}");
    let chain_id = unpacked(&out);

    let reference = daemon.dir().join("reference");
    fs::create_dir_all(&reference).unwrap();
    reference_extract(&image.tars, &reference);
    assert_eq!(
        describe_snapshot(&daemon, "docker", &chain_id),
        describe(&reference)
    );

    let oci = daemon.dir().join("oci.tar");
    image.oci_archive(&oci, "docker.io/berth/oci:2", None);
    let out = daemon.berthctl_ok(&["-n", "oci", "images", "import", oci.to_str().unwrap()]);
    assert_eq!(unpacked(&out), chain_id, "same layers, same chain");

    // Export both, import into a fresh namespace: same images, same tree.
    let exported = daemon.dir().join("exported.tar");
    daemon.berthctl_ok(&[
        "-n",
        "docker",
        "images",
        "export",
        exported.to_str().unwrap(),
        "docker.io/berth/saved:1",
    ]);
    let mut names = Vec::new();
    let mut archive = tar::Archive::new(fs::File::open(&exported).unwrap());
    let mut docker_manifest = String::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let path = entry.path().unwrap().display().to_string();
        if path == "manifest.json" {
            entry.read_to_string(&mut docker_manifest).unwrap();
        }
        names.push(path);
    }
    assert!(names.contains(&"index.json".to_owned()) && names.contains(&"oci-layout".to_owned()));
    let docker_manifest: Value = serde_json::from_str(&docker_manifest).unwrap();
    assert_eq!(docker_manifest[0]["RepoTags"][0], "berth/saved:1");
    assert_eq!(docker_manifest[0]["Layers"].as_array().unwrap().len(), 3);

    let again = daemon.berthctl_ok(&[
        "-n",
        "again",
        "images",
        "import",
        exported.to_str().unwrap(),
    ]);
    assert!(again.contains("docker.io/berth/saved:1"), "{again}");
    assert_eq!(unpacked(&again), chain_id);
    // ctr reads what berthd exported, too.
    daemon.ctr_ok(&[
        "-n",
        "viactr",
        "images",
        "import",
        exported.to_str().unwrap(),
    ]);
}

#[test]
fn bad_archives_fail_clearly_and_leave_nothing() {
    let Some(daemon) = Berthd::start_with(Options::empty(WHAT)) else {
        return;
    };
    let image = layered_image();
    let dir = daemon.dir();
    let mut cases: Vec<(&str, PathBuf, &str)> = Vec::new();

    // A layer whose bytes do not match the digest it is stored under.
    let path = dir.join("mismatch.tar");
    image.oci_archive(&path, "docker.io/bad/mismatch:1", None);
    let hex = &sha256(&image.layers[1].0)[7..];
    rewrite_member(&path, &format!("blobs/sha256/{hex}"), |data| {
        data[100] ^= 0xff
    });
    cases.push(("digest mismatch", path, "sha256"));

    // The archive cut inside a blob.
    let path = dir.join("truncated.tar");
    image.oci_archive(&path, "docker.io/bad/truncated:1", None);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - (1 << 20))
        .unwrap();
    cases.push(("truncated", path, "archive"));

    // A manifest that is not JSON.
    let path = dir.join("malformed.tar");
    image.oci_archive(
        &path,
        "docker.io/bad/malformed:1",
        Some(b"{not json".to_vec()),
    );
    cases.push(("malformed manifest", path, "malformed"));

    // A layer of a media type nobody knows.
    let path = dir.join("mediatype.tar");
    let mut odd = layered_image();
    odd.layers[0].1 = "application/x-unknown-layer".into();
    odd.oci_archive(&path, "docker.io/bad/mediatype:1", None);
    cases.push(("unknown media type", path, "media type"));

    // A layer that climbs out of its snapshot.
    let path = dir.join("escape.tar");
    let escape = Image::new(
        vec![layer_tar(&[Entry::File(
            "../../../../escaped-by-berth-test",
            b"x".to_vec(),
        )])],
        &[false],
    );
    escape.oci_archive(&path, "docker.io/bad/escape:1", None);
    cases.push(("escaping tar", path, "escaped-by-berth-test"));

    for (what, path, needle) in cases {
        let err = daemon.berthctl_err(&["-n", "bad", "images", "import", path.to_str().unwrap()]);
        assert!(err.contains(needle), "{what}: {err}");
        let images = daemon.ctr_ok(&["-n", "bad", "images", "ls", "-q"]);
        assert!(
            images.trim().is_empty(),
            "{what}: an image was made: {images}"
        );
        daemon.berthctl_ok(&["version"]);
    }
    assert!(!Path::new("/escaped-by-berth-test").exists());
    // Nothing stays: content held only by the import's lease is collected,
    // no snapshot is left.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let content = daemon.ctr_ok(&["-n", "bad", "content", "ls", "-q"]);
        if content.trim().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "content left: {content}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let snapshots = daemon.ctr_ok(&["-n", "bad", "snapshots", "ls"]);
    assert_eq!(snapshots.lines().count(), 1, "snapshots left: {snapshots}");
}

/// Rewrites one member of a tar in place (same size).
fn rewrite_member(path: &Path, member: &str, change: impl FnOnce(&mut Vec<u8>)) {
    let mut files = Vec::new();
    let mut archive = tar::Archive::new(fs::File::open(path).unwrap());
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().display().to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        files.push((name, data));
    }
    let mut change = Some(change);
    for (name, data) in &mut files {
        if name == member {
            (change.take().unwrap())(data);
        }
    }
    assert!(change.is_none(), "{member} not in the archive");
    write_tar(path, &files);
}

#[test]
fn a_pull_killed_by_sigkill_completes_on_retry() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let Some(mut daemon) = Berthd::start_with(Options::empty(WHAT)) else {
        return;
    };
    let big = layer_tar(&[
        Entry::Dir("big/"),
        Entry::File("big/blob", noise(160 << 20, 99)),
    ]);
    let small = layer_tar(&[Entry::File("small", b"small".to_vec())]);
    let image = Image::new(vec![small, big], &[true, false]);
    let archive = daemon.dir().join("big.tar");
    image.oci_archive(&archive, "docker.io/berth/big:1", None);
    daemon.berthctl_ok(&["-n", "src", "images", "import", archive.to_str().unwrap()]);
    fs::remove_file(&archive).unwrap();
    let remote = format!("{}/berth/big:1", registry.address);
    daemon.berthctl_ok(&[
        "-n",
        "src",
        "images",
        "push",
        "docker.io/berth/big:1",
        &remote,
        "--plain-http",
    ]);
    // The source namespace goes, so the pull cannot find the blobs here.
    daemon.berthctl_ok(&[
        "-n",
        "src",
        "images",
        "rm",
        "--sync",
        "docker.io/berth/big:1",
    ]);

    let mut pull = Command::new(target_binary("berthctl"))
        .arg("--address")
        .arg(daemon.socket())
        .args(["-n", "dst", "images", "pull", "--plain-http", &remote])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let big_digest = sha256(&image.layers[1].0);
    let mut lines = BufReader::new(pull.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .expect("the pull ended before the big layer moved")
            .unwrap();
        seen.push(line.clone());
        if line.contains(&big_digest) && line.contains(" transferring ") {
            break;
        }
    }
    daemon.kill_hard();
    let _ = pull.wait();
    daemon.launch();
    // Nothing of the cut pull is visible as content or as an image.
    let content = daemon.ctr_ok(&["-n", "dst", "content", "ls"]);
    assert!(!content.contains(&big_digest[7..]), "{content}");
    let images = daemon.ctr_ok(&["-n", "dst", "images", "ls", "-q"]);
    assert!(images.trim().is_empty(), "{images}");
    // Nor as a snapshot: the big layer's extraction had not begun (it
    // waits for the blob), so none is left active.
    let snapshots = daemon.ctr_ok(&["-n", "dst", "snapshots", "ls"]);
    assert!(!snapshots.contains("Active"), "{snapshots}");

    let retried = daemon.berthctl_ok(&["-n", "dst", "images", "pull", "--plain-http", &remote]);
    let chain_id = unpacked(&retried);
    let check = daemon.ctr_ok(&["-n", "dst", "images", "check"]);
    assert!(
        check.contains("complete (3/3)") && check.contains("true"),
        "{check}"
    );
    let content = daemon.ctr_ok(&["-n", "dst", "content", "ls"]);
    assert!(content.contains(&big_digest[7..]), "{content}");
    let tree = describe_snapshot(&daemon, "dst", &chain_id);
    assert_eq!(tree["small"], format!("{} mode 644", sha256(b"small")));
    assert!(tree.contains_key("big/blob"), "{tree:?}");
}
