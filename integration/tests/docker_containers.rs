//! Docker containers on berthd with the real docker CLIs (Debian's
//! docker.io 20.10 and the current one when installed): the lifecycle of
//! a detached container (ps, inspect, pause, stop, start, restart, kill,
//! rename, rm), exit codes through `docker wait`, restart policies across
//! a berthd crash, a create and a start cut short by one, the memory
//! limit and its OOM kill, the default security and its switches,
//! `--cgroup-parent`, bad input with dockerd's status codes, and nothing
//! left behind.

#![allow(clippy::unwrap_used)]

mod docker_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_integration::wait_until;
use docker_support::{Berthd, Cli};
use serde_json::Value;

/// The image hack/make-image builds, as `docker load` names it.
const IMAGE: &str = "berth-busybox";

fn start() -> Option<(Berthd, Vec<Cli>)> {
    Berthd::with_image()
}

fn inspect(daemon: &Berthd, cli: &Cli, name: &str) -> Value {
    let text = daemon.ok(cli, &["inspect", name]);
    let all: Value = serde_json::from_str(&text).unwrap();
    all[0].clone()
}

/// What the container wrote, from its json-file log (`LogPath`), once it
/// has exited.
fn output(daemon: &Berthd, cli: &Cli, name: &str) -> String {
    daemon.ok(cli, &["wait", name]);
    let path = PathBuf::from(inspect(daemon, cli, name)["LogPath"].as_str().unwrap());
    log_text(&path)
}

fn log_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|line| {
            let entry: Value = serde_json::from_str(line).unwrap();
            entry["log"].as_str().unwrap().to_owned()
        })
        .collect()
}

/// The network namespaces and container cgroups berthd still holds.
fn docker_leaks(daemon: &Berthd) -> Vec<String> {
    let mut found = Vec::new();
    let netns = daemon.dir().join("state/network/netns");
    for entry in std::fs::read_dir(&netns).into_iter().flatten().flatten() {
        found.push(format!("netns {}", entry.path().display()));
    }
    // Other daemons (tests running beside this one) have cgroups under
    // moby/ too: only those of tasks this daemon made (its log names each
    // one its shim created) count.
    let log = daemon.log();
    for controller in ["memory", "pids", "cpu", "unified"] {
        let dir = Path::new("/sys/fs/cgroup").join(controller).join("moby");
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir())
                && log.contains(&format!("create {name} "))
            {
                found.push(format!("cgroup {}", entry.path().display()));
            }
        }
    }
    for entry in std::fs::read_dir(daemon.root().join("docker/containers"))
        .into_iter()
        .flatten()
        .flatten()
    {
        found.push(format!("container dir {}", entry.path().display()));
    }
    found
}

fn assert_clean(daemon: &Berthd) {
    let clean = wait_until(Duration::from_secs(10), || docker_leaks(daemon).is_empty());
    assert!(
        clean,
        "left behind: {:?}\n{}",
        docker_leaks(daemon),
        daemon.log()
    );
}

