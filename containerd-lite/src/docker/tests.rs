//! The frontend's routing and error answers, driven in-process through
//! the same service `serve` runs (the version layer over the router).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use serde_json::Value;
use tower::{Layer, ServiceExt};

use super::*;
use crate::config::Config;

fn frontend(dir: &std::path::Path) -> Frontend {
    let config = Config::in_dir(dir, dir.join("berthd.sock"));
    Frontend::new(
        Backend::open(&config).unwrap(),
        Settings::from_config(&config),
    )
    .unwrap()
}

/// Sends one request; returns the status, headers and body as JSON (or
/// the text as a JSON string).
async fn call(
    frontend: &Frontend,
    method: Method,
    uri: &str,
) -> (StatusCode, axum::http::HeaderMap, Value) {
    let app = middleware::from_fn(versioned).layer(router(frontend.clone()));
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .body(Body::empty())
        .unwrap();
    let response = app.oneshot(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
    (parts.status, parts.headers, value)
}

#[tokio::test]
async fn ping_answers_with_the_negotiation_headers_prefixed_or_not() {
    let dir = tempfile::tempdir().unwrap();
    let frontend = frontend(dir.path());
    for uri in ["/_ping", "/v1.24/_ping", "/v1.41/_ping"] {
        let (status, headers, body) = call(&frontend, Method::GET, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(body, Value::String("OK".into()));
        assert_eq!(headers["api-version"], "1.41");
        assert_eq!(headers["ostype"], "linux");
        assert_eq!(headers["builder-version"], "1");
        assert_eq!(headers["docker-experimental"], "false");
    }
    let (status, headers, _) = call(&frontend, Method::HEAD, "/_ping").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["api-version"], "1.41");
}

#[tokio::test]
async fn versions_outside_the_range_are_refused_with_dockerds_message() {
    let dir = tempfile::tempdir().unwrap();
    let frontend = frontend(dir.path());
    let (status, _, body) = call(&frontend, Method::GET, "/v1.45/version").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(
        body["message"],
        "client version 1.45 is too new. Maximum supported API version is 1.41"
    );
    let (status, _, body) = call(&frontend, Method::GET, "/v1.12/version").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"].as_str().unwrap().contains("too old"),
        "{body}"
    );
    let (status, _, body) = call(&frontend, Method::GET, "/v1.30/version").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["ApiVersion"], "1.41");
    assert_eq!(body["MinAPIVersion"], "1.24");
}

#[tokio::test]
async fn unknown_paths_images_and_filters_get_json_errors() {
    let dir = tempfile::tempdir().unwrap();
    let frontend = frontend(dir.path());
    let (status, _, body) = call(&frontend, Method::GET, "/v1.41/nothing/here").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "page not found");

    let (status, _, body) = call(&frontend, Method::GET, "/v1.41/images/nosuch/json").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "No such image: nosuch:latest");

    let (status, _, body) = call(&frontend, Method::DELETE, "/images/localhost:5000/a/b:1").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["message"], "No such image: localhost:5000/a/b:1");

    let (status, _, body) = call(&frontend, Method::GET, "/images/json?filters=%7Bbad").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .starts_with("invalid filters"),
        "{body}"
    );

    let (status, _, body) = call(
        &frontend,
        Method::GET,
        "/images/json?filters=%7B%22color%22%3A%5B%22red%22%5D%7D",
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "invalid filter 'color'");

    let (status, _, body) = call(&frontend, Method::POST, "/images/Nope/tag?repo=x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, _, body) = call(&frontend, Method::POST, "/images/create").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let (status, _, body) = call(&frontend, Method::GET, "/events?since=yesterday").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
}

