//! The registry client against a real registry: Debian's `docker-registry`
//! on a free loopback port, fed by `skopeo` from OCI layouts built here
//! around busybox-static. Tests skip (and say so) where those tools are
//! missing.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::*;
use crate::content::{Digest, LocalStore, WriterOptions};
use crate::gc::Collector;
use crate::metadata::{ContentStore, Db, Filter, ImageStore, LeaseManager};
use crate::ErrorKind;

const REGISTRY: &str = "/usr/bin/docker-registry";
const SKOPEO: &str = "/usr/bin/skopeo";
const BUSYBOX: &str = "/bin/busybox";

const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Compressed, as registries keep layers: skopeo then copies them as they are.
const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

fn tools_present() -> bool {
    let present = [REGISTRY, SKOPEO, BUSYBOX]
        .iter()
        .all(|tool| Path::new(tool).exists());
    if !present {
        eprintln!("skipped: needs {REGISTRY}, {SKOPEO} and {BUSYBOX}");
    }
    present
}

/// A docker-registry serving from a temp dir; killed on drop.
struct Registry {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Registry {
    /// Starts a registry; with `users`, it demands HTTP basic auth.
    fn start(users: &[(&str, &str)]) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let mut auth = String::new();
        if !users.is_empty() {
            let htpasswd: String = users
                .iter()
                .map(|(user, password)| format!("{user}:{}\n", bcrypt::hash(password, 4).unwrap()))
                .collect();
            let path = dir.path().join("htpasswd");
            fs::write(&path, htpasswd).unwrap();
            auth = format!(
                "auth:\n  htpasswd:\n    realm: berth-test\n    path: {}\n",
                path.display()
            );
        }
        Registry::start_with(dir, &auth)
    }

    /// Starts a registry in `dir` with `extra` lines of configuration.
    fn start_with(dir: tempfile::TempDir, extra: &str) -> Registry {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let address = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\n\
             storage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {address}\n{extra}",
            dir.path().join("data").display()
        );
        let config_path = dir.path().join("config.yml");
        fs::write(&config_path, config).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let registry = Registry {
            child,
            address,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&registry.address).is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    fn reference(&self, repository_and_tag: &str) -> String {
        format!("{}/{repository_and_tag}", self.address)
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blob of an image under construction.
#[derive(Clone)]
struct Blob {
    media_type: &'static str,
    bytes: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, bytes: Vec<u8>) -> Blob {
        Blob { media_type, bytes }
    }

    fn json(media_type: &'static str, value: serde_json::Value) -> Blob {
        Blob::new(media_type, serde_json::to_vec(&value).unwrap())
    }

    fn digest(&self) -> Digest {
        Digest::sha256_of(&self.bytes)
    }

    fn descriptor(&self) -> serde_json::Value {
        json!({
            "mediaType": self.media_type,
            "digest": self.digest().to_string(),
            "size": self.bytes.len(),
        })
    }
}

/// A gzipped layer holding busybox as `/bin/busybox` and a file naming `tag`.
fn layer(tag: &str) -> Blob {
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("bin")).unwrap();
    fs::create_dir_all(root.path().join("etc")).unwrap();
    fs::copy(BUSYBOX, root.path().join("bin/busybox")).unwrap();
    fs::write(root.path().join("etc/berth-test"), tag).unwrap();
    let output = Command::new("tar")
        .args([
            "--sort=name",
            "--owner=0",
            "--group=0",
            "--numeric-owner",
            "--mtime=@0",
        ])
        .args(["-I", "gzip -n"])
        .arg("-C")
        .arg(root.path())
        .args(["-cf", "-", "bin", "etc"])
        .output()
        .unwrap();
    assert!(output.status.success(), "tar failed");
    Blob::new(OCI_LAYER, output.stdout)
}

/// A small gzipped layer.
fn note_layer(text: &str) -> Blob {
    let root = tempfile::tempdir().unwrap();
    fs::write(root.path().join("note"), text).unwrap();
    let output = Command::new("tar")
        .args([
            "--owner=0",
            "--group=0",
            "--mtime=@0",
            "-I",
            "gzip -n",
            "-C",
        ])
        .arg(root.path())
        .args(["-cf", "-", "note"])
        .output()
        .unwrap();
    Blob::new(OCI_LAYER, output.stdout)
}

/// One platform's image: manifest, config, layers.
struct Image {
    manifest: Blob,
    config: Blob,
    layers: Vec<Blob>,
}

