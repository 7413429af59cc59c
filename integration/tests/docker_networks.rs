//! Docker networks on berthd with the real docker CLIs: create (with a
//! subnet, labels), list with filters, inspect; containers on a
//! user-defined network reaching each other by name and alias; connecting
//! a running container to a second network and disconnecting it;
//! a stopped container connected joins at its next start; removal and
//! prune (networks in use and docker's own refused); bad requests; and no
//! bridge device left behind.

#![allow(clippy::unwrap_used)]

mod docker_support;

use docker_support::{Berthd, Cli};
use serde_json::Value;

const IMAGE: &str = "berth-busybox";

/// A /24 of this test process's own (test daemons in other processes get
/// 10.<100 + pid % 100>.<n>.0/24 for their default networks).
fn subnet(third: u8) -> String {
    format!("10.{}.{third}.0/24", 100 + std::process::id() % 100)
}

fn names(daemon: &Berthd, cli: &Cli, args: &[&str]) -> Vec<String> {
    let mut all = vec!["network", "ls", "--format", "{{.Name}}"];
    all.extend_from_slice(args);
    let mut names: Vec<String> = daemon.ok(cli, &all).lines().map(str::to_owned).collect();
    names.sort();
    names
}

fn bridge_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

#[test]
fn networks_connect_containers_by_name() {
    let Some((daemon, clis)) = Berthd::with_image() else {
        return;
    };

    for (round, cli) in clis.iter().enumerate() {
        let name = cli.name;
        let (front, back) = (subnet(200 + 2 * round as u8), subnet(201 + 2 * round as u8));
        assert_eq!(
            names(&daemon, cli, &[]),
            ["bridge", "host", "none"],
            "{name}"
        );
        let id = daemon.ok(
            cli,
            &[
                "network",
                "create",
                "--subnet",
                &front,
                "--label",
                "tier=front",
                "front",
            ],
        );
        let id = id.trim().to_owned();
        daemon.ok(cli, &["network", "create", "--subnet", &back, "back"]);
        assert_eq!(
            names(&daemon, cli, &["-f", "type=custom"]),
            ["back", "front"],
            "{name}"
        );
        assert_eq!(
            names(&daemon, cli, &["-f", "label=tier=front"]),
            ["front"],
            "{name}"
        );
        assert_eq!(
            names(&daemon, cli, &["-f", "name=fro"]),
            ["front"],
            "{name}"
        );
        let inspect: Value =
            serde_json::from_str(&daemon.ok(cli, &["network", "inspect", "front"])).unwrap();
        assert_eq!(inspect[0]["Id"], id.as_str());
        assert_eq!(inspect[0]["Driver"], "bridge");
        assert_eq!(inspect[0]["IPAM"]["Config"][0]["Subnet"], front.as_str());
        let bridge = format!("br-{}", &id[..12]);

        // Peers on a user-defined network reach each other by name and alias.
        daemon.ok(
            cli,
            &[
                "run",
                "-d",
                "--name",
                "web",
                "--network",
                "front",
                "--network-alias",
                "www",
                IMAGE,
                "sh",
                "-c",
                "while :; do echo hello | nc -l -p 80; done",
            ],
        );
        assert!(bridge_exists(&bridge), "{name}: {bridge}");
        for peer in ["web", "www"] {
            let out = daemon.ok(
                cli,
                &[
                    "run",
                    "--rm",
                    "--network",
                    "front",
                    IMAGE,
                    "sh",
                    "-c",
                    &format!("nc {peer} 80 </dev/null"),
                ],
            );
            assert_eq!(out, "hello\n", "{name}: {peer}");
        }
        let inspect: Value =
            serde_json::from_str(&daemon.ok(cli, &["network", "inspect", "front"])).unwrap();
        let members = inspect[0]["Containers"].as_object().unwrap();
        assert_eq!(members.len(), 1, "{name}: {inspect}");
        assert_eq!(members.values().next().unwrap()["Name"], "web");
        assert_eq!(
            names(&daemon, cli, &["-f", "dangling=true"]),
            ["back"],
            "{name}"
        );

        // A second network for the running container: eth1, its name
        // resolvable there; gone again after disconnect.
        daemon.ok(cli, &["network", "connect", "back", "web"]);
        let addresses = daemon.ok(cli, &["exec", "web", "ip", "-4", "-o", "addr"]);
        assert!(addresses.contains("eth1"), "{name}: {addresses}");
        let out = daemon.ok(
            cli,
            &[
                "run",
                "--rm",
                "--network",
                "back",
                IMAGE,
                "sh",
                "-c",
                "nc web 80 </dev/null",
            ],
        );
        assert_eq!(out, "hello\n", "{name}");
        let networks = daemon.ok(
            cli,
            &[
                "inspect",
                "-f",
                "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}",
                "web",
            ],
        );
        assert_eq!(networks.trim(), "back front", "{name}");
        daemon.ok(cli, &["network", "disconnect", "back", "web"]);
        let addresses = daemon.ok(cli, &["exec", "web", "ip", "-4", "-o", "addr"]);
        assert!(!addresses.contains("eth1"), "{name}: {addresses}");
        let refused = daemon.fails(cli, &["network", "disconnect", "back", "web"]);
        assert!(refused.contains("not connected"), "{name}: {refused}");

        // A stopped container connected joins at its next start.
        daemon.ok(
            cli,
            &[
                "create",
                "--name",
                "late",
                "--network",
                "front",
                IMAGE,
                "sleep",
                "100",
            ],
        );
        daemon.ok(cli, &["network", "connect", "back", "late"]);
        daemon.ok(cli, &["start", "late"]);
        let addresses = daemon.ok(cli, &["exec", "late", "ip", "-4", "-o", "addr"]);
        assert!(
            addresses.contains("eth0") && addresses.contains("eth1"),
            "{name}: {addresses}"
        );

        // In use: refused; docker's own networks: never.
        let refused = daemon.fails(cli, &["network", "rm", "front"]);
        assert!(refused.contains("active endpoints"), "{name}: {refused}");
        for builtin in ["bridge", "host", "none"] {
            let refused = daemon.fails(cli, &["network", "rm", builtin]);
            assert!(refused.contains("pre-defined"), "{name}: {refused}");
        }
        let refused = daemon.fails(cli, &["network", "connect", "back", "nonexistent"]);
        assert!(refused.contains("No such container"), "{name}: {refused}");
        daemon.ok(cli, &["rm", "-f", "web", "late"]);
        daemon.ok(
            cli,
            &[
                "network",
                "create",
                "--subnet",
                &subnet(220 + round as u8),
                "spare",
            ],
        );
        let pruned = daemon.ok(cli, &["network", "prune", "-f"]);
        for gone in ["front", "back", "spare"] {
            assert!(pruned.contains(gone), "{name}: {pruned}");
        }
        assert_eq!(
            names(&daemon, cli, &[]),
            ["bridge", "host", "none"],
            "{name}"
        );
        assert!(!bridge_exists(&bridge), "{name}: {bridge} left behind");
    }

    // Bad requests.
    let cli = &clis[0];
    daemon.ok(
        cli,
        &["network", "create", "--subnet", &subnet(230), "taken"],
    );
    let refused = daemon.fails(cli, &["network", "create", "taken"]);
    assert!(refused.contains("already exists"), "{refused}");
    let refused = daemon.fails(
        cli,
        &["network", "create", "--subnet", &subnet(230), "overlap"],
    );
    assert!(refused.contains("overlaps"), "{refused}");
    let refused = daemon.fails(
        cli,
        &["network", "create", "--subnet", "10.1.2.3/99", "badnet"],
    );
    assert!(refused.contains("subnet"), "{refused}");
    let refused = daemon.fails(cli, &["network", "create", "-d", "overlay", "ov"]);
    assert!(refused.contains("not found"), "{refused}");
    let refused = daemon.fails(cli, &["network", "create", "host"]);
    assert!(refused.contains("pre-defined"), "{refused}");
    let refused = daemon.fails(cli, &["run", "--rm", "--network", "nosuch", IMAGE, "true"]);
    assert!(refused.contains("network nosuch not found"), "{refused}");
    let (status, body) = daemon.http("GET", "/v1.41/containers/json?all=1", b"");
    assert_eq!(
        (status, body.trim()),
        (200, "[]"),
        "a refused create left a container"
    );
    daemon.ok(
        cli,
        &[
            "run",
            "-d",
            "--name",
            "hosted",
            "--network",
            "host",
            IMAGE,
            "sleep",
            "100",
        ],
    );
    let refused = daemon.fails(cli, &["network", "connect", "taken", "hosted"]);
    assert!(refused.contains("host network"), "{refused}");
    daemon.ok(cli, &["rm", "-f", "hosted"]);
    let (status, _) = daemon.http("GET", "/v1.41/networks/nosuch", b"");
    assert_eq!(status, 404);
    daemon.ok(cli, &["network", "rm", "taken"]);
}