#[test]
fn a_detached_container_lives_and_dies_as_docker_says() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    for cli in &clis {
        let id = daemon
            .ok(
                cli,
                &[
                    "run",
                    "-d",
                    "--name",
                    "life",
                    "--label",
                    "tier=web",
                    IMAGE,
                    "sh",
                    "-c",
                    "echo out; echo err >&2; sleep 300",
                ],
            )
            .trim()
            .to_owned();
        assert_eq!(id.len(), 64, "{}: {id}", cli.name);
        let listed = daemon.ok(
            cli,
            &[
                "ps",
                "--filter",
                "label=tier=web",
                "--format",
                "{{.ID}} {{.Names}} {{.Status}} {{.Command}}",
            ],
        );
        assert!(listed.starts_with(&id[..12]), "{}: {listed}", cli.name);
        assert!(listed.contains(" life Up "), "{}: {listed}", cli.name);
        assert!(
            listed.contains("\"sh -c echo out"),
            "{}: {listed}",
            cli.name
        );

        let info = inspect(&daemon, cli, "life");
        assert_eq!(info["Id"], id.as_str());
        assert_eq!(info["Name"], "/life");
        assert_eq!(info["State"]["Status"], "running");
        assert_eq!(info["Config"]["Labels"]["tier"], "web");
        assert_eq!(info["Config"]["Hostname"], &id[..12]);
        assert_eq!(info["Path"], "sh");
        let pid = info["State"]["Pid"].as_u64().unwrap();
        assert!(Path::new(&format!("/proc/{pid}")).exists(), "{}", cli.name);
        assert!(
            info["NetworkSettings"]["Networks"]["bridge"]["IPAddress"]
                .as_str()
                .is_some_and(|ip| ip.parse::<std::net::Ipv4Addr>().is_ok()),
            "{}: {}",
            cli.name,
            info["NetworkSettings"]
        );
        let log = PathBuf::from(info["LogPath"].as_str().unwrap());
        assert!(
            wait_until(Duration::from_secs(10), || log_text(&log) == "out\nerr\n"
                || log_text(&log) == "err\nout\n"),
            "{}: {:?}",
            cli.name,
            log_text(&log)
        );

        daemon.ok(cli, &["pause", "life"]);
        let paused = daemon.ok(
            cli,
            &[
                "ps",
                "--filter",
                "status=paused",
                "--format",
                "{{.Names}} {{.Status}}",
            ],
        );
        assert!(
            paused.trim_end().ends_with("(Paused)"),
            "{}: {paused}",
            cli.name
        );
        let err = daemon.fails(cli, &["pause", "life"]);
        assert!(err.contains("is already paused"), "{}: {err}", cli.name);
        daemon.ok(cli, &["unpause", "life"]);

        // sleep as pid 1 ignores SIGTERM: the stop ends in SIGKILL.
        daemon.ok(cli, &["stop", "-t", "1", "life"]);
        let info = inspect(&daemon, cli, "life");
        assert_eq!(info["State"]["Status"], "exited");
        assert_eq!(info["State"]["ExitCode"], 137);
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
        let listed = daemon.ok(cli, &["ps", "--format", "{{.Names}}"]);
        assert!(!listed.contains("life"), "{}: {listed}", cli.name);
        let listed = daemon.ok(
            cli,
            &[
                "ps",
                "-a",
                "--filter",
                "exited=137",
                "--format",
                "{{.Names}} {{.Status}}",
            ],
        );
        assert!(
            listed.starts_with("life Exited (137)"),
            "{}: {listed}",
            cli.name
        );

        daemon.ok(cli, &["start", "life"]);
        let first = inspect(&daemon, cli, "life")["State"]["Pid"]
            .as_u64()
            .unwrap();
        daemon.ok(cli, &["restart", "-t", "0", "life"]);
        let second = inspect(&daemon, cli, "life");
        assert_eq!(second["State"]["Status"], "running");
        assert_ne!(second["State"]["Pid"].as_u64().unwrap(), first);

        // Limits change on the running container, and stay in its record.
        daemon.ok(
            cli,
            &[
                "update",
                "--memory",
                "32m",
                "--memory-swap",
                "64m",
                "--restart",
                "on-failure:3",
                "life",
            ],
        );
        let limit = std::fs::read_to_string(format!(
            "/sys/fs/cgroup/memory/moby/{id}/memory.limit_in_bytes"
        ));
        if let Ok(limit) = limit {
            assert_eq!(limit.trim(), (32 << 20).to_string(), "{}", cli.name);
        }
        let info = inspect(&daemon, cli, "life");
        assert_eq!(info["HostConfig"]["Memory"], 32 << 20);
        assert_eq!(info["HostConfig"]["RestartPolicy"]["Name"], "on-failure");
        assert_eq!(info["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
        let err = daemon.fails(cli, &["update", "--memory", "1k", "life"]);
        assert!(err.contains("Minimum memory limit"), "{}: {err}", cli.name);

        daemon.ok(cli, &["rename", "life", "renamed"]);
        let err = daemon.fails(cli, &["inspect", "life"]);
        assert!(err.contains("No such"), "{}: {err}", cli.name);
        daemon.ok(cli, &["kill", "renamed"]);
        assert_eq!(daemon.ok(cli, &["wait", "renamed"]).trim(), "137");
        let err = daemon.fails(cli, &["kill", "renamed"]);
        assert!(err.contains("is not running"), "{}: {err}", cli.name);
        daemon.ok(cli, &["rm", "renamed"]);
        assert_eq!(daemon.ok(cli, &["ps", "-aq"]), "");
        assert_clean(&daemon);
    }
}

#[test]
fn exit_codes_waits_and_removal() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    for cli in &clis {
        daemon.ok(
            cli,
            &["run", "-d", "--name", "seven", IMAGE, "sh", "-c", "exit 7"],
        );
        assert_eq!(
            daemon.ok(cli, &["wait", "seven"]).trim(),
            "7",
            "{}",
            cli.name
        );
        let info = inspect(&daemon, cli, "seven");
        assert_eq!(info["State"]["ExitCode"], 7);
        assert_ne!(info["State"]["FinishedAt"], "0001-01-01T00:00:00Z");

        daemon.ok(cli, &["create", "--name", "made", IMAGE, "true"]);
        let listed = daemon.ok(
            cli,
            &[
                "ps",
                "-a",
                "--filter",
                "status=created",
                "--format",
                "{{.Names}}",
            ],
        );
        assert_eq!(listed, "made\n", "{}", cli.name);

        daemon.ok(cli, &["run", "-d", "--name", "busy", IMAGE, "sleep", "300"]);
        let err = daemon.fails(cli, &["rm", "busy"]);
        assert!(
            err.contains("You cannot remove a running container"),
            "{}: {err}",
            cli.name
        );
        daemon.ok(cli, &["rm", "-f", "busy"]);

        // --rm: the container is gone once it has exited.
        daemon.ok(
            cli,
            &["run", "-d", "--rm", "--name", "brief", IMAGE, "true"],
        );
        assert!(
            wait_until(Duration::from_secs(10), || daemon
                .ok(cli, &["ps", "-a", "--format", "{{.Names}}"])
                .lines()
                .all(|n| n != "brief")),
            "{}: --rm left the container",
            cli.name
        );

        let pruned = daemon.ok(cli, &["container", "prune", "-f"]);
        assert!(
            pruned.contains("Deleted Containers"),
            "{}: {pruned}",
            cli.name
        );
        assert_eq!(daemon.ok(cli, &["ps", "-aq"]), "", "{}", cli.name);
        assert_clean(&daemon);
    }
}

