//! Containers and tasks on berthd, driven by the real containerd 1.6 `ctr`:
//! an isolated berthd (root, state, sockets in a temp dir; our shim and
//! `berth` first on its PATH) imports the busybox archive of
//! `hack/make-image` and runs containers with `ctr run`, `ctr task ...`,
//! `ctr containers ...`; it is killed and restarted under running
//! containers, and a shim is killed under its task. After each test nothing
//! is left: no mounts, shims, shim sockets or bundle directories.

// The helpers below are test code too: a panic is how they report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_integration::berthd::{Berthd, Options};
use berth_integration::containerd::IMAGE;
use berth_integration::pty::PtySession;
use berth_integration::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WHAT: &str = "the berthd task tests";

/// A container that runs until SIGTERM and then exits 9.
const LOOP: [&str; 3] = [
    "sh",
    "-c",
    "trap 'exit 9' TERM; while true; do sleep 0.1; done",
];

fn run_detached(berthd: &Berthd, id: &str) {
    let mut args = vec!["run", "-d", IMAGE, id];
    args.extend(LOOP);
    berthd.ctr_ok(&args);
    berthd.wait_status(id, "RUNNING");
}

#[test]
fn run_rm_prints_and_passes_exit_codes() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    let out = berthd.ctr_ok(&["run", "--rm", IMAGE, "hello", "echo", "hi"]);
    assert_eq!(out.trim(), "hi");
    let out = berthd.ctr(&["run", "--rm", IMAGE, "exit3", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    // --rm removed the containers and their snapshots.
    assert_eq!(berthd.ctr_ok(&["containers", "ls", "-q"]).trim(), "");
    assert_eq!(berthd.ctr_ok(&["task", "ls", "-q"]).trim(), "");
    let snapshots = berthd.ctr_ok(&["snapshots", "ls"]);
    assert!(!snapshots.contains("hello"), "{snapshots}");
    berthd.assert_no_leaks();
}

#[test]
fn detached_task_lifecycle_and_containers() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    run_detached(&berthd, "d1");
    // ctr's lease on the new snapshot is gone and a collection has run:
    // the container's record alone keeps its snapshot.
    std::thread::sleep(Duration::from_millis(500));
    let snapshots = berthd.ctr_ok(&["snapshots", "ls"]);
    assert!(
        snapshots.lines().any(|l| l.starts_with("d1 ")),
        "{snapshots}"
    );

    let out = berthd.ctr_ok(&["task", "exec", "--exec-id", "e1", "d1", "echo", "inside"]);
    assert_eq!(out.trim(), "inside");
    let out = berthd.ctr(&[
        "task",
        "exec",
        "--exec-id",
        "e2",
        "d1",
        "sh",
        "-c",
        "exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{out:?}");

    let ps = berthd.ctr_ok(&["task", "ps", "d1"]);
    assert!(ps.lines().count() >= 2, "no processes listed: {ps}");
    let metrics = berthd.ctr_ok(&["task", "metrics", "d1"]);
    assert!(metrics.contains("d1"), "{metrics}");

    berthd.ctr_ok(&["task", "pause", "d1"]);
    berthd.wait_status("d1", "PAUSED");
    berthd.ctr_ok(&["task", "resume", "d1"]);
    berthd.wait_status("d1", "RUNNING");

    // A running task cannot be removed without force.
    berthd.ctr_err(&["task", "rm", "d1"]);

    berthd.ctr_ok(&["task", "kill", "d1"]);
    berthd.wait_status("d1", "STOPPED");
    // Killing a stopped task is refused with a clear message.
    let err = berthd.ctr_err(&["task", "kill", "d1"]);
    assert!(
        err.contains("not found") || err.contains("finished"),
        "{err}"
    );
    assert_eq!(berthd.task_rm("d1"), 9, "the exit status passes through");
    assert_eq!(berthd.task_status("d1"), None);

    let ls = berthd.ctr_ok(&["containers", "ls"]);
    assert!(ls.contains("d1") && ls.contains(IMAGE), "{ls}");
    let info = berthd.ctr_ok(&["containers", "info", "d1"]);
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info["Runtime"]["Name"], "io.containerd.runc.v2", "{info}");
    assert_eq!(info["Image"], IMAGE);
    assert_eq!(info["SnapshotKey"], "d1");
    berthd.ctr_ok(&["containers", "rm", "d1"]);
    assert_eq!(berthd.ctr_ok(&["containers", "ls", "-q"]).trim(), "");
    let err = berthd.ctr_err(&["containers", "info", "d1"]);
    assert!(err.contains("not found"), "{err}");
    berthd.assert_no_leaks();
}