fn image(architecture: &str, layers: Vec<Blob>) -> Image {
    let diff_ids: Vec<String> = layers.iter().map(|l| l.digest().to_string()).collect();
    let config = Blob::json(
        OCI_CONFIG,
        json!({
            "architecture": architecture,
            "os": "linux",
            "config": { "Entrypoint": ["/bin/busybox"] },
            "rootfs": { "type": "layers", "diff_ids": diff_ids },
        }),
    );
    let manifest = Blob::json(
        OCI_MANIFEST,
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        }),
    );
    Image {
        manifest,
        config,
        layers,
    }
}

/// Writes an OCI layout whose tag `latest` names `root`, with `blobs`.
fn layout(root: &Blob, blobs: &[&Blob]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let blob_dir = dir.path().join("blobs/sha256");
    fs::create_dir_all(&blob_dir).unwrap();
    fs::write(
        dir.path().join("oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    for blob in blobs.iter().copied().chain([root]) {
        fs::write(blob_dir.join(blob.digest().encoded()), &blob.bytes).unwrap();
    }
    let mut entry = root.descriptor();
    entry["annotations"] = json!({ "org.opencontainers.image.ref.name": "latest" });
    let index = json!({ "schemaVersion": 2, "manifests": [entry] });
    fs::write(dir.path().join("index.json"), index.to_string()).unwrap();
    dir
}

/// Copies the layout's `latest` to the registry with skopeo.
fn skopeo_push(layout: &Path, destination: &str, all: bool, creds: Option<&str>) {
    let mut command = Command::new(SKOPEO);
    command.args([
        "--insecure-policy",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
    ]);
    if all {
        command.arg("--all");
    }
    if let Some(creds) = creds {
        command.args(["--dest-creds", creds]);
    }
    let output = command
        .arg(format!("oci:{}:latest", layout.display()))
        .arg(format!("docker://{destination}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo copy: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The manifest bytes the registry serves for `reference`.
fn skopeo_raw(reference: &str) -> Vec<u8> {
    let output = Command::new(SKOPEO)
        .args([
            "--insecure-policy",
            "inspect",
            "--raw",
            "--tls-verify=false",
        ])
        .arg(format!("docker://{reference}"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skopeo inspect: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    output.stdout
}

struct Stores {
    _dir: tempfile::TempDir,
    db: Db,
    content: ContentStore,
    images: ImageStore,
    leases: LeaseManager,
}

impl Stores {
    fn new() -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("metadata.redb")).unwrap();
        let blobs = LocalStore::open(dir.path().join("content")).unwrap();
        Stores {
            content: ContentStore::new(db.clone(), blobs),
            images: ImageStore::new(db.clone()),
            leases: LeaseManager::new(db.clone()),
            db,
            _dir: dir,
        }
    }

    fn client(&self, insecure_hosts: &[&str]) -> RegistryClient {
        let options = RegistryOptions {
            insecure_hosts: insecure_hosts.iter().map(|h| (*h).to_owned()).collect(),
        };
        RegistryClient::new(
            &options,
            self.content.clone(),
            self.images.clone(),
            self.leases.clone(),
        )
    }

    fn has(&self, namespace: &str, digest: &Digest) -> bool {
        self.content.info(namespace, digest).is_ok()
    }

    fn blob_bytes(&self, namespace: &str, digest: &Digest) -> Vec<u8> {
        let reader = self.content.reader(namespace, digest).unwrap();
        let mut bytes = vec![0; reader.size() as usize];
        let mut filled = 0;
        while filled < bytes.len() {
            filled += reader.read_at(&mut bytes[filled..], filled as u64).unwrap();
        }
        bytes
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn pulls_by_tag_and_digest_into_verified_labelled_content() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start(&[]);
    let busybox = image("amd64", vec![layer("one"), note_layer("two")]);
    let mut blobs: Vec<&Blob> = busybox.layers.iter().collect();
    blobs.push(&busybox.config);
    let dir = layout(&busybox.manifest, &blobs);
    let tagged = registry.reference("test/busybox:latest");
    skopeo_push(dir.path(), &tagged, false, None);
    let manifest = Digest::sha256_of(&skopeo_raw(&tagged));

    let stores = Stores::new();
    let client = stores.client(&[&registry.address]);
    let reports = std::sync::Arc::new(std::sync::Mutex::new(Vec::<Progress>::new()));
    let sink = std::sync::Arc::clone(&reports);
    let landed = std::sync::Arc::new(std::sync::Mutex::new(Vec::<LayerReady>::new()));
    let layer_sink = std::sync::Arc::clone(&landed);
    let options = PullOptions {
        progress: Some(ProgressSink::new(move |p| {
            sink.lock().unwrap().push(p.clone())
        })),
        on_layer: Some(LayerSink::new(move |l| {
            layer_sink.lock().unwrap().push(l.clone())
        })),
        ..PullOptions::default()
    };
    let pulled = client.pull("default", &tagged, &options).await.unwrap();
    let mut landed = landed.lock().unwrap().clone();
    landed.sort_by_key(|l| l.position);
    assert_eq!(landed.len(), busybox.layers.len());
    for (ready, layer) in landed.iter().zip(&busybox.layers) {
        assert_eq!((ready.count, &ready.manifest), (2, &pulled.target.digest));
        assert_eq!(ready.layer.digest, layer.digest());
        assert_eq!(ready.config.digest, busybox.config.digest());
    }
    assert_eq!(pulled.name, tagged);
    let finished = |state: ProgressState| -> Vec<Digest> {
        let mut digests: Vec<Digest> = reports
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.state == state && p.offset == p.total)
            .map(|p| p.digest.clone())
            .collect();
        digests.sort();
        digests
    };
    let mut expected: Vec<Digest> = busybox.layers.iter().map(Blob::digest).collect();
    expected.push(busybox.config.digest());
    expected.sort();
    assert_eq!(finished(ProgressState::Done), expected);
    assert_eq!(pulled.target.digest, manifest);
    assert_eq!(pulled.target.media_type, OCI_MANIFEST);
    assert_eq!(
        stores.images.get("default", &tagged).unwrap().target,
        pulled.target
    );

    let labels = stores.content.info("default", &manifest).unwrap().labels;
    assert_eq!(
        labels["containerd.io/gc.ref.content.config"],
        busybox.config.digest().to_string()
    );
    for (position, layer) in busybox.layers.iter().enumerate() {
        let key = format!("containerd.io/gc.ref.content.l.{position}");
        assert_eq!(labels[&key], layer.digest().to_string());
        assert_eq!(stores.blob_bytes("default", &layer.digest()), layer.bytes);
    }
    assert!(stores.has("default", &busybox.config.digest()));
    assert!(
        stores
            .leases
            .list("default", &Filter::everything())
            .unwrap()
            .is_empty(),
        "the pull's lease is released"
    );
    let collected = Collector::new(stores.db.clone(), stores.content.blobs().clone())
        .collect()
        .unwrap();
    assert!(
        collected.is_empty(),
        "the image holds all it pulled: {collected:?}"
    );

    let by_digest = format!("{}/test/busybox@{manifest}", registry.address);
    reports.lock().unwrap().clear();
    let pulled = client.pull("other", &by_digest, &options).await.unwrap();
    assert_eq!(
        finished(ProgressState::Exists),
        expected,
        "nothing fetched twice"
    );
    assert!(finished(ProgressState::Done).is_empty());
    assert_eq!(
        (pulled.name.as_str(), &pulled.target.digest),
        (by_digest.as_str(), &manifest)
    );
    assert!(stores.has("other", &busybox.layers[0].digest()));

    let missing = client
        .pull(
            "default",
            &registry.reference("test/busybox:nope"),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound, "{}", missing.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_pulls_of_one_image_share_the_downloads() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start(&[]);
    let busybox = image("amd64", vec![layer("twice"), note_layer("twice")]);
    let blobs: Vec<&Blob> = busybox.layers.iter().chain([&busybox.config]).collect();
    let dir = layout(&busybox.manifest, &blobs);
    let tagged = registry.reference("shared/busybox:latest");
    skopeo_push(dir.path(), &tagged, false, None);

    let stores = Stores::new();
    let client = stores.client(&[&registry.address]);
    let options = PullOptions::default();
    let (first, second, other) = tokio::join!(
        client.pull("default", &tagged, &options),
        client.pull("default", &tagged, &options),
        client.pull("other", &tagged, &options),
    );
    for pulled in [first, second, other] {
        assert_eq!(pulled.unwrap().target.digest, busybox.manifest.digest());
    }
    for namespace in ["default", "other"] {
        assert_eq!(
            stores.blob_bytes(namespace, &busybox.layers[0].digest()),
            busybox.layers[0].bytes
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_index_resolves_to_the_wanted_platform_only() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start(&[]);
    let host = Platform::host();
    let other_arch = if host.architecture == "arm64" {
        "amd64"
    } else {
        "arm64"
    };
    let native = image(&host.architecture, vec![layer("native")]);
    let foreign = image(other_arch, vec![note_layer("foreign")]);
    let entry = |image: &Image, arch: &str| {
        let mut entry = image.manifest.descriptor();
        entry["platform"] = json!({ "os": "linux", "architecture": arch });
        entry
    };
    let index = Blob::json(
        OCI_INDEX,
        json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [entry(&foreign, other_arch), entry(&native, &host.architecture)],
        }),
    );
    let blobs: Vec<&Blob> = [&native, &foreign]
        .iter()
        .flat_map(|i| i.layers.iter().chain([&i.config, &i.manifest]))
        .collect();
    let dir = layout(&index, &blobs);
    let tagged = registry.reference("multi/busybox:latest");
    skopeo_push(dir.path(), &tagged, true, None);
    let index_digest = Digest::sha256_of(&skopeo_raw(&tagged));

    let stores = Stores::new();
    let client = stores.client(&[&registry.address]);
    let pulled = client
        .pull("default", &tagged, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(pulled.target.digest, index_digest);
    assert_eq!(pulled.target.media_type, OCI_INDEX);
    assert!(stores.has("default", &native.layers[0].digest()));
    assert!(
        !stores.has("default", &foreign.layers[0].digest()),
        "other platforms stay remote"
    );
    let labels = stores
        .content
        .info("default", &index_digest)
        .unwrap()
        .labels;
    assert_eq!(
        labels["containerd.io/gc.ref.content.m.1"],
        native.manifest.digest().to_string()
    );

    let options = PullOptions {
        platform: Platform::parse(&format!("linux/{other_arch}")).unwrap(),
        ..PullOptions::default()
    };
    client.pull("foreign", &tagged, &options).await.unwrap();
    assert!(stores.has("foreign", &foreign.layers[0].digest()));

    let options = PullOptions {
        platform: Platform::parse("linux/s390x").unwrap(),
        ..PullOptions::default()
    };
    let err = client.pull("s390x", &tagged, &options).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{}", err.message);

    // An index pulled for one platform cannot be pushed whole.
    let err = client
        .push(
            "default",
            &tagged,
            &registry.reference("copy/busybox:latest"),
            &PushOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{}", err.message);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_interrupted_download_resumes_and_a_corrupt_one_is_discarded() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start(&[]);
    let first = image("amd64", vec![layer("resume")]);
    let second = image("amd64", vec![layer("corrupt")]);
    for (image, repository) in [(&first, "first"), (&second, "second")] {
        let blobs: Vec<&Blob> = image.layers.iter().chain([&image.config]).collect();
        let dir = layout(&image.manifest, &blobs);
        skopeo_push(
            dir.path(),
            &registry.reference(&format!("{repository}:latest")),
            false,
            None,
        );
    }
    let stores = Stores::new();
    let client = stores.client(&[&registry.address]);

    // What a pull killed halfway through the layer leaves behind.
    let partial = |image: &Image, bytes: &[u8]| {
        let layer = &image.layers[0];
        let options = WriterOptions {
            reference: format!("layer-{}", layer.digest()),
            total: layer.bytes.len() as u64,
            expected: Some(layer.digest()),
        };
        let mut writer = stores.content.writer("default", None, options).unwrap();
        writer.write(bytes).unwrap();
    };
    let half = first.layers[0].bytes.len() / 2;
    partial(&first, &first.layers[0].bytes[..half]);
    client
        .pull(
            "default",
            &registry.reference("first:latest"),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        stores.blob_bytes("default", &first.layers[0].digest()),
        first.layers[0].bytes
    );
    assert!(stores
        .content
        .list_statuses("default", &Filter::everything())
        .unwrap()
        .is_empty());

    // An ingest whose bytes went bad: the commit refuses it, it is dropped,
    // and the next pull starts clean.
    partial(&second, &vec![0xff; 4096]);
    let err = client
        .pull(
            "default",
            &registry.reference("second:latest"),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{}", err.message);
    assert!(!stores.has("default", &second.layers[0].digest()));
    assert!(stores
        .content
        .list_statuses("default", &Filter::everything())
        .unwrap()
        .is_empty());
    assert_eq!(
        stores
            .images
            .get("default", &registry.reference("second:latest"))
            .unwrap_err()
            .kind,
        ErrorKind::NotFound
    );
    client
        .pull(
            "default",
            &registry.reference("second:latest"),
            &PullOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        stores.blob_bytes("default", &second.layers[0].digest()),
        second.layers[0].bytes
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pulled_image_pushes_back_byte_for_byte() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start(&[]);
    let busybox = image("amd64", vec![layer("push"), note_layer("push")]);
    let blobs: Vec<&Blob> = busybox.layers.iter().chain([&busybox.config]).collect();
    let dir = layout(&busybox.manifest, &blobs);
    let source = registry.reference("source/busybox:latest");
    skopeo_push(dir.path(), &source, false, None);

    let stores = Stores::new();
    let client = stores.client(&[&registry.address]);
    client
        .pull("default", &source, &PullOptions::default())
        .await
        .unwrap();
    let destination = registry.reference("pushed/busybox:v1");
    let pushed = client
        .push("default", &source, &destination, &PushOptions::default())
        .await
        .unwrap();
    assert_eq!(pushed, busybox.manifest.digest());
    assert_eq!(skopeo_raw(&destination), skopeo_raw(&source));

    let again = client
        .pull("roundtrip", &destination, &PullOptions::default())
        .await
        .unwrap();
    assert_eq!(again.target.digest, pushed);
    assert_eq!(
        stores.blob_bytes("roundtrip", &busybox.layers[0].digest()),
        busybox.layers[0].bytes
    );

    let err = client
        .push(
            "default",
            "no/such:image",
            &destination,
            &PushOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound);
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_auth_is_required_and_used() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start(&[("alice", "s3cret")]);
    let busybox = image("amd64", vec![note_layer("auth")]);
    let blobs: Vec<&Blob> = busybox.layers.iter().chain([&busybox.config]).collect();
    let dir = layout(&busybox.manifest, &blobs);
    let tagged = registry.reference("private/busybox:latest");
    skopeo_push(dir.path(), &tagged, false, Some("alice:s3cret"));

    let stores = Stores::new();
    let client = stores.client(&[&registry.address]);
    let err = client
        .pull("default", &tagged, &PullOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{}", err.message);

    let wrong = PullOptions {
        credentials: Credentials::Basic {
            username: "alice".into(),
            password: "wrong".into(),
        },
        ..PullOptions::default()
    };
    assert!(client.pull("default", &tagged, &wrong).await.is_err());

    let options = PullOptions {
        credentials: Credentials::Basic {
            username: "alice".into(),
            password: "s3cret".into(),
        },
        ..PullOptions::default()
    };
    let pulled = client.pull("default", &tagged, &options).await.unwrap();
    assert_eq!(pulled.target.digest, busybox.manifest.digest());
    assert!(!format!("{:?}", options.credentials).contains("s3cret"));
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_tokens_are_fetched_with_the_credentials() {
    if !tools_present() {
        return;
    }
    if !Path::new("/usr/bin/openssl").exists() {
        eprintln!("skipped: needs /usr/bin/openssl to sign tokens");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tokens = super::token_server::TokenServer::start(dir.path(), "bob", "hunter2");
    let registry = Registry::start_with(dir, &super::token_server::registry_auth_config(&tokens));
    let busybox = image("amd64", vec![note_layer("bearer")]);
    let blobs: Vec<&Blob> = busybox.layers.iter().chain([&busybox.config]).collect();
    let layout_dir = layout(&busybox.manifest, &blobs);
    let tagged = registry.reference("tokened/busybox:latest");
    skopeo_push(layout_dir.path(), &tagged, false, Some("bob:hunter2"));

    let stores = Stores::new();
    let client = stores.client(&[&registry.address]);
    let err = client
        .pull("default", &tagged, &PullOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition, "{}", err.message);

    let options = PullOptions {
        credentials: Credentials::Basic {
            username: "bob".into(),
            password: "hunter2".into(),
        },
        ..PullOptions::default()
    };
    let pulled = client.pull("default", &tagged, &options).await.unwrap();
    assert_eq!(pulled.target.digest, busybox.manifest.digest());
    let push = PushOptions {
        credentials: options.credentials.clone(),
    };
    let destination = registry.reference("tokened/copy:v1");
    client
        .push("default", &tagged, &destination, &push)
        .await
        .unwrap();
    let again = client.pull("again", &destination, &options).await.unwrap();
    assert_eq!(again.target.digest, busybox.manifest.digest());
}

#[tokio::test(flavor = "multi_thread")]
async fn plain_http_only_for_listed_hosts() {
    if !tools_present() {
        return;
    }
    let registry = Registry::start(&[]);
    let stores = Stores::new();
    let err = stores
        .client(&[])
        .pull(
            "default",
            &registry.reference("any/image:latest"),
            &PullOptions::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::Unavailable, "{}", err.message);
}