#[test]
fn bad_input_gets_dockerds_answers_and_leaves_nothing() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    let create = |name: &str, body: &str| {
        daemon.http(
            "POST",
            &format!("/containers/create?name={name}"),
            body.as_bytes(),
        )
    };
    let (status, body) = create("x1", r#"{"Image":"no-such-image"}"#);
    assert_eq!(
        (status, body.contains("No such image: no-such-image")),
        (404, true),
        "{body}"
    );
    let (status, body) = create("x2", r#"{"Image": "#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = create("-bad", r#"{"Image":"berth-busybox"}"#);
    assert_eq!(
        (status, body.contains("Invalid container name")),
        (400, true),
        "{body}"
    );
    let (status, body) = create(
        "x3",
        r#"{"Image":"berth-busybox","HostConfig":{"RestartPolicy":{"Name":"always","MaximumRetryCount":3}}}"#,
    );
    assert_eq!(
        (status, body.contains("maximum retry count")),
        (400, true),
        "{body}"
    );
    let (status, body) = create(
        "x4",
        r#"{"Image":"berth-busybox","HostConfig":{"Memory":1024}}"#,
    );
    assert_eq!(
        (status, body.contains("Minimum memory limit")),
        (400, true),
        "{body}"
    );
    let (status, body) = create(
        "x5",
        r#"{"Image":"berth-busybox","HostConfig":{"Binds":["relative:dir"]}}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = create(
        "x6",
        r#"{"Image":"berth-busybox","HostConfig":{"LogConfig":{"Type":"syslog"}}}"#,
    );
    assert_eq!((status, body.contains("syslog")), (400, true), "{body}");
    let (status, body) = create(
        "x7",
        r#"{"Image":"berth-busybox","HostConfig":{"CapAdd":["NOT_A_CAP"]}}"#,
    );
    // Capabilities are checked when the spec is built, at start.
    assert_eq!(status, 201, "{body}");
    let (status, body) = daemon.http("POST", "/containers/x7/start", b"");
    assert_eq!(
        (status, body.contains("CAP_NOT_A_CAP")),
        (400, true),
        "{body}"
    );
    let (status, _) = daemon.http("DELETE", "/containers/x7", b"");
    assert_eq!(status, 204);
    for (method, path) in [
        ("GET", "/containers/nope/json"),
        ("POST", "/containers/nope/start"),
        ("POST", "/containers/nope/stop"),
        ("POST", "/containers/nope/wait"),
        ("DELETE", "/containers/nope"),
    ] {
        let (status, body) = daemon.http(method, path, b"");
        assert_eq!(
            (status, body.contains("No such container: nope")),
            (404, true),
            "{method} {path}: {body}"
        );
    }
    let (status, body) = daemon.http(
        "GET",
        "/containers/json?filters=%7B%22bogus%22%3A%7B%22x%22%3Atrue%7D%7D",
        b"",
    );
    assert_eq!(status, 400, "{body}");

    for cli in &clis {
        daemon.ok(cli, &["create", "--name", "dup", IMAGE, "true"]);
        let err = daemon.fails(cli, &["create", "--name", "dup", IMAGE, "true"]);
        assert!(
            err.contains("The container name \"/dup\" is already in use"),
            "{}: {err}",
            cli.name
        );
        daemon.ok(cli, &["rm", "dup"]);

        // A command that is not there: docker's exit code 127.
        let out = daemon.docker(
            cli,
            &["run", "-d", "--name", "nocmd", IMAGE, "/no/such/command"],
        );
        assert_eq!(
            out.status.code(),
            Some(127),
            "{}: {}",
            cli.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let info = inspect(&daemon, cli, "nocmd");
        assert_eq!(info["State"]["ExitCode"], 127);
        assert!(
            info["State"]["Error"]
                .as_str()
                .unwrap()
                .contains("/no/such/command"),
            "{info}"
        );
        daemon.ok(cli, &["rm", "nocmd"]);
        // With --rm, a container whose start failed is removed (the CLI
        // waits for that), in the foreground or not.
        for detach in [true, false] {
            let mut args = vec!["run", "--rm", "--name", "gone"];
            if detach {
                args.push("-d");
            }
            args.extend([IMAGE, "/no/such/command"]);
            let out = daemon.docker(cli, &args);
            assert_eq!(out.status.code(), Some(127), "{}: {out:?}", cli.name);
            let listed = daemon.ok(cli, &["ps", "-aq", "-f", "name=gone"]);
            assert_eq!(listed, "", "{}: left after a failed start", cli.name);
        }
    }
    assert_eq!(daemon.ok(&clis[0], &["ps", "-aq"]), "");
    assert_eq!(daemon.http("GET", "/_ping", b"").0, 200);
    assert_clean(&daemon);
}

#[test]
fn restart_policies_hold_across_a_berthd_crash() {
    let Some((mut daemon, clis)) = start() else {
        return;
    };
    let cli = &clis[0];
    daemon.ok(
        cli,
        &[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            IMAGE,
            "sh",
            "-c",
            "exit 5",
        ],
    );
    assert!(
        wait_until(Duration::from_secs(20), || {
            let info = inspect(&daemon, cli, "flaky");
            info["RestartCount"] == 2 && info["State"]["Status"] == "exited"
        }),
        "{}",
        inspect(&daemon, cli, "flaky")
    );
    assert_eq!(inspect(&daemon, cli, "flaky")["State"]["ExitCode"], 5);

    daemon.ok(
        cli,
        &[
            "run",
            "-d",
            "--name",
            "always",
            "--restart",
            "always",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    daemon.ok(
        cli,
        &[
            "run",
            "-d",
            "--name",
            "unless",
            "--restart",
            "unless-stopped",
            IMAGE,
            "sleep",
            "300",
        ],
    );
    daemon.ok(cli, &["stop", "-t", "0", "unless"]);
    let pid = |daemon: &Berthd| {
        inspect(daemon, cli, "always")["State"]["Pid"]
            .as_u64()
            .unwrap()
    };
    let before = pid(&daemon);

    // The process dies: the policy starts it again.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(before as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let info = inspect(&daemon, cli, "always");
            info["RestartCount"] == 1 && info["State"]["Status"] == "running"
        }),
        "{}",
        inspect(&daemon, cli, "always")
    );
    let running = pid(&daemon);

    // berthd dies: the container runs on, and is still watched after.
    daemon.daemon_mut().kill_hard();
    assert!(Path::new(&format!("/proc/{running}")).exists());
    daemon.daemon_mut().launch();
    assert_eq!(pid(&daemon), running);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(running as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || {
            let info = inspect(&daemon, cli, "always");
            info["RestartCount"] == 2 && info["State"]["Status"] == "running"
        }),
        "{}",
        inspect(&daemon, cli, "always")
    );

    // Stopped by the user, `always` comes back with the daemon; a stopped
    // `unless-stopped` does not.
    daemon.ok(cli, &["stop", "-t", "0", "always"]);
    daemon.daemon_mut().stop();
    daemon.daemon_mut().launch();
    assert!(
        wait_until(Duration::from_secs(10), || inspect(&daemon, cli, "always")
            ["State"]["Status"]
            == "running"),
        "{}",
        daemon.log()
    );
    assert_eq!(inspect(&daemon, cli, "unless")["State"]["Status"], "exited");
    daemon.ok(cli, &["rm", "-f", "always", "unless", "flaky"]);
    assert_clean(&daemon);
}

