//! berthd's Docker API, system side, with the real docker CLIs (Debian's
//! docker.io 20.10 and the current one when installed): `docker version`
//! and `docker info` see Berth's engine, `/_ping` negotiates 1.41, the
//! socket is root's and goes away with the daemon, and bad requests get
//! dockerd's status codes and messages while berthd keeps answering.

#![allow(clippy::unwrap_used)]

mod docker_support;

use std::os::unix::fs::{FileTypeExt, MetadataExt};

use std::time::{SystemTime, UNIX_EPOCH};

use berth_integration::containerd::{image_archive, IMAGE};
use berth_integration::{wait_until, SECS10};
use docker_support::{clis, Berthd};
use serde_json::Value;

/// `secs.nanos`, as `docker events --since/--until` take them.
fn unix_time(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap();
    format!("{}.{:09}", since.as_secs(), since.subsec_nanos())
}

#[test]
fn docker_version_and_info_see_berths_engine() {
    let Some(daemon) = Berthd::start() else {
        return;
    };
    let clis = clis();
    assert!(
        !clis.is_empty(),
        "no docker CLI installed (hack/test installs docker.io)"
    );
    for cli in &clis {
        let api = daemon.ok(cli, &["version", "--format", "{{.Server.APIVersion}}"]);
        assert_eq!(api.trim(), "1.41", "{}", cli.name);
        let version = daemon.ok(cli, &["version"]);
        assert!(version.contains("Server: Berth"), "{}: {version}", cli.name);
        assert!(
            version.contains("minimum version 1.24"),
            "{}: {version}",
            cli.name
        );
        let client_api = daemon.ok(cli, &["version", "--format", "{{.Client.APIVersion}}"]);
        assert_eq!(
            client_api.trim(),
            "1.41",
            "{}: the client negotiates down",
            cli.name
        );

        let info = daemon.ok(
            cli,
            &[
                "info",
                "--format",
                "{{.Driver}}|{{.Images}}|{{.Containers}}|{{.DockerRootDir}}|{{.OSType}}|{{.DefaultRuntime}}|{{.CgroupDriver}}",
            ],
        );
        let root = daemon.root().display().to_string();
        assert_eq!(
            info.trim(),
            format!("overlayfs|0|0|{root}|linux|runc|cgroupfs"),
            "{}",
            cli.name
        );
        let text = daemon.ok(cli, &["info"]);
        for line in [
            "Storage Driver: overlayfs",
            "Docker Root Dir:",
            "Kernel Version:",
            "CPUs:",
        ] {
            assert!(
                text.contains(line),
                "{}: {line} missing from:\n{text}",
                cli.name
            );
        }
        let df = daemon.ok(
            cli,
            &["system", "df", "--format", "{{.Type}} {{.TotalCount}}"],
        );
        assert!(df.contains("Images 0"), "{}: {df}", cli.name);
    }
}

#[test]
fn the_socket_is_roots_and_ping_carries_the_negotiation_headers() {
    let Some(daemon) = Berthd::start() else {
        return;
    };
    let meta = std::fs::symlink_metadata(&daemon.docker_socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o660);
    assert_eq!((meta.uid(), meta.gid()), (0, 0));
    let (status, body) = daemon.http("GET", "/_ping", b"");
    assert_eq!((status, body.as_str()), (200, "OK"));
    let (status, _) = daemon.http("HEAD", "/v1.41/_ping", b"");
    assert_eq!(status, 200);
    let (status, body) = daemon.http("GET", "/v1.24/version", b"");
    assert_eq!(status, 200);
    let version: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(version["ApiVersion"], "1.41");
    assert_eq!(version["Components"][0]["Name"], "Engine");
    // Dropping the daemon checks both sockets are removed.
}

