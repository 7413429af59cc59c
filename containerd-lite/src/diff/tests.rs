//! Layer apply and compute: formats, whiteouts, every escape a hostile
//! layer tries, limits, and round trips (apply(compute(x)) gives x back).

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tar::EntryType;

use super::stream::{MEDIA_TYPE_TAR, MEDIA_TYPE_TAR_GZIP, MEDIA_TYPE_TAR_ZSTD};
use super::*;
use crate::snapshots::{tree::read_xattrs, Snapshotter};
use crate::ErrorKind;

/// A layer tar built entry by entry, names written raw (so hostile names
/// such as `../x` can be made).
struct Layer(tar::Builder<Vec<u8>>);

impl Layer {
    fn new() -> Self {
        Layer(tar::Builder::new(Vec::new()))
    }

    fn raw(
        mut self,
        name: &str,
        kind: EntryType,
        link: Option<&str>,
        data: &[u8],
        mode: u32,
    ) -> Self {
        let mut header = tar::Header::new_gnu();
        let old = header.as_old_mut();
        old.name[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(link) = link {
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(1_600_000_000);
        header.set_device_major(0).unwrap();
        header.set_device_minor(0).unwrap();
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &str) -> Self {
        self.raw(name, EntryType::Regular, None, data.as_bytes(), 0o644)
    }
    fn dir(self, name: &str) -> Self {
        self.raw(name, EntryType::Directory, None, b"", 0o755)
    }
    fn symlink(self, name: &str, target: &str) -> Self {
        self.raw(name, EntryType::Symlink, Some(target), b"", 0o777)
    }
    fn hardlink(self, name: &str, target: &str) -> Self {
        self.raw(name, EntryType::Link, Some(target), b"", 0o644)
    }
    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A scratch area: `root` receives layers, `outside` must never change.
struct Scratch {
    _dir: tempfile::TempDir,
    root: PathBuf,
    outside: PathBuf,
}

fn scratch() -> Scratch {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let outside = dir.path().join("outside");
    fs::create_dir(&root).unwrap();
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), "secret").unwrap();
    Scratch {
        _dir: dir,
        root,
        outside,
    }
}

impl Scratch {
    fn mounts(&self) -> Vec<Mount> {
        vec![Mount::bind(&self.root, false)]
    }

    fn apply(&self, layer: &[u8]) -> Result<AppliedLayer> {
        apply(
            &self.mounts(),
            layer,
            MEDIA_TYPE_TAR,
            &ApplyOptions::default(),
        )
    }

    /// The outside directory holds exactly what it started with.
    fn assert_outside_untouched(&self) {
        let names: Vec<_> = fs::read_dir(&self.outside)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["secret"], "something was written outside the root");
        let secret = fs::symlink_metadata(self.outside.join("secret")).unwrap();
        assert_eq!(
            fs::read_to_string(self.outside.join("secret")).unwrap(),
            "secret"
        );
        assert_eq!(secret.nlink(), 1, "a hard link to an outside file was made");
        assert_eq!(secret.mode() & 0o7777, 0o644);
    }
}

fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

