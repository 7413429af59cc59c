//! Behaviour of the metadata stores over a real database file.

use std::time::{Duration, SystemTime};

use redb::TableDefinition;

use super::*;
use crate::content::{Descriptor, Digest, LocalStore, WriterOptions};
use crate::ErrorKind;

struct Fixture {
    _dir: tempfile::TempDir,
    db: Db,
    content: ContentStore,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("meta.redb")).unwrap();
    let blobs = LocalStore::open(dir.path().join("content")).unwrap();
    let content = ContentStore::new(db.clone(), blobs);
    Fixture {
        _dir: dir,
        db,
        content,
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn paths(paths: &[&str]) -> Vec<String> {
    paths.iter().map(|p| (*p).to_owned()).collect()
}

fn descriptor(data: &[u8]) -> Descriptor {
    Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: Digest::sha256_of(data),
        size: data.len() as u64,
        annotations: Default::default(),
    }
}

fn write_blob(
    content: &ContentStore,
    namespace: &str,
    data: &[u8],
    blob_labels: Labels,
) -> Result<Digest> {
    let mut writer = content.writer(
        namespace,
        None,
        WriterOptions::new(format!("ref-{}", data.len())),
    )?;
    writer.write(data)?;
    writer.commit(
        data.len() as u64,
        Some(&Digest::sha256_of(data)),
        blob_labels,
    )
}

#[test]
fn a_new_database_records_the_schema_version_and_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let db = Db::open(&path).unwrap();
    assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
    NamespaceStore::new(db.clone())
        .create("kept", Labels::new())
        .unwrap();

    // The same file cannot be opened twice at once.
    assert_eq!(Db::open(&path).unwrap_err().kind, ErrorKind::Unavailable);
    drop(db);

    let db = Db::open(&path).unwrap();
    assert_eq!(NamespaceStore::new(db).get("kept").unwrap().name, "kept");
}

#[test]
fn a_database_from_a_newer_berthd_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("meta.redb");
    let db = Db::open(&path).unwrap();
    db.write(|txn| {
        let mut table = txn.open_table(TableDefinition::<&str, u64>::new("schema"))?;
        table.insert("version", SCHEMA_VERSION + 1)?;
        Ok(())
    })
    .unwrap();
    drop(db);
    let err = Db::open(&path).unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains("newer"), "{}", err.message);
}

#[test]
fn namespaces_are_created_on_first_use_and_deleted_only_when_empty() {
    let f = fixture();
    let namespaces = NamespaceStore::new(f.db.clone());
    let images = ImageStore::new(f.db.clone());
    images
        .create(
            "team-a",
            Image::new("docker.io/library/busybox:latest", descriptor(b"m")),
        )
        .unwrap();
    assert_eq!(namespaces.get("team-a").unwrap().name, "team-a");

    let err = namespaces.delete("team-a").unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains("images"), "{}", err.message);
    assert_eq!(
        namespaces.get("team-a").unwrap().name,
        "team-a",
        "refusal rolled back"
    );

    images
        .delete("team-a", "docker.io/library/busybox:latest")
        .unwrap();
    namespaces.delete("team-a").unwrap();
    assert_eq!(
        namespaces.get("team-a").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        namespaces.delete("team-a").unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn namespaces_refuse_bad_names_and_duplicates() {
    let f = fixture();
    let namespaces = NamespaceStore::new(f.db.clone());
    namespaces.create("default", labels(&[("a", "1")])).unwrap();
    assert_eq!(
        namespaces
            .create("default", Labels::new())
            .unwrap_err()
            .kind,
        ErrorKind::AlreadyExists
    );
    for bad in ["", "../etc", "a/b", "with space"] {
        assert_eq!(
            namespaces.create(bad, Labels::new()).unwrap_err().kind,
            ErrorKind::InvalidArgument,
            "{bad:?}"
        );
    }
    let err = ImageStore::new(f.db.clone())
        .create("a/b", Image::new("x", descriptor(b"m")))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    let names: Vec<String> = namespaces
        .list()
        .unwrap()
        .into_iter()
        .map(|n| n.name)
        .collect();
    assert_eq!(names, ["default"]);
}

#[test]
fn namespace_labels_update_by_field_mask() {
    let f = fixture();
    let namespaces = NamespaceStore::new(f.db.clone());
    namespaces
        .create("ns", labels(&[("a", "1"), ("b", "2")]))
        .unwrap();
    let updated = namespaces
        .update(
            "ns",
            labels(&[("a", "9"), ("c", "3")]),
            &paths(&["labels.a", "labels.b"]),
        )
        .unwrap();
    assert_eq!(updated.labels, labels(&[("a", "9")]));
    let err = namespaces
        .update("ns", Labels::new(), &paths(&["name"]))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
}

#[test]
fn other_modules_can_keep_a_namespace_alive() {
    let f = fixture();
    f.db.register_namespace_usage("snapshots", Box::new(|_, ns| Ok(ns == "busy")));
    let namespaces = NamespaceStore::new(f.db.clone());
    namespaces.create("busy", Labels::new()).unwrap();
    namespaces.create("idle", Labels::new()).unwrap();
    let err = namespaces.delete("busy").unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains("snapshots"), "{}", err.message);
    namespaces.delete("idle").unwrap();
}

