//! `berthctl run` against an isolated berthd, checked with the real
//! containerd 1.6 `ctr`: output, exit codes, stdin, environment, mounts,
//! memory and CPU limits, host networking, detached tasks, a terminal
//! session through a pty, the default spec as seen from inside (capabilities,
//! masked paths, seccomp), and errors that leave nothing behind.

// The helpers below are test code too: a panic is how they report.
#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use berth_integration::berthd::Berthd;
use berth_integration::containerd::{image_archive, IMAGE};
use berth_integration::leak::cgroup_dirs_named;
use berth_integration::pty::PtySession;
use berth_integration::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const WHAT: &str = "the berthctl run tests";

/// containerd's default capability set as `/proc/self/status` shows it.
const DEFAULT_CAP_EFF: &str = "00000000a80425fb";

/// Containers, snapshots, tasks, leases and cgroups of these runs: none.
fn assert_records_gone(berthd: &Berthd, ids: &[&str]) {
    assert_eq!(berthd.ctr_ok(&["containers", "ls", "-q"]).trim(), "");
    assert_eq!(berthd.ctr_ok(&["task", "ls", "-q"]).trim(), "");
    let snapshots = berthd.ctr_ok(&["snapshots", "ls"]);
    for id in ids {
        assert!(
            !snapshots.lines().any(|l| l.starts_with(&format!("{id} "))),
            "snapshot {id} left: {snapshots}"
        );
    }
    let leases = berthd.ctr_ok(&["leases", "ls", "-q"]);
    assert_eq!(leases.trim(), "", "leases left");
    for id in ids {
        let gone = wait_until(Duration::from_secs(10), || cgroup_dirs_named(id).is_empty());
        assert!(gone, "cgroups of {id} left: {:?}", cgroup_dirs_named(id));
    }
}

/// A command that runs until killed.
const SLEEPER: [&str; 3] = ["sh", "-c", "while true; do sleep 0.1; done"];

#[test]
fn run_passes_output_exit_codes_stdin_and_env() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    let out = berthd.berthctl_ok(&["run", "--rm", IMAGE, "r1", "echo", "hi"]);
    assert_eq!(out, "hi\n");

    let out = berthd.berthctl(&[
        "run",
        "--rm",
        IMAGE,
        "r2",
        "sh",
        "-c",
        "echo oops >&2; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");

    let mut cat = berthd
        .berthctl_cmd(&["run", "--rm", IMAGE, "r3", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let text = "line one\nline two\n".repeat(5000);
    let mut stdin = cat.stdin.take().unwrap();
    let writer = {
        let text = text.clone();
        std::thread::spawn(move || stdin.write_all(text.as_bytes()).unwrap())
    };
    let out = cat.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout) == text,
        "stdin not relayed whole"
    );

    let out = berthd.berthctl_ok(&[
        "run",
        "--rm",
        "--env",
        "GREETING=hello world",
        "--env",
        "PATH=/bin",
        IMAGE,
        "r4",
        "sh",
        "-c",
        "echo \"$GREETING|$PATH\"",
    ]);
    assert_eq!(out, "hello world|/bin\n");

    // An image whose target is an index: the host's manifest is picked.
    let index_name = "docker.io/library/berth-index:latest";
    berthd.ctr_ok(&[
        "images",
        "import",
        "--index-name",
        index_name,
        &image_archive().to_string_lossy(),
    ]);
    let images = berthd.ctr_ok(&["images", "ls"]);
    let index_line = images.lines().find(|l| l.starts_with(index_name)).unwrap();
    assert!(index_line.contains("image.index"), "{images}");
    let out = berthd.berthctl_ok(&["run", "--rm", index_name, "r5", "echo", "via-index"]);
    assert_eq!(out, "via-index\n");

    // Without --rm the container and its snapshot stay; the task goes.
    berthd.berthctl_ok(&["run", IMAGE, "kept", "true"]);
    assert_eq!(berthd.ctr_ok(&["containers", "ls", "-q"]).trim(), "kept");
    assert_eq!(berthd.ctr_ok(&["task", "ls", "-q"]).trim(), "");
    let info: serde_json::Value =
        serde_json::from_str(&berthd.ctr_ok(&["containers", "info", "kept"])).unwrap();
    assert_eq!(info["Runtime"]["Name"], "io.containerd.runc.v2", "{info}");
    assert_eq!(info["Image"], IMAGE);
    assert_eq!(info["SnapshotKey"], "kept");
    assert_eq!(
        info["Spec"]["linux"]["cgroupsPath"], "/default/kept",
        "{info}"
    );
    // Root, with the groups the image's /etc/group gives it.
    assert_eq!(
        info["Spec"]["process"]["user"],
        serde_json::json!({"uid": 0, "gid": 0, "additionalGids": [0]}),
        "{info}"
    );
    berthd.ctr_ok(&["containers", "rm", "kept"]);

    assert_records_gone(&berthd, &["r1", "r2", "r3", "r4", "r5", "kept"]);
    berthd.assert_no_leaks();
}