#[test]
fn apply_plain_layer_reports_diff_id_and_keeps_attributes() {
    let s = scratch();
    let layer = Layer::new()
        .dir("etc/")
        .raw("etc/shadow", EntryType::Regular, None, b"x", 0o4640)
        .symlink("etc/link", "shadow")
        .hardlink("etc/hard", "etc/shadow")
        .raw("run/fifo", EntryType::Fifo, None, b"", 0o600)
        .bytes();
    let applied = s.apply(&layer).unwrap();
    assert_eq!(applied.diff_id, sha256(&layer));
    assert_eq!(applied.size, layer.len() as u64);

    let shadow = fs::metadata(s.root.join("etc/shadow")).unwrap();
    assert_eq!(shadow.mode() & 0o7777, 0o4640);
    assert_eq!(shadow.mtime(), 1_600_000_000);
    assert_eq!(
        shadow.ino(),
        fs::metadata(s.root.join("etc/hard")).unwrap().ino()
    );
    assert_eq!(
        fs::read_link(s.root.join("etc/link")).unwrap(),
        Path::new("shadow")
    );
    assert!(fs::symlink_metadata(s.root.join("run/fifo"))
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(
        fs::metadata(s.root.join("etc")).unwrap().mtime(),
        1_600_000_000,
        "dir times set last"
    );
    // A parent the layer did not list is created.
    assert!(s.root.join("run").is_dir());
}

#[test]
fn apply_keeps_pax_xattrs_but_never_overlay_ones() {
    let s = scratch();
    let mut builder = tar::Builder::new(Vec::new());
    builder
        .append_pax_extensions([
            ("SCHILY.xattr.user.note", b"hello".as_slice()),
            ("SCHILY.xattr.trusted.overlay.opaque", b"y".as_slice()),
        ])
        .unwrap();
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(EntryType::Directory);
    header.set_mode(0o755);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_size(0);
    header.set_cksum();
    builder
        .append_data(&mut header, "d", std::io::empty())
        .unwrap();
    s.apply(&builder.into_inner().unwrap()).unwrap();
    assert_eq!(
        read_xattrs(&s.root.join("d")).unwrap(),
        [(b"user.note".to_vec(), b"hello".to_vec())]
    );
}

#[test]
fn compressed_layers_have_the_uncompressed_diff_id() {
    let layer = Layer::new().file("a", "alpha").file("b/c", "gamma").bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(layer.as_slice(), 1).unwrap();
    for (bytes, media_type) in [
        (&gz, MEDIA_TYPE_TAR_GZIP),
        (&gz, stream::MEDIA_TYPE_DOCKER_TAR_GZIP),
        (&zst, MEDIA_TYPE_TAR_ZSTD),
    ] {
        let s = scratch();
        let applied = apply(
            &s.mounts(),
            bytes.as_slice(),
            media_type,
            &ApplyOptions::default(),
        )
        .unwrap();
        assert_eq!(applied.diff_id, sha256(&layer), "{media_type}");
        assert_eq!(fs::read_to_string(s.root.join("b/c")).unwrap(), "gamma");
    }
    let s = scratch();
    let err = apply(
        &s.mounts(),
        layer.as_slice(),
        "application/x-rar",
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unimplemented);
    let err = apply(
        &s.mounts(),
        layer.as_slice(),
        MEDIA_TYPE_TAR_GZIP,
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "not gzip: {err}");
}

#[test]
fn truncated_or_garbage_layers_are_invalid() {
    let layer = Layer::new().file("a", &"x".repeat(5000)).bytes();
    for bad in [
        &layer[..1000],
        b"not a tar at all, just some bytes that are long enough".as_slice(),
    ] {
        let s = scratch();
        let err = s.apply(bad).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    }
}

#[test]
fn read_only_mounts_are_refused() {
    let s = scratch();
    let mounts = [Mount::bind(&s.root, true)];
    let err = apply(
        &mounts,
        Layer::new().bytes().as_slice(),
        MEDIA_TYPE_TAR,
        &ApplyOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
}

// ---- attacks -------------------------------------------------------------

#[test]
fn attack_dot_dot_is_refused() {
    for name in ["../secret", "a/../../secret", "../outside/pwned"] {
        let s = scratch();
        let err = s
            .apply(&Layer::new().file(name, "pwned").bytes())
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{name}: {err}");
        s.assert_outside_untouched();
    }
}

#[test]
fn attack_absolute_paths_land_inside() {
    let s = scratch();
    let absolute = s.outside.join("pwned");
    let name = absolute.to_str().unwrap();
    s.apply(&Layer::new().file(name, "x").bytes()).unwrap();
    s.assert_outside_untouched();
    assert!(s.root.join(name.trim_start_matches('/')).is_file());
}

#[test]
fn attack_file_through_symlinked_dir_stays_inside() {
    let cases = |s: &Scratch| {
        let abs = s.outside.to_str().unwrap().to_string();
        vec![
            Layer::new()
                .symlink("link", &abs)
                .file("link/pwned", "x")
                .bytes(),
            Layer::new()
                .symlink("link", &format!("../../../../../../../..{abs}"))
                .file("link/pwned", "x")
                .bytes(),
            Layer::new()
                .symlink("root", "/")
                .file(&format!("root{abs}/pwned"), "x")
                .bytes(),
            Layer::new()
                .symlink("d", &abs)
                .dir("d/sub/")
                .file("d/sub/pwned", "x")
                .bytes(),
            Layer::new()
                .symlink("up", "..")
                .file("up/pwned", "x")
                .bytes(),
        ]
    };
    for i in 0..5 {
        let s = scratch();
        let layer = cases(&s).swap_remove(i);
        let _ = s.apply(&layer); // an error or a write inside: both fine
        s.assert_outside_untouched();
    }
}

#[test]
fn attack_overwriting_a_symlink_replaces_it() {
    let s = scratch();
    let target = s.outside.join("secret");
    let layer = Layer::new()
        .symlink("f", target.to_str().unwrap())
        .file("f", "overwritten")
        .bytes();
    s.apply(&layer).unwrap();
    s.assert_outside_untouched();
    assert_eq!(fs::read_to_string(s.root.join("f")).unwrap(), "overwritten");
    assert!(fs::symlink_metadata(s.root.join("f")).unwrap().is_file());
}

#[test]
fn attack_symlink_replaced_by_dir_is_a_real_dir() {
    let s = scratch();
    let layer = Layer::new()
        .symlink("d", s.outside.to_str().unwrap())
        .dir("d/")
        .file("d/pwned", "x")
        .bytes();
    s.apply(&layer).unwrap();
    s.assert_outside_untouched();
    assert!(fs::symlink_metadata(s.root.join("d")).unwrap().is_dir());
    assert!(s.root.join("d/pwned").is_file());
}

#[test]
fn attack_hard_links_cannot_reach_outside_files() {
    let cases = |s: &Scratch| {
        let secret = s.outside.join("secret");
        let secret = secret.to_str().unwrap().to_string();
        let abs = s.outside.to_str().unwrap().to_string();
        vec![
            Layer::new().hardlink("hl", &secret).bytes(),
            Layer::new().hardlink("hl", "../outside/secret").bytes(),
            Layer::new()
                .symlink("s", &abs)
                .hardlink("hl", "s/secret")
                .bytes(),
            Layer::new()
                .symlink("s", &secret)
                .hardlink("hl", "s")
                .bytes(),
            Layer::new()
                .symlink("up", "..")
                .hardlink("hl", "up/outside/secret")
                .bytes(),
        ]
    };
    for i in 0..5 {
        let s = scratch();
        let layer = cases(&s).swap_remove(i);
        let _ = s.apply(&layer);
        s.assert_outside_untouched();
        if let Ok(meta) = fs::symlink_metadata(s.root.join("hl")) {
            // Case 4 links the symlink itself, which is harmless.
            assert!(
                meta.file_type().is_symlink(),
                "case {i}: hard link to a non-symlink made"
            );
        }
    }
}

#[test]
fn attack_whiteouts_cannot_delete_outside_or_the_root() {
    let cases = |s: &Scratch| {
        let abs = s.outside.to_str().unwrap().to_string();
        vec![
            Layer::new().file(".wh..", "").bytes(),
            Layer::new().file(".wh...", "").bytes(),
            Layer::new().file("a/.wh...", "").bytes(),
            Layer::new()
                .symlink("s", &abs)
                .file("s/.wh.secret", "")
                .bytes(),
            Layer::new()
                .symlink("s", &abs)
                .file("s/.wh..wh..opq", "")
                .bytes(),
            Layer::new()
                .symlink("up", "..")
                .file("up/outside/.wh.secret", "")
                .bytes(),
        ]
    };
    for i in 0..6 {
        let s = scratch();
        fs::write(s.root.join("keep"), "k").unwrap();
        let layer = cases(&s).swap_remove(i);
        let _ = s.apply(&layer);
        s.assert_outside_untouched();
        assert!(
            s.root.join("keep").exists(),
            "case {i} deleted inside the root"
        );
    }
}

#[test]
fn overlay_form_whiteouts_in_a_tar_are_whiteouts_not_devices() {
    let s = scratch();
    s.apply(&base_layer()).unwrap();
    let layer = Layer::new()
        .raw("etc/a", EntryType::Char, None, b"", 0)
        .bytes();
    s.apply(&layer).unwrap();
    assert!(!s.root.join("etc/a").exists());
    assert!(s.root.join("etc/b").exists());
}

#[test]
fn device_nodes_are_refused_unless_permitted() {
    let layer = Layer::new()
        .raw("dev/evil", EntryType::Block, None, b"", 0o600)
        .bytes();
    let s = scratch();
    let err = s.apply(&layer).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    assert!(!s.root.join("dev/evil").exists());
    // Refused before anything is touched: what was there stays.
    s.apply(&Layer::new().file("dev/evil", "plain").bytes())
        .unwrap();
    assert!(s.apply(&layer).is_err());
    assert_eq!(
        fs::read_to_string(s.root.join("dev/evil")).unwrap(),
        "plain"
    );

    let mut char_layer = Layer::new();
    {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(EntryType::Char);
        header.set_mode(0o666);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_size(0);
        header.set_device_major(1).unwrap();
        header.set_device_minor(3).unwrap();
        header.set_cksum();
        char_layer
            .0
            .append_data(&mut header, "dev/null", std::io::empty())
            .unwrap();
    }
    let char_layer = char_layer.bytes();
    assert!(scratch().apply(&char_layer).is_err());
    let s = scratch();
    let options = ApplyOptions {
        allow_devices: true,
        ..ApplyOptions::default()
    };
    apply(&s.mounts(), char_layer.as_slice(), MEDIA_TYPE_TAR, &options).unwrap();
    let null = fs::symlink_metadata(s.root.join("dev/null")).unwrap();
    assert!(null.file_type().is_char_device());
    assert_eq!(null.rdev(), rustix::fs::makedev(1, 3));
}

#[test]
fn expansion_is_bounded() {
    // 8 MiB of zeros gzip to a few KiB.
    let big = vec![0u8; 8 << 20];
    let layer = Layer::new()
        .raw("bomb", EntryType::Regular, None, &big, 0o644)
        .bytes();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 64 << 10);
    let s = scratch();
    let options = ApplyOptions {
        max_bytes: 1 << 20,
        ..ApplyOptions::default()
    };
    let err = apply(&s.mounts(), gz.as_slice(), MEDIA_TYPE_TAR_GZIP, &options).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    assert!(err.message.contains("limit"), "{err}");

    let mut many = Layer::new();
    for i in 0..11 {
        many = many.file(&format!("f{i}"), "");
    }
    let options = ApplyOptions {
        max_entries: 10,
        ..ApplyOptions::default()
    };
    let err = apply(
        &s.mounts(),
        many.bytes().as_slice(),
        MEDIA_TYPE_TAR,
        &options,
    )
    .unwrap_err();
    assert!(err.message.contains("entries"), "{err}");
}

// ---- whiteouts -----------------------------------------------------------

fn base_layer() -> Vec<u8> {
    Layer::new()
        .dir("etc/")
        .file("etc/a", "a")
        .file("etc/b", "b")
        .dir("var/")
        .file("var/old", "old")
        .dir("var/sub/")
        .file("var/sub/deep", "deep")
        .bytes()
}

fn whiteout_layer() -> Vec<u8> {
    Layer::new()
        .file("etc/.wh.a", "")
        .dir("var/")
        .file("var/.wh..wh..opq", "")
        .file("var/new", "new")
        .file(".wh.gone", "")
        .bytes()
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
fn whiteouts_delete_on_a_plain_tree() {
    let s = scratch();
    s.apply(&base_layer()).unwrap();
    s.apply(&whiteout_layer()).unwrap();
    assert_eq!(listing(&s.root), ["etc", "etc/b", "var", "var/new"]);
    // Whiteouts in directories that do not exist change nothing.
    let layer = Layer::new()
        .file("nowhere/.wh.x", "")
        .file("nowhere/else/.wh..wh..opq", "")
        .file("etc/b/.wh.x", "")
        .bytes();
    s.apply(&layer).unwrap();
    assert_eq!(listing(&s.root), ["etc", "etc/b", "var", "var/new"]);
}

fn db_in(dir: &Path) -> Arc<redb::Database> {
    Arc::new(redb::Database::create(dir.join("meta.redb")).unwrap())
}

#[test]
fn whiteouts_become_overlay_whiteouts_on_an_overlay_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::overlayfs(db_in(dir.path()), &dir.path().join("root")).unwrap();
    let ns = "default";
    let mounts = snapshotter
        .prepare(ns, "l1", None, BTreeMap::new())
        .unwrap();
    apply(
        &mounts,
        base_layer().as_slice(),
        MEDIA_TYPE_TAR,
        &ApplyOptions::default(),
    )
    .unwrap();
    snapshotter
        .commit(ns, "base", "l1", BTreeMap::new())
        .unwrap();
    let mounts = snapshotter
        .prepare(ns, "l2", Some("base"), BTreeMap::new())
        .unwrap();
    apply(
        &mounts,
        whiteout_layer().as_slice(),
        MEDIA_TYPE_TAR,
        &ApplyOptions::default(),
    )
    .unwrap();

    let upper = PathBuf::from(mounts[0].option("upperdir").unwrap());
    let whiteout = fs::symlink_metadata(upper.join("etc/a")).unwrap();
    assert!(whiteout.file_type().is_char_device() && whiteout.rdev() == 0);
    assert!(read_xattrs(&upper.join("var"))
        .unwrap()
        .contains(&(OVERLAY_OPAQUE_XATTR.as_bytes().to_vec(), b"y".to_vec())));
    // The parent `etc` made to hold the whiteout keeps the lower mode.
    assert_eq!(
        fs::metadata(upper.join("etc")).unwrap().mode() & 0o7777,
        0o755
    );

    let mounted = TempMount::new(&mounts).unwrap();
    assert_eq!(listing(mounted.path()), ["etc", "etc/b", "var", "var/new"]);
    mounted.release().unwrap();
}

// ---- round trips ---------------------------------------------------------

/// Everything a layer carries about a tree, for comparing two trees.
fn describe(root: &Path) -> BTreeMap<String, String> {
    let mut first_of_inode: BTreeMap<(u64, u64), String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    let mut entries: Vec<_> = walkdir::WalkDir::new(root)
        .min_depth(1)
        .sort_by_file_name()
        .into_iter()
        .map(|e| e.unwrap())
        .collect();
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    for entry in entries {
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap().display().to_string();
        let m = fs::symlink_metadata(path).unwrap();
        let xattrs: Vec<_> = read_xattrs(path)
            .unwrap()
            .into_iter()
            .filter(|(n, _)| !n.starts_with(b"trusted.overlay."))
            .collect();
        let kind = m.file_type();
        let what = if kind.is_file() {
            let content = fs::read(path).unwrap();
            format!("file {} bytes {}", content.len(), sha256(&content))
        } else if kind.is_symlink() {
            format!("symlink {:?}", fs::read_link(path).unwrap())
        } else if kind.is_dir() {
            "dir".to_string()
        } else {
            format!("special {:o} {}", m.mode() & 0o170000, m.rdev())
        };
        let link = if !kind.is_dir() && m.nlink() > 1 {
            let first = first_of_inode
                .entry((m.dev(), m.ino()))
                .or_insert(rel.clone());
            format!(" linked-to {first}")
        } else {
            String::new()
        };
        let mode = if kind.is_symlink() {
            0
        } else {
            m.mode() & 0o7777
        };
        out.insert(
            rel,
            format!(
                "{what} mode {mode:o} owner {}:{} mtime {} xattrs {xattrs:?}{link}",
                m.uid(),
                m.gid(),
                m.mtime()
            ),
        );
    }
    out
}

/// A tree with one of everything a layer carries.
fn populate(root: &Path) {
    fs::create_dir_all(root.join("usr/bin")).unwrap();
    fs::write(root.join("usr/bin/tool"), "#!/bin/sh\n").unwrap();
    std::os::unix::fs::chown(root.join("usr/bin/tool"), Some(10), Some(20)).unwrap();
    fs::set_permissions(
        root.join("usr/bin/tool"),
        fs::Permissions::from_mode(0o4755),
    )
    .unwrap();
    fs::hard_link(root.join("usr/bin/tool"), root.join("usr/bin/alias")).unwrap();
    std::os::unix::fs::symlink("usr/bin", root.join("bin")).unwrap();
    fs::create_dir(root.join("tmp")).unwrap();
    fs::set_permissions(root.join("tmp"), fs::Permissions::from_mode(0o1777)).unwrap();
    nix::unistd::mkfifo(
        &root.join("tmp/pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    fs::write(root.join("tagged"), vec![1u8; 70_000]).unwrap();
    fs::create_dir(root.join("etc")).unwrap();
    fs::write(root.join("etc/unchanged"), "same").unwrap();
    rustix::fs::lsetxattr(
        root.join("tagged"),
        "user.origin",
        b"test",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    let long = root.join("a".repeat(120));
    fs::create_dir(&long).unwrap();
    fs::write(long.join("b".repeat(120)), "long names").unwrap();
}

fn layer_of(
    lower: &[Mount],
    upper: &[Mount],
    compression: Compression,
) -> (Vec<u8>, ComputedLayer) {
    let mut out = Vec::new();
    let computed = compute(lower, upper, &mut out, &ComputeOptions { compression }).unwrap();
    (out, computed)
}

#[test]
fn round_trip_of_a_whole_tree() {
    for compression in [Compression::None, Compression::Gzip, Compression::Zstd] {
        let source = scratch();
        populate(&source.root);
        let (bytes, computed) = layer_of(&[], &source.mounts(), compression);
        assert_eq!(computed.digest, sha256(&bytes));
        assert_eq!(computed.media_type, compression.media_type());

        let target = scratch();
        let applied = apply(
            &target.mounts(),
            bytes.as_slice(),
            &computed.media_type,
            &ApplyOptions::default(),
        )
        .unwrap();
        assert_eq!(applied.diff_id, computed.diff_id);
        assert_eq!(
            describe(&target.root),
            describe(&source.root),
            "{compression:?}"
        );
    }
}

/// Changes made on top of the populated tree: modify, add, delete a file,
/// delete a directory, replace a directory's contents, change metadata.
fn change(root: &Path) {
    fs::write(root.join("usr/bin/tool"), "#!/bin/sh\necho v2\n").unwrap();
    fs::write(root.join("usr/bin/new"), "new").unwrap();
    fs::remove_file(root.join("usr/bin/alias")).unwrap();
    fs::remove_file(root.join("bin")).unwrap();
    fs::create_dir(root.join("bin")).unwrap();
    fs::remove_dir_all(root.join("a".repeat(120))).unwrap();
    fs::remove_file(root.join("tmp/pipe")).unwrap();
    fs::set_permissions(root.join("tagged"), fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn round_trip_of_changes_between_two_trees() {
    let base = scratch();
    populate(&base.root);
    let changed = scratch();
    crate::snapshots::tree::copy_tree(&base.root, &changed.root).unwrap();
    change(&changed.root);

    let (bytes, computed) = layer_of(&base.mounts(), &changed.mounts(), Compression::Gzip);
    // Unchanged files are not in the layer.
    let names = tar_names(&bytes, Compression::Gzip);
    assert!(!names.contains(&"etc/unchanged".to_string()), "{names:?}");
    assert!(
        names.contains(&"tagged".to_string()),
        "a mode change is a change: {names:?}"
    );
    assert!(names.contains(&"tmp/.wh.pipe".to_string()), "{names:?}");
    assert!(
        names.contains(&"usr/bin/.wh.alias".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&format!(".wh.{}", "a".repeat(120))),
        "{names:?}"
    );
    assert!(
        !names.iter().any(|n| n.ends_with(&"b".repeat(120))),
        "no whiteouts inside a deleted dir"
    );

    apply(
        &base.mounts(),
        bytes.as_slice(),
        &computed.media_type,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(describe(&base.root), describe(&changed.root));
}

fn tar_names(bytes: &[u8], compression: Compression) -> Vec<String> {
    let reader = compression.decompress(bytes).unwrap();
    let mut archive = tar::Archive::new(reader);
    archive
        .entries()
        .unwrap()
        .map(|e| {
            e.unwrap()
                .path()
                .unwrap()
                .display()
                .to_string()
                .trim_end_matches('/')
                .to_string()
        })
        .collect()
}

#[test]
fn round_trip_of_an_overlay_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let snapshotter = Snapshotter::overlayfs(db_in(dir.path()), &dir.path().join("root")).unwrap();
    let ns = "default";
    let no_labels = BTreeMap::new;

    // The base layer, made from a populated tree.
    let source = scratch();
    populate(&source.root);
    let (base_layer, _) = layer_of(&[], &source.mounts(), Compression::None);
    let mounts = snapshotter.prepare(ns, "l1", None, no_labels()).unwrap();
    apply(
        &mounts,
        base_layer.as_slice(),
        MEDIA_TYPE_TAR,
        &ApplyOptions::default(),
    )
    .unwrap();
    snapshotter.commit(ns, "base", "l1", no_labels()).unwrap();

    // A container changes it through the overlay.
    let active = snapshotter
        .prepare(ns, "ctr", Some("base"), no_labels())
        .unwrap();
    let mounted = TempMount::new(&active).unwrap();
    change(mounted.path());
    // An opaque directory: `usr` removed and recreated.
    fs::remove_dir_all(mounted.path().join("usr")).unwrap();
    fs::create_dir(mounted.path().join("usr")).unwrap();
    fs::write(mounted.path().join("usr/only"), "only").unwrap();
    let expected = describe(mounted.path());
    mounted.release().unwrap();

    // The overlay upper dir is walked directly.
    let parent = snapshotter
        .view(ns, "parent", Some("base"), no_labels())
        .unwrap();
    let (bytes, computed) = layer_of(&parent, &active, Compression::Zstd);
    let names = tar_names(&bytes, Compression::Zstd);
    assert!(names.contains(&"usr/.wh..wh..opq".to_string()), "{names:?}");
    assert!(names.contains(&"tmp/.wh.pipe".to_string()), "{names:?}");

    // Applied onto a plain copy of the base, it gives the container's tree.
    let target = scratch();
    apply(
        &target.mounts(),
        base_layer.as_slice(),
        MEDIA_TYPE_TAR,
        &ApplyOptions::default(),
    )
    .unwrap();
    apply(
        &target.mounts(),
        bytes.as_slice(),
        &computed.media_type,
        &ApplyOptions::default(),
    )
    .unwrap();
    assert_eq!(describe(&target.root), expected);

    // And onto an overlay snapshot of the base, too.
    let again = snapshotter
        .prepare(ns, "again", Some("base"), no_labels())
        .unwrap();
    apply(
        &again,
        bytes.as_slice(),
        &computed.media_type,
        &ApplyOptions::default(),
    )
    .unwrap();
    let mounted = TempMount::new(&again).unwrap();
    assert_eq!(describe(mounted.path()), expected);
    mounted.release().unwrap();
}

// ---- interoperability ----------------------------------------------------

/// Layers made by GNU tar (POSIX and GNU formats, xattrs, long names,
/// sparse files) extract to the tree they were made from.
#[test]
fn layers_made_by_gnu_tar_extract_faithfully() {
    for format in ["--format=posix", "--format=gnu"] {
        let source = scratch();
        populate(&source.root);
        let sparse = fs::File::create(source.root.join("sparse")).unwrap();
        sparse.set_len(16 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&sparse, b"end", (16 << 20) - 3).unwrap();
        drop(sparse);
        let output = std::process::Command::new("tar")
            .args([
                format,
                "--sparse",
                "--xattrs",
                "--xattrs-include=*",
                "--numeric-owner",
                "-C",
            ])
            .arg(&source.root)
            .args(["-cf", "-", "."])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let target = scratch();
        let applied = target.apply(&output.stdout).unwrap();
        assert_eq!(applied.diff_id, sha256(&output.stdout));
        assert_eq!(describe(&target.root), describe(&source.root), "{format}");
        if format == "--format=posix" {
            let sparse = fs::metadata(target.root.join("sparse")).unwrap();
            assert!(sparse.blocks() * 512 < 1 << 20, "holes stay holes");
        }
    }
}

/// Timing against GNU tar: `cargo test -p berthd --release apply_speed -- --ignored --nocapture`.
#[test]
#[ignore]
fn apply_speed_against_gnu_tar() {
    let source = scratch();
    for d in 0..500 {
        let dir = source.root.join(format!("d{d}"));
        fs::create_dir(&dir).unwrap();
        for f in 0..100 {
            fs::write(dir.join(format!("f{f}")), format!("{d}/{f}")).unwrap();
        }
    }
    let (layer, _) = layer_of(&[], &source.mounts(), Compression::None);
    use nix::sys::resource::{getrusage, UsageWho};
    let cpu = |who| {
        let usage = getrusage(who).unwrap();
        let (user, system) = (usage.user_time(), usage.system_time());
        std::time::Duration::from_micros(
            (user.tv_sec() * 1_000_000
                + user.tv_usec()
                + system.tv_sec() * 1_000_000
                + system.tv_usec()) as u64,
        )
    };
    for _ in 0..3 {
        let ours = scratch();
        let (start, cpu_start) = (std::time::Instant::now(), cpu(UsageWho::RUSAGE_SELF));
        ours.apply(&layer).unwrap();
        let (ours_took, ours_cpu) = (start.elapsed(), cpu(UsageWho::RUSAGE_SELF) - cpu_start);
        let theirs = scratch();
        let (start, cpu_start) = (std::time::Instant::now(), cpu(UsageWho::RUSAGE_CHILDREN));
        let mut tar = std::process::Command::new("tar")
            .args(["--same-owner", "-xpf", "-", "-C"])
            .arg(&theirs.root)
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        tar.stdin.take().unwrap().write_all(&layer).unwrap();
        assert!(tar.wait().unwrap().success());
        let (tar_took, tar_cpu) = (start.elapsed(), cpu(UsageWho::RUSAGE_CHILDREN) - cpu_start);
        println!(
            "50 000 files: berthd apply {ours_took:?} (cpu {ours_cpu:?}), GNU tar {tar_took:?} (cpu {tar_cpu:?})"
        );
    }
}