#[test]
fn bad_requests_get_clear_errors() {
    // Two broken shims: one that fails, one that prints garbage.
    let shims = tempfile::tempdir().unwrap();
    let failing = shims.path().join("failing-shim");
    let garbage = shims.path().join("garbage-shim");
    for (path, script) in [
        (
            &failing,
            "#!/bin/sh\necho 'cannot start: broken on purpose' >&2\nexit 1\n",
        ),
        (&garbage, "#!/bin/sh\necho 'hello, I am no address'\n"),
    ] {
        std::fs::write(path, script).unwrap();
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let Some(berthd) = Berthd::start_with(Options::new(WHAT).config(&format!(
        "[runtimes.\"io.containerd.failing.v2\"]\nshim = \"{}\"\n\
         [runtimes.\"io.containerd.garbage.v2\"]\nshim = \"{}\"\n",
        failing.display(),
        garbage.display()
    ))) else {
        return;
    };
    let err = berthd.ctr_err(&["task", "start", "nosuch"]);
    assert!(err.contains("not found"), "{err}");
    let err = berthd.ctr_err(&[
        "run",
        "--rm",
        "docker.io/library/nosuch:latest",
        "x",
        "true",
    ]);
    assert!(err.contains("not found"), "{err}");
    run_detached(&berthd, "dup");
    let mut args = vec!["run", "-d", IMAGE, "dup"];
    args.extend(LOOP);
    let err = berthd.ctr_err(&args);
    assert!(err.contains("already exists"), "{err}");
    // A runtime with no shim anywhere.
    let err = berthd.ctr_err(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.nosuch.v9",
        IMAGE,
        "noshim",
        "true",
    ]);
    assert!(err.contains("containerd-shim-nosuch-v9"), "{err}");
    let _ = berthd.ctr(&["containers", "rm", "noshim"]);
    for (runtime, expected) in [
        ("io.containerd.failing.v2", "broken on purpose"),
        ("io.containerd.garbage.v2", "printed no address"),
    ] {
        let err = berthd.ctr_err(&["run", "--rm", "--runtime", runtime, IMAGE, "broken", "true"]);
        assert!(err.contains(expected), "{runtime}: {err}");
        let _ = berthd.ctr(&["containers", "rm", "broken"]);
        assert!(
            !berthd.bundles().iter().any(|b| b.ends_with("broken")),
            "{:?}",
            berthd.bundles()
        );
    }
    // A second task for a container that has one.
    let err = berthd.ctr_err(&["task", "start", "dup"]);
    assert!(err.contains("already exists"), "{err}");
    berthd.ctr_ok(&["task", "kill", "-s", "KILL", "dup"]);
    berthd.wait_status("dup", "STOPPED");
    assert_eq!(berthd.task_rm("dup"), 137);
    berthd.ctr_ok(&["containers", "rm", "dup"]);
    berthd.assert_no_leaks();
}

#[test]
fn tty_session_through_a_pty() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    let cmd = berthd.ctr_cmd(&["run", "--rm", "-t", IMAGE, "tty1", "sh"]);
    let mut tty = PtySession::spawn(cmd, 30, 90);
    tty.read_until("# ");
    tty.type_in(b"tty; stty size; echo sum=$((6*7))\r");
    tty.read_until("sum=42");
    assert!(tty.seen().contains("/dev/pts/"), "{:?}", tty.seen());
    // ctr resizes the pty once the task has started, as it does with
    // containerd: on a busy host the first `stty size` can beat it.
    for attempt in 0..10 {
        if tty.seen().contains("30 90") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
        tty.type_in(format!("stty size; echo mark=$((100+{attempt}))\r").as_bytes());
        tty.read_until(&format!("mark={}", 100 + attempt));
    }
    assert!(
        tty.seen().contains("30 90"),
        "window size not passed: {:?}",
        tty.seen()
    );
    tty.type_in(b"exit 5\r");
    let status = tty.wait();
    assert_eq!(status.code(), Some(5), "{:?}", tty.seen());
    berthd.assert_no_leaks();
}

