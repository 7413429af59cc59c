//! berthd's Docker API, image side, with the real docker CLIs (Debian's
//! docker.io 20.10, and the current one when installed), each against a
//! berthd and a docker-registry of its own: pull of an image put in the
//! registry through berthd's gRPC side, `images` (formatted), `image
//! inspect`, `tag`, `history`, `rmi` and its refusals, `push`, `save |
//! load` and `docker load` of hack/make-image's OCI archive, `image
//! prune`, `system df`, and `docker events --since/--until` replaying
//! what happened. At the end nothing is left: no snapshot, blob or ingest
//! of the removed images.

#![allow(clippy::unwrap_used)]

mod docker_support;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_integration::containerd::{image_archive, IMAGE};
use berth_integration::registry::Registry;
use berth_integration::throttle::ThrottledProxy;
use berth_integration::{wait_until, SECS10};
use docker_support::{cli, Berthd, Cli, CURRENT_CLI, DEBIAN_CLI};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

/// The members of a tar, by path (leading `./` dropped).
fn tar_members(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|entry| {
            let mut entry = entry.unwrap();
            let name = entry
                .path()
                .unwrap()
                .to_string_lossy()
                .trim_start_matches("./")
                .to_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            (name, data)
        })
        .collect()
}

/// What hack/make-image's archive holds: (manifest digest, config digest
/// = the docker image ID, the layer's diff ID).
struct Expected {
    manifest: String,
    id: String,
    diff_id: String,
}

