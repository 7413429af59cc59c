//! The same image unpacked by containerd 1.6 and by berthd gives the same
//! tree. Runs a private containerd (Debian's containerd package, as CI has
//! it) on a temporary root and socket.

use super::*;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::diff::{compute, Compression, ComputeOptions};
use crate::snapshots::{tree::read_xattrs, Mount, TempMount};

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Every file's type, mode, owner, mtime, content digest, link target
/// and xattrs, and which paths of the tree share an inode (link counts
/// themselves are not compared: through overlayfs a file keeps the
/// count it has in its lower layer).
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut entries: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .into_iter()
        .map(|e| e.unwrap().path().to_path_buf())
        .collect();
    entries.sort();
    let mut by_inode: BTreeMap<(u64, u64), Vec<String>> = BTreeMap::new();
    for path in &entries {
        let m = fs::symlink_metadata(path).unwrap();
        if !m.is_dir() {
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            by_inode.entry((m.dev(), m.ino())).or_default().push(rel);
        }
    }
    entries
        .into_iter()
        .map(|path| {
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let m = fs::symlink_metadata(&path).unwrap();
            let kind = m.file_type();
            let what = if kind.is_file() {
                sha256(&fs::read(&path).unwrap())
            } else if kind.is_symlink() {
                format!("-> {}", fs::read_link(&path).unwrap().display())
            } else {
                format!("type {:o} rdev {}", m.mode() & 0o170000, m.rdev())
            };
            let link = match by_inode.get(&(m.dev(), m.ino())) {
                Some(group) if group.len() > 1 => format!(" =link {}", group[0]),
                _ => String::new(),
            };
            let xattrs: Vec<_> = read_xattrs(&path)
                .unwrap()
                .into_iter()
                .filter(|(n, _)| !n.starts_with(b"trusted.overlay."))
                .collect();
            let mode = if kind.is_symlink() {
                0
            } else {
                m.mode() & 0o7777
            };
            let line = format!(
                "{what} mode {mode:o} {}:{} mtime {} xattrs {xattrs:?}{link}",
                m.uid(),
                m.gid(),
                m.mtime()
            );
            (rel, line)
        })
        .collect()
}

