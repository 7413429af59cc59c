//! `docker run` in the foreground, `docker run -i` and `-it`, `docker
//! attach` and `docker logs` against berthd, with the real docker CLIs:
//! output and exit codes come back, piped input reaches the process and
//! its end closes stdin, a terminal session works through a pty (typing,
//! resize, detach keys), and logs are read back with their options.

#![allow(clippy::unwrap_used)]

mod docker_support;

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use berth_integration::pty::PtySession;
use berth_integration::wait_until;
use docker_support::{Berthd, Cli};

const IMAGE: &str = "berth-busybox";

fn start() -> Option<(Berthd, Vec<Cli>)> {
    Berthd::with_image()
}

#[test]
fn foreground_runs_show_output_and_exit_codes() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    for cli in &clis {
        assert_eq!(
            daemon.ok(cli, &["run", "--rm", IMAGE, "echo", "hi"]),
            "hi\n"
        );
        let out = daemon.docker(
            cli,
            &[
                "run",
                "--rm",
                IMAGE,
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
        );
        assert_eq!(out.status.code(), Some(3), "{}", cli.name);
        assert_eq!(String::from_utf8_lossy(&out.stdout), "out\n");
        assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
        // 100 lines, in order, none lost between start and exit.
        let many = daemon.ok(cli, &["run", "--rm", IMAGE, "seq", "1", "100"]);
        let expected: String = (1..=100).map(|i| format!("{i}\n")).collect();
        assert_eq!(many, expected, "{}", cli.name);

        // Piped input reaches the process; its end closes stdin.
        let mut child = daemon
            .docker_cmd(
                cli,
                &["run", "--rm", "-i", IMAGE, "sh", "-c", "wc -l; echo done"],
            )
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
        assert!(out.status.success(), "{}", cli.name);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "3\ndone\n",
            "{}",
            cli.name
        );
    }
    assert_eq!(daemon.ok(&clis[0], &["ps", "-aq"]), "");
}

#[test]
fn logs_read_back_with_their_options() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    for cli in &clis {
        // One stream each, so the order of entries is the order written.
        daemon.ok(
            cli,
            &[
                "run",
                "-d",
                "--name",
                "talker",
                IMAGE,
                "sh",
                "-c",
                "for i in 1 2 3 4 5; do echo line $i; done",
            ],
        );
        daemon.ok(
            cli,
            &[
                "run",
                "-d",
                "--name",
                "grumbler",
                IMAGE,
                "sh",
                "-c",
                "echo oops >&2",
            ],
        );
        daemon.ok(cli, &["wait", "talker", "grumbler"]);
        let all = daemon.docker(cli, &["logs", "talker"]);
        assert_eq!(
            String::from_utf8_lossy(&all.stdout),
            "line 1\nline 2\nline 3\nline 4\nline 5\n"
        );
        let grumble = daemon.docker(cli, &["logs", "grumbler"]);
        assert_eq!(String::from_utf8_lossy(&grumble.stdout), "");
        assert_eq!(String::from_utf8_lossy(&grumble.stderr), "oops\n");
        let tail = daemon.ok(cli, &["logs", "--tail", "2", "talker"]);
        assert_eq!(tail, "line 4\nline 5\n", "{}", cli.name);
        let stamped = daemon.ok(cli, &["logs", "-t", "--tail", "1", "talker"]);
        assert!(
            stamped.starts_with("20") && stamped.ends_with("Z line 5\n"),
            "{}: {stamped:?}",
            cli.name
        );
        let later = daemon.ok(cli, &["logs", "--since", "2099-01-01T00:00:00Z", "talker"]);
        assert_eq!(later, "");

        // -f follows a running container until it exits.
        daemon.ok(
            cli,
            &[
                "run",
                "-d",
                "--name",
                "ticker",
                IMAGE,
                "sh",
                "-c",
                "for i in 1 2 3; do echo tick $i; sleep 0.3; done",
            ],
        );
        let followed = daemon.ok(cli, &["logs", "-f", "ticker"]);
        assert_eq!(followed, "tick 1\ntick 2\ntick 3\n", "{}", cli.name);
        daemon.ok(cli, &["rm", "talker", "grumbler", "ticker"]);
    }
    // Bad parameters get dockerd's answers.
    daemon.ok(
        &clis[0],
        &[
            "create",
            "--name",
            "quiet",
            "--log-driver",
            "none",
            IMAGE,
            "true",
        ],
    );
    let (status, body) = daemon.http("GET", "/containers/quiet/logs?stdout=1", b"");
    assert_eq!(status, 501, "{body}");
    let (status, body) = daemon.http("GET", "/containers/quiet/logs", b"");
    assert_eq!(
        (status, body.contains("choose at least one stream")),
        (400, true),
        "{body}"
    );
    daemon.ok(&clis[0], &["rm", "quiet"]);
}

#[test]
fn a_terminal_session_types_resizes_and_detaches() {
    let Some((daemon, clis)) = start() else {
        return;
    };
    for cli in &clis {
        let cmd = daemon.docker_cmd(cli, &["run", "-it", "--name", "term", IMAGE, "sh"]);
        let mut tty = PtySession::spawn(cmd, 30, 90);
        tty.read_until("# ");
        tty.type_in(b"stty size; echo sum=$((6*7))\r");
        tty.read_until("sum=42");
        assert!(
            tty.seen().contains("30 90"),
            "{}: {:?}",
            cli.name,
            tty.seen()
        );
        tty.resize(40, 100);
        // The CLI sends the new size on SIGWINCH.
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(tty.pid() as i32),
            nix::sys::signal::Signal::SIGWINCH,
        )
        .unwrap();
        let resized = wait_until(Duration::from_secs(10), || {
            tty.type_in(b"stty size\r");
            std::thread::sleep(Duration::from_millis(200));
            tty.read_now();
            tty.seen().contains("40 100")
        });
        assert!(resized, "{}: {:?}", cli.name, tty.seen());
        // ctrl-p ctrl-q: the CLI leaves, the container runs on.
        tty.type_in(b"\x10\x11");
        let status = tty.wait();
        assert!(
            status.success(),
            "{}: {status:?} {:?}",
            cli.name,
            tty.seen()
        );
        let state = daemon.ok(cli, &["inspect", "-f", "{{.State.Status}}", "term"]);
        assert_eq!(state.trim(), "running", "{}", cli.name);

        // attach again and end the shell: the attach ends with it.
        let cmd = daemon.docker_cmd(cli, &["attach", "term"]);
        let mut tty = PtySession::spawn(cmd, 30, 90);
        tty.type_in(b"echo back; exit 7\r");
        tty.read_until("back");
        let status = tty.wait();
        assert_eq!(status.code(), Some(7), "{}: {:?}", cli.name, tty.seen());
        daemon.ok(cli, &["rm", "term"]);
    }
}