fn expected_of(archive: &Path) -> Expected {
    let members = tar_members(archive);
    let member = |name: &str| -> Value {
        let data = &members.iter().find(|(n, _)| n == name).unwrap().1;
        serde_json::from_slice(data).unwrap()
    };
    let blob = |digest: &str| {
        member(&format!(
            "blobs/sha256/{}",
            digest.trim_start_matches("sha256:")
        ))
    };
    let index = member("index.json");
    let manifest = index["manifests"][0]["digest"].as_str().unwrap().to_owned();
    let id = blob(&manifest)["config"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    let diff_id = blob(&id)["rootfs"]["diff_ids"][0]
        .as_str()
        .unwrap()
        .to_owned();
    Expected {
        manifest,
        id,
        diff_id,
    }
}

/// A `docker save` archive of a one-layer image holding `/marker` with
/// `text`, tagged `tag` ("" for no tag). Returns its image ID.
fn tiny_docker_save(path: &Path, tag: &str, text: &str) -> String {
    docker_save_with(path, tag, text, &[])
}

/// [`tiny_docker_save`] whose layer also holds `/payload` (when not empty).
fn docker_save_with(path: &Path, tag: &str, text: &str, payload: &[u8]) -> String {
    let mut layer = tar::Builder::new(Vec::new());
    for (name, data) in [("marker", text.as_bytes()), ("payload", payload)] {
        if name == "payload" && data.is_empty() {
            continue;
        }
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(1_700_000_000);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(tar::EntryType::Regular);
        layer.append_data(&mut header, name, data).unwrap();
    }
    let layer = layer.into_inner().unwrap();
    let config = serde_json::to_vec(&json!({
        "architecture": match std::env::consts::ARCH { "x86_64" => "amd64", "aarch64" => "arm64", a => a },
        "os": "linux",
        "created": "2024-01-02T03:04:05Z",
        "config": { "Cmd": ["/marker"], "Labels": { "berth.test": text } },
        "rootfs": { "type": "layers", "diff_ids": [sha256(&layer)] },
        "history": [{ "created": "2024-01-02T03:04:05Z", "created_by": format!("marker {text}") }],
    }))
    .unwrap();
    let manifest = serde_json::to_vec(&json!([{
        "Config": "config.json",
        "RepoTags": if tag.is_empty() { json!([]) } else { json!([tag]) },
        "Layers": ["layer/layer.tar"],
    }]))
    .unwrap();
    let mut out = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in [
        ("config.json", &config),
        ("layer/layer.tar", &layer),
        ("manifest.json", &manifest),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        out.append_data(&mut header, name, data.as_slice()).unwrap();
    }
    out.into_inner().unwrap().flush().unwrap();
    sha256(&config)
}

/// `secs.nanos`, as `docker events --since/--until` take them.
fn unix_time(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", since.as_secs(), since.subsec_nanos())
}

/// The tags a docker-registry holds for `repository`.
fn registry_tags(registry: &Registry, repository: &str) -> Value {
    let mut stream = std::net::TcpStream::connect(&registry.address).unwrap();
    write!(
        stream,
        "GET /v2/{repository}/tags/list HTTP/1.0\r\nHost: {}\r\n\r\n",
        registry.address
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let body = response.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str::<Value>(body).unwrap()["tags"].clone()
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.trim().is_empty()).collect()
}

fn image_lifecycle(cli: &Cli) {
    let Some(registry) = Registry::start() else {
        return;
    };
    let Some(daemon) = Berthd::start() else {
        return;
    };
    let archive = image_archive();
    let expected = expected_of(archive);
    let id = expected.id.as_str();
    let short = &id["sha256:".len().."sha256:".len() + 12];
    let since = unix_time(SystemTime::now() - Duration::from_secs(1));

    // Into the registry through berthd's own transfer service, so the pull
    // below is all the Docker API's.
    let archive_arg = archive.to_str().unwrap();
    daemon.berthctl(&["-n", "seed", "images", "import", archive_arg]);
    let remote = format!("{}/berth/busybox:1", registry.address);
    daemon.berthctl(&[
        "-n",
        "seed",
        "images",
        "push",
        "--plain-http",
        IMAGE,
        &remote,
    ]);
    daemon.berthctl(&["-n", "seed", "images", "rm", "--sync", IMAGE]);

    // pull
    let pulled = daemon.ok(cli, &["pull", &remote]);
    for line in [
        "1: Pulling from berth/busybox".to_owned(),
        "Pull complete".to_owned(),
        format!("Digest: {}", expected.manifest),
        format!("Status: Downloaded newer image for {remote}"),
    ] {
        assert!(
            pulled.contains(&line),
            "{}: {line:?} not in:\n{pulled}",
            cli.name
        );
    }
    let again = daemon.ok(cli, &["pull", &remote]);
    assert!(
        again.contains(&format!("Status: Image is up to date for {remote}")),
        "{}: {again}",
        cli.name
    );

    // images, formatted and as the default table
    let listed = daemon.ok(
        cli,
        &[
            "images",
            "--format",
            "{{.Repository}}|{{.Tag}}|{{.ID}}|{{.Digest}}",
        ],
    );
    let repository = format!("{}/berth/busybox", registry.address);
    assert_eq!(
        lines(&listed),
        [format!("{repository}|1|{short}|{}", expected.manifest)],
        "{}",
        cli.name
    );
    let table = daemon.ok(cli, &["images"]);
    let rows = lines(&table);
    let header: Vec<&str> = rows[0]
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        header,
        ["REPOSITORY", "TAG", "IMAGE ID", "CREATED", "SIZE"],
        "{}",
        cli.name
    );
    let row: Vec<&str> = rows[1].split_whitespace().collect();
    assert_eq!(
        &row[..3],
        [repository.as_str(), "1", short],
        "{}: {table}",
        cli.name
    );

    // inspect
    let inspected = daemon.ok(
        cli,
        &[
            "image",
            "inspect",
            "--format",
            "{{.Id}}|{{.Os}}|{{.RootFS.Type}} {{json .RootFS.Layers}}|{{json .RepoTags}}|{{json .RepoDigests}}|{{json .Config.Cmd}}",
            &remote,
        ],
    );
    assert_eq!(
        inspected.trim(),
        format!(
            "{id}|linux|layers [\"{}\"]|[\"{remote}\"]|[\"{repository}@{}\"]|[\"sh\"]",
            expected.diff_id, expected.manifest
        ),
        "{}",
        cli.name
    );
    let by_digest = format!("{repository}@{}", expected.manifest);
    let digested = daemon.ok(
        cli,
        &["image", "inspect", "--format", "{{.Id}}", &by_digest],
    );
    assert_eq!(digested.trim(), id, "{}", cli.name);
    let full: Value = serde_json::from_str(&daemon.ok(cli, &["image", "inspect", short])).unwrap();
    assert_eq!(full[0]["Id"], id);
    assert!(full[0]["Size"].as_u64().unwrap() > 0, "{full}");

    // tag (by name and by ID), history
    daemon.ok(cli, &["tag", &remote, "mine/bb:v1"]);
    daemon.ok(cli, &["tag", short, "mine/bb:v2"]);
    let ids = daemon.ok(
        cli,
        &["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"],
    );
    let mut ids = lines(&ids);
    ids.sort();
    assert_eq!(
        ids,
        [
            format!("{remote} {short}"),
            format!("mine/bb:v1 {short}"),
            format!("mine/bb:v2 {short}")
        ],
        "{}",
        cli.name
    );
    let history = daemon.ok(
        cli,
        &[
            "history",
            "--format",
            "{{.ID}}|{{.CreatedBy}}",
            "mine/bb:v1",
        ],
    );
    assert_eq!(
        lines(&history),
        [format!("{short}|hack/make-image: busybox-static")],
        "{}",
        cli.name
    );

    // rmi: refused for an ID with several names, untag for one name
    let refused = daemon.fails(cli, &["rmi", short]);
    assert!(
        refused.contains(&format!("conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories")),
        "{}: {refused}",
        cli.name
    );
    assert_eq!(
        daemon.ok(cli, &["rmi", "mine/bb:v2"]),
        "Untagged: mine/bb:v2\n",
        "{}",
        cli.name
    );
    let bad_tag = daemon.fails(cli, &["tag", "mine/bb:v1", "Mine/BB:v3"]);
    assert!(
        bad_tag.contains("invalid reference format"),
        "{}: {bad_tag}",
        cli.name
    );

    // push
    let pushed_remote = format!("{}/berth/pushed:2", registry.address);
    daemon.ok(cli, &["tag", "mine/bb:v1", &pushed_remote]);
    let pushed = daemon.ok(cli, &["push", &pushed_remote]);
    assert!(
        pushed.contains(&format!(
            "The push refers to repository [{}/berth/pushed]",
            registry.address
        )) && pushed.contains(&format!("2: digest: {} size:", expected.manifest)),
        "{}: {pushed}",
        cli.name
    );
    assert_eq!(
        registry_tags(&registry, "berth/pushed"),
        json!(["2"]),
        "{}",
        cli.name
    );
    let missing = daemon.fails(
        cli,
        &["push", &format!("{}/berth/nothing:1", registry.address)],
    );
    assert!(
        missing.contains("does not exist locally"),
        "{}: {missing}",
        cli.name
    );

    // save | load, and save to a file, remove, load back
    let cli_path = cli.path.display();
    let piped = daemon.sh(&format!("{cli_path} save mine/bb:v1 | {cli_path} load"));
    assert_eq!(piped, "Loaded image: mine/bb:v1\n", "{}", cli.name);
    let saved = daemon.dir().join("saved.tar");
    daemon.ok(
        cli,
        &["save", "-o", saved.to_str().unwrap(), "mine/bb:v1", &remote],
    );
    let members: Vec<String> = tar_members(&saved).into_iter().map(|(n, _)| n).collect();
    assert!(
        members.contains(&"manifest.json".to_owned()) && members.contains(&"index.json".to_owned()),
        "{}: {members:?}",
        cli.name
    );
    let removed = daemon.ok(cli, &["rmi", "-f", short]);
    assert!(
        removed.contains(&format!("Deleted: {id}")),
        "{}: {removed}",
        cli.name
    );
    assert!(
        removed.contains("Untagged: mine/bb:v1"),
        "{}: {removed}",
        cli.name
    );
    assert_eq!(daemon.ok(cli, &["images", "-q"]), "", "{}", cli.name);
    let loaded = daemon.ok(cli, &["load", "-i", saved.to_str().unwrap()]);
    let mut loaded = lines(&loaded);
    loaded.sort();
    assert_eq!(
        loaded,
        [
            format!("Loaded image: {remote}"),
            "Loaded image: mine/bb:v1".to_owned()
        ],
        "{}",
        cli.name
    );
    let again = daemon.ok(
        cli,
        &["image", "inspect", "--format", "{{.Id}}", "mine/bb:v1"],
    );
    assert_eq!(again.trim(), id, "{}", cli.name);

    // A save still streaming when the image is removed (and the collector
    // runs) comes out whole: the export holds what it reads.
    let raced = daemon.dir().join("raced.tar");
    daemon.sh(&format!(
        "{cli_path} save mine/bb:v1 | (sleep 1; cat > {raced}) & sleep 0.3; \
         {cli_path} rmi -f mine/bb:v1 {remote} >/dev/null; wait",
        raced = raced.display()
    ));
    assert_eq!(daemon.ok(cli, &["images", "-q"]), "", "{}", cli.name);
    let loaded = daemon.ok(cli, &["load", "-i", raced.to_str().unwrap()]);
    assert!(
        loaded.contains("Loaded image: mine/bb:v1"),
        "{}: {loaded}",
        cli.name
    );
    let again = daemon.ok(
        cli,
        &["image", "inspect", "--format", "{{.Id}}", "mine/bb:v1"],
    );
    assert_eq!(again.trim(), id, "{}", cli.name);

    // hack/make-image's OCI layout loads too
    let oci = daemon.ok(cli, &["load", "-i", archive_arg]);
    assert_eq!(oci, "Loaded image: berth-busybox:latest\n", "{}", cli.name);

    // prune: a tag moved to another image leaves the first dangling
    let first = tiny_docker_save(&daemon.dir().join("a.tar"), "prunable:1", "a");
    let second = tiny_docker_save(&daemon.dir().join("b.tar"), "prunable:1", "b");
    for tar in ["a.tar", "b.tar"] {
        let path = daemon.dir().join(tar);
        let out = daemon.ok(cli, &["load", "-i", path.to_str().unwrap()]);
        assert_eq!(out, "Loaded image: prunable:1\n", "{}", cli.name);
    }
    let dangling = daemon.ok(
        cli,
        &[
            "images",
            "--filter",
            "dangling=true",
            "--quiet",
            "--no-trunc",
        ],
    );
    assert_eq!(lines(&dangling), [first.as_str()], "{}", cli.name);
    let labelled = daemon.ok(
        cli,
        &[
            "images",
            "--filter",
            "label=berth.test=b",
            "--format",
            "{{.ID}}",
        ],
    );
    assert_eq!(
        lines(&labelled),
        [&second["sha256:".len().."sha256:".len() + 12]],
        "{}",
        cli.name
    );
    let by_reference = daemon.ok(
        cli,
        &[
            "images",
            "--filter",
            "reference=mine/*",
            "--format",
            "{{.Tag}}",
        ],
    );
    assert_eq!(lines(&by_reference), ["v1"], "{}", cli.name);
    let pruned = daemon.ok(cli, &["image", "prune", "--force"]);
    assert!(
        pruned.contains(&format!("deleted: {first}")) && pruned.contains("Total reclaimed space"),
        "{}: {pruned}",
        cli.name
    );
    assert_eq!(
        daemon.ok(cli, &["images", "--filter", "dangling=true", "-q"]),
        "",
        "{}",
        cli.name
    );

    // system df: the busybox image (four names) and prunable:1
    let df = daemon.ok(
        cli,
        &["system", "df", "--format", "{{.Type}}|{{.TotalCount}}"],
    );
    assert!(lines(&df).contains(&"Images|2"), "{}: {df}", cli.name);
    let info = daemon.ok(cli, &["info", "--format", "{{.Images}}"]);
    assert_eq!(info.trim(), "2", "{}", cli.name);

    // events: everything above, replayed between --since and --until
    let until = unix_time(SystemTime::now());
    let events = daemon.ok(
        cli,
        &[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.ID}}",
        ],
    );
    for event in [
        format!("image pull {remote}"),
        format!("image tag {id}"),
        format!("image untag {id}"),
        format!("image push {pushed_remote}"),
        format!("image delete {id}"),
        format!("image delete {first}"),
        "image load mine/bb:v1".to_owned(),
        "image save mine/bb:v1".to_owned(),
    ] {
        assert!(
            events.contains(&event),
            "{}: {event:?} not in:\n{events}",
            cli.name
        );
    }
    let deletes = daemon.ok(
        cli,
        &[
            "events",
            "--since",
            &since,
            "--until",
            &until,
            "--filter",
            "event=delete",
            "--format",
            "{{.Actor.ID}}",
        ],
    );
    // The image is deleted twice (the second time while a save streams).
    assert_eq!(lines(&deletes), [id, id, first.as_str()], "{}", cli.name);

    // Remove everything: no snapshot, blob or ingest may stay.
    let all = daemon.ok(cli, &["images", "--quiet", "--no-trunc"]);
    let mut rmi = vec!["rmi", "--force"];
    rmi.extend(lines(&all));
    daemon.ok(cli, &rmi);
    assert_eq!(
        daemon.ok(cli, &["images", "--all", "--quiet"]),
        "",
        "{}",
        cli.name
    );
    let left = || {
        let mut left = daemon.files_under("snapshotter/overlayfs/snapshots");
        left.extend(daemon.files_under("content"));
        left
    };
    assert!(
        wait_until(SECS10, || left().is_empty()),
        "{}: left behind: {:?}",
        cli.name,
        left()
    );
    let snapshots = std::fs::read_dir(daemon.root().join("snapshotter/overlayfs/snapshots"))
        .unwrap()
        .count();
    assert_eq!(snapshots, 0, "{}: snapshot directories left", cli.name);
}