#[test]
fn the_memory_limit_is_enforced_and_an_oom_kill_is_reported() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    let cli = &clis[0];
    daemon.ok(
        cli,
        &[
            "run",
            "-d",
            "--name",
            "hog",
            "--memory",
            "16m",
            "--memory-swap",
            "16m",
            IMAGE,
            "sh",
            "-c",
            "x=$(head -c 64000000 /dev/zero | tr '\\0' a); echo survived",
        ],
    );
    assert_eq!(daemon.ok(cli, &["wait", "hog"]).trim(), "137");
    let info = inspect(&daemon, cli, "hog");
    assert_eq!(info["State"]["OOMKilled"], true, "{}", info["State"]);
    assert_eq!(info["HostConfig"]["Memory"], 16 * 1024 * 1024);
    daemon.ok(cli, &["rm", "hog"]);
    assert_clean(&daemon);
}

#[test]
fn default_security_and_its_switches() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    let cli = &clis[0];
    let probe = "grep -E '^(CapEff|Seccomp|NoNewPrivs):' /proc/self/status; hostname; id -u; touch /probe 2>/dev/null && echo writable || echo read-only";
    let run = |name: &str, extra: &[&str]| -> String {
        let mut args = vec!["run", "-d", "--name", name];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[IMAGE, "sh", "-c", probe]);
        daemon.ok(cli, &args);
        let out = output(&daemon, cli, name);
        daemon.ok(cli, &["rm", name]);
        out
    };
    let default = run("plain", &["--hostname", "box"]);
    assert!(default.contains("CapEff:\t00000000a80425fb"), "{default}");
    assert!(default.contains("Seccomp:\t2"), "{default}");
    assert!(default.contains("NoNewPrivs:\t0"), "{default}");
    assert!(default.contains("box\n0\nwritable"), "{default}");

    let privileged = run("priv", &["--privileged"]);
    assert!(privileged.contains("Seccomp:\t0"), "{privileged}");
    assert!(
        !privileged.contains("CapEff:\t00000000a80425fb"),
        "{privileged}"
    );

    let narrowed = run(
        "narrow",
        &[
            "--cap-drop",
            "ALL",
            "--cap-add",
            "NET_ADMIN",
            "--read-only",
            "--user",
            "1000:1000",
            "--security-opt",
            "no-new-privileges",
        ],
    );
    assert!(narrowed.contains("CapEff:\t0000000000000000"), "{narrowed}");
    assert!(narrowed.contains("NoNewPrivs:\t1"), "{narrowed}");
    assert!(narrowed.contains("1000\nread-only"), "{narrowed}");
    let root_narrow = run(
        "rootnarrow",
        &["--cap-drop", "ALL", "--cap-add", "net_admin"],
    );
    assert!(
        root_narrow.contains("CapEff:\t0000000000001000"),
        "{root_narrow}"
    );

    let unconfined = run("unconfined", &["--security-opt", "seccomp=unconfined"]);
    assert!(unconfined.contains("Seccomp:\t0"), "{unconfined}");
    assert_clean(&daemon);
}