/// Three layers: a base, changes made through an overlay (deletions, an
/// opaque directory, a replaced symlink, modes), and hard links.
fn layers(work: &Path) -> Vec<(Vec<u8>, String)> {
    let db = Arc::new(redb::Database::create(work.join("build.redb")).unwrap());
    let s = Snapshotter::overlayfs(db, &work.join("build")).unwrap();
    let ns = "build";
    let mut out = Vec::new();
    let mut layer = |parent: Option<&str>, name: &str, change: &dyn Fn(&Path)| {
        let key = format!("{name}-work");
        let active = s.prepare(ns, &key, parent, BTreeMap::new()).unwrap();
        let mounted = TempMount::new(&active).unwrap();
        change(mounted.path());
        mounted.release().unwrap();
        let lower: Vec<Mount> = match parent {
            Some(p) => s
                .view(ns, &format!("{name}-parent"), Some(p), BTreeMap::new())
                .unwrap(),
            None => Vec::new(),
        };
        let mut bytes = Vec::new();
        let options = ComputeOptions {
            compression: Compression::Gzip,
        };
        let computed = compute(&lower, &active, &mut bytes, &options).unwrap();
        s.commit(ns, name, &key, BTreeMap::new()).unwrap();
        out.push((bytes, computed.diff_id));
    };
    layer(None, "l1", &|root| {
        for dir in ["etc/conf.d", "usr/bin", "usr/lib/app", "var/cache/apt"] {
            fs::create_dir_all(root.join(dir)).unwrap();
        }
        fs::write(root.join("etc/os-release"), "base\n").unwrap();
        fs::write(root.join("etc/conf.d/a"), "a").unwrap();
        fs::write(root.join("usr/bin/tool"), "tool").unwrap();
        fs::set_permissions(root.join("usr/bin/tool"), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(root.join("usr/lib/app/data"), vec![7u8; 100_000]).unwrap();
        fs::write(root.join("var/cache/apt/pkg"), "cached").unwrap();
        std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
        std::os::unix::fs::chown(root.join("etc/conf.d/a"), Some(1000), Some(1000)).unwrap();
        rustix::fs::setxattr(
            root.join("usr/bin/tool"),
            "user.origin",
            b"base",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    });
    layer(Some("l1"), "l2", &|root| {
        fs::write(root.join("etc/os-release"), "v2\n").unwrap();
        fs::remove_file(root.join("etc/conf.d/a")).unwrap();
        fs::remove_dir_all(root.join("var/cache")).unwrap();
        fs::remove_dir_all(root.join("usr/lib/app")).unwrap();
        fs::create_dir(root.join("usr/lib/app")).unwrap();
        fs::write(root.join("usr/lib/app/new"), "new").unwrap();
        fs::remove_file(root.join("bin")).unwrap();
        fs::create_dir(root.join("bin")).unwrap();
        fs::write(root.join("bin/sh"), "sh").unwrap();
        fs::set_permissions(root.join("etc"), fs::Permissions::from_mode(0o700)).unwrap();
    });
    layer(Some("l2"), "l3", &|root| {
        fs::create_dir(root.join("opt")).unwrap();
        fs::write(root.join("opt/one"), "same inode").unwrap();
        fs::hard_link(root.join("opt/one"), root.join("opt/two")).unwrap();
        fs::set_permissions(root.join("opt/one"), fs::Permissions::from_mode(0o4750)).unwrap();
        nix::unistd::mkfifo(
            &root.join("opt/pipe"),
            nix::sys::stat::Mode::from_bits_truncate(0o600),
        )
        .unwrap();
    });
    out
}

/// An OCI image layout tar of `layers`, named `berth-compat:1`.
fn oci_archive(layers: &[(Vec<u8>, String)]) -> (Vec<u8>, Vec<LayerDescriptor>, Vec<String>) {
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let descriptors: Vec<LayerDescriptor> = layers
        .iter()
        .map(|(bytes, _)| LayerDescriptor {
            media_type: crate::diff::stream::MEDIA_TYPE_TAR_GZIP.into(),
            digest: sha256(bytes),
            size: bytes.len() as u64,
        })
        .collect();
    let diff_ids: Vec<String> = layers.iter().map(|(_, d)| d.clone()).collect();
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux", "config": {},
        "rootfs": { "type": "layers", "diff_ids": diff_ids },
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": { "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": sha256(&config), "size": config.len() },
        "layers": descriptors.iter().map(|d| serde_json::json!({
            "mediaType": d.media_type, "digest": d.digest, "size": d.size })).collect::<Vec<_>>(),
    }))
    .unwrap();
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{ "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "digest": sha256(&manifest), "size": manifest.len(),
                        "annotations": { "org.opencontainers.image.ref.name": "1" } }],
    }))
    .unwrap();
    blobs.extend(layers.iter().map(|(b, _)| b.clone()));
    blobs.push(config);
    blobs.push(manifest);
    let mut tar = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(data.len() as u64);
        header.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut header, path, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &index);
    for blob in &blobs {
        let digest = sha256(blob);
        add(
            &format!("blobs/sha256/{}", &digest["sha256:".len()..]),
            blob,
        );
    }
    (tar.into_inner().unwrap(), descriptors, diff_ids)
}

struct Containerd {
    child: Child,
    socket: PathBuf,
}