#[tokio::test]
async fn an_empty_daemon_lists_nothing_and_reports_itself() {
    let dir = tempfile::tempdir().unwrap();
    let frontend = frontend(dir.path());
    let (status, _, body) = call(&frontend, Method::GET, "/images/json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::Array(vec![]));
    let (_, _, info) = call(&frontend, Method::GET, "/info").await;
    assert_eq!(info["Images"], 0);
    assert_eq!(info["Driver"], "overlayfs");
    assert_eq!(
        info["DockerRootDir"],
        dir.path().join("root").display().to_string()
    );
    let (_, _, df) = call(&frontend, Method::GET, "/system/df").await;
    assert_eq!(df["Images"], Value::Array(vec![]));
    assert_eq!(df["LayersSize"], 0);
    // Past events until now: an empty stream that ends.
    let (status, _, body) = call(&frontend, Method::GET, "/events?since=0&until=1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, Value::String(String::new()));
}

fn descriptor(seed: &str) -> crate::content::Descriptor {
    crate::content::Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: crate::content::Digest::sha256_of(seed.as_bytes()),
        size: 1,
        annotations: Default::default(),
    }
}

fn names(frontend: &Frontend) -> Vec<(String, String)> {
    frontend
        .catalog
        .records()
        .unwrap()
        .into_iter()
        .map(|r| (r.name, r.target.digest.to_string()))
        .collect()
}

#[tokio::test]
async fn a_moved_name_leaves_the_old_image_dangling_until_it_is_named_again() {
    use images::records::Records;
    let dir = tempfile::tempdir().unwrap();
    let frontend = frontend(dir.path());
    let records = Records::new(&frontend.backend);
    let (first, second) = (descriptor("first"), descriptor("second"));
    let x = "docker.io/library/x:1";
    records.set(x, &first).unwrap();
    records.set(x, &second).unwrap();
    let dangling = reference::dangling_name(first.digest.as_str());
    assert_eq!(
        names(&frontend),
        [
            (x.to_owned(), second.digest.to_string()),
            (dangling.clone(), first.digest.to_string()),
        ]
    );
    // Named again: the dangling record goes; setting it twice changes nothing.
    let y = "docker.io/library/y:1";
    records.set(y, &first).unwrap();
    records.set(y, &first).unwrap();
    assert_eq!(
        names(&frontend),
        [
            (x.to_owned(), second.digest.to_string()),
            (y.to_owned(), first.digest.to_string()),
        ]
    );
    // A dangling record set by name stays (a load of an unnamed image).
    let third = descriptor("third");
    let unnamed = reference::dangling_name(third.digest.as_str());
    records.set(&unnamed, &third).unwrap();
    assert!(names(&frontend).iter().any(|(n, _)| *n == unnamed));
    records.remove(&unnamed).unwrap();
    // A name removed while another still points at the image: no dangling.
    records.set("docker.io/library/z:1", &second).unwrap();
    records.remove(x).unwrap();
    records.keep_if_unnamed(&second).unwrap();
    assert!(!names(&frontend)
        .iter()
        .any(|(n, _)| reference::is_dangling(n)));
}

#[tokio::test]
async fn names_set_at_once_from_many_threads_all_land() {
    use images::records::Records;
    let dir = tempfile::tempdir().unwrap();
    let frontend = frontend(dir.path());
    let x = "docker.io/library/x:1";
    let targets: Vec<_> = (0..8).map(|i| descriptor(&format!("t{i}"))).collect();
    // Eight `docker tag`s of one name, then of one name each to one image.
    std::thread::scope(|scope| {
        for target in &targets {
            let backend = &frontend.backend;
            scope.spawn(move || Records::new(backend).set(x, target).unwrap());
        }
    });
    std::thread::scope(|scope| {
        for i in 0..8 {
            let (backend, target) = (&frontend.backend, &targets[0]);
            scope.spawn(move || {
                Records::new(backend)
                    .set(&format!("docker.io/library/y:{i}"), target)
                    .unwrap()
            });
        }
    });
    let names = names(&frontend);
    let winner = names.iter().find(|(n, _)| n == x).unwrap().1.clone();
    // Every image left without a name is dangling, exactly once; the
    // named ones are not.
    for target in &targets {
        let digest = target.digest.to_string();
        let named = digest == winner || *target == targets[0];
        let dangling = names
            .iter()
            .filter(|(n, d)| reference::is_dangling(n) && *d == digest)
            .count();
        assert_eq!(dangling, usize::from(!named), "{digest}: {names:?}");
    }
    assert_eq!(names.iter().filter(|(n, _)| n == x).count(), 1);
    assert_eq!(
        names.iter().filter(|(n, _)| n.contains("/y:")).count(),
        8,
        "{names:?}"
    );
}

/// A blob in the `moby` namespace's content, as a descriptor.
fn stored(frontend: &Frontend, bytes: &[u8]) -> crate::content::Descriptor {
    let mut writer = frontend
        .backend
        .content
        .writer(
            NAMESPACE,
            None,
            crate::content::WriterOptions::new(format!("test-{}", bytes.len())),
        )
        .unwrap();
    writer.write(bytes).unwrap();
    let digest = writer
        .commit(bytes.len() as u64, None, Default::default())
        .unwrap();
    crate::content::Descriptor {
        size: bytes.len() as u64,
        digest,
        ..descriptor("unused")
    }
}

#[tokio::test]
async fn a_hold_keeps_an_image_whose_name_moved_until_it_is_kept_as_dangling() {
    use images::records::Records;
    let dir = tempfile::tempdir().unwrap();
    let frontend = frontend(dir.path());
    let records = Records::new(&frontend.backend);
    let (old, new) = (stored(&frontend, b"old"), stored(&frontend, b"newer"));
    let name = "docker.io/library/moving:1";
    records.set(name, &old).unwrap();
    let present = |d: &crate::content::Descriptor| {
        frontend.backend.content.info(NAMESPACE, &d.digest).is_ok()
    };

    // A transfer moves the name; a collection runs before the old image is
    // recorded as dangling: the hold keeps it.
    let hold = records.hold([&old]).unwrap();
    frontend
        .backend
        .images
        .update(
            NAMESPACE,
            crate::metadata::Image::new(name, new.clone()),
            &["target".to_owned()],
        )
        .unwrap();
    frontend.backend.gc.collect().await.unwrap();
    assert!(present(&old), "collected while held");
    records.moved(name, Some(&old)).unwrap();
    hold.release();
    frontend.backend.gc.collect().await.unwrap();
    assert!(present(&old), "the dangling record keeps it");
    assert!(present(&new));

    // Released with nothing naming it: collectable, and no lease is left.
    let hold = records.hold([&old]).unwrap();
    records
        .remove(&reference::dangling_name(old.digest.as_str()))
        .unwrap();
    hold.release();
    frontend.backend.gc.collect().await.unwrap();
    assert!(!present(&old), "still kept after the release");
    let leases = frontend
        .backend
        .leases
        .list(NAMESPACE, &crate::metadata::Filter::everything())
        .unwrap();
    assert!(leases.is_empty(), "{leases:?}");
}

#[tokio::test]
async fn a_failed_pull_puts_the_name_back() {
    use images::records::Records;
    let dir = tempfile::tempdir().unwrap();
    let frontend = frontend(dir.path());
    let records = Records::new(&frontend.backend);
    let (old, half_made) = (descriptor("old"), descriptor("half-made"));
    let x = "docker.io/library/x:1";
    records.set(x, &old).unwrap();
    // The transfer recorded its target, then failed to unpack.
    let image =
        |target: &crate::content::Descriptor| crate::metadata::Image::new(x, target.clone());
    frontend
        .backend
        .images
        .update(NAMESPACE, image(&half_made), &["target".to_owned()])
        .unwrap();
    records.restore(x, Some(&old)).unwrap();
    assert_eq!(names(&frontend), [(x.to_owned(), old.digest.to_string())]);
    // A name the failed pull created goes again.
    let y = "docker.io/library/y:1";
    records.set(y, &half_made).unwrap();
    records.restore(y, None).unwrap();
    assert_eq!(names(&frontend), [(x.to_owned(), old.digest.to_string())]);
    // Nothing to undo: nothing changes.
    records.restore(x, Some(&old)).unwrap();
    assert_eq!(names(&frontend), [(x.to_owned(), old.digest.to_string())]);
}

#[tokio::test]
async fn a_name_pinned_to_a_digest_never_finds_another_image() {
    use images::records::Records;
    let dir = tempfile::tempdir().unwrap();
    let frontend = frontend(dir.path());
    // A real (empty) image, so that a lookup that trusted the name would
    // find it.
    let config = stored(
        &frontend,
        br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}"#,
    );
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config.digest.to_string(),
            "size": config.size,
        },
        "layers": [],
    });
    let actual = stored(&frontend, manifest.to_string().as_bytes());
    let claimed = descriptor("claimed");
    let pinned = format!("docker.io/library/alpine@{}", claimed.digest);
    // A record whose name claims a digest its target does not have (what
    // a crafted archive's RepoTag would make).
    Records::new(&frontend.backend)
        .set(&pinned, &actual)
        .unwrap();
    let err = frontend
        .catalog
        .find(&format!("alpine@{}", claimed.digest))
        .unwrap_err();
    assert_eq!(err.kind, crate::ErrorKind::NotFound, "{err}");
    // The same record under a plain tag is found: the image is real.
    Records::new(&frontend.backend)
        .set("docker.io/library/alpine:real", &actual)
        .unwrap();
    frontend.catalog.find("alpine:real").unwrap();
}

