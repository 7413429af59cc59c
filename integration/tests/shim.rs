//! containerd-shim-berth-v2 under the real containerd 1.6, driven by the
//! real `ctr`: with berth as the runtime, and with runc through the runc
//! options' BinaryName.
#![allow(clippy::unwrap_used)] // test helpers: a failed step should panic with its error

use berth_integration::containerd::{Containerd, RuncShim, BERTH_RUNTIME, IMAGE};
use berth_integration::pty::PtySession;
use berth_integration::wait_until;
use std::io::{Read, Write};
use std::process::Stdio;
use std::time::Duration;

/// How a test selects the shim + runtime pair it exercises.
#[derive(Clone, Copy)]
enum Flavor {
    /// `--runtime io.containerd.berth.v2`: our shim, berth.
    Berth,
    /// Default runtime name served by our shim, `--runc-binary runc`.
    RuncThroughOurShim,
}

impl Flavor {
    fn containerd(self) -> Option<Containerd> {
        match self {
            Flavor::Berth => Containerd::start(RuncShim::Real),
            Flavor::RuncThroughOurShim => {
                if !std::path::Path::new("/usr/sbin/runc").is_file() {
                    eprintln!("SKIP: runc is not installed");
                    return None;
                }
                Containerd::start(RuncShim::Berth)
            }
        }
    }

    fn run_args(self) -> Vec<&'static str> {
        match self {
            Flavor::Berth => vec!["run", "--runtime", BERTH_RUNTIME],
            Flavor::RuncThroughOurShim => vec!["run", "--runc-binary", "/usr/sbin/runc"],
        }
    }
}

fn run_args<'a>(flavor: Flavor, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = flavor.run_args();
    args.extend_from_slice(extra);
    args
}

fn echo_and_exit_codes(flavor: Flavor) {
    let Some(ctd) = flavor.containerd() else {
        return;
    };
    let out = ctd.ctr_ok(&run_args(flavor, &["--rm", IMAGE, "echo1", "echo", "hi"]));
    assert_eq!(out, "hi\n");
    let out = ctd.ctr(&run_args(
        flavor,
        &["--rm", IMAGE, "exit7", "sh", "-c", "echo err >&2; exit 7"],
    ));
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("err"));
    // stdin reaches the container, and its end (CloseIO) ends `cat`.
    let mut child = ctd
        .ctr_cmd(&run_args(flavor, &["--rm", IMAGE, "cat1", "cat"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through stdin\n");
    // ctr sends CloseIO as soon as it has written everything into the fifo:
    // what the fifo still holds must reach the container all the same.
    let mut child = ctd
        .ctr_cmd(&run_args(flavor, &["--rm", IMAGE, "wc1", "wc", "-c"]))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(&vec![b'x'; 1 << 20]));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1048576");
    ctd.assert_no_leaks();
}

#[test]
fn berth_echo_exit_codes_and_stdin() {
    echo_and_exit_codes(Flavor::Berth);
}

#[test]
fn runc_binary_echo_exit_codes_and_stdin() {
    echo_and_exit_codes(Flavor::RuncThroughOurShim);
}

fn detached_lifecycle(flavor: Flavor) {
    let Some(ctd) = flavor.containerd() else {
        return;
    };
    ctd.ctr_ok(&run_args(flavor, &["-d", IMAGE, "d1", "sleep", "1000"]));
    assert_eq!(ctd.task_status("d1").as_deref(), Some("RUNNING"));

    let out = ctd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "d1",
        "sh",
        "-c",
        "echo from-exec; id -u",
    ]);
    assert_eq!(out, "from-exec\n0\n");
    let out = ctd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "d1",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3));

    let ps = ctd.ctr_ok(&["task", "ps", "d1"]);
    assert_eq!(ps.lines().count(), 2, "one process expected: {ps}");
    let metrics = ctd.ctr_ok(&["task", "metrics", "d1"]);
    assert!(metrics.contains("pids.current"), "{metrics}");
    assert!(metrics.contains("memory.usage"), "{metrics}");

    ctd.ctr_ok(&["task", "pause", "d1"]);
    assert_eq!(ctd.task_status("d1").as_deref(), Some("PAUSED"));
    ctd.ctr_ok(&["task", "resume", "d1"]);
    assert_eq!(ctd.task_status("d1").as_deref(), Some("RUNNING"));

    // A running task cannot be removed; the message says why.
    let out = ctd.ctr(&["task", "rm", "d1"]);
    assert!(!out.status.success());

    ctd.ctr_ok(&["task", "kill", "-s", "KILL", "d1"]);
    assert!(wait_until(Duration::from_secs(10), || ctd
        .task_status("d1")
        .as_deref()
        == Some("STOPPED")));
    ctd.ctr_ok(&["task", "rm", "d1"]);
    ctd.ctr_ok(&["containers", "rm", "d1"]);
    assert_eq!(ctd.task_status("d1"), None);
    ctd.assert_no_leaks();
}