impl Containerd {
    fn start(dir: &Path) -> Self {
        let socket = dir.join("containerd.sock");
        let config = dir.join("config.toml");
        fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{}\"\nstate = \"{}\"\ndisabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n[grpc]\n  address = \"{}\"\n",
                dir.join("root").display(),
                dir.join("state").display(),
                socket.display()
            ),
        )
        .unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .stdout(fs::File::create(dir.join("containerd.log")).unwrap())
            .stderr(fs::File::create(dir.join("containerd.err")).unwrap())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "containerd did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Containerd { child, socket }
    }

    fn ctr(&self, args: &[&str]) -> String {
        String::from_utf8_lossy(&self.ctr_bytes(args)).into_owned()
    }

    fn ctr_bytes(&self, args: &[&str]) -> Vec<u8> {
        let output = Command::new("ctr")
            .arg("--address")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "ctr {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// Mounts containerd's snapshot `key` on `target` with the mount
    /// command `ctr snapshots mounts` prints.
    fn mount_snapshot(&self, key: &str, target: &Path) {
        let command = self.ctr(&["snapshots", "mounts", target.to_str().unwrap(), key]);
        let status = Command::new("sh").arg("-c").arg(&command).status().unwrap();
        assert!(status.success(), "{command}");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

/// Layers containerd computes (Go's tar writer, its whiteouts) apply
/// with berthd to the tree containerd has.
#[test]
fn applies_layers_containerd_computes() {
    let work = tempfile::tempdir().unwrap();
    let containerd_dir = tempfile::tempdir_in(work.path()).unwrap();
    let containerd = Containerd::start(containerd_dir.path());
    let target = work.path().join("mnt");
    fs::create_dir(&target).unwrap();
    let change = |key: &str, parent: &str, edit: &dyn Fn(&Path)| {
        containerd.ctr(&["snapshots", "prepare", key, parent]);
        containerd.mount_snapshot(key, &target);
        edit(&target);
        crate::snapshots::unmount_all(&target).unwrap();
    };
    change("base-work", "", &|root| {
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::create_dir_all(root.join("etc/skel")).unwrap();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("etc/f"), "hi").unwrap();
        fs::write(root.join("etc/skel/.profile"), "p").unwrap();
        fs::write(root.join("usr/bin/t"), "x").unwrap();
        fs::hard_link(root.join("usr/bin/t"), root.join("usr/bin/t2")).unwrap();
        fs::set_permissions(root.join("usr/bin/t"), fs::Permissions::from_mode(0o4755)).unwrap();
        std::os::unix::fs::symlink("../etc/f", root.join("usr/link")).unwrap();
        std::os::unix::fs::chown(root.join("etc/f"), Some(33), Some(33)).unwrap();
        nix::unistd::mkfifo(
            &root.join("d/p"),
            nix::sys::stat::Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        fs::write(root.join("d/gone"), "g").unwrap();
    });
    containerd.ctr(&["snapshots", "commit", "base", "base-work"]);
    change("top", "base", &|root| {
        fs::remove_file(root.join("etc/f")).unwrap();
        fs::remove_dir_all(root.join("etc/skel")).unwrap();
        fs::remove_dir_all(root.join("d")).unwrap();
        fs::create_dir(root.join("d")).unwrap();
        fs::write(root.join("d/n"), "new").unwrap();
        fs::write(root.join("usr/bin/t"), "xy").unwrap();
    });
    let media_type = crate::diff::stream::MEDIA_TYPE_TAR;
    let diff =
        |key: &str| containerd.ctr_bytes(&["snapshots", "diff", "--media-type", media_type, key]);
    let (base_layer, top_layer) = (diff("base"), diff("top"));
    containerd.mount_snapshot("top", &target);
    let theirs = describe(&target);
    crate::snapshots::unmount_all(&target).unwrap();
    drop(containerd);
    assert!(
        theirs.contains_key("d/n") && !theirs.contains_key("d/gone"),
        "{theirs:?}"
    );
    assert!(
        !theirs.contains_key("etc/skel") && !theirs.contains_key("etc/f"),
        "{theirs:?}"
    );

    let layers = [&base_layer, &top_layer];
    let blobs: BTreeMap<String, Vec<u8>> = layers.iter().map(|b| (sha256(b), b.to_vec())).collect();
    let descriptors: Vec<LayerDescriptor> = layers
        .iter()
        .map(|b| LayerDescriptor {
            media_type: media_type.into(),
            digest: sha256(b),
            size: b.len() as u64,
        })
        .collect();
    let diff_ids: Vec<String> = descriptors.iter().map(|d| d.digest.clone()).collect();
    for make in [
        Snapshotter::overlayfs as fn(_, &Path) -> _,
        Snapshotter::native,
    ] {
        let root = tempfile::tempdir_in(work.path()).unwrap();
        let db = Arc::new(redb::Database::create(root.path().join("meta.redb")).unwrap());
        let s = make(db, &root.path().join("root")).unwrap();
        let open = |l: &LayerDescriptor| -> Result<std::io::Cursor<Vec<u8>>> {
            Ok(std::io::Cursor::new(blobs[&l.digest].clone()))
        };
        let done = unpack(
            &s,
            "default",
            &descriptors,
            &diff_ids,
            &open,
            &UnpackOptions::default(),
        )
        .unwrap();
        let view = s
            .view("default", "look", Some(&done.chain_id), BTreeMap::new())
            .unwrap();
        let mounted = TempMount::new(&view).unwrap();
        let ours = describe(mounted.path());
        mounted.release().unwrap();
        assert_eq!(ours, theirs, "{} differs from containerd", s.name());
    }
}

#[test]
fn matches_containerd() {
    let work = tempfile::tempdir().unwrap();
    let layers = layers(work.path());
    let (archive, descriptors, diff_ids) = oci_archive(&layers);
    let archive_path = work.path().join("image.tar");
    fs::write(&archive_path, &archive).unwrap();

    // berthd's unpack, both snapshotters.
    let mut ours = Vec::new();
    for make in [
        Snapshotter::overlayfs as fn(_, &Path) -> _,
        Snapshotter::native,
    ] {
        let root = tempfile::tempdir_in(work.path()).unwrap();
        let db = Arc::new(redb::Database::create(root.path().join("meta.redb")).unwrap());
        let s = make(db, &root.path().join("root")).unwrap();
        let blobs: BTreeMap<String, Vec<u8>> =
            layers.iter().map(|(b, _)| (sha256(b), b.clone())).collect();
        let open = |l: &LayerDescriptor| -> Result<std::io::Cursor<Vec<u8>>> {
            Ok(std::io::Cursor::new(blobs[&l.digest].clone()))
        };
        let done = unpack(
            &s,
            "default",
            &descriptors,
            &diff_ids,
            &open,
            &UnpackOptions::default(),
        )
        .unwrap();
        let view = s
            .view("default", "look", Some(&done.chain_id), BTreeMap::new())
            .unwrap();
        let mounted = TempMount::new(&view).unwrap();
        ours.push((s.name(), describe(mounted.path())));
        mounted.release().unwrap();
    }

    // containerd's.
    let containerd_dir = tempfile::tempdir_in(work.path()).unwrap();
    let containerd = Containerd::start(containerd_dir.path());
    containerd.ctr(&[
        "images",
        "import",
        "--base-name",
        "docker.io/library/berth-compat",
        archive_path.to_str().unwrap(),
    ]);
    let target = work.path().join("containerd-view");
    fs::create_dir(&target).unwrap();
    containerd.ctr(&[
        "images",
        "mount",
        "docker.io/library/berth-compat:1",
        target.to_str().unwrap(),
    ]);
    let theirs = describe(&target);
    containerd.ctr(&["images", "unmount", "--rm", target.to_str().unwrap()]);
    drop(containerd);

    // The comparison is not vacuous: the layers' changes are all there.
    assert!(theirs["opt/two"].ends_with("=link opt/one"), "{theirs:?}");
    assert!(theirs["bin"].starts_with("type 40000"), "{theirs:?}");
    assert!(theirs.contains_key("usr/lib/app/new") && !theirs.contains_key("usr/lib/app/data"));
    assert!(!theirs.contains_key("var/cache") && !theirs.contains_key("etc/conf.d/a"));
    for (name, tree) in ours {
        assert_eq!(tree, theirs, "{name} differs from containerd");
    }
}