#[test]
fn bind_mounts_and_resource_limits() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    let shared = tempfile::tempdir().unwrap();
    std::fs::write(shared.path().join("f"), "from the host").unwrap();
    let mount = format!(
        "type=bind,src={},dst=/data,options=rbind:ro",
        shared.path().display()
    );
    let out = berthd.berthctl(&[
        "run",
        "--rm",
        "--mount",
        &mount,
        IMAGE,
        "m1",
        "sh",
        "-c",
        "cat /data/f; echo; touch /data/new && echo WROTE",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("from the host\n"), "{out:?}");
    assert!(!stdout.contains("WROTE"), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Read-only file system"),
        "{out:?}"
    );
    assert!(!shared.path().join("new").exists());

    // Limits land in the task's cgroup, /default/<id> (cgroup v1 here,
    // v2 elsewhere).
    let mut args = vec![
        "run",
        "-d",
        "--memory-limit",
        "67108864",
        "--cpus",
        "0.5",
        IMAGE,
        "lim",
    ];
    args.extend(SLEEPER);
    berthd.berthctl_ok(&args);
    berthd.wait_status("lim", "RUNNING");
    let v1 = Path::new("/sys/fs/cgroup/memory/default/lim");
    if v1.is_dir() {
        let memory = std::fs::read_to_string(v1.join("memory.limit_in_bytes")).unwrap();
        assert_eq!(memory.trim(), "67108864");
        let cpu = Path::new("/sys/fs/cgroup/cpu/default/lim");
        let quota = std::fs::read_to_string(cpu.join("cpu.cfs_quota_us")).unwrap();
        let period = std::fs::read_to_string(cpu.join("cpu.cfs_period_us")).unwrap();
        assert_eq!((quota.trim(), period.trim()), ("50000", "100000"));
    } else {
        let v2 = Path::new("/sys/fs/cgroup/default/lim");
        let memory = std::fs::read_to_string(v2.join("memory.max")).unwrap();
        assert_eq!(memory.trim(), "67108864");
        let cpu = std::fs::read_to_string(v2.join("cpu.max")).unwrap();
        assert_eq!(cpu.trim(), "50000 100000");
    }
    berthd.remove_detached("lim");
    assert_records_gone(&berthd, &["m1", "lim"]);
    berthd.assert_no_leaks();
}

#[test]
fn host_network_shares_the_hosts_interfaces() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    let own = berthd.berthctl_ok(&["run", "--rm", IMAGE, "n1", "ls", "/sys/class/net"]);
    assert_eq!(own.split_whitespace().collect::<Vec<_>>(), ["lo"]);

    let mut host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    host.sort();
    let shared = berthd.berthctl_ok(&[
        "run",
        "--rm",
        "--net-host",
        IMAGE,
        "n2",
        "sh",
        "-c",
        "ls /sys/class/net; echo ---; cat /etc/hosts; echo ---; echo $HOSTNAME",
    ]);
    let mut parts = shared.split("---\n");
    let mut seen: Vec<&str> = parts.next().unwrap().split_whitespace().collect();
    seen.sort();
    assert_eq!(seen, host);
    assert_eq!(
        parts.next().unwrap(),
        std::fs::read_to_string("/etc/hosts").unwrap()
    );
    assert_eq!(
        parts.next().unwrap().trim(),
        nix::unistd::gethostname().unwrap().to_string_lossy()
    );
    assert_records_gone(&berthd, &["n1", "n2"]);
    berthd.assert_no_leaks();
}