#[test]
fn bad_requests_get_dockerds_answers_and_berthd_keeps_serving() {
    let Some(daemon) = Berthd::start() else {
        return;
    };
    let still_up = |after: &str| {
        let (status, body) = daemon.http("GET", "/_ping", b"");
        assert_eq!(
            (status, body.as_str()),
            (200, "OK"),
            "berthd stopped answering after {after}"
        );
    };
    let message = |body: &str| -> String {
        let value: Value =
            serde_json::from_str(body).unwrap_or_else(|_| panic!("not JSON: {body}"));
        value["message"].as_str().unwrap().to_owned()
    };

    let (status, body) = daemon.http("GET", "/v1.99/version", b"");
    assert_eq!(status, 400);
    assert_eq!(
        message(&body),
        "client version 1.99 is too new. Maximum supported API version is 1.41"
    );
    still_up("a too-new version");

    let (status, body) = daemon.http("GET", "/v1.10/info", b"");
    assert_eq!(status, 400);
    assert!(message(&body).contains("is too old"), "{body}");
    still_up("a too-old version");

    let (status, body) = daemon.http("GET", "/v1.41/images/json?filters=%7Bnot-json", b"");
    assert_eq!(status, 400);
    assert!(message(&body).starts_with("invalid filters"), "{body}");
    still_up("malformed filters JSON");

    let (status, body) = daemon.http(
        "GET",
        "/v1.41/images/json?filters=%7B%22colour%22%3A%5B%22x%22%5D%7D",
        b"",
    );
    assert_eq!(
        (status, message(&body).as_str()),
        (400, "invalid filter 'colour'")
    );
    still_up("an unknown filter");

    let (status, body) = daemon.http(
        "GET",
        "/v1.41/images/json?filters=%7B%22dangling%22%3A%5B%22maybe%22%5D%7D",
        b"",
    );
    assert_eq!(status, 400, "{body}");
    still_up("an unknown filter value");

    let (status, body) = daemon.http("GET", "/v1.41/images/nosuch/json", b"");
    assert_eq!(
        (status, message(&body).as_str()),
        (404, "No such image: nosuch:latest")
    );
    still_up("an unknown image");

    let (status, body) = daemon.http("POST", "/v1.41/images/load", b"{\"this is\": not a tar");
    assert_eq!(status, 400, "{body}");
    assert!(message(&body).contains("docker load"), "{body}");
    still_up("a malformed archive");

    let (status, body) = daemon.http("GET", "/v1.41/no/such/endpoint", b"");
    assert_eq!((status, message(&body).as_str()), (404, "page not found"));

    let (status, body) = daemon.http("GET", "/v1.41/events?since=last-week", b"");
    assert_eq!(status, 400, "{body}");
    still_up("a bad since");

    for cli in clis() {
        let err = daemon.fails(&cli, &["image", "inspect", "nosuch"]);
        assert!(err.contains("No such image: nosuch"), "{}: {err}", cli.name);
        // The CLI words a 404 itself, from the name it was given.
        let err = daemon.fails(&cli, &["rmi", "nosuch"]);
        assert!(err.contains("No such image: nosuch"), "{}: {err}", cli.name);
        let err = daemon.fails(&cli, &["tag", "nosuch", "other:1"]);
        assert!(err.contains("No such image: nosuch"), "{}: {err}", cli.name);
        let err = daemon.fails(&cli, &["images", "--filter", "colour=red"]);
        assert!(
            err.contains("invalid filter 'colour'"),
            "{}: {err}",
            cli.name
        );
        still_up(cli.name);
    }
}

/// A container run through containerd's API in docker's namespace (as
/// docker's own containers will be) shows in `docker events`: its
/// create, start, die (with the exit code) and destroy, translated from
/// the events the containers service and the shim publish; `docker info`
/// counts it as running while it runs.
#[test]
fn container_lifecycle_events_reach_docker_events() {
    let Some(daemon) = Berthd::start() else {
        return;
    };
    if !std::path::Path::new("/usr/bin/ctr").exists() {
        eprintln!("skipped: /usr/bin/ctr (containerd) is not installed");
        return;
    }
    let clis = clis();
    let Some(cli) = clis.first() else {
        eprintln!("skipped: no docker CLI installed");
        return;
    };
    let since = unix_time(SystemTime::now());
    let loaded = daemon.ok(cli, &["load", "-i", image_archive().to_str().unwrap()]);
    assert_eq!(loaded, "Loaded image: berth-busybox:latest\n");
    let run = daemon.ctr(&["run", "--rm", IMAGE, "evented", "sh", "-c", "exit 3"]);
    assert_eq!(
        run.status.code(),
        Some(3),
        "ctr run: {}\n{}",
        String::from_utf8_lossy(&run.stderr),
        daemon.log()
    );
    let format = "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.image}} {{index .Actor.Attributes \"exitCode\"}}";
    let mut seen = String::new();
    // The shim's events travel to berthd on their own: wait for the last.
    let arrived = wait_until(SECS10, || {
        let until = unix_time(SystemTime::now());
        seen = daemon.ok(
            cli,
            &[
                "events",
                "--since",
                &since,
                "--until",
                &until,
                "--filter",
                "type=container",
                "--format",
                format,
            ],
        );
        seen.contains("destroy")
    });
    assert!(arrived, "no destroy event in:\n{seen}");
    let actions: Vec<&str> = seen.lines().map(|l| l.trim_end()).collect();
    assert_eq!(
        actions,
        [
            "container create evented berth-busybox:latest",
            "container start evented berth-busybox:latest",
            "container die evented berth-busybox:latest 3",
            "container destroy evented berth-busybox:latest",
        ]
    );

    // docker info counts docker's containers by state.
    let counts = |daemon: &Berthd| {
        daemon
            .ok(
                cli,
                &[
                    "info",
                    "--format",
                    "{{.Containers}} {{.ContainersRunning}} {{.ContainersPaused}} {{.ContainersStopped}}",
                ],
            )
            .trim()
            .to_owned()
    };
    daemon.ok(
        cli,
        &["run", "-d", "--name", "sleeper", IMAGE, "sleep", "1000"],
    );
    assert_eq!(counts(&daemon), "1 1 0 0");
    daemon.ok(cli, &["pause", "sleeper"]);
    assert_eq!(counts(&daemon), "1 0 1 0");
    daemon.ok(cli, &["unpause", "sleeper"]);
    daemon.ok(cli, &["kill", "sleeper"]);
    assert_eq!(counts(&daemon), "1 0 0 1");
    daemon.ok(cli, &["rm", "sleeper"]);
    let counts = daemon.ok(
        cli,
        &["info", "--format", "{{.Containers}} {{.ContainersRunning}}"],
    );
    assert_eq!(counts.trim(), "0 0");
    daemon.ok(cli, &["rmi", "berth-busybox"]);
}