#[test]
fn images_are_created_listed_updated_and_deleted_per_namespace() {
    let f = fixture();
    let images = ImageStore::new(f.db.clone());
    let mut image = Image::new("docker.io/library/busybox:latest", descriptor(b"m1"));
    image.labels = labels(&[("env", "dev")]);
    let created = images.create("ns1", image.clone()).unwrap();
    assert!(created.created_at > SystemTime::UNIX_EPOCH);
    assert_eq!(
        images.create("ns1", image.clone()).unwrap_err().kind,
        ErrorKind::AlreadyExists
    );
    images
        .create(
            "ns1",
            Image::new("docker.io/library/alpine:3", descriptor(b"m2")),
        )
        .unwrap();

    assert_eq!(
        images.get("ns2", &image.name).unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(images
        .list("ns2", &Filter::everything())
        .unwrap()
        .is_empty());

    let names = |filter: &str| -> Vec<String> {
        images
            .list("ns1", &Filter::parse(filter).unwrap())
            .unwrap()
            .into_iter()
            .map(|i| i.name)
            .collect()
    };
    assert_eq!(
        names(""),
        [
            "docker.io/library/alpine:3",
            "docker.io/library/busybox:latest"
        ]
    );
    assert_eq!(
        names("labels.env==dev"),
        ["docker.io/library/busybox:latest"]
    );
    assert_eq!(names("name~=alpine"), ["docker.io/library/alpine:3"]);
    assert_eq!(
        names(&format!("target.digest=={}", Digest::sha256_of(b"m2"))),
        ["docker.io/library/alpine:3"]
    );

    let mut change = Image::new(image.name.clone(), descriptor(b"m3"));
    change.labels = labels(&[("tier", "gold")]);
    change.target.annotations = labels(&[("org.opencontainers.image.ref.name", "latest")]);
    let updated = images
        .update(
            "ns1",
            change.clone(),
            &paths(&["labels.tier", "annotations"]),
        )
        .unwrap();
    assert_eq!(updated.labels, labels(&[("env", "dev"), ("tier", "gold")]));
    assert_eq!(
        updated.target.digest,
        Digest::sha256_of(b"m1"),
        "target untouched"
    );
    assert_eq!(updated.target.annotations, change.target.annotations);
    assert_eq!(updated.created_at, created.created_at);
    assert!(updated.updated_at >= created.updated_at);

    let updated = images
        .update("ns1", change.clone(), &paths(&["target"]))
        .unwrap();
    assert_eq!(updated.target.digest, Digest::sha256_of(b"m3"));
    assert_eq!(
        images
            .update("ns1", change.clone(), &paths(&["name"]))
            .unwrap_err()
            .kind,
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        images.update("ns2", change, &[]).unwrap_err().kind,
        ErrorKind::NotFound
    );

    images.delete("ns1", &image.name).unwrap();
    assert_eq!(
        images.delete("ns1", &image.name).unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn images_need_a_name_and_a_media_type() {
    let f = fixture();
    let images = ImageStore::new(f.db.clone());
    let err = images
        .create("ns", Image::new("", descriptor(b"m")))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    let mut target = descriptor(b"m");
    target.media_type.clear();
    let err = images.create("ns", Image::new("x", target)).unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    let mut image = Image::new("x", descriptor(b"m"));
    image.labels = labels(&[("k", &"v".repeat(5000))]);
    assert_eq!(
        images.create("ns", image).unwrap_err().kind,
        ErrorKind::InvalidArgument
    );
}

#[test]
fn content_is_visible_only_in_namespaces_that_recorded_it() {
    let f = fixture();
    let digest = write_blob(&f.content, "ns1", b"layer", labels(&[("a", "1")])).unwrap();
    let info = f.content.info("ns1", &digest).unwrap();
    assert_eq!((info.size, info.labels.clone()), (5, labels(&[("a", "1")])));
    assert_eq!(
        f.content.info("ns2", &digest).unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        f.content.reader("ns2", &digest).unwrap_err().kind,
        ErrorKind::NotFound
    );

    // ns2 asks to write the same blob: it is recorded without a transfer.
    let mut options = WriterOptions::new("again");
    options.expected = Some(digest.clone());
    let err = f.content.writer("ns2", None, options.clone()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists);
    assert_eq!(f.content.reader("ns2", &digest).unwrap().size(), 5);
    assert!(f.content.info("ns2", &digest).unwrap().labels.is_empty());
    let err = f.content.writer("ns2", None, options).unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists);

    // Writing it again in ns1 without announcing the digest: AlreadyExists at commit.
    let err = write_blob(&f.content, "ns1", b"layer", Labels::new()).unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists);
    assert_eq!(
        f.content.info("ns1", &digest).unwrap().labels,
        labels(&[("a", "1")])
    );
}

#[test]
fn a_blob_written_elsewhere_is_recorded_at_commit() {
    let f = fixture();
    let digest = write_blob(&f.content, "ns1", b"shared", Labels::new()).unwrap();
    // No digest announced, so the bytes come again; commit records them in ns2.
    let committed = write_blob(&f.content, "ns2", b"shared", labels(&[("b", "2")])).unwrap();
    assert_eq!(committed, digest);
    assert_eq!(
        f.content.info("ns2", &digest).unwrap().labels,
        labels(&[("b", "2")])
    );
}

#[test]
fn content_labels_update_and_filter() {
    let f = fixture();
    let a = write_blob(&f.content, "ns", b"aa", labels(&[("kind", "layer")])).unwrap();
    let b = write_blob(&f.content, "ns", b"bbb", labels(&[("kind", "config")])).unwrap();
    let listed: Vec<Digest> = f
        .content
        .list("ns", &Filter::parse("labels.kind==layer").unwrap())
        .unwrap()
        .into_iter()
        .map(|i| i.digest)
        .collect();
    assert_eq!(listed, [a]);
    assert_eq!(
        f.content.list("ns", &Filter::everything()).unwrap().len(),
        2
    );

    let info = f
        .content
        .update(
            "ns",
            &b,
            labels(&[("gc", "x")]),
            &paths(&["labels.gc", "labels.kind"]),
        )
        .unwrap();
    assert_eq!(info.labels, labels(&[("gc", "x")]));
    assert_eq!(
        f.content
            .update("ns", &b, Labels::new(), &paths(&["size"]))
            .unwrap_err()
            .kind,
        ErrorKind::InvalidArgument
    );
    assert_eq!(
        f.content
            .update("other", &b, Labels::new(), &[])
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
}

#[test]
fn delete_removes_the_record_and_leaves_the_bytes_to_gc() {
    let f = fixture();
    let digest = write_blob(&f.content, "ns", b"gone", Labels::new()).unwrap();
    f.content.delete("ns", &digest).unwrap();
    assert_eq!(
        f.content.info("ns", &digest).unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        f.content.delete("ns", &digest).unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert!(f.content.blobs().contains(&digest));
}

#[test]
fn ingests_are_namespaced() {
    let f = fixture();
    let mut w1 = f
        .content
        .writer("ns1", None, WriterOptions::new("pull-1"))
        .unwrap();
    w1.write(b"abc").unwrap();
    assert_eq!(w1.status().reference, "pull-1");
    let _w2 = f
        .content
        .writer("ns2", None, WriterOptions::new("pull-1"))
        .unwrap();
    let err = f
        .content
        .writer("ns1", None, WriterOptions::new("pull-1"))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable);
    drop(w1);

    let status = f.content.status("ns1", "pull-1").unwrap();
    assert_eq!((status.reference.as_str(), status.offset), ("pull-1", 3));
    let refs = |ns: &str, filter: &str| -> Vec<String> {
        f.content
            .list_statuses(ns, &Filter::parse(filter).unwrap())
            .unwrap()
            .into_iter()
            .map(|s| s.reference)
            .collect()
    };
    assert_eq!(refs("ns1", ""), ["pull-1"]);
    assert_eq!(refs("ns1", "ref~=^push"), Vec::<String>::new());
    assert!(refs("ns3", "").is_empty());
    f.content.abort("ns1", "pull-1").unwrap();
    assert_eq!(
        f.content.status("ns1", "pull-1").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        f.content.abort("ns1", "pull-1").unwrap_err().kind,
        ErrorKind::NotFound
    );
}

#[test]
fn leases_hold_ingests_then_the_committed_blob() {
    let f = fixture();
    let leases = LeaseManager::new(f.db.clone());
    leases.create("ns", "pull-busybox", Labels::new()).unwrap();
    let err = f
        .content
        .writer("ns", Some("missing"), WriterOptions::new("r"))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);

    let mut writer = f
        .content
        .writer("ns", Some("pull-busybox"), WriterOptions::new("layer-0"))
        .unwrap();
    assert_eq!(
        leases.list_resources("ns", "pull-busybox").unwrap(),
        [LeaseResource::Ingest("layer-0".into())]
    );
    writer.write(b"bytes").unwrap();
    let digest = writer.commit(5, None, Labels::new()).unwrap();
    assert_eq!(
        leases.list_resources("ns", "pull-busybox").unwrap(),
        [LeaseResource::Content(digest)]
    );
}

#[test]
fn lease_resources_are_added_listed_and_removed() {
    let f = fixture();
    let leases = LeaseManager::new(f.db.clone());
    leases
        .create("ns", "l1", labels(&[("owner", "ctr")]))
        .unwrap();
    assert_eq!(
        leases.create("ns", "l1", Labels::new()).unwrap_err().kind,
        ErrorKind::AlreadyExists
    );
    let snapshot = LeaseResource::parse("snapshots/overlayfs", "sha256:abc-extract").unwrap();
    let content = LeaseResource::parse("content", Digest::sha256_of(b"x").as_str()).unwrap();
    leases.add_resource("ns", "l1", &snapshot).unwrap();
    leases.add_resource("ns", "l1", &content).unwrap();
    leases.add_resource("ns", "l1", &content).unwrap();
    let mut held = leases.list_resources("ns", "l1").unwrap();
    held.sort();
    assert_eq!(held, [content.clone(), snapshot.clone()]);
    assert_eq!(
        (snapshot.kind().as_str(), snapshot.id()),
        ("snapshots/overlayfs", "sha256:abc-extract")
    );

    leases.delete_resource("ns", "l1", &snapshot).unwrap();
    assert_eq!(
        leases.list_resources("ns", "l1").unwrap(),
        std::slice::from_ref(&content)
    );
    assert_eq!(
        leases
            .add_resource("ns", "nope", &content)
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        leases
            .list("ns", &Filter::parse("labels.owner==ctr").unwrap())
            .unwrap()[0]
            .id,
        "l1"
    );
    assert!(leases
        .list("other", &Filter::everything())
        .unwrap()
        .is_empty());

    leases.delete("ns", "l1").unwrap();
    assert_eq!(
        leases.list_resources("ns", "l1").unwrap_err().kind,
        ErrorKind::NotFound
    );
    assert_eq!(
        leases.delete("ns", "l1").unwrap_err().kind,
        ErrorKind::NotFound
    );
    // Nothing of l1 is left to resurface under a lease of the same id.
    leases.create("ns", "l1", Labels::new()).unwrap();
    assert!(leases.list_resources("ns", "l1").unwrap().is_empty());
}

#[test]
fn lease_ids_are_the_clients_or_generated() {
    let f = fixture();
    let leases = LeaseManager::new(f.db.clone());
    // ctr's random ids are `<nanos>-<base64url of 3 bytes>`.
    for id in ["123456789-a-_B", "987-AB_-", "x"] {
        assert_eq!(leases.create("ns", id, Labels::new()).unwrap().id, id);
    }
    let generated = leases.create("ns", "", Labels::new()).unwrap();
    assert!(!generated.id.is_empty());
    assert_ne!(
        leases.create("ns", "", Labels::new()).unwrap().id,
        generated.id
    );
    for bad in ["tab\there", &"x".repeat(300)] {
        assert_eq!(
            leases.create("ns", bad, Labels::new()).unwrap_err().kind,
            ErrorKind::InvalidArgument
        );
    }
}

#[test]
fn lease_resources_and_expiry_are_validated() {
    for (kind, id) in [
        ("content", "sha256:short"),
        ("snapshots/", "k"),
        ("volumes", "v"),
        ("ingests", ""),
    ] {
        assert_eq!(
            LeaseResource::parse(kind, id).unwrap_err().kind,
            ErrorKind::InvalidArgument,
            "{kind} {id}"
        );
    }
    let f = fixture();
    let leases = LeaseManager::new(f.db.clone());
    let err = leases
        .create("ns", "l", labels(&[(leases::EXPIRE_LABEL, "tomorrow")]))
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);

    let lease = leases
        .create(
            "ns",
            "l",
            labels(&[(leases::EXPIRE_LABEL, "2020-01-02T03:04:05+01:00")]),
        )
        .unwrap();
    let expected = SystemTime::UNIX_EPOCH + Duration::from_secs(1_577_930_645);
    assert_eq!(lease.expires_at().unwrap(), Some(expected));
    assert!(lease.is_expired(SystemTime::now()));
    assert!(!lease.is_expired(expected - Duration::from_secs(1)));
}