#[test]
fn many_containers_at_once_leave_nothing_behind() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    let cli = &clis[0];
    // 20 short-lived containers at once, half of them on the bridge
    // network, removed as they exit (--rm).
    let children: Vec<_> = ["none", "bridge"]
        .iter()
        .flat_map(|network| (0..10).map(move |i| (*network, format!("{network}-{i}"))))
        .map(|(network, name)| {
            let child = daemon
                .docker_cmd(
                    cli,
                    &[
                        "run",
                        "-d",
                        "--rm",
                        "--network",
                        network,
                        "--name",
                        &name,
                        IMAGE,
                        "sh",
                        "-c",
                        "echo hi; sleep 0.2",
                    ],
                )
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            (name, child)
        })
        .collect();
    for (name, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        wait_until(Duration::from_secs(30), || daemon
            .ok(cli, &["ps", "-aq"])
            .is_empty()),
        "containers left: {}",
        daemon.ok(cli, &["ps", "-a"])
    );
    assert_clean(&daemon);
}

#[test]
fn published_ports_reach_the_container_from_the_host() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    let www = tempfile::tempdir().unwrap();
    std::fs::write(www.path().join("index.html"), "hello from httpd\n").unwrap();
    let free = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for cli in &clis {
        let volume = format!("{}:/www:ro", www.path().display());
        let publish = format!("127.0.0.1:{free}:80");
        daemon.ok(
            cli,
            &[
                "run", "-d", "--name", "web", "-p", &publish, "-p", "9090", "-v", &volume, IMAGE,
                "httpd", "-f", "-p", "80", "-h", "/www",
            ],
        );
        let got = wait_until(Duration::from_secs(10), || {
            http_get(free).is_some_and(|body| body.ends_with("hello from httpd\n"))
        });
        assert!(got, "{}: {:?}", cli.name, http_get(free));
        let ports = daemon.ok(cli, &["port", "web"]);
        assert!(
            ports.contains(&format!("80/tcp -> 127.0.0.1:{free}")),
            "{}: {ports}",
            cli.name
        );
        assert!(
            ports.contains("9090/tcp -> 0.0.0.0:"),
            "{}: {ports}",
            cli.name
        );
        daemon.ok(cli, &["rm", "-f", "web"]);
        assert!(http_get(free).is_none(), "{}: still published", cli.name);
    }
    let (status, body) = daemon.http(
        "POST",
        "/containers/create",
        br#"{"Image":"berth-busybox","HostConfig":{"PortBindings":{"80/sctp":[{"HostPort":"80"}]}}}"#,
    );
    assert_eq!((status, body.contains("sctp")), (400, true), "{body}");
    assert_clean(&daemon);
}

