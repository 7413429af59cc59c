//! Behaviour of the local content store, through its public traits.

use std::fs;

use super::*;
use crate::ErrorKind;

fn store() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::open(dir.path().join("content")).unwrap();
    (dir, store)
}

fn ingest(store: &LocalStore, reference: &str, data: &[u8]) -> Result<Digest> {
    let mut writer = store.writer(WriterOptions::new(reference))?;
    writer.write(data)?;
    writer.commit(data.len() as u64, Some(&Digest::sha256_of(data)))
}

fn read_all(store: &LocalStore, digest: &Digest) -> Vec<u8> {
    let reader = store.reader(digest).unwrap();
    let mut buf = vec![0; reader.size() as usize];
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read_at(&mut buf[filled..], filled as u64).unwrap();
        assert_ne!(n, 0, "short blob");
        filled += n;
    }
    buf
}

#[test]
fn commit_publishes_a_verified_read_only_blob() {
    let (_dir, store) = store();
    let digest = ingest(&store, "layer-1", b"hello, berth").unwrap();
    assert_eq!(digest, Digest::sha256_of(b"hello, berth"));
    assert_eq!(read_all(&store, &digest), b"hello, berth");
    let info = store.info(&digest).unwrap();
    assert_eq!(info.size, 12);
    assert!(info.labels.is_empty());

    let reader = store.reader(&digest).unwrap();
    let mut middle = [0; 5];
    assert_eq!(reader.read_at(&mut middle, 7).unwrap(), 5);
    assert_eq!(&middle, b"berth");
    assert_eq!(reader.read_at(&mut middle, 12).unwrap(), 0);

    let mode = fs::metadata(store.blob_path(&digest))
        .unwrap()
        .permissions();
    assert!(mode.readonly());
    assert_eq!(
        store.status("layer-1").unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn a_digest_mismatch_is_refused_and_discards_the_ingest() {
    let (_dir, store) = store();
    let mut writer = store.writer(WriterOptions::new("bad")).unwrap();
    writer.write(b"tampered").unwrap();
    let wanted = Digest::sha256_of(b"original");
    let err = writer.commit(8, Some(&wanted)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains(wanted.as_str()), "{}", err.message);
    assert!(!store.contains(&wanted));
    assert!(!store.contains(&Digest::sha256_of(b"tampered")));
    assert_eq!(store.status("bad").unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn a_digest_announced_at_open_is_checked_at_commit() {
    let (_dir, store) = store();
    let mut options = WriterOptions::new("announced");
    options.expected = Some(Digest::sha256_of(b"right"));
    let mut writer = store.writer(options).unwrap();
    writer.write(b"wrong").unwrap();
    assert_eq!(
        writer.commit(0, None).unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
}

#[test]
fn a_size_mismatch_is_refused_and_the_ingest_kept_for_resume() {
    let (_dir, store) = store();
    let mut options = WriterOptions::new("short");
    options.total = 10;
    let mut writer = store.writer(options).unwrap();
    writer.write(b"12345").unwrap();
    let err = writer.commit(0, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert_eq!(store.status("short").unwrap().offset, 5);
    let mut walked = 0;
    store
        .walk(&mut |_| {
            walked += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(walked, 0, "a partial ingest is never a blob");
}

#[test]
fn an_existing_blob_is_already_exists_at_open_and_at_commit() {
    let (_dir, store) = store();
    let digest = ingest(&store, "first", b"same bytes").unwrap();

    let mut options = WriterOptions::new("second");
    options.expected = Some(digest.clone());
    assert_eq!(
        store.writer(options).unwrap_err().kind,
        ErrorKind::AlreadyExists
    );

    let err = ingest(&store, "third", b"same bytes").unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists);
    assert_eq!(store.status("third").unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(read_all(&store, &digest), b"same bytes");
}

#[test]
fn an_ingest_resumes_at_its_recorded_offset() {
    let (_dir, store) = store();
    let mut options = WriterOptions::new("resumable");
    options.total = 11;
    let mut writer = store.writer(options).unwrap();
    writer.write(b"hello ").unwrap();
    drop(writer);

    // A store reopened on the same root (a daemon restart) sees the ingest.
    let store = LocalStore::open(store.root()).unwrap();
    let status = store.status("resumable").unwrap();
    assert_eq!((status.offset, status.total), (6, 11));

    let mut writer = store.writer(WriterOptions::new("resumable")).unwrap();
    assert_eq!(writer.offset(), 6);
    assert_eq!(writer.status().total, 11, "the announced total is kept");
    writer.write_at(6, b"world").unwrap();
    let digest = writer.commit(11, None).unwrap();
    assert_eq!(digest, Digest::sha256_of(b"hello world"));
    assert_eq!(read_all(&store, &digest), b"hello world");
}

#[test]
fn writes_must_come_at_the_current_offset_or_restart_at_zero() {
    let (_dir, store) = store();
    let mut writer = store.writer(WriterOptions::new("offsets")).unwrap();
    writer.write_at(0, b"abc").unwrap();
    let err = writer.write_at(5, b"x").unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    let err = writer.write_at(1, b"x").unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    writer.write_at(0, b"xyz").unwrap();
    assert_eq!(writer.offset(), 3);
    writer.truncate(1).unwrap();
    writer.write(b"YZ").unwrap();
    assert_eq!(writer.digest(), Digest::sha256_of(b"xYZ"));
    assert_eq!(
        writer.truncate(10).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
    assert_eq!(writer.commit(3, None).unwrap(), Digest::sha256_of(b"xYZ"));
}

#[test]
fn one_writer_per_ref_at_a_time() {
    let (_dir, store) = store();
    let writer = store.writer(WriterOptions::new("busy")).unwrap();
    let err = store.writer(WriterOptions::new("busy")).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    assert!(err.message.contains("busy"), "{}", err.message);
    assert_eq!(
        store.abort("busy").unwrap_err().kind,
        ErrorKind::Unavailable
    );
    // A clone shares the locks.
    let clone = store.clone();
    assert_eq!(
        clone.writer(WriterOptions::new("busy")).unwrap_err().kind,
        ErrorKind::Unavailable
    );
    drop(writer);
    store.writer(WriterOptions::new("busy")).unwrap();
}

#[test]
fn statuses_are_listed_by_prefix_and_aborted() {
    let (_dir, store) = store();
    for reference in ["ns1/a", "ns1/b", "ns2/a"] {
        let mut writer = store.writer(WriterOptions::new(reference)).unwrap();
        writer.write(reference.as_bytes()).unwrap();
    }
    // A crash while an ingest was being set up leaves a staging directory.
    fs::create_dir(store.root().join("ingest").join("0123.new")).unwrap();

    let refs = |prefix: &str| -> Vec<String> {
        store
            .list_statuses(prefix)
            .unwrap()
            .into_iter()
            .map(|s| s.reference)
            .collect()
    };
    assert_eq!(refs(""), ["ns1/a", "ns1/b", "ns2/a"]);
    assert_eq!(refs("ns1/"), ["ns1/a", "ns1/b"]);

    store.abort("ns1/a").unwrap();
    assert_eq!(refs("ns1/"), ["ns1/b"]);
    assert_eq!(store.abort("ns1/a").unwrap_err().kind, ErrorKind::NotFound);
}

#[test]
fn refs_cannot_name_paths() {
    let (dir, store) = store();
    let mut writer = store.writer(WriterOptions::new("../../escape")).unwrap();
    writer.write(b"x").unwrap();
    drop(writer);
    assert!(!dir.path().join("escape").exists());
    assert_eq!(
        store.list_statuses("").unwrap()[0].reference,
        "../../escape"
    );
    assert_eq!(
        store.writer(WriterOptions::new("")).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
}

#[test]
fn walk_lists_blobs_only_and_delete_removes_them() {
    let (_dir, store) = store();
    let a = ingest(&store, "a", b"aaa").unwrap();
    let b = ingest(&store, "b", b"bbbb").unwrap();
    fs::write(store.root().join("blobs/sha256/.stray.tmp"), b"junk").unwrap();
    let mut walked = Vec::new();
    store
        .walk(&mut |info| {
            walked.push((info.digest, info.size));
            Ok(())
        })
        .unwrap();
    walked.sort();
    let mut expected = vec![(a.clone(), 3), (b.clone(), 4)];
    expected.sort();
    assert_eq!(walked, expected);

    store.delete(&a).unwrap();
    assert_eq!(store.info(&a).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(store.reader(&a).unwrap_err().kind, ErrorKind::NotFound);
    assert_eq!(store.delete(&a).unwrap_err().kind, ErrorKind::NotFound);
    assert!(store.contains(&b));
}

#[test]
fn reopening_clears_what_a_crash_left_in_ingest() {
    let (_dir, store) = store();
    let mut writer = store.writer(WriterOptions::new("committed")).unwrap();
    writer.write(b"data").unwrap();
    drop(writer);
    let ingest_root = store.root().join("ingest");
    // A crash after the data was renamed into blobs/, before the directory went.
    let dir = fs::read_dir(&ingest_root)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::remove_file(dir.join("data")).unwrap();
    // A crash while an ingest was being set up.
    fs::create_dir(ingest_root.join("abcd.new")).unwrap();

    // A writer for the broken ref starts afresh even before recovery.
    let mut writer = store.writer(WriterOptions::new("committed")).unwrap();
    assert_eq!(writer.offset(), 0);
    writer.write(b"again").unwrap();
    drop(writer);
    fs::remove_file(dir.join("data")).unwrap();

    let store = LocalStore::open(store.root()).unwrap();
    assert_eq!(fs::read_dir(&ingest_root).unwrap().count(), 0);
    assert!(store.list_statuses("").unwrap().is_empty());
}

/// A tmpfs of a few pages, unmounted (and its mount point removed) on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// `None` when this process may not mount (not root): the test is then
    /// meaningless, and says so.
    fn mount(bytes: usize) -> Option<SmallDisk> {
        let dir = tempfile::tempdir().unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "berth-test"])
            .arg(dir.path())
            .status()
            .ok()?;
        status.success().then_some(SmallDisk { dir })
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(self.dir.path())
            .status();
    }
}

#[test]
fn a_full_disk_fails_the_write_and_discards_the_ingest() {
    let Some(disk) = SmallDisk::mount(256 * 1024) else {
        eprintln!("skipped: cannot mount a tmpfs (needs root)");
        return;
    };
    let store = LocalStore::open(disk.dir.path().join("content")).unwrap();
    let mut writer = store.writer(WriterOptions::new("huge")).unwrap();
    let chunk = vec![7u8; 64 * 1024];
    let err = (0..16)
        .map(|_| writer.write(&chunk))
        .find_map(Result::err)
        .expect("a 1 MiB ingest cannot fit in 256 KiB");
    assert_eq!(err.kind, ErrorKind::Internal);
    assert!(err.message.contains("ingest huge"), "{}", err.message);
    assert_eq!(
        writer.write(b"more").unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
    assert_eq!(
        writer.commit(0, None).unwrap_err().kind,
        ErrorKind::FailedPrecondition
    );
    assert!(store.list_statuses("").unwrap().is_empty());
    let mut blobs = 0;
    store
        .walk(&mut |_| {
            blobs += 1;
            Ok(())
        })
        .unwrap();
    assert_eq!(blobs, 0);
    // The space is back: a small blob fits again.
    ingest(&store, "small", b"fits").unwrap();
}
