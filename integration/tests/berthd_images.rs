//! berthd driven by the real containerd 1.6 `ctr` and by `berthctl`: an
//! isolated daemon (root, state and socket in a temp dir) imports an OCI
//! archive built here from /bin/busybox, unpacks it onto overlayfs, serves
//! content and snapshots, collects garbage, and stops cleanly on SIGTERM.

// The helpers below are test code too: a panic is how they report.
#![allow(clippy::unwrap_used)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_integration::berthd::{Berthd, Options, CTR};
use berth_integration::containerd::target_binary;
use berth_integration::registry::Registry;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

const WHAT: &str = "the berthd image tests";
const IMAGE: &str = "docker.io/library/busybox:latest";

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The OCI image the tests import: one gzip layer with /bin/busybox and
/// /bin/sh -> busybox.
struct Archive {
    path: PathBuf,
    config: Vec<u8>,
    /// The layer's diffID: for a one-layer image, its chain ID and so the
    /// committed snapshot's name.
    diff_id: String,
    layer_digest: String,
    manifest_digest: String,
}

fn tar_entry(
    builder: &mut tar::Builder<impl Write>,
    path: &str,
    kind: tar::EntryType,
    mode: u32,
    data: &[u8],
    link: Option<&str>,
) {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_mode(mode);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(data.len() as u64);
    if let Some(link) = link {
        header.set_link_name(link).unwrap();
    }
    builder.append_data(&mut header, path, data).unwrap();
}

fn build_archive(dir: &Path) -> Archive {
    let busybox = fs::read("/bin/busybox").expect("/bin/busybox (Debian's busybox-static)");
    let mut layer_tar = tar::Builder::new(Vec::new());
    tar_entry(
        &mut layer_tar,
        "bin/",
        tar::EntryType::Directory,
        0o755,
        &[],
        None,
    );
    tar_entry(
        &mut layer_tar,
        "bin/busybox",
        tar::EntryType::Regular,
        0o755,
        &busybox,
        None,
    );
    tar_entry(
        &mut layer_tar,
        "bin/sh",
        tar::EntryType::Symlink,
        0o777,
        &[],
        Some("busybox"),
    );
    let layer_tar = layer_tar.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer_tar).unwrap();
    let layer = gz.finish().unwrap();

    let diff_id = sha256(&layer_tar);
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": sha256(&layer), "size": layer.len()}],
    }))
    .unwrap();
    // A bare tag: ctr imports `name:tag` ref annotations as nothing at all,
    // and prefixes a bare tag with --base-name.
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": sha256(&manifest), "size": manifest.len(),
                       "annotations": {"org.opencontainers.image.ref.name": "latest"},
                       "platform": {"architecture": "amd64", "os": "linux"}}],
    }))
    .unwrap();

    let path = dir.join("busybox-oci.tar");
    let mut archive = tar::Builder::new(fs::File::create(&path).unwrap());
    let file = |b: &mut tar::Builder<fs::File>, name: &str, data: &[u8]| {
        tar_entry(b, name, tar::EntryType::Regular, 0o644, data, None)
    };
    file(
        &mut archive,
        "oci-layout",
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    );
    file(&mut archive, "index.json", &index);
    for blob in [&layer, &config, &manifest] {
        file(
            &mut archive,
            &format!("blobs/sha256/{}", &sha256(blob)[7..]),
            blob,
        );
    }
    archive.into_inner().unwrap().sync_all().unwrap();
    Archive {
        path,
        layer_digest: sha256(&layer),
        manifest_digest: sha256(&manifest),
        config,
        diff_id,
    }
}

/// `ctr images import` of `archive` as busybox, which must unpack.
fn import(daemon: &Berthd, archive: &Archive) {
    let out = daemon.ctr_ok(&[
        "images",
        "import",
        "--base-name",
        "docker.io/library/busybox",
        archive.path.to_str().unwrap(),
    ]);
    assert!(
        out.contains("unpacking docker.io/library/busybox:latest"),
        "{out}"
    );
    assert!(out.contains("done"), "{out}");
}