/// `GET /` on 127.0.0.1:`port`: the response, or `None` when nothing answers.
fn http_get(port: u16) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    stream.read_to_string(&mut body).ok()?;
    Some(body)
}

/// `--cgroup-parent` puts the container's cgroup under that parent (made
/// absolute), in every hierarchy; the cgroup goes with the container; a
/// parent that climbs out with `..` is refused at create.
#[test]
fn a_cgroup_parent_places_the_container() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    let top = format!("berth-integ-cg{}", std::process::id());
    for cli in &clis {
        let parent = format!(
            "{top}/{}",
            cli.name.replace(|c: char| !c.is_ascii_alphanumeric(), "")
        );
        let id = daemon.ok(
            cli,
            &[
                "run",
                "-d",
                "--cgroup-parent",
                &parent,
                IMAGE,
                "sleep",
                "300",
            ],
        );
        let id = id.trim();
        let info = inspect(&daemon, cli, id);
        assert_eq!(
            info["HostConfig"]["CgroupParent"],
            parent.as_str(),
            "{}",
            cli.name
        );
        let pid = info["State"]["Pid"].as_u64().unwrap();
        let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let expected = format!("/{parent}/{id}");
        // Every hierarchy with controllers places it there (named ones,
        // such as name=systemd, are not the runtime's).
        let placed: Vec<&str> = cgroups
            .lines()
            .filter(|line| !line.contains(":name="))
            .collect();
        assert!(!placed.is_empty(), "{cgroups}");
        for line in &placed {
            assert!(
                line.ends_with(&expected),
                "{}: {line} in\n{cgroups}",
                cli.name
            );
        }
        daemon.ok(cli, &["rm", "-f", id]);
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap() {
            let dir = hierarchy.unwrap().path().join(&parent).join(id);
            assert!(!dir.exists(), "{} left", dir.display());
        }

        let out = daemon.docker(
            cli,
            &["create", "--cgroup-parent", "a/../../escape", IMAGE, "true"],
        );
        assert!(!out.status.success(), "{}: {out:?}", cli.name);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("invalid cgroup parent \"a/../../escape\""),
            "{}: {stderr}",
            cli.name
        );
    }
    // The parents stay (the runtime removes only the container's own, as
    // runc does): the test removes them.
    // (cpu and cpuacct may be links to one hierarchy: gone is fine.)
    let rmdir = |dir: &Path| match std::fs::remove_dir(dir) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
            panic!("{}: {err}", dir.display())
        }
        _ => {}
    };
    for hierarchy in std::fs::read_dir("/sys/fs/cgroup").unwrap() {
        let top = hierarchy.unwrap().path().join(&top);
        let Ok(children) = std::fs::read_dir(&top) else {
            continue;
        };
        for child in children.flatten().filter(|c| c.path().is_dir()) {
            rmdir(&child.path());
        }
        rmdir(&top);
    }
    assert_eq!(daemon.ok(&clis[0], &["ps", "-aq"]), "");
    assert_clean(&daemon);
}