#[test]
fn berth_detached_exec_ps_metrics_pause_kill() {
    detached_lifecycle(Flavor::Berth);
}

#[test]
fn runc_binary_detached_exec_ps_metrics_pause_kill() {
    detached_lifecycle(Flavor::RuncThroughOurShim);
}

#[test]
fn bad_requests_get_readable_errors() {
    let Some(ctd) = Flavor::Berth.containerd() else {
        return;
    };
    ctd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        BERTH_RUNTIME,
        IMAGE,
        "b1",
        "sleep",
        "1000",
    ]);
    // Unknown exec id: NotFound from the shim.
    let out = ctd.ctr(&["task", "kill", "--exec-id", "nosuch", "b1"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("nosuch") && err.contains("not found"), "{err}");
    // Resume of a running task: FailedPrecondition, named.
    let out = ctd.ctr(&["task", "resume", "b1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("not paused"), "{err}");
    // An exec id used twice.
    ctd.ctr_ok(&[
        "task",
        "exec",
        "-d",
        "--exec-id",
        "twice",
        "b1",
        "sleep",
        "100",
    ]);
    let out = ctd.ctr(&["task", "exec", "-d", "--exec-id", "twice", "b1", "true"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("already exists"),
        "{err}"
    );
    // A command that does not exist: the runtime's error comes through.
    let out = ctd.ctr(&["task", "exec", "--exec-id", "bad", "b1", "/no/such/binary"]);
    assert!(!out.status.success());
    ctd.ctr_ok(&["task", "kill", "-a", "-s", "KILL", "b1"]);
    assert!(wait_until(Duration::from_secs(10), || ctd
        .task_status("b1")
        .as_deref()
        == Some("STOPPED")));
    ctd.ctr_ok(&["task", "rm", "b1"]);
    ctd.ctr_ok(&["containers", "rm", "b1"]);
    ctd.assert_no_leaks();
}

/// `ctr run -t` through a real pty: the shell sees a terminal of the size
/// ctr reports, and its exit code comes back.
fn tty_session(flavor: Flavor) {
    let Some(ctd) = flavor.containerd() else {
        return;
    };
    let cmd = ctd.ctr_cmd(&run_args(flavor, &["--rm", "-t", IMAGE, "tty1", "sh"]));
    let mut tty = PtySession::spawn(cmd, 40, 100);
    tty.read_until("# ");
    tty.type_in(b"tty; stty size; echo sum=$((6*7))\r");
    tty.read_until("sum=42");
    assert!(tty.seen().contains("/dev/pts/"), "{:?}", tty.seen());
    assert!(
        tty.seen().contains("40 100"),
        "window size not passed: {:?}",
        tty.seen()
    );
    tty.type_in(b"exit 5\r");
    let status = tty.wait();
    assert_eq!(status.code(), Some(5), "{:?}", tty.seen());
    ctd.assert_no_leaks();
}

#[test]
fn berth_tty_session() {
    tty_session(Flavor::Berth);
}

#[test]
fn runc_binary_tty_session() {
    tty_session(Flavor::RuncThroughOurShim);
}

fn containerd_restart(flavor: Flavor) {
    let Some(mut ctd) = flavor.containerd() else {
        return;
    };
    ctd.ctr_ok(&run_args(
        flavor,
        &[
            "-d",
            IMAGE,
            "r1",
            "sh",
            "-c",
            "trap 'exit 9' TERM; while true; do sleep 0.1; done",
        ],
    ));
    let before = ctd.ctr_ok(&["task", "ls"]);
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    ctd.restart();
    // Same task, same pid, same shim; and it still works.
    assert_eq!(ctd.ctr_ok(&["task", "ls"]), before);
    assert_eq!(ctd.shim_pids(), shims);
    assert_eq!(
        ctd.ctr_ok(&["task", "exec", "--exec-id", "after", "r1", "echo", "still"]),
        "still\n"
    );
    // The exit after the restart is observed with its status.
    ctd.ctr_ok(&["task", "kill", "r1"]);
    assert!(wait_until(Duration::from_secs(10), || ctd
        .task_status("r1")
        .as_deref()
        == Some("STOPPED")));
    let out = ctd.ctr_ok(&["task", "rm", "r1"]);
    let _ = out;
    ctd.ctr_ok(&["containers", "rm", "r1"]);
    ctd.assert_no_leaks();
}

#[test]
fn berth_survives_containerd_restart() {
    containerd_restart(Flavor::Berth);
}

#[test]
fn runc_binary_survives_containerd_restart() {
    containerd_restart(Flavor::RuncThroughOurShim);
}

fn shim_killed(flavor: Flavor) {
    let Some(ctd) = flavor.containerd() else {
        return;
    };
    ctd.ctr_ok(&run_args(flavor, &["-d", IMAGE, "k1", "sleep", "1000"]));
    let pid_line = ctd.ctr_ok(&["task", "ls"]);
    let task_pid: i32 = pid_line
        .lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .expect("task pid");
    let shims = ctd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shims[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    // containerd notices, runs `shim delete`: the task is gone, and so is
    // the container's process.
    assert!(
        wait_until(Duration::from_secs(15), || ctd.task_status("k1").is_none()),
        "task still listed: {}",
        ctd.ctr_ok(&["task", "ls"])
    );
    assert!(
        wait_until(Duration::from_secs(10), || !std::path::Path::new(&format!(
            "/proc/{task_pid}"
        ))
        .exists()
            || std::fs::read_to_string(format!("/proc/{task_pid}/stat"))
                .map(|s| s.contains(") Z"))
                .unwrap_or(true)),
        "container process {task_pid} survived its shim"
    );
    ctd.ctr_ok(&["containers", "rm", "k1"]);
    ctd.assert_no_leaks();
}

#[test]
fn berth_shim_killed_task_cleaned_up() {
    shim_killed(Flavor::Berth);
}

#[test]
fn runc_binary_shim_killed_task_cleaned_up() {
    shim_killed(Flavor::RuncThroughOurShim);
}

/// `ctr events` sees the shim's events in containerd's order, OOM included.
#[test]
fn berth_events_in_order_with_oom() {
    let Some(ctd) = Flavor::Berth.containerd() else {
        return;
    };
    let mut events = ctd
        .ctr_cmd(&["events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stream = events.stdout.take().unwrap();
    let sink = seen.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    ctd.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        BERTH_RUNTIME,
        IMAGE,
        "ev1",
        "sleep",
        "1000",
    ]);
    ctd.ctr_ok(&["task", "exec", "--exec-id", "x1", "ev1", "true"]);
    ctd.ctr_ok(&["task", "pause", "ev1"]);
    ctd.ctr_ok(&["task", "resume", "ev1"]);
    ctd.ctr_ok(&["task", "kill", "-s", "KILL", "ev1"]);
    assert!(wait_until(Duration::from_secs(10), || ctd
        .task_status("ev1")
        .as_deref()
        == Some("STOPPED")));
    ctd.ctr_ok(&["task", "rm", "ev1"]);
    ctd.ctr_ok(&["containers", "rm", "ev1"]);
    // 20 MB of memory, a 60 MB string: the kernel's OOM killer ends it.
    let out = ctd.ctr(&[
        "run",
        "--rm",
        "--memory-limit",
        "20000000",
        "--runtime",
        BERTH_RUNTIME,
        IMAGE,
        "oom1",
        "sh",
        "-c",
        "x=$(head -c 60000000 /dev/zero | tr '\\0' a); echo ${#x}",
    ]);
    assert_eq!(
        out.status.code(),
        Some(137),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Events travel shim -> containerd -> ctr asynchronously: wait for the last.
    wait_until(Duration::from_secs(10), || {
        seen.lock()
            .unwrap()
            .lines()
            .any(|l| l.contains("/tasks/delete") && l.contains("\"container_id\":\"oom1\""))
    });
    let _ = events.kill();
    let _ = events.wait();
    let _ = reader.join();
    let text = seen.lock().unwrap().clone();
    let topics = |id: &str| -> Vec<String> {
        let mut seen: Vec<String> = Vec::new();
        for line in text
            .lines()
            .filter(|l| l.contains(&format!("\"container_id\":\"{id}\"")))
        {
            let topic = line
                .split_whitespace()
                .find(|w| w.starts_with("/tasks/"))
                .unwrap_or("")
                .to_string();
            if seen.last() != Some(&topic) {
                seen.push(topic);
            }
        }
        seen
    };
    assert_eq!(
        topics("ev1"),
        [
            "/tasks/create",
            "/tasks/start",
            "/tasks/exec-added",
            "/tasks/exec-started",
            "/tasks/exit",
            "/tasks/paused",
            "/tasks/resumed",
            "/tasks/exit",
            "/tasks/delete"
        ],
        "{text}"
    );
    let oom = topics("oom1");
    assert_eq!(
        oom.first().map(String::as_str),
        Some("/tasks/create"),
        "{text}"
    );
    assert!(
        oom.contains(&"/tasks/oom".to_string()),
        "no OOM event: {text}"
    );
    assert_eq!(
        oom.last().map(String::as_str),
        Some("/tasks/delete"),
        "{text}"
    );
    ctd.assert_no_leaks();
}
