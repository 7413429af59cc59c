//! `docker exec` against berthd with the real docker CLIs: output and
//! exit codes, the exec's own user, directory and environment, piped
//! input whose end closes stdin, detached execs, privileged ones, a
//! terminal session through a pty; the API's answers for bad requests;
//! and nothing left behind (fifos, processes) once execs end.

#![allow(clippy::unwrap_used)]

mod docker_support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use berth_integration::pty::PtySession;
use berth_integration::wait_until;
use docker_support::{Berthd, Cli};
use serde_json::Value;

const IMAGE: &str = "berth-busybox";

fn start() -> Option<(Berthd, Vec<Cli>)> {
    Berthd::with_image()
}

/// The processes of a docker container's task, as ctr lists them.
fn task_pids(daemon: &Berthd, id: &str) -> usize {
    let out = daemon.ctr(&["task", "ps", id]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count()
}

/// Waits until the execs' fifo directories are gone and only the
/// container's own process is left in its task.
fn assert_execs_gone(daemon: &Berthd, id: &str) {
    let exec_dir = daemon.dir().join("state/docker-exec");
    let clean = wait_until(Duration::from_secs(10), || {
        std::fs::read_dir(&exec_dir).map_or(true, |mut d| d.next().is_none())
            && task_pids(daemon, id) == 1
    });
    assert!(
        clean,
        "left behind: {:?}, {} processes in the task",
        std::fs::read_dir(&exec_dir).map(|d| d.count()),
        task_pids(daemon, id)
    );
}

#[test]
fn exec_runs_commands_in_a_running_container() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    let id = daemon.ok(
        &clis[0],
        &["run", "-d", "--name", "box", IMAGE, "sleep", "1000"],
    );
    let id = id.trim();
    for cli in &clis {
        let name = cli.name;
        assert_eq!(daemon.ok(cli, &["exec", "box", "echo", "hi"]), "hi\n");
        let out = daemon.docker(
            cli,
            &["exec", "box", "sh", "-c", "echo out; echo err >&2; exit 3"],
        );
        assert_eq!(out.status.code(), Some(3), "{name}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n", "{name}");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n", "{name}");

        // The exec's user, directory and environment, over the container's.
        let out = daemon.ok(
            cli,
            &[
                "exec",
                "-u",
                "nobody",
                "-w",
                "/tmp",
                "-e",
                "FOO=bar",
                "box",
                "sh",
                "-c",
                "id -un; pwd; echo $FOO; echo $PATH",
            ],
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(&lines[..3], ["nobody", "/tmp", "bar"], "{name}: {out}");
        assert!(lines[3].contains("/bin"), "{name}: the image's PATH: {out}");
        assert_eq!(
            daemon
                .ok(cli, &["exec", "-u", "1234:5678", "box", "id"])
                .trim(),
            "uid=1234 gid=5678 groups=5678",
            "{name}"
        );

        // Piped input reaches the process; its end closes stdin.
        let mut child = daemon
            .docker_cmd(cli, &["exec", "-i", "box", "sh", "-c", "wc -l; echo done"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"one\ntwo\nthree\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{name}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "3\ndone\n", "{name}");

        // 1000 lines, none lost between start and exit.
        let many = daemon.ok(cli, &["exec", "box", "seq", "1", "1000"]);
        assert_eq!(many.lines().count(), 1000, "{name}");
        assert_eq!(many.lines().last(), Some("1000"), "{name}");

        // Commands that cannot run: 127 not found, 126 not executable.
        let out = daemon.docker(cli, &["exec", "box", "no-such-command"]);
        assert_eq!(out.status.code(), Some(127), "{name}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("no-such-command"),
            "{name}: {out:?}"
        );
        let out = daemon.docker(cli, &["exec", "box", "/etc"]);
        assert_eq!(out.status.code(), Some(126), "{name}: {out:?}");
        let out = daemon.docker(cli, &["exec", "-u", "no-such-user", "box", "id"]);
        assert_ne!(out.status.code(), Some(0), "{name}");

        // Detached: the process runs on after the CLI returns.
        daemon.ok(
            cli,
            &[
                "exec",
                "-d",
                "box",
                "sh",
                "-c",
                "sleep 0.3; echo bg > /tmp/bg",
            ],
        );
        let ran = wait_until(Duration::from_secs(10), || {
            daemon
                .docker(cli, &["exec", "box", "cat", "/tmp/bg"])
                .stdout
                == b"bg\n"
        });
        assert!(ran, "{name}: the detached exec did not run");
        daemon.ok(cli, &["exec", "box", "rm", "/tmp/bg"]);

        // Privileged: every capability; otherwise the container's.
        let caps = |args: &[&str]| -> u64 {
            let mut all = vec!["exec"];
            all.extend_from_slice(args);
            all.extend_from_slice(&["box", "grep", "CapEff", "/proc/self/status"]);
            let out = daemon.ok(cli, &all);
            u64::from_str_radix(out.split_whitespace().nth(1).unwrap(), 16).unwrap()
        };
        let (plain, privileged) = (caps(&[]), caps(&["--privileged"]));
        assert_eq!(
            plain & (1 << 21),
            0,
            "{name}: CAP_SYS_ADMIN without --privileged"
        );
        assert_ne!(
            privileged & (1 << 21),
            0,
            "{name}: no CAP_SYS_ADMIN with --privileged"
        );
        assert_execs_gone(&daemon, id);
    }

    // The API: inspect while running and after, ExecIDs, bad requests.
    let (status, body) = daemon.http(
        "POST",
        "/v1.41/containers/box/exec",
        br#"{"Cmd":["sleep","1"],"AttachStdout":true}"#,
    );
    assert_eq!(status, 201, "{body}");
    let exec: Value = serde_json::from_str(&body).unwrap();
    let exec = exec["Id"].as_str().unwrap().to_owned();
    let (status, _) = daemon.http(
        "POST",
        &format!("/v1.41/exec/{exec}/start"),
        br#"{"Detach":true}"#,
    );
    assert_eq!(status, 200);
    let inspect = |path: &str| -> Value {
        let (status, body) = daemon.http("GET", path, b"");
        assert_eq!(status, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    };
    let running = inspect(&format!("/v1.41/exec/{exec}/json"));
    assert_eq!(running["Running"], true, "{running}");
    assert_eq!(running["ExitCode"], Value::Null, "{running}");
    assert_eq!(running["ContainerID"], id, "{running}");
    assert_eq!(running["ProcessConfig"]["entrypoint"], "sleep", "{running}");
    assert!(running["Pid"].as_u64().unwrap() > 0, "{running}");
    assert_eq!(
        inspect("/v1.41/containers/box/json")["ExecIDs"],
        serde_json::json!([exec])
    );
    let (status, body) = daemon.http(
        "POST",
        &format!("/v1.41/exec/{exec}/start"),
        br#"{"Detach":true}"#,
    );
    assert_eq!(status, 409, "started twice: {body}");
    let exited = wait_until(Duration::from_secs(10), || {
        inspect(&format!("/v1.41/exec/{exec}/json"))["Running"] == false
    });
    assert!(exited);
    assert_eq!(inspect(&format!("/v1.41/exec/{exec}/json"))["ExitCode"], 0);
    assert_eq!(
        inspect("/v1.41/containers/box/json")["ExecIDs"],
        Value::Null
    );

    let (status, body) = daemon.http("POST", "/v1.41/exec/no-such-exec/start", b"{}");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("No such exec instance"), "{body}");
    let (status, body) = daemon.http("POST", "/v1.41/containers/box/exec", br#"{"Cmd":[]}"#);
    assert_eq!(status, 400, "{body}");
    let (status, body) = daemon.http(
        "POST",
        "/v1.41/containers/box/exec",
        br#"{"Cmd":["true"],"WorkingDir":"relative"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, body) = daemon.http(
        "POST",
        "/v1.41/containers/box/exec",
        br#"{"Cmd":["true"],"DetachKeys":"ctrl-"}"#,
    );
    assert_eq!(status, 400, "{body}");
    let (status, _) = daemon.http(
        "POST",
        "/v1.41/containers/no-such/exec",
        br#"{"Cmd":["true"]}"#,
    );
    assert_eq!(status, 404);

    // Paused and stopped containers refuse execs.
    let cli = &clis[0];
    daemon.ok(cli, &["pause", "box"]);
    let refused = daemon.fails(cli, &["exec", "box", "true"]);
    assert!(refused.contains("is paused"), "{refused}");
    daemon.ok(cli, &["unpause", "box"]);
    daemon.ok(cli, &["stop", "-t", "1", "box"]);
    let refused = daemon.fails(cli, &["exec", "box", "true"]);
    assert!(refused.contains("is not running"), "{refused}");
    daemon.ok(cli, &["rm", "box"]);
}

#[test]
fn exec_with_a_terminal() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    let id = daemon.ok(
        &clis[0],
        &["run", "-d", "--name", "term", IMAGE, "sleep", "1000"],
    );
    let id = id.trim();
    for cli in &clis {
        let cmd = daemon.docker_cmd(cli, &["exec", "-it", "term", "sh"]);
        let mut tty = PtySession::spawn(cmd, 30, 90);
        tty.read_until("# ");
        // The CLI sends its size once the exec runs.
        let sized = wait_until(Duration::from_secs(10), || {
            tty.type_in(b"stty size; tty\r");
            std::thread::sleep(Duration::from_millis(200));
            tty.read_now();
            tty.seen().contains("30 90")
        });
        assert!(sized, "{}: {:?}", cli.name, tty.seen());
        assert!(
            tty.seen().contains("/dev/pts/"),
            "{}: {:?}",
            cli.name,
            tty.seen()
        );
        tty.type_in(b"echo $TERM; exit 5\r");
        let status = tty.wait();
        assert_eq!(status.code(), Some(5), "{}: {:?}", cli.name, tty.seen());
        assert!(
            tty.seen().contains("xterm"),
            "{}: {:?}",
            cli.name,
            tty.seen()
        );
        assert_execs_gone(&daemon, id);

        // The detach keys end the CLI and leave the exec running.
        let cmd = daemon.docker_cmd(cli, &["exec", "-it", "term", "sleep", "999"]);
        let mut tty = PtySession::spawn(cmd, 30, 90);
        let running = wait_until(Duration::from_secs(10), || task_pids(&daemon, id) == 2);
        assert!(running, "{}: the exec did not start", cli.name);
        tty.type_in(b"\x10\x11");
        // The CLI reads the keys and ends (with status 1, as against
        // dockerd); the process runs on.
        tty.wait();
        assert!(
            tty.seen().contains("read escape sequence"),
            "{}: {:?}",
            cli.name,
            tty.seen()
        );
        assert_eq!(task_pids(&daemon, id), 2, "{}: the exec ended", cli.name);
        // Every process but init and the caller: the detached exec.
        daemon.ok(cli, &["exec", "term", "sh", "-c", "kill -9 -1"]);
        assert_execs_gone(&daemon, id);
    }
    daemon.ok(&clis[0], &["rm", "-f", "term"]);
}