#[test]
fn containers_outlive_a_killed_berthd() {
    let Some(mut berthd) = Berthd::start(WHAT) else {
        return;
    };
    let ids = ["k1", "k2", "k3", "k4", "k5"];
    for id in ids {
        run_detached(&berthd, id);
    }
    let shims = berthd.shim_pids();
    assert_eq!(shims.len(), ids.len(), "{shims:?}");
    let k5_pid: i32 = berthd
        .ctr_ok(&["task", "ls"])
        .lines()
        .find(|l| l.starts_with("k5 "))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap()
        .parse()
        .unwrap();

    berthd.kill_hard();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(berthd.shim_pids(), shims, "shims died with berthd");
    // k5 ends while no berthd runs: its shim keeps the exit. k4's shim
    // dies: the next berthd cleans up after it and reports it stopped.
    kill(Pid::from_raw(k5_pid), Signal::SIGTERM).unwrap();
    let k4_shim = berthd.shim_of("k4");
    kill(Pid::from_raw(k4_shim), Signal::SIGKILL).unwrap();
    assert!(wait_until(Duration::from_secs(5), || !Path::new(&format!(
        "/proc/{k4_shim}"
    ))
    .exists()));
    berthd.launch();
    for id in &ids[..3] {
        assert_eq!(berthd.task_status(id).as_deref(), Some("RUNNING"), "{id}");
    }
    berthd.wait_status("k5", "STOPPED");
    berthd.wait_status("k4", "STOPPED");
    let alive: Vec<i32> = shims.iter().copied().filter(|p| *p != k4_shim).collect();
    assert_eq!(berthd.shim_pids(), alive);
    assert_eq!(
        berthd.task_rm("k5"),
        9,
        "the exit seen while berthd was down"
    );
    assert_eq!(
        berthd.task_rm("k4"),
        137,
        "a shim dead while berthd was down"
    );

    // Exits after the restart are observed: by the shim's state and as
    // events the shim forwards to the new berthd.
    let waiter = berthd
        .ctr_cmd(&["events"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    berthd.ctr_ok(&["task", "kill", "k1"]);
    berthd.wait_status("k1", "STOPPED");
    std::thread::sleep(Duration::from_millis(300));
    kill(Pid::from_raw(waiter.id() as i32), Signal::SIGTERM).unwrap();
    let events = waiter.wait_with_output().unwrap();
    let events = String::from_utf8_lossy(&events.stdout);
    assert!(events.contains("/tasks/exit"), "no exit event: {events}");
    assert_eq!(berthd.task_rm("k1"), 9);

    for id in ["k2", "k3"] {
        berthd.ctr_ok(&["task", "kill", "-s", "KILL", id]);
        berthd.wait_status(id, "STOPPED");
        assert_eq!(berthd.task_rm(id), 137);
    }
    for id in ids {
        berthd.ctr_ok(&["containers", "rm", id]);
    }
    berthd.assert_no_leaks();
}

#[test]
fn a_killed_shim_leaves_a_stopped_task_and_nothing_else() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    run_detached(&berthd, "s1");
    let shims = berthd.shim_pids();
    assert_eq!(shims.len(), 1, "{shims:?}");
    kill(Pid::from_raw(shims[0]), Signal::SIGKILL).unwrap();
    berthd.wait_status("s1", "STOPPED");
    let err = berthd.ctr_err(&["task", "kill", "s1"]);
    assert!(err.contains("process already finished: not found"), "{err}");
    assert!(
        wait_until(Duration::from_secs(10), || berthd.bundles().is_empty()),
        "bundle left: {:?}",
        berthd.bundles()
    );
    assert_eq!(berthd.task_rm("s1"), 137, "the exit berthd recorded");
    assert_eq!(berthd.task_status("s1"), None);
    berthd.ctr_ok(&["containers", "rm", "s1"]);
    berthd.assert_no_leaks();
}

#[test]
fn a_runtime_name_maps_to_the_real_runc_shim() {
    if !Path::new("/usr/bin/containerd-shim-runc-v2").is_file()
        || !Path::new("/usr/sbin/runc").is_file()
    {
        eprintln!("SKIP: containerd-shim-runc-v2 or runc missing");
        return;
    }
    let Some(berthd) = Berthd::start_with(Options::new(WHAT).config(
        "[runtimes.\"io.containerd.realrunc.v2\"]\nshim = \"/usr/bin/containerd-shim-runc-v2\"\n",
    )) else {
        return;
    };
    let out = berthd.ctr_ok(&[
        "run",
        "--rm",
        "--runtime",
        "io.containerd.realrunc.v2",
        IMAGE,
        "runc1",
        "echo",
        "from-runc",
    ]);
    assert_eq!(out.trim(), "from-runc");

    // Detached, exec'd into, killed: and its socket (which the runc shim
    // keeps outside our dir) is gone afterwards.
    let mut args = vec![
        "run",
        "-d",
        "--runtime",
        "io.containerd.realrunc.v2",
        IMAGE,
        "runc2",
    ];
    args.extend(LOOP);
    berthd.ctr_ok(&args);
    berthd.wait_status("runc2", "RUNNING");
    let address = std::fs::read_to_string(
        berthd
            .dir()
            .join("state/io.containerd.runtime.v2.task/default/runc2/address"),
    )
    .unwrap();
    let socket = PathBuf::from(address.trim().trim_start_matches("unix://"));
    assert!(socket.exists(), "{}", socket.display());
    let out = berthd.ctr_ok(&[
        "task",
        "exec",
        "--exec-id",
        "e1",
        "runc2",
        "echo",
        "in-runc",
    ]);
    assert_eq!(out.trim(), "in-runc");
    berthd.ctr_ok(&["task", "kill", "runc2"]);
    berthd.wait_status("runc2", "STOPPED");
    assert_eq!(berthd.task_rm("runc2"), 9);
    berthd.ctr_ok(&["containers", "rm", "runc2"]);
    assert!(
        !socket.exists(),
        "runc shim socket left: {}",
        socket.display()
    );
    berthd.assert_no_leaks();
}

/// Open fds of a process.
fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// 200 short-lived containers one after another, then 20 at once: every
/// one runs, and afterwards no mount, shim, socket, bundle, cgroup,
/// container or snapshot is left, and berthd holds no more fds than before.
#[test]
fn many_short_lived_containers_leave_nothing_behind() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    let daemon = berthd.pid().unwrap();
    // One run first: lazily opened files (logs, databases) are open from now on.
    berthd.ctr_ok(&["run", "--rm", IMAGE, "warm", "true"]);
    let fds_before = fd_count(daemon);

    for i in 0..200 {
        let id = format!("seq-{i}");
        berthd.ctr_ok(&["run", "--rm", IMAGE, &id, "true"]);
    }
    let children: Vec<_> = (0..20)
        .map(|i| {
            let id = format!("par-{i}");
            berthd
                .ctr_cmd(&["run", "--rm", IMAGE, &id, "sh", "-c", "echo $0", &id])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "par-{i}: {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            format!("par-{i}")
        );
    }

    assert_eq!(berthd.ctr_ok(&["containers", "ls", "-q"]).trim(), "");
    assert_eq!(berthd.ctr_ok(&["task", "ls", "-q"]).trim(), "");
    let snapshots = berthd.ctr_ok(&["snapshots", "ls"]);
    assert!(
        !snapshots.contains("seq-") && !snapshots.contains("par-"),
        "{snapshots}"
    );
    berthd.assert_no_leaks();
    // ctr puts each task in the cgroup /default/<id>: all removed.
    for id in ["seq-0", "seq-199", "par-0", "par-19"] {
        let left = berth_integration::leak::cgroup_dirs_named(id);
        assert!(left.is_empty(), "cgroups of {id} left: {left:?}");
    }
    let settled = wait_until(Duration::from_secs(10), || fd_count(daemon) <= fds_before);
    assert!(
        settled,
        "berthd holds {} fds, {fds_before} before the runs",
        fd_count(daemon)
    );
}