#[test]
fn image_lifecycle_with_debians_docker_20_10() {
    if let Some(cli) = cli(DEBIAN_CLI, "docker.io 20.10") {
        image_lifecycle(&cli);
    }
}

#[test]
fn image_lifecycle_with_the_current_docker_cli() {
    if let Some(cli) = cli(CURRENT_CLI, "docker 28") {
        image_lifecycle(&cli);
    }
}

/// An image a container (made through containerd's API in the `moby`
/// namespace, as containers will be) uses: `rmi` is refused with
/// dockerd's conflict messages, `rmi -f` only takes its names, and once
/// the container is gone `image prune` removes it. A pull of what the
/// registry lacks fails with its message.
#[test]
fn an_image_in_use_is_kept_and_failed_pulls_say_why() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let Some(daemon) = Berthd::start() else {
        return;
    };
    let ctr = Path::new("/usr/bin/ctr");
    for cli in docker_support::clis() {
        let missing = format!("{}/berth/nothing:1", registry.address);
        let err = daemon.fails(&cli, &["pull", &missing]);
        assert!(err.contains("manifest unknown"), "{}: {err}", cli.name);
        // An archive that names no image loads as a dangling one.
        let unnamed_tar = daemon.dir().join("unnamed.tar");
        let unnamed = tiny_docker_save(&unnamed_tar, "", "unnamed");
        let loaded = daemon.ok(&cli, &["load", "-i", unnamed_tar.to_str().unwrap()]);
        assert_eq!(
            loaded,
            format!("Loaded image ID: {unnamed}\n"),
            "{}",
            cli.name
        );
        let dangling = daemon.ok(
            &cli,
            &[
                "images",
                "--filter",
                "dangling=true",
                "--quiet",
                "--no-trunc",
            ],
        );
        assert_eq!(lines(&dangling), [unnamed.as_str()], "{}", cli.name);
        let removed = daemon.ok(&cli, &["rmi", &unnamed]);
        assert_eq!(removed, format!("Deleted: {unnamed}\n"), "{}", cli.name);

        let unreachable = daemon.fails(&cli, &["pull", "127.0.0.1:1/berth/nothing:1"]);
        assert!(
            unreachable.contains("127.0.0.1:1"),
            "{}: {unreachable}",
            cli.name
        );

        if !ctr.exists() {
            eprintln!(
                "skipped: {} (containerd's ctr) is not installed",
                ctr.display()
            );
            continue;
        }
        let loaded = daemon.ok(&cli, &["load", "-i", image_archive().to_str().unwrap()]);
        assert_eq!(
            loaded, "Loaded image: berth-busybox:latest\n",
            "{}",
            cli.name
        );
        let id = daemon.ok(
            &cli,
            &["image", "inspect", "--format", "{{.Id}}", "berth-busybox"],
        );
        let id = id.trim();
        let short = &id["sha256:".len().."sha256:".len() + 12];
        let ctr_ok = |args: &[&str]| {
            let out = std::process::Command::new(ctr)
                .arg("--address")
                .arg(daemon.socket())
                .args(["--namespace", "moby"])
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ctr {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ctr_ok(&["containers", "create", IMAGE, "user"]);

        let err = daemon.fails(&cli, &["rmi", "berth-busybox"]);
        assert!(
            err.contains(&format!(
                "conflict: unable to remove repository reference \"berth-busybox\" (must force) - container user is using its referenced image {short}"
            )),
            "{}: {err}",
            cli.name
        );
        let err = daemon.fails(&cli, &["rmi", short]);
        assert!(
            err.contains("image is being used by stopped container user"),
            "{}: {err}",
            cli.name
        );
        let forced = daemon.ok(&cli, &["rmi", "--force", "berth-busybox"]);
        assert!(
            forced.contains("Untagged: berth-busybox:latest"),
            "{}: {forced}",
            cli.name
        );
        assert!(!forced.contains("Deleted"), "{}: {forced}", cli.name);
        let kept = daemon.ok(
            &cli,
            &[
                "images",
                "--all",
                "--format",
                "{{.Repository}}:{{.Tag}} {{.ID}}",
            ],
        );
        assert_eq!(
            lines(&kept),
            [format!("<none>:<none> {short}")],
            "{}",
            cli.name
        );
        // Still in use: prune leaves it.
        let pruned = daemon.ok(&cli, &["image", "prune", "--force"]);
        assert!(!pruned.contains(id), "{}: {pruned}", cli.name);

        ctr_ok(&["containers", "rm", "user"]);
        let pruned = daemon.ok(&cli, &["image", "prune", "--force"]);
        assert!(
            pruned.contains(&format!("deleted: {id}")),
            "{}: {pruned}",
            cli.name
        );
        assert_eq!(
            daemon.ok(&cli, &["images", "--all", "--quiet"]),
            "",
            "{}",
            cli.name
        );
    }
    assert!(
        wait_until(SECS10, || daemon.files_under("content").is_empty()),
        "blobs left: {:?}",
        daemon.files_under("content")
    );
}

/// Bytes that do not compress, `len` of them.
fn incompressible(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Kills the client `who` of a pull in progress; berthd must then stop the
/// pull and keep nothing of it.
fn hang_up(daemon: &Berthd, mut pull: std::process::Child, who: &str) {
    pull.kill().unwrap();
    pull.wait().unwrap();
    let left = || daemon.files_under("content");
    assert!(
        wait_until(SECS10, || left().is_empty()),
        "{who}: the pull went on, or left {:?}\n{}",
        left(),
        daemon.log()
    );
}

/// A client that hangs up during a pull (ctrl-c, a killed CLI) cancels
/// it, as with dockerd: the download stops, its ingest is aborted, no
/// image is named and nothing is left. The registry is behind a proxy
/// that sends 1 MiB a second, so the 24 MiB layer would take 24 s.
#[test]
fn a_pull_whose_client_hangs_up_is_cancelled() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let Some(mut daemon) = Berthd::start() else {
        return;
    };
    let archive = daemon.dir().join("big.tar");
    docker_save_with(&archive, "berth/big:1", "big", &incompressible(24 << 20));
    daemon.berthctl(&["-n", "seed", "images", "import", archive.to_str().unwrap()]);
    let image = "docker.io/berth/big:1";
    let remote = format!("{}/berth/big:1", registry.address);
    daemon.berthctl(&[
        "-n",
        "seed",
        "images",
        "push",
        "--plain-http",
        image,
        &remote,
    ]);
    daemon.berthctl(&["-n", "seed", "images", "rm", "--sync", image]);
    let proxy = ThrottledProxy::start(&registry.address, 1 << 20);
    let slow = format!("{}/berth/big:1", proxy.address);

    for cli in docker_support::clis() {
        let mut pull = daemon
            .docker_cmd(&cli, &["pull", &slow])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // The layer is on its way once the CLI shows it.
        let mut shown = String::new();
        let mut stdout = std::io::BufReader::new(pull.stdout.take().unwrap());
        while !shown.contains("Pulling fs layer") {
            let mut line = String::new();
            let read = std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
            assert!(read > 0, "{}: the pull ended early: {shown}", cli.name);
            shown.push_str(&line);
        }
        std::thread::sleep(Duration::from_secs(1));
        hang_up(&daemon, pull, cli.name);
        assert_eq!(
            daemon.ok(&cli, &["images", "--all", "--quiet"]),
            "",
            "{}",
            cli.name
        );
        assert!(
            daemon.log().contains("cancelled"),
            "{}: {}",
            cli.name,
            daemon.log()
        );
    }

    // The same through containerd's transfer service, with berthctl.
    let pull = daemon
        .daemon_mut()
        .berthctl_cmd(&["-n", "hangup", "images", "pull", "--plain-http", &slow])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    hang_up(&daemon, pull, "berthctl");
    assert_eq!(
        daemon
            .berthctl(&["-n", "hangup", "images", "ls", "--format", "json"])
            .trim(),
        "[]",
        "berthctl"
    );
}