#[test]
fn detached_tasks_run_until_ctr_stops_them() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    let mut args = vec!["run", "-d", IMAGE, "d1"];
    args.extend(SLEEPER);
    let out = berthd.berthctl_ok(&args);
    assert_eq!(out, "");
    berthd.wait_status("d1", "RUNNING");
    let out = berthd.ctr_ok(&["task", "exec", "--exec-id", "e1", "d1", "echo", "inside"]);
    assert_eq!(out.trim(), "inside");
    berthd.remove_detached("d1");
    // -d and --rm, or -d and -t, do not go together.
    for flags in [["-d", "--rm"], ["-d", "-t"]] {
        let mut args = vec!["run"];
        args.extend(flags);
        args.extend([IMAGE, "d2", "true"]);
        let err = berthd.berthctl_err(&args);
        assert!(err.contains("cannot be used with"), "{err}");
    }
    assert_records_gone(&berthd, &["d1", "d2"]);
    berthd.assert_no_leaks();
}

#[test]
fn signals_reach_a_task_without_a_terminal() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    for (id, signal, code) in [("sig1", Signal::SIGTERM, 9), ("sig2", Signal::SIGINT, 8)] {
        let mut child = berthd
            .berthctl_cmd(&[
                "run",
                "--rm",
                IMAGE,
                id,
                "sh",
                "-c",
                "trap 'exit 9' TERM; trap 'exit 8' INT; echo ready; \
                 while true; do sleep 0.1; done",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let mut ready = [0u8; 6];
        stdout.read_exact(&mut ready).unwrap();
        assert_eq!(&ready, b"ready\n");
        kill(Pid::from_raw(child.id() as i32), signal).unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(code), "{id}: {signal}");
    }
    assert_records_gone(&berthd, &["sig1", "sig2"]);
    berthd.assert_no_leaks();
}

#[test]
fn tty_session_through_a_pty() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    let cmd = berthd.berthctl_cmd(&["run", "--rm", "-t", IMAGE, "tty1", "sh"]);
    let mut tty = PtySession::spawn(cmd, 30, 90);
    tty.read_until("# ");
    tty.type_in(b"tty; stty size; echo $TERM; echo sum=$((6*7))\r");
    tty.read_until("sum=42");
    assert!(tty.seen().contains("/dev/pts/"), "{:?}", tty.seen());
    assert!(
        tty.seen().contains("30 90"),
        "window size not passed: {:?}",
        tty.seen()
    );
    assert!(
        tty.seen().contains("xterm"),
        "TERM not set: {:?}",
        tty.seen()
    );
    // The window grows: SIGWINCH on berthctl passes the new size on.
    tty.resize(40, 100);
    kill(Pid::from_raw(tty.pid() as i32), Signal::SIGWINCH).unwrap();
    let resized = wait_until(Duration::from_secs(10), || {
        tty.type_in(b"stty size\r");
        std::thread::sleep(Duration::from_millis(100));
        tty.read_now();
        tty.seen().contains("40 100")
    });
    assert!(resized, "new size not passed: {:?}", tty.seen());
    // Ctrl-C goes to the container's shell as a byte, not to berthctl.
    tty.type_in(b"\x03");
    tty.type_in(b"exit 5\r");
    let status = tty.wait();
    assert_eq!(status.code(), Some(5), "{:?}", tty.seen());
    assert_records_gone(&berthd, &["tty1"]);
    berthd.assert_no_leaks();
}

