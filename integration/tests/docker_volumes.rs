//! Docker volumes on berthd with the real docker CLIs: create, list
//! (with filters), inspect, remove and prune; containers mounting named
//! volumes (data outliving the container, a volume filled from the image
//! once, `nocopy`, read-only, `--mount`), anonymous volumes (removed by
//! `--rm` and `rm -v`, kept by a plain `rm`), a volume in use refused
//! removal, bad requests; `system df`; and nothing left on disk.

#![allow(clippy::unwrap_used)]

mod docker_support;

use docker_support::Berthd;
use serde_json::Value;

const IMAGE: &str = "berth-busybox";

fn volume_names(daemon: &Berthd, cli: &docker_support::Cli, args: &[&str]) -> Vec<String> {
    let mut all = vec!["volume", "ls", "-q"];
    all.extend_from_slice(args);
    let mut names: Vec<String> = daemon.ok(cli, &all).lines().map(str::to_owned).collect();
    names.sort();
    names
}

#[test]
fn volumes_are_made_listed_mounted_and_removed() {
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };
    let volumes_dir = daemon.root().join("volumes");

    for cli in &clis {
        let name = cli.name;
        assert_eq!(daemon.ok(cli, &["volume", "create", "data"]).trim(), "data");
        daemon.ok(cli, &["volume", "create", "--label", "team=a", "labelled"]);
        let anonymous = daemon.ok(cli, &["volume", "create"]);
        let anonymous = anonymous.trim();
        assert_eq!(anonymous.len(), 64, "{name}: a generated name");
        let mut expected = vec![
            "data".to_owned(),
            "labelled".to_owned(),
            anonymous.to_owned(),
        ];
        expected.sort();
        assert_eq!(volume_names(&daemon, cli, &[]), expected, "{name}");
        assert_eq!(
            volume_names(&daemon, cli, &["-f", "label=team=a"]),
            ["labelled"]
        );
        assert_eq!(volume_names(&daemon, cli, &["-f", "name=dat"]), ["data"]);
        let inspect: Value =
            serde_json::from_str(&daemon.ok(cli, &["volume", "inspect", "labelled"])).unwrap();
        assert_eq!(inspect[0]["Driver"], "local");
        assert_eq!(inspect[0]["Labels"]["team"], "a");
        let mountpoint = inspect[0]["Mountpoint"].as_str().unwrap().to_owned();
        assert!(
            std::path::Path::new(&mountpoint).is_dir(),
            "{name}: {mountpoint}"
        );

        // Data outlives the container that wrote it.
        daemon.ok(
            cli,
            &[
                "run",
                "--rm",
                "-v",
                "data:/data",
                IMAGE,
                "sh",
                "-c",
                "echo kept > /data/f",
            ],
        );
        assert_eq!(
            daemon.ok(
                cli,
                &[
                    "run",
                    "--rm",
                    "-v",
                    "data:/data:ro",
                    IMAGE,
                    "cat",
                    "/data/f"
                ]
            ),
            "kept\n"
        );
        let out = daemon.docker(
            cli,
            &[
                "run",
                "--rm",
                "-v",
                "data:/data:ro",
                IMAGE,
                "touch",
                "/data/g",
            ],
        );
        assert!(
            !out.status.success(),
            "{name}: a read-only volume took a write"
        );
        assert_eq!(
            daemon.ok(
                cli,
                &[
                    "run",
                    "--rm",
                    "--mount",
                    "type=volume,src=data,dst=/m",
                    IMAGE,
                    "cat",
                    "/m/f"
                ]
            ),
            "kept\n"
        );

        // An empty volume gets the image's files at its destination, once.
        let etc = daemon.ok(
            cli,
            &["run", "--rm", "-v", "etc:/etc", IMAGE, "cat", "/etc/group"],
        );
        assert!(etc.contains("root"), "{name}: {etc}");
        let listed = daemon.ok(cli, &["run", "--rm", "-v", "etc:/mnt", IMAGE, "ls", "/mnt"]);
        assert!(
            listed.contains("group"),
            "{name}: filled from the image: {listed}"
        );
        daemon.ok(
            cli,
            &["run", "--rm", "-v", "etc:/etc", IMAGE, "rm", "/etc/group"],
        );
        let listed = daemon.ok(cli, &["run", "--rm", "-v", "etc:/etc", IMAGE, "ls", "/etc"]);
        assert!(!listed.contains("group"), "{name}: filled again: {listed}");
        let listed = daemon.ok(
            cli,
            &[
                "run",
                "--rm",
                "-v",
                "empty:/etc:nocopy",
                IMAGE,
                "ls",
                "/etc",
            ],
        );
        assert!(!listed.contains("group"), "{name}: nocopy: {listed}");

        // Anonymous volumes: --rm and rm -v take them along, rm keeps them.
        let before = volume_names(&daemon, cli, &[]);
        daemon.ok(cli, &["run", "--rm", "-v", "/scratch", IMAGE, "true"]);
        assert_eq!(volume_names(&daemon, cli, &[]), before, "{name}: --rm");
        daemon.ok(
            cli,
            &["create", "--name", "anon", "-v", "/scratch", IMAGE, "true"],
        );
        assert_eq!(volume_names(&daemon, cli, &[]).len(), before.len() + 1);
        daemon.ok(cli, &["rm", "-v", "anon"]);
        assert_eq!(volume_names(&daemon, cli, &[]), before, "{name}: rm -v");
        daemon.ok(
            cli,
            &["create", "--name", "anon", "-v", "/scratch", IMAGE, "true"],
        );
        daemon.ok(cli, &["rm", "anon"]);
        assert_eq!(
            volume_names(&daemon, cli, &[]).len(),
            before.len() + 1,
            "{name}: rm"
        );

        // In use: refused, forced or not; dangling tells users apart.
        daemon.ok(
            cli,
            &[
                "run",
                "-d",
                "--name",
                "user",
                "-v",
                "data:/data",
                IMAGE,
                "sleep",
                "100",
            ],
        );
        let refused = daemon.fails(cli, &["volume", "rm", "data"]);
        assert!(refused.contains("volume is in use"), "{name}: {refused}");
        let refused = daemon.fails(cli, &["volume", "rm", "-f", "data"]);
        assert!(refused.contains("volume is in use"), "{name}: {refused}");
        assert!(!volume_names(&daemon, cli, &["-f", "dangling=true"]).contains(&"data".to_owned()));
        assert_eq!(
            volume_names(&daemon, cli, &["-f", "dangling=false"]),
            ["data"]
        );
        let df = daemon.ok(cli, &["system", "df", "-v"]);
        assert!(df.contains("data"), "{name}: {df}");

        // Prune takes every unused volume (API 1.41), not the one in use.
        let pruned = daemon.ok(cli, &["volume", "prune", "-f"]);
        assert!(
            pruned.contains("labelled") && !pruned.contains("data\n"),
            "{name}: {pruned}"
        );
        assert_eq!(volume_names(&daemon, cli, &[]), ["data"], "{name}");
        daemon.ok(cli, &["rm", "-f", "user"]);
        daemon.ok(cli, &["volume", "rm", "data"]);
        assert!(volume_names(&daemon, cli, &[]).is_empty(), "{name}");
    }
    let left: Vec<_> = std::fs::read_dir(&volumes_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(left.is_empty(), "left on disk: {left:?}");

    // Bad requests.
    let cli = &clis[0];
    let refused = daemon.fails(cli, &["volume", "create", "bad/name"]);
    assert!(refused.contains("invalid characters"), "{refused}");
    let refused = daemon.fails(cli, &["volume", "create", "-d", "nfs", "x1"]);
    assert!(refused.contains("plugin"), "{refused}");
    let (status, body) = daemon.http(
        "POST",
        "/v1.41/volumes/create",
        br#"{"Name":"opts","DriverOpts":{"type":"tmpfs"}}"#,
    );
    assert_eq!(status, 501, "{body}");
    let (status, body) = daemon.http("GET", "/v1.41/volumes/no-such", b"");
    assert_eq!(status, 404, "{body}");
    let (status, _) = daemon.http("DELETE", "/v1.41/volumes/no-such", b"");
    assert_eq!(status, 404);
    let (status, _) = daemon.http("DELETE", "/v1.41/volumes/no-such?force=1", b"");
    assert_eq!(status, 204);
    let refused = daemon.fails(cli, &["run", "--rm", "-v", "bad/name:/x", IMAGE, "true"]);
    assert!(!refused.is_empty());
    assert!(
        std::fs::read_dir(&volumes_dir).unwrap().next().is_none(),
        "a failed create left a volume"
    );
}