/// What berthd leaves when it dies mid-create or mid-start is cleaned up
/// when it starts again: a containerd record of an unfinished create (with
/// its snapshot) is removed; a task whose container the record says is
/// not running (a start cut short) is killed and deleted.
#[test]
fn a_create_and_a_start_cut_short_by_a_crash_are_cleaned_up_at_start() {
    let Some((mut daemon, clis)) = start() else {
        return;
    };
    let cli = &clis[0];
    let ctr_ok = |daemon: &Berthd, args: &[&str]| {
        let out = daemon.ctr(args);
        assert!(out.status.success(), "ctr {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let id = daemon.ok(cli, &["run", "-d", "--name", "cut", IMAGE, "sleep", "300"]);
    let id = id.trim().to_owned();
    let pid = inspect(&daemon, cli, "cut")["State"]["Pid"]
        .as_u64()
        .unwrap();
    // The record of a create that never got to its docker record: made
    // through ctr in docker's namespace, with the frontend's label.
    ctr_ok(
        &daemon,
        &[
            "containers",
            "create",
            "--label",
            "com.docker/container.name=/unfinished",
            "docker.io/library/berth-busybox:latest",
            "unfinished",
        ],
    );
    assert!(ctr_ok(&daemon, &["snapshots", "ls"]).contains("unfinished"));

    daemon.daemon_mut().kill_hard();
    // The start "was cut short": the record says created, the task runs.
    let record = daemon
        .root()
        .join(format!("docker/containers/{id}/config.v2.json"));
    let mut json: Value = serde_json::from_slice(&std::fs::read(&record).unwrap()).unwrap();
    json["state"]["status"] = "created".into();
    std::fs::write(&record, serde_json::to_vec(&json).unwrap()).unwrap();
    daemon.daemon_mut().launch();

    assert_eq!(inspect(&daemon, cli, "cut")["State"]["Status"], "created");
    assert!(
        wait_until(Duration::from_secs(10), || !Path::new(&format!(
            "/proc/{pid}"
        ))
        .exists()),
        "the cut-short start's process still runs"
    );
    assert_eq!(ctr_ok(&daemon, &["tasks", "ls", "-q"]).trim(), "");
    assert!(!ctr_ok(&daemon, &["containers", "ls", "-q"]).contains("unfinished"));
    assert!(
        wait_until(Duration::from_secs(10), || !ctr_ok(
            &daemon,
            &["snapshots", "ls"]
        )
        .contains("unfinished")),
        "the unfinished create's snapshot is still there"
    );
    // The container itself is as a created one: it starts and is removed.
    daemon.ok(cli, &["start", "cut"]);
    daemon.ok(cli, &["rm", "-f", "cut"]);
    assert_clean(&daemon);
}