#[test]
fn ctr_manages_images_content_snapshots_and_namespaces_on_berthd() {
    let Some(mut daemon) = Berthd::start_with(Options::empty(WHAT)) else {
        return;
    };
    let archive = build_archive(daemon.dir());

    let version = daemon.ctr_ok(&["version"]);
    assert!(version.contains("Server:"), "{version}");
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    assert!(version.contains("UUID:"), "{version}");

    // Namespaces: create, label, list, remove.
    daemon.ctr_ok(&["namespaces", "create", "scratch"]);
    daemon.ctr_ok(&["namespaces", "label", "scratch", "team=berth"]);
    let listed = daemon.ctr_ok(&["namespaces", "ls"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("scratch") && l.contains("team=berth")),
        "{listed}"
    );
    daemon.ctr_ok(&["namespaces", "rm", "scratch"]);
    assert!(!daemon
        .ctr_ok(&["namespaces", "ls", "-q"])
        .contains("scratch"));

    // Import, unpacked onto overlayfs, watched by `ctr events`.
    let events_log = daemon.dir().join("events.log");
    let mut events = Command::new(CTR)
        .arg("--address")
        .arg(daemon.socket())
        .arg("events")
        .stdout(fs::File::create(&events_log).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    import(&daemon, &archive);
    let images = daemon.ctr_ok(&["images", "ls"]);
    assert!(images.contains(IMAGE), "{images}");
    assert!(images.contains(&archive.manifest_digest), "{images}");
    let check = daemon.ctr_ok(&["images", "check"]);
    assert!(check.contains("complete"), "{check}");
    assert!(check.trim_end().ends_with("true"), "unpacked: {check}");

    std::thread::sleep(Duration::from_millis(300));
    let _ = events.kill();
    let _ = events.wait();
    let seen = fs::read_to_string(&events_log).unwrap();
    for topic in ["/images/create", "/snapshot/prepare", "/snapshot/commit"] {
        assert!(
            seen.contains(&format!("default {topic} {{")),
            "{topic} decoded: {seen}"
        );
    }
    assert!(seen.contains(&format!(r#""name":"{IMAGE}""#)), "{seen}");

    // Image labels and tags (ctr sends an empty target with a label mask).
    daemon.ctr_ok(&["images", "label", IMAGE, "origin=test"]);
    assert!(daemon.ctr_ok(&["images", "ls"]).contains("origin=test"));
    daemon.ctr_ok(&["images", "tag", IMAGE, "example.com/busybox:copy"]);
    daemon.ctr_ok(&["images", "rm", "example.com/busybox:copy"]);

    // Content: listed, read back, labelled.
    let content = daemon.ctr_ok(&["content", "ls"]);
    assert!(content.contains(&archive.layer_digest), "{content}");
    assert!(content.contains(&format!("containerd.io/uncompressed={}", archive.diff_id)));
    let config_digest = sha256(&archive.config);
    let got = daemon.ctr(&["content", "get", &config_digest]);
    assert!(got.status.success());
    assert_eq!(got.stdout, archive.config);
    daemon.ctr_ok(&["content", "label", &config_digest, "checked=yes"]);
    assert!(daemon.ctr_ok(&["content", "ls"]).contains("checked=yes"));

    // The non-empty namespace cannot go.
    let refused = daemon.ctr_err(&["namespaces", "rm", "default"]);
    assert!(refused.contains("must be empty"), "{refused}");

    // The snapshot chain, and a writable snapshot over it that mounts.
    let snapshots = daemon.ctr_ok(&["snapshots", "ls"]);
    let committed = snapshots
        .lines()
        .find(|l| l.starts_with(&archive.diff_id))
        .unwrap_or_else(|| panic!("no snapshot {}: {snapshots}", archive.diff_id));
    assert!(committed.contains("Committed"), "{committed}");
    daemon.ctr_ok(&["snapshots", "prepare", "work", &archive.diff_id]);
    let target = daemon.dir().join("mnt");
    fs::create_dir(&target).unwrap();
    let mount = daemon.ctr_ok(&["snapshots", "mounts", target.to_str().unwrap(), "work"]);
    assert!(mount.starts_with("mount -t overlay"), "{mount}");
    let mounted = Command::new("sh")
        .arg("-c")
        .arg(mount.trim())
        .status()
        .unwrap();
    assert!(mounted.success(), "{mount}");
    let busybox = target.join("bin/busybox");
    let seen = fs::metadata(&busybox).map(|m| (m.size(), m.permissions().mode() & 0o777));
    let link = fs::read_link(target.join("bin/sh"));
    let written = fs::write(target.join("hello.txt"), b"hello from berth");
    nix::mount::umount(&target).unwrap();
    written.unwrap();
    assert_eq!(
        seen.unwrap(),
        (fs::metadata("/bin/busybox").unwrap().size(), 0o755)
    );
    assert_eq!(link.unwrap(), PathBuf::from("busybox"));

    // The Diff service computes the change as a layer stored in content.
    let diff = daemon.ctr(&["snapshots", "diff", &archive.diff_id, "work"]);
    assert!(
        diff.status.success(),
        "{}",
        String::from_utf8_lossy(&diff.stderr)
    );
    let mut names = Vec::new();
    let mut layer = tar::Archive::new(flate2::read::GzDecoder::new(diff.stdout.as_slice()));
    for entry in layer.entries().unwrap() {
        names.push(entry.unwrap().path().unwrap().display().to_string());
    }
    assert_eq!(names, ["hello.txt"], "only the new file is in the layer");
    let stored = daemon.ctr_ok(&["content", "ls"]);
    assert!(stored.contains(&sha256(&diff.stdout)), "{stored}");

    // Errors come back readable.
    let err = daemon.ctr_err(&["snapshots", "rm", &archive.diff_id]);
    assert!(err.contains("has children"), "{err}");
    let err = daemon.ctr_err(&["content", "get", &sha256(b"never stored")]);
    assert!(err.contains("not found"), "{err}");
    let err = daemon.ctr_err(&[
        "images",
        "export",
        "/dev/null",
        "docker.io/library/nosuch:1",
    ]);
    assert!(err.contains("not found"), "{err}");
    let err = daemon.ctr_err(&["snapshots", "--snapshotter", "zfs", "ls"]);
    assert!(err.contains("zfs"), "{err}");
    let err = daemon.ctr_err(&["content", "get", "sha256:nothex"]);
    assert!(err.contains("invalid"), "{err}");

    // Removing the image (with the work snapshot gone) leaves nothing.
    daemon.ctr_ok(&["snapshots", "rm", "work"]);
    daemon.ctr_ok(&["images", "rm", "--sync", IMAGE]);
    assert_eq!(daemon.ctr_ok(&["images", "ls", "-q"]).trim(), "");
    assert_eq!(daemon.ctr_ok(&["content", "ls", "-q"]).trim(), "");
    assert_eq!(
        daemon.ctr_ok(&["snapshots", "ls"]).lines().count(),
        1,
        "header only"
    );
    let blobs = daemon.dir().join("root/content/blobs/sha256");
    assert_eq!(fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0), 0);

    daemon.stop_cleanly();
}

#[test]
fn berthctl_lists_and_removes_over_the_generated_client() {
    let Some(mut daemon) = Berthd::start_with(Options::empty(WHAT)) else {
        return;
    };
    let archive = build_archive(daemon.dir());
    import(&daemon, &archive);

    let version = daemon.berthctl_ok(&["version"]);
    assert!(version.contains("Server:"), "{version}");

    let table = daemon.berthctl_ok(&["images", "ls"]);
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains(IMAGE), "{table}");
    let json: Value =
        serde_json::from_str(&daemon.berthctl_ok(&["images", "ls", "--format", "json"])).unwrap();
    assert_eq!(json[0]["name"], IMAGE);
    assert_eq!(json[0]["digest"], archive.manifest_digest.as_str());

    let content = daemon.berthctl_ok(&["content", "ls"]);
    assert!(content.contains(&archive.layer_digest), "{content}");
    let snapshots = daemon.berthctl_ok(&["snapshots", "ls"]);
    assert!(
        snapshots
            .lines()
            .any(|l| l.starts_with(&archive.diff_id) && l.contains("committed")),
        "{snapshots}"
    );
    let namespaces = daemon.berthctl_ok(&["namespaces", "ls"]);
    assert!(namespaces.contains("default"), "{namespaces}");

    // Tag, inspect, read a blob, snapshot tree and usage, namespaces.
    daemon.berthctl_ok(&["images", "tag", IMAGE, "example.com/bb:copy"]);
    let inspected: Value =
        serde_json::from_str(&daemon.berthctl_ok(&["images", "inspect", "example.com/bb:copy"]))
            .unwrap();
    assert_eq!(
        inspected["target"]["digest"],
        archive.manifest_digest.as_str()
    );
    daemon.berthctl_ok(&["images", "rm", "example.com/bb:copy"]);
    let config = daemon.berthctl(&["content", "get", &sha256(&archive.config)]);
    assert!(config.status.success());
    assert_eq!(config.stdout, archive.config);
    assert!(daemon
        .berthctl_ok(&["snapshots", "tree"])
        .starts_with(&archive.diff_id));
    assert!(daemon
        .berthctl_ok(&["snapshots", "usage"])
        .contains(&archive.diff_id));
    daemon.berthctl_ok(&["namespaces", "create", "extra", "team=berth"]);
    assert!(daemon
        .berthctl_ok(&["namespaces", "ls"])
        .contains("team=berth"));
    daemon.berthctl_ok(&["namespaces", "rm", "extra"]);
    let busy = daemon.berthctl(&["namespaces", "rm", "default"]);
    assert!(!busy.status.success());
    assert!(String::from_utf8_lossy(&busy.stderr).contains("must be empty"));

    // Another namespace sees nothing.
    let other = daemon.berthctl_ok(&["--namespace", "other", "images", "ls", "--format", "json"]);
    assert_eq!(other.trim(), "[]");

    let missing = daemon.berthctl(&["images", "rm", "docker.io/library/nosuch:1"]);
    assert!(!missing.status.success());
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("not found"), "{stderr}");
    assert!(
        !stderr.contains("Status {"),
        "readable, not a debug dump: {stderr}"
    );

    daemon.berthctl_ok(&["images", "rm", "--sync", IMAGE]);
    assert!(!daemon.berthctl_ok(&["images", "ls"]).contains(IMAGE));
    assert!(!daemon
        .berthctl_ok(&["content", "ls"])
        .contains(&archive.layer_digest));

    let unreachable = Command::new(target_binary("berthctl"))
        .args(["--address", "/nonexistent/berthd.sock", "version"])
        .output()
        .unwrap();
    assert!(!unreachable.status.success());
    assert!(String::from_utf8_lossy(&unreachable.stderr).contains("/nonexistent/berthd.sock"));

    daemon.stop_cleanly();
}

#[test]
fn ctr_pulls_from_a_registry_into_berthd() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let Some(mut daemon) = Berthd::start_with(Options::empty(WHAT)) else {
        return;
    };
    let archive = build_archive(daemon.dir());
    let reference = format!("{}/berth/busybox:latest", registry.address);
    let pushed = Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}:latest", archive.path.display()))
        .arg(format!("docker://{reference}"))
        .output()
        .expect("skopeo (Debian's skopeo)");
    assert!(
        pushed.status.success(),
        "{}",
        String::from_utf8_lossy(&pushed.stderr)
    );

    let out = daemon.ctr_ok(&["images", "pull", "--plain-http", &reference]);
    assert!(out.contains("unpacking linux/amd64"), "{out}");
    let images = daemon.ctr_ok(&["images", "ls"]);
    assert!(images.contains(&reference), "{images}");
    assert!(images.contains(&archive.manifest_digest), "{images}");
    let snapshots = daemon.ctr_ok(&["snapshots", "ls"]);
    assert!(snapshots.contains(&archive.diff_id), "{snapshots}");
    // Pulling again finds everything there.
    daemon.ctr_ok(&["images", "pull", "--plain-http", &reference]);
    assert_eq!(daemon.ctr_ok(&["images", "ls", "-q"]).lines().count(), 1);

    daemon.stop_cleanly();
    drop(registry);
}

#[test]
fn berthd_refuses_a_missing_config_and_a_socket_in_use() {
    let missing = Command::new(target_binary("berthd"))
        .args(["--config", "/nonexistent/berthd.toml"])
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("/nonexistent/berthd.toml"), "{stderr}");

    let Some(mut daemon) = Berthd::start_with(Options::empty(WHAT)) else {
        return;
    };
    let second = Command::new(target_binary("berthd"))
        .arg("--config")
        .arg(daemon.dir().join("berthd.toml"))
        .arg("--root")
        .arg(daemon.dir().join("root2"))
        .arg("--state")
        .arg(daemon.dir().join("state2"))
        .arg("--address")
        .arg(daemon.socket())
        .output()
        .unwrap();
    assert!(!second.status.success());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert!(stderr.contains("another daemon"), "{stderr}");
    // The first daemon still serves.
    daemon.ctr_ok(&["version"]);
    daemon.stop_cleanly();
}