#[tokio::test]
async fn creates_cut_short_by_a_crash_are_removed_with_their_snapshots() {
    use crate::metadata::containers::{Container as Record, Payload, Runtime};
    let dir = tempfile::tempdir().unwrap();
    let frontend = frontend(dir.path());
    let backend = &frontend.backend;
    let snapshotter = backend
        .snapshotters
        .get(crate::grpc::backend::DEFAULT_SNAPSHOTTER)
        .unwrap();
    // What a create leaves when berthd dies before the docker record: a
    // containerd record with the name label and its prepared snapshot.
    // Beside it, a record someone else made in the namespace.
    for (id, labelled) in [("unfinished", true), ("foreign", false)] {
        let mut record = Record::new(
            id,
            Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            },
            Payload {
                type_url: crate::oci::SPEC_TYPE_URL.into(),
                value: b"{}".to_vec(),
            },
        );
        record.snapshotter = crate::grpc::backend::DEFAULT_SNAPSHOTTER.into();
        record.snapshot_key = id.into();
        if labelled {
            record
                .labels
                .insert(containers::create::NAME_LABEL.into(), "/cut-short".into());
        }
        backend.containers.create(NAMESPACE, record).unwrap();
        snapshotter
            .prepare(NAMESPACE, id, None, Default::default())
            .unwrap();
    }

    assert_eq!(containers::create::remove_unfinished(&frontend), 1);
    assert!(backend.containers.get(NAMESPACE, "unfinished").is_err());
    assert!(snapshotter.stat(NAMESPACE, "unfinished").is_err());
    assert!(backend.containers.get(NAMESPACE, "foreign").is_ok());
    assert!(snapshotter.stat(NAMESPACE, "foreign").is_ok());
    // Nothing more the second time.
    assert_eq!(containers::create::remove_unfinished(&frontend), 0);
}