#[test]
fn the_default_spec_confines_the_container() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    // A masked /proc file this kernel has (kcore needs CONFIG_PROC_KCORE),
    // with something in it on the host.
    let masked = ["/proc/kcore", "/proc/keys", "/proc/timer_list"]
        .into_iter()
        .find(|p| std::fs::read(p).is_ok_and(|b| !b.is_empty()))
        .expect("no masked /proc file with content on this host");
    let script = format!(
        "grep -E '^(CapEff|CapBnd|Seccomp|NoNewPrivs):' /proc/self/status; \
         echo masked=$(cat {masked} | wc -c); \
         ulimit -n; \
         unshare -U true 2>&1; echo unshare=$?"
    );
    let out = berthd.berthctl_ok(&["run", "--rm", IMAGE, "sec1", "sh", "-c", &script]);
    let field = |name: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(str::trim)
            .unwrap_or_else(|| panic!("{name} missing: {out}"))
    };
    assert_eq!(field("CapEff"), DEFAULT_CAP_EFF, "{out}");
    assert_eq!(field("CapBnd"), DEFAULT_CAP_EFF, "{out}");
    assert_eq!(field("Seccomp"), "2", "seccomp filter mode: {out}");
    assert_eq!(field("NoNewPrivs"), "1", "{out}");
    assert!(out.contains("masked=0\n"), "{masked} not masked: {out}");
    assert!(out.contains("\n1024\n"), "RLIMIT_NOFILE: {out}");
    // unshare(CLONE_NEWUSER) needs no capability: only the profile stops it.
    assert!(out.contains("Operation not permitted"), "{out}");
    assert!(!out.contains("unshare=0"), "{out}");

    // The same call under ctr, which applies no seccomp profile unless
    // asked: the kernel allows it, so the refusal above is the profile's.
    let out = berthd.ctr(&[
        "run",
        "--rm",
        IMAGE,
        "nosec",
        "sh",
        "-c",
        "grep '^Seccomp:' /proc/self/status; unshare -U true; echo unshare=$?",
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Seccomp:\t0"), "{out:?}");
    assert!(text.contains("unshare=0"), "{out:?}");
    assert_records_gone(&berthd, &["sec1", "nosec"]);
    berthd.assert_no_leaks();
}

#[test]
fn errors_are_clear_and_leave_nothing_behind() {
    let Some(berthd) = Berthd::start(WHAT) else {
        return;
    };
    let err = berthd.berthctl_err(&[
        "run",
        "--rm",
        "docker.io/library/nosuch:latest",
        "e1",
        "true",
    ]);
    assert!(err.contains("nosuch") && err.contains("not found"), "{err}");

    for (flag, value, says) in [
        ("--mount", "type=bind,src=/tmp", "no destination"),
        ("--mount", "type=bind,dst=/x,colour=red", "unknown key"),
        ("--env", "NOEQUALS", "KEY=VALUE"),
        ("--env", "=value", "KEY=VALUE"),
        ("--cpus", "0", "cpus"),
        ("--memory-limit", "0", "memory limit"),
    ] {
        let err = berthd.berthctl_err(&["run", "--rm", flag, value, IMAGE, "e2", "true"]);
        assert!(
            err.contains(says) && err.contains(value),
            "{flag} {value}: {err}"
        );
    }

    // A command the image does not have: created, then refused at start;
    // what was made is removed again.
    let err = berthd.berthctl_err(&["run", "--rm", IMAGE, "e3", "/no/such/binary"]);
    assert!(err.contains("e3"), "{err}");
    // A bind of a missing host path: the task cannot be created.
    let err = berthd.berthctl_err(&[
        "run",
        "--rm",
        "--mount",
        "type=bind,src=/nonexistent-dir,dst=/x",
        IMAGE,
        "e4",
        "true",
    ]);
    assert!(err.contains("e4"), "{err}");

    // An id in use: refused, and the running container is not touched.
    let mut args = vec!["run", "-d", IMAGE, "taken"];
    args.extend(SLEEPER);
    berthd.berthctl_ok(&args);
    berthd.wait_status("taken", "RUNNING");
    let err = berthd.berthctl_err(&["run", "--rm", IMAGE, "taken", "true"]);
    assert!(
        err.contains("taken") && err.contains("already exists"),
        "{err}"
    );
    assert_eq!(berthd.task_status("taken").as_deref(), Some("RUNNING"));
    let snapshots = berthd.ctr_ok(&["snapshots", "ls"]);
    assert!(
        snapshots.lines().any(|l| l.starts_with("taken ")),
        "{snapshots}"
    );
    berthd.remove_detached("taken");

    assert_records_gone(&berthd, &["e1", "e2", "e3", "e4", "taken"]);
    berthd.assert_no_leaks();
}
