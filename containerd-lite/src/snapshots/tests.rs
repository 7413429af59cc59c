//! The contract every snapshotter keeps, run against each backend, plus a
//! few checks of what is particular to one.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::ErrorKind;

struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
    db: Arc<redb::Database>,
    snapshotter: Snapshotter,
}

type Make = fn(Arc<redb::Database>, &Path) -> Result<Snapshotter>;

fn fixture(make: Make) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("meta.redb")).unwrap());
    let root = dir.path().join("root");
    let snapshotter = make(db.clone(), &root).unwrap();
    Fixture {
        _dir: dir,
        root,
        db,
        snapshotter,
    }
}

const NS: &str = "default";

fn no_labels() -> BTreeMap<String, String> {
    BTreeMap::new()
}

/// Mounts `mounts`, runs `f` on the tree, unmounts.
fn with_mounted<T>(mounts: &[Mount], f: impl FnOnce(&Path) -> T) -> T {
    let mounted = TempMount::new(mounts).unwrap();
    let out = f(mounted.path());
    mounted.release().unwrap();
    out
}

/// Prepares `key` on `parent`, writes `files` into it, commits as `name`.
fn layer(s: &Snapshotter, name: &str, parent: Option<&str>, files: &[(&str, &str)]) {
    let key = format!("{name}-active");
    let mounts = s.prepare(NS, &key, parent, no_labels()).unwrap();
    with_mounted(&mounts, |root| {
        for (path, content) in files {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
    });
    s.commit(NS, name, &key, no_labels()).unwrap();
}

fn contract_layers_stack(make: Make) {
    let f = fixture(make);
    let s = &f.snapshotter;
    layer(s, "base", None, &[("etc/os", "base"), ("bin/sh", "shell")]);
    layer(
        s,
        "top",
        Some("base"),
        &[("etc/os", "top"), ("app/run", "app")],
    );

    let mounts = s.prepare(NS, "ctr", Some("top"), no_labels()).unwrap();
    assert_eq!(s.mounts(NS, "ctr").unwrap(), mounts);
    with_mounted(&mounts, |root| {
        assert_eq!(fs::read_to_string(root.join("etc/os")).unwrap(), "top");
        assert_eq!(fs::read_to_string(root.join("bin/sh")).unwrap(), "shell");
        assert_eq!(fs::read_to_string(root.join("app/run")).unwrap(), "app");
        fs::write(root.join("new"), "x").unwrap();
        fs::remove_file(root.join("bin/sh")).unwrap();
    });
    // Writes to the container's tree stay out of the layers below.
    let view = s.view(NS, "look", Some("top"), no_labels()).unwrap();
    with_mounted(&view, |root| {
        assert!(root.join("bin/sh").exists());
        assert!(!root.join("new").exists());
        let err = fs::write(root.join("other"), "x").unwrap_err();
        assert_eq!(
            err.raw_os_error(),
            Some(libc_erofs()),
            "views are read-only"
        );
    });
    let info = s.stat(NS, "ctr").unwrap();
    assert_eq!(
        (info.kind, info.parent.as_deref()),
        (Kind::Active, Some("top"))
    );
    assert_eq!(s.stat(NS, "look").unwrap().kind, Kind::View);
    assert_eq!(s.stat(NS, "top").unwrap().kind, Kind::Committed);
    assert_eq!(
        s.stat(NS, "top-active").unwrap_err().kind,
        ErrorKind::NotFound
    );
}

fn libc_erofs() -> i32 {
    nix::errno::Errno::EROFS as i32
}

fn contract_view_of_nothing_and_of_one_layer(make: Make) {
    let f = fixture(make);
    let s = &f.snapshotter;
    let empty = s.view(NS, "empty", None, no_labels()).unwrap();
    with_mounted(&empty, |root| {
        assert_eq!(fs::read_dir(root).unwrap().count(), 0)
    });
    layer(s, "one", None, &[("f", "1")]);
    let one = s.view(NS, "one-view", Some("one"), no_labels()).unwrap();
    with_mounted(&one, |root| {
        assert_eq!(fs::read_to_string(root.join("f")).unwrap(), "1")
    });
}

fn contract_refusals(make: Make) {
    let f = fixture(make);
    let s = &f.snapshotter;
    layer(s, "base", None, &[]);
    s.prepare(NS, "a", Some("base"), no_labels()).unwrap();
    s.view(NS, "v", Some("base"), no_labels()).unwrap();

    let kind = |r: Result<Vec<Mount>>| r.unwrap_err().kind;
    assert_eq!(
        kind(s.prepare(NS, "a", None, no_labels())),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(s.prepare(NS, "base", None, no_labels())),
        ErrorKind::AlreadyExists
    );
    assert_eq!(
        kind(s.prepare(NS, "b", Some("nope"), no_labels())),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(s.prepare(NS, "b", Some("a"), no_labels())),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(s.view(NS, "b", Some("v"), no_labels())),
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        kind(s.prepare(NS, "", None, no_labels())),
        ErrorKind::InvalidArgument
    );

    let commit = |name: &str, key: &str| s.commit(NS, name, key, no_labels()).unwrap_err().kind;
    assert_eq!(
        commit("c", "v"),
        ErrorKind::FailedPrecondition,
        "a view is never committed"
    );
    assert_eq!(commit("c", "base"), ErrorKind::FailedPrecondition);
    assert_eq!(commit("base", "a"), ErrorKind::AlreadyExists);
    assert_eq!(commit("c", "missing"), ErrorKind::NotFound);
    assert_eq!(
        s.mounts(NS, "base").unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        s.mounts(NS, "missing").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(
        s.stat(NS, "a").is_ok(),
        "a refused commit leaves the snapshot"
    );

    let err = s.remove(NS, "base").unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{err}");
    assert_eq!(
        s.remove(NS, "missing").unwrap_err().kind,
        ErrorKind::NotFound
    );
    s.remove(NS, "a").unwrap();
    assert_eq!(
        s.remove(NS, "base").unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
    s.remove(NS, "v").unwrap();
    s.remove(NS, "base").unwrap();
    assert!(s.walk::<&str>(NS, &[]).unwrap().is_empty());
    assert_eq!(
        fs::read_dir(f.root.join("snapshots")).unwrap().count(),
        0,
        "no dirs left"
    );
}

fn contract_commit_keeps_content_and_moves_children(make: Make) {
    let f = fixture(make);
    let s = &f.snapshotter;
    layer(s, "base", None, &[("a", "1")]);
    let labels = BTreeMap::from([("k".to_string(), "v".to_string())]);
    s.prepare(NS, "work", Some("base"), no_labels()).unwrap();
    s.commit(NS, "done", "work", labels.clone()).unwrap();
    let info = s.stat(NS, "done").unwrap();
    assert_eq!(info.labels, labels);
    assert_eq!(info.parent.as_deref(), Some("base"));
    // The parent's child is now the committed name.
    assert_eq!(
        s.remove(NS, "base").unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
    s.remove(NS, "done").unwrap();
    s.remove(NS, "base").unwrap();
}

fn contract_namespaces_are_separate(make: Make) {
    let f = fixture(make);
    let s = &f.snapshotter;
    s.prepare("one", "k", None, no_labels()).unwrap();
    s.prepare("two", "k", None, no_labels()).unwrap();
    assert_eq!(s.walk::<&str>("one", &[]).unwrap().len(), 1);
    s.remove("one", "k").unwrap();
    assert_eq!(s.stat("one", "k").unwrap_err().kind, ErrorKind::NotFound);
    assert!(s.stat("two", "k").is_ok());
    assert!(s.walk::<&str>("three", &[]).unwrap().is_empty());
    let in_use = |ns: &str| {
        let txn = f.db.begin_write().unwrap();
        let used = s.namespace_in_use(&txn, ns).unwrap();
        txn.abort().unwrap();
        used
    };
    assert!(!in_use("one") && in_use("two") && !in_use("three") && !in_use("tw"));
    // A parent in another namespace does not exist here.
    layer(s, "base", None, &[]);
    let err = s
        .prepare("two", "child", Some("base"), no_labels())
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
}

fn contract_update_labels(make: Make) {
    let f = fixture(make);
    let s = &f.snapshotter;
    let labels = BTreeMap::from([("a".into(), "1".into()), ("b".into(), "2".into())]);
    s.prepare(NS, "k", None, labels).unwrap();
    let before = s.stat(NS, "k").unwrap();

    let mut info = before.clone();
    info.labels = BTreeMap::from([("b".into(), "3".into()), ("c".into(), "4".into())]);
    let after = s.update(NS, &info, &["labels.b", "labels.a"]).unwrap();
    assert_eq!(after.labels, BTreeMap::from([("b".into(), "3".into())]));
    assert!(after.updated >= before.updated);
    assert_eq!(after.created, before.created);

    let all = s.update::<&str>(NS, &info, &[]).unwrap();
    assert_eq!(all.labels, info.labels);
    let err = s.update(NS, &info, &["kind"]).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    let mut huge = info.clone();
    huge.labels.insert("big".into(), "x".repeat(5000));
    assert_eq!(
        s.update(NS, &huge, &["labels.big"]).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        s.stat(NS, "k").unwrap().labels,
        info.labels,
        "a refused update changes nothing"
    );
    let empty_key = BTreeMap::from([(String::new(), "v".to_string())]);
    let err = s.prepare(NS, "k2", None, empty_key).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    info.name = "missing".into();
    assert_eq!(
        s.update(NS, &info, &["labels"]).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

fn contract_usage(make: Make) {
    let f = fixture(make);
    let s = &f.snapshotter;
    let mounts = s.prepare(NS, "k", None, no_labels()).unwrap();
    let empty = s.usage(NS, "k").unwrap();
    with_mounted(&mounts, |root| {
        fs::write(root.join("big"), vec![7u8; 1 << 20]).unwrap();
        fs::hard_link(root.join("big"), root.join("same")).unwrap();
        fs::create_dir(root.join("d")).unwrap();
    });
    let used = s.usage(NS, "k").unwrap();
    assert!(used.size >= empty.size + (1 << 20), "{used:?}");
    assert_eq!(
        used.inodes,
        empty.inodes + 2,
        "hard links count once: {used:?}"
    );
    s.commit(NS, "c", "k", no_labels()).unwrap();
    assert_eq!(s.usage(NS, "c").unwrap(), used);
}

fn contract_walk_filters(make: Make) {
    let f = fixture(make);
    let s = &f.snapshotter;
    layer(s, "base", None, &[]);
    let labels = BTreeMap::from([("containerd.io/snapshot.ref".into(), "sha256:1".into())]);
    s.prepare(NS, "ctr", Some("base"), labels).unwrap();
    s.view(NS, "look", Some("base"), no_labels()).unwrap();
    let names = |filters: &[&str]| -> Vec<String> {
        s.walk(NS, filters)
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    assert_eq!(names(&[]), ["base", "ctr", "look"]);
    assert_eq!(names(&["kind==committed"]), ["base"]);
    assert_eq!(names(&["parent==base"]), ["ctr", "look"]);
    assert_eq!(names(&["parent==base,kind==view"]), ["look"]);
    assert_eq!(names(&["kind==view", "kind==active"]), ["ctr", "look"]);
    assert_eq!(names(&[r#"labels."containerd.io/snapshot.ref""#]), ["ctr"]);
    assert_eq!(names(&["name~=^b"]), ["base"]);
    assert_eq!(
        s.walk(NS, &["kind=="]).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
}

fn contract_cleanup_and_reopen(make: Make) {
    let f = fixture(make);
    let s = &f.snapshotter;
    layer(s, "base", None, &[("a", "1")]);
    let snapshots = f.root.join("snapshots");
    for orphan in ["9999", "new-77", "rm-3"] {
        fs::create_dir_all(snapshots.join(orphan).join("fs/deep")).unwrap();
    }
    fs::create_dir(snapshots.join("not-ours")).unwrap();
    s.cleanup().unwrap();
    let mut left: Vec<String> = fs::read_dir(&snapshots)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    assert_eq!(left, ["1", "not-ours"]);

    // Metadata survives a restart, and ids are never reused.
    let again = make(f.db.clone(), &f.root).unwrap();
    assert_eq!(again.stat(NS, "base").unwrap().kind, Kind::Committed);
    let mounts = again.view(NS, "v", Some("base"), no_labels()).unwrap();
    with_mounted(&mounts, |root| {
        assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "1")
    });
    assert!(snapshots.join("2").exists());
}

#[test]
fn racing_prepares_of_one_key_make_one_snapshot() {
    let f = fixture(Snapshotter::overlayfs);
    let s = &f.snapshotter;
    layer(s, "base", None, &[]);
    let outcomes: Vec<Result<Vec<Mount>>> = std::thread::scope(|scope| {
        let racers: Vec<_> = (0..8)
            .map(|_| scope.spawn(|| s.prepare(NS, "contested", Some("base"), no_labels())))
            .collect();
        racers.into_iter().map(|r| r.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|r| r.is_ok()).count(), 1);
    for err in outcomes.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(err.kind, ErrorKind::AlreadyExists, "{err}");
    }
    // Losers take their directories with them: the winner's and the
    // base's remain, with nothing for cleanup to find.
    let dirs = || fs::read_dir(f.root.join("snapshots")).unwrap().count();
    assert_eq!(dirs(), 2);
    s.cleanup().unwrap();
    assert_eq!(dirs(), 2);
}

#[test]
fn snapshotters_are_shared_across_threads() {
    fn shared<T: Send + Sync>() {}
    shared::<Snapshotter>();
}

macro_rules! contract_suite {
    ($backend:ident, $make:expr) => {
        mod $backend {
            use super::*;
            #[test]
            fn layers_stack() {
                contract_layers_stack($make)
            }
            #[test]
            fn view_of_nothing_and_of_one_layer() {
                contract_view_of_nothing_and_of_one_layer($make)
            }
            #[test]
            fn refusals() {
                contract_refusals($make)
            }
            #[test]
            fn commit_keeps_content_and_moves_children() {
                contract_commit_keeps_content_and_moves_children($make)
            }
            #[test]
            fn namespaces_are_separate() {
                contract_namespaces_are_separate($make)
            }
            #[test]
            fn update_labels() {
                contract_update_labels($make)
            }
            #[test]
            fn usage() {
                contract_usage($make)
            }
            #[test]
            fn walk_filters() {
                contract_walk_filters($make)
            }
            #[test]
            fn cleanup_and_reopen() {
                contract_cleanup_and_reopen($make)
            }
        }
    };
}

contract_suite!(overlayfs, Snapshotter::overlayfs);
contract_suite!(native, Snapshotter::native);

#[test]
fn overlay_rebases_detached_snapshots_native_cannot() {
    let f = fixture(Snapshotter::overlayfs);
    let s = &f.snapshotter;
    layer(s, "base", None, &[("a", "1")]);
    let upper = s.prepare_detached(NS, "top-work", no_labels()).unwrap();
    fs::write(upper.join("b"), "2").unwrap();
    s.prepare(NS, "busy", Some("base"), no_labels()).unwrap();
    let err = s
        .commit_onto(NS, "top", "top-work", Some("busy"), no_labels())
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument, "{err}");
    let err = s
        .commit_onto(NS, "top", "busy", Some("base"), no_labels())
        .unwrap_err();
    assert_eq!(
        err.kind,
        ErrorKind::FailedPrecondition,
        "a snapshot with a parent is not rebased"
    );
    s.commit_onto(NS, "top", "top-work", Some("base"), no_labels())
        .unwrap();
    assert_eq!(s.stat(NS, "top").unwrap().parent.as_deref(), Some("base"));
    assert_eq!(
        s.remove(NS, "base").unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
    let view = s.view(NS, "v", Some("top"), no_labels()).unwrap();
    with_mounted(&view, |root| {
        assert_eq!(fs::read_to_string(root.join("a")).unwrap(), "1");
        assert_eq!(fs::read_to_string(root.join("b")).unwrap(), "2");
    });

    let native = fixture(Snapshotter::native);
    assert!(!native.snapshotter.can_rebase());
    let err = native
        .snapshotter
        .prepare_detached(NS, "k", no_labels())
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unimplemented);
}

#[test]
fn overlay_mounts_stack_lower_dirs_newest_first() {
    let f = fixture(Snapshotter::overlayfs);
    let s = &f.snapshotter;
    layer(s, "l1", None, &[]);
    layer(s, "l2", Some("l1"), &[]);
    layer(s, "l3", Some("l2"), &[]);
    let dir = |id: u32| f.root.join("snapshots").join(id.to_string());
    let mounts = s.prepare(NS, "ctr", Some("l3"), no_labels()).unwrap();
    assert_eq!(mounts.len(), 1);
    let m = &mounts[0];
    assert_eq!(m.r#type, "overlay");
    let lower = [3, 2, 1]
        .map(|i| dir(i).join("fs").display().to_string())
        .join(":");
    assert_eq!(m.option("lowerdir"), Some(lower.as_str()));
    assert_eq!(
        m.option("upperdir"),
        Some(dir(4).join("fs").to_str().unwrap())
    );
    assert_eq!(
        m.option("workdir"),
        Some(dir(4).join("work").to_str().unwrap())
    );

    let view = s.view(NS, "v", Some("l3"), no_labels()).unwrap();
    assert_eq!(view[0].option("lowerdir"), Some(lower.as_str()));
    assert!(view[0].option("upperdir").is_none() && view[0].option("workdir").is_none());
    let first = s.prepare(NS, "first", None, no_labels()).unwrap();
    assert!(first[0].is_bind() && !first[0].is_readonly());
}

#[test]
fn native_copy_keeps_owners_modes_links_xattrs_and_special_files() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("src"), dir.path().join("dst"));
    fs::create_dir_all(src.join("d")).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("d/f"), "data").unwrap();
    std::os::unix::fs::chown(src.join("d/f"), Some(1234), Some(5678)).unwrap();
    fs::set_permissions(src.join("d/f"), fs::Permissions::from_mode(0o4750)).unwrap();
    fs::hard_link(src.join("d/f"), src.join("link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("sym")).unwrap();
    nix::unistd::mkfifo(
        &src.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    rustix::fs::lsetxattr(
        src.join("d/f"),
        "user.test",
        b"v",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();

    tree::copy_tree(&src, &dst).unwrap();

    let meta = fs::metadata(dst.join("d/f")).unwrap();
    assert_eq!(
        (meta.uid(), meta.gid(), meta.mode() & 0o7777),
        (1234, 5678, 0o4750)
    );
    assert_eq!(meta.ino(), fs::metadata(dst.join("link")).unwrap().ino());
    assert_eq!(
        fs::read_link(dst.join("sym")).unwrap(),
        Path::new("/etc/passwd")
    );
    assert!(fs::symlink_metadata(dst.join("fifo"))
        .unwrap()
        .file_type()
        .is_fifo_like());
    assert_eq!(
        tree::read_xattrs(&dst.join("d/f")).unwrap(),
        [(b"user.test".to_vec(), b"v".to_vec())]
    );
    let (sm, dm) = (
        fs::metadata(src.join("d")).unwrap(),
        fs::metadata(dst.join("d")).unwrap(),
    );
    assert_eq!((sm.mtime(), sm.mtime_nsec()), (dm.mtime(), dm.mtime_nsec()));
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}

impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

#[test]
fn snapshotters_sharing_one_database_keep_apart() {
    let dir = tempfile::tempdir().unwrap();
    let db = Arc::new(redb::Database::create(dir.path().join("meta.redb")).unwrap());
    let overlay = Snapshotter::overlayfs(db.clone(), &dir.path().join("overlayfs")).unwrap();
    let native = Snapshotter::native(db.clone(), &dir.path().join("native")).unwrap();
    // The same key in both: two snapshots, each visible only to its own.
    overlay.prepare(NS, "k", None, no_labels()).unwrap();
    native.prepare(NS, "k", None, no_labels()).unwrap();
    assert_eq!(overlay.walk::<&str>(NS, &[]).unwrap().len(), 1);
    assert_eq!(native.walk::<&str>(NS, &[]).unwrap().len(), 1);
    overlay.remove(NS, "k").unwrap();
    assert_eq!(overlay.stat(NS, "k").unwrap_err().kind, ErrorKind::NotFound);
    assert!(native.stat(NS, "k").is_ok());
    let txn = db.begin_write().unwrap();
    assert!(!overlay.namespace_in_use(&txn, NS).unwrap());
    assert!(native.namespace_in_use(&txn, NS).unwrap());
    txn.abort().unwrap();
    native.remove(NS, "k").unwrap();
}
