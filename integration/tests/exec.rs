//! `exec`: a new process in an existing container. Output and exit status,
//! namespaces and cgroup membership, the per-exec process options
//! (env/cwd/user/groups/caps/no-new-privs/--process/--tty), exec into a
//! created container, resource limits, and bad input.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use berth_integration::caps::{mask, parse_status_mask};
use berth_integration::console::{read_until_closed, ConsoleSocket};
use berth_integration::{wait_until, Bundle, CmdOutput, Harness, SECS10};
use serde_json::json;

/// A detached container running `sleep 1000`, already "running".
fn sleeper(h: &Harness) -> Bundle {
    let mut b = h.bundle();
    b.args(&["sleep", "1000"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    assert_eq!(h.rt.status(&b.id), "running");
    b
}

/// Force-deletes the container and checks that nothing is left.
fn finish(h: &Harness, b: &Bundle) {
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

/// Waits until `ps -f json` lists exactly the init process.
#[track_caller]
fn assert_only_init(h: &Harness, id: &str) {
    let init = h.rt.pid(id);
    let mut last = Vec::new();
    let ok = wait_until(SECS10, || {
        last = h.rt.ps_json(id);
        last == vec![init]
    });
    assert!(
        ok,
        "container {id} must contain only init {init}, ps lists {last:?}"
    );
}

/// The namespace links of a host pid, keyed by namespace name.
fn ns_links(pid: i32) -> BTreeMap<String, String> {
    let dir = format!("/proc/{pid}/ns");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {dir}: {e}"))
        .flatten()
        .map(|e| {
            let link = std::fs::read_link(e.path())
                .unwrap_or_else(|err| panic!("readlink {}: {err}", e.path().display()));
            (
                e.file_name().to_string_lossy().into_owned(),
                link.to_string_lossy().into_owned(),
            )
        })
        .collect()
}

/// The `/proc/<pid>/cgroup` lines of a host pid, sorted.
fn cgroup_lines(pid: i32) -> Vec<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/cgroup: {e}"));
    let mut v: Vec<String> = text.lines().map(String::from).collect();
    v.sort();
    v
}

/// Reads a pid file written by `--pid-file`, waiting for it to appear.
fn read_pid_file(p: &Path) -> i32 {
    assert!(
        wait_until(SECS10, || std::fs::read_to_string(p)
            .is_ok_and(|t| !t.trim().is_empty())),
        "pid file {} never written",
        p.display()
    );
    let text = std::fs::read_to_string(p).expect("read pid file");
    text.trim()
        .parse()
        .unwrap_or_else(|e| panic!("pid file {} holds {text:?}: {e}", p.display()))
}

fn status_field<'a>(status: &'a str, field: &str) -> Option<&'a str> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::trim))
}

#[test]
fn exec_output_and_exit_status_pass_through() {
    let Some(h) = Harness::new("exec_status") else {
        return;
    };
    let b = sleeper(&h);
    let out = h.rt.exec(
        &b.id,
        &["sh", "-c", "echo from-exec; echo to-stderr >&2; exit 7"],
    );
    assert!(!out.timed_out, "{out}");
    assert_eq!(out.code, Some(7), "exit status must pass through: {out}");
    assert_eq!(out.stdout, "from-exec\n", "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");

    let out = h.rt.exec(&b.id, &["echo", "zero"]);
    out.ok();
    assert_eq!(out.stdout, "zero\n", "{out}");

    // A signal-killed exec'd process is reported as non-zero.
    let out = h.rt.exec(&b.id, &["sh", "-c", "kill -KILL $$"]);
    out.failed();

    // The container itself is unaffected and holds only init again.
    assert_eq!(h.rt.status(&b.id), "running");
    assert_only_init(&h, &b.id);
    finish(&h, &b);
}

#[test]
fn exec_joins_every_namespace_and_the_cgroup() {
    let Some(h) = Harness::new("exec_ns") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["sleep", "1000"]);
    b.rootfs_file("/only-in-container", "container-marker\n", 0o644);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    let init = h.rt.pid(&b.id);

    let pid_file = h.tempdir().join("exec.pid");
    let pf = pid_file.to_string_lossy().into_owned();
    h.rt.exec_with(&b.id, &["--detach", "--pid-file", &pf], &["sleep", "1000"])
        .ok();
    let pid = read_pid_file(&pid_file);
    assert_ne!(pid, init);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("exec'd pid alive");
    assert_eq!(comm.trim(), "sleep");

    // Same namespaces as init, for every namespace the kernel exposes.
    let host = ns_links(std::process::id() as i32);
    let want = ns_links(init);
    let got = ns_links(pid);
    assert_eq!(got, want, "exec'd process namespaces differ from init's");
    for kind in ["mnt", "pid", "net", "ipc", "uts"] {
        assert_ne!(
            want.get(kind),
            host.get(kind),
            "init must not share the host {kind} namespace"
        );
    }

    // Same cgroups as init, and that is the container's cgroup.
    let cg = cgroup_lines(pid);
    assert_eq!(cg, cgroup_lines(init), "exec'd process cgroups differ");
    let needle = format!("/berth-integ/{}", b.id);
    for ctrl in ["memory", "pids", "cpu", "freezer"] {
        assert!(
            cg.iter().any(|l| {
                let mut parts = l.splitn(3, ':');
                let _ = parts.next();
                let ctrls = parts.next().unwrap_or_default();
                let path = parts.next().unwrap_or_default();
                ctrls.split(',').any(|c| c == ctrl) && path == needle
            }),
            "no {ctrl} line with {needle} in /proc/{pid}/cgroup: {cg:?}"
        );
    }
    let ps = h.rt.ps_json(&b.id);
    assert!(
        ps.contains(&pid) && ps.contains(&init),
        "ps must list {init} and {pid}: {ps:?}"
    );

    // A foreground exec sees the container's hostname, rootfs and pid namespace.
    let out = h.rt.exec(
        &b.id,
        &[
            "sh",
            "-c",
            "hostname; cat /only-in-container; test -e /etc/debian_version && echo host-file; \
             cat /proc/1/comm; echo self=$$",
        ],
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("berth-test"), "{out}");
    assert!(lines.contains(&"container-marker"), "{out}");
    assert!(!lines.contains(&"host-file"), "host rootfs visible: {out}");
    assert!(lines.contains(&"sleep"), "/proc/1 must be init: {out}");
    let self_pid: i32 = lines
        .iter()
        .find_map(|l| l.strip_prefix("self="))
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no self= line: {out}"));
    assert!(
        self_pid > 1 && self_pid < 100,
        "exec'd shell must have a small pid in the container's pid namespace, got {self_pid}"
    );
    // The root mount of the exec'd process is the bundle's rootfs.
    let mountinfo =
        std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).expect("read mountinfo");
    let rootfs = b.rootfs().to_string_lossy().into_owned();
    assert!(
        mountinfo.lines().any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.get(4) == Some(&"/") && f.get(3).is_some_and(|r| rootfs.ends_with(r))
        }),
        "exec'd process's / is not the container rootfs {rootfs}:\n{mountinfo}"
    );
    finish(&h, &b);
}

#[test]
fn exec_detach_pid_file() {
    let Some(h) = Harness::new("exec_pidfile") else {
        return;
    };
    let b = sleeper(&h);
    let init = h.rt.pid(&b.id);
    let pid_file = h.tempdir().join("exec.pid");
    let pf = pid_file.to_string_lossy().into_owned();
    h.rt.exec_with(
        &b.id,
        &["-d", "--pid-file", &pf],
        &["sh", "-c", "echo started > /exec-ran; exec sleep 1000"],
    )
    .ok();
    let pid = read_pid_file(&pid_file);
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "pid {pid} from the pid file is not alive"
    );
    assert!(
        wait_until(SECS10, || b.rootfs().join("exec-ran").exists()),
        "detached exec never ran"
    );
    let cg = cgroup_lines(pid);
    let needle = format!(":/berth-integ/{}", b.id);
    assert!(
        cg.iter().any(|l| l.contains(&needle)),
        "pid {pid} not in the container's cgroup: {cg:?}"
    );
    let ps = h.rt.ps_json(&b.id);
    let mut want = vec![init, pid];
    want.sort();
    let mut got = ps.clone();
    got.sort();
    assert_eq!(got, want, "ps must list init and the detached exec");
    // Killing the detached process leaves the container with only init.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill exec'd pid");
    assert_only_init(&h, &b.id);
    finish(&h, &b);
}

#[test]
fn exec_env_cwd_user_groups() {
    let Some(h) = Harness::new("exec_opts") else {
        return;
    };
    let b = sleeper(&h);
    let out = h.rt.exec_with(
        &b.id,
        &[
            "--env",
            "FOO=bar baz",
            "--env",
            "TERM=overridden",
            "--cwd",
            "/tmp",
            "--user",
            "1000:1000",
            "--additional-gids",
            "10",
            "--additional-gids",
            "100",
        ],
        &[
            "sh",
            "-c",
            "echo foo=$FOO; echo term=$TERM; echo path=$PATH; echo cwd=$(pwd); \
             echo uid=$(id -u); echo gid=$(id -g); echo groups=$(id -G)",
        ],
    );
    out.ok();
    let s = &out.stdout;
    for want in [
        "foo=bar baz",
        "term=overridden",
        "path=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "cwd=/tmp",
        "uid=1000",
        "gid=1000",
    ] {
        assert!(s.lines().any(|l| l == want), "{want:?} missing: {out}");
    }
    let groups: Vec<&str> = s
        .lines()
        .find_map(|l| l.strip_prefix("groups="))
        .unwrap_or_else(|| panic!("no groups line: {out}"))
        .split_whitespace()
        .collect();
    for g in ["1000", "10", "100"] {
        assert!(groups.contains(&g), "group {g} missing in {groups:?}");
    }
    assert!(!groups.contains(&"0"), "root group leaked: {groups:?}");

    // The short forms of the same flags (runc's CLI refuses mixing the two
    // forms of one flag in a single command line).
    let out = h.rt.exec_with(
        &b.id,
        &["-e", "FOO=short", "-u", "1000", "-g", "10"],
        &["sh", "-c", "echo $FOO $(id -u) $(id -G)"],
    );
    out.ok();
    let words: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(words.get(..2), Some(&["short", "1000"][..]), "{out}");
    assert!(words.contains(&"10"), "{out}");

    // Without flags the exec'd process runs as the container's user in its cwd.
    let out = h.rt.exec(&b.id, &["sh", "-c", "id -u; pwd; echo $TERM"]);
    out.ok();
    assert_eq!(out.stdout, "0\n/\nxterm\n", "{out}");
    assert_only_init(&h, &b.id);
    finish(&h, &b);
}

#[test]
fn exec_cap_and_no_new_privs() {
    let Some(h) = Harness::new("exec_caps") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["sleep", "1000"]);
    b.set("/process/noNewPrivileges", json!(false));
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();

    let base = mask(&["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    let net_admin = mask(&["CAP_NET_ADMIN"]);

    let out = h.rt.exec(&b.id, &["cat", "/proc/self/status"]);
    out.ok();
    assert_eq!(
        parse_status_mask(&out.stdout, "CapEff"),
        Some(base),
        "{out}"
    );
    assert_eq!(
        status_field(&out.stdout, "NoNewPrivs"),
        Some("0"),
        "spec has noNewPrivileges=false: {out}"
    );

    let out = h.rt.exec_with(
        &b.id,
        &["--cap", "CAP_NET_ADMIN", "--no-new-privs"],
        &["cat", "/proc/self/status"],
    );
    out.ok();
    for field in ["CapEff", "CapBnd", "CapPrm"] {
        assert_eq!(
            parse_status_mask(&out.stdout, field),
            Some(base | net_admin),
            "{field} must be the container's set plus CAP_NET_ADMIN: {out}"
        );
    }
    assert_eq!(status_field(&out.stdout, "NoNewPrivs"), Some("1"), "{out}");

    // The added capability really works: CAP_NET_ADMIN can bring up lo.
    let out = h.rt.exec_with(
        &b.id,
        &["-c", "CAP_NET_ADMIN"],
        &["sh", "-c", "ip link set lo up && echo lo-up"],
    );
    out.ok();
    assert!(out.stdout.contains("lo-up"), "{out}");
    let out = h.rt.exec(&b.id, &["ip", "link", "set", "lo", "down"]);
    out.failed();
    assert_only_init(&h, &b.id);
    finish(&h, &b);
}

#[test]
fn exec_process_file() {
    let Some(h) = Harness::new("exec_procfile") else {
        return;
    };
    let b = sleeper(&h);
    let file = h.tempdir().join("process.json");
    std::fs::write(
        &file,
        serde_json::to_string(&json!({
            "terminal": false,
            "user": {"uid": 1000, "gid": 1000, "additionalGids": [10]},
            "args": ["sh", "-c", "echo a=$A; echo term=${TERM:-unset}; pwd; id -u; id -G; exit 3"],
            "env": ["A=from-file", "PATH=/bin"],
            "cwd": "/home",
            "noNewPrivileges": true
        }))
        .expect("serialize"),
    )
    .expect("write process.json");
    let f = file.to_string_lossy().into_owned();
    let out = h.rt.exec_with(&b.id, &["--process", &f], &[]);
    assert_eq!(out.code, Some(3), "exit status of the process: {out}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.get(..4),
        Some(&["a=from-file", "term=unset", "/home", "1000"][..]),
        "{out}"
    );
    let groups = lines.get(4).copied().unwrap_or_default();
    assert!(
        groups.split_whitespace().any(|g| g == "10"),
        "additionalGids from the file: {out}"
    );
    assert_only_init(&h, &b.id);
    finish(&h, &b);
}

#[test]
fn exec_tty_with_console_socket() {
    let Some(h) = Harness::new("exec_tty") else {
        return;
    };
    let b = sleeper(&h);
    let sock = ConsoleSocket::bind(&h.tempdir());
    let sp = sock.path.to_string_lossy().into_owned();
    let out = h.rt.exec_with(
        &b.id,
        &["--tty", "--console-socket", &sp, "--detach"],
        &[
            "sh",
            "-c",
            "tty; test -t 0 && echo stdin-tty; test -t 1 && echo stdout-tty; \
             test -t 2 && echo stderr-tty; test -e $(tty) && echo dev-exists; sleep 0.3",
        ],
    );
    out.ok();
    let master = sock.master(SECS10);
    let text = read_until_closed(&master, Duration::from_secs(15));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert!(
        lines.first().is_some_and(|l| l.starts_with("/dev/pts/")),
        "tty output: {text:?}"
    );
    for w in ["stdin-tty", "stdout-tty", "stderr-tty", "dev-exists"] {
        assert!(lines.contains(&w), "{w} missing in {text:?}");
    }
    assert_only_init(&h, &b.id);
    finish(&h, &b);
}

#[test]
fn exec_into_created_container() {
    let Some(h) = Harness::new("exec_created") else {
        return;
    };
    let mut b = h.bundle();
    b.sh("echo started > /started; sleep 1000");
    b.write();
    h.rt.create(&b.id, b.path()).ok();
    assert_eq!(h.rt.status(&b.id), "created");
    let out = h.rt.exec(&b.id, &["sh", "-c", "hostname; echo in-created"]);
    out.ok();
    assert_eq!(out.stdout, "berth-test\nin-created\n", "{out}");
    assert_eq!(h.rt.status(&b.id), "created", "exec must not start it");
    assert!(!b.rootfs().join("started").exists());
    assert_only_init(&h, &b.id);
    h.rt.start(&b.id).ok();
    assert!(
        wait_until(SECS10, || b.rootfs().join("started").exists()),
        "container did not start after an exec"
    );
    assert_eq!(h.rt.status(&b.id), "running");
    finish(&h, &b);
}

#[test]
fn exec_is_subject_to_the_pids_limit() {
    let Some(h) = Harness::new("exec_pids") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["sleep", "1000"]);
    b.set("/linux/resources/pids", json!({"limit": 6}));
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    let out = h.rt.exec(
        &b.id,
        &[
            "sh",
            "-c",
            "(for i in $(seq 1 20); do sleep 1000 & done; echo all-forked) 2>&1; \
             echo current=$(cat /sys/fs/cgroup/pids/pids.current)",
        ],
    );
    assert!(
        !out.stdout.contains("all-forked"),
        "20 forks succeeded under pids.limit=6: {out}"
    );
    assert!(
        out.stdout.to_lowercase().contains("fork") || !out.success(),
        "fork failure expected: {out}"
    );
    let current: u32 = std::fs::read_to_string(format!(
        "/sys/fs/cgroup/pids/berth-integ/{}/pids.current",
        b.id
    ))
    .expect("pids.current")
    .trim()
    .parse()
    .expect("number");
    assert!(current <= 6, "pids.current {current} over the limit");
    assert!(current >= 2, "exec'd children not counted: {current}");
    finish(&h, &b);
}

/// A non-zero exit with a short message mentioning every one of `names`.
#[track_caller]
fn assert_clear_error(out: &CmdOutput, names: &[&str]) {
    out.failed();
    let err = out.stderr.to_lowercase();
    let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines >= 1, "no error message: {out}");
    assert!(lines <= 3, "expected one clear error, got {lines}: {out}");
    for n in names {
        assert!(
            err.contains(&n.to_lowercase()),
            "error does not name {n:?}: {out}"
        );
    }
}

#[test]
fn exec_into_unknown_id_names_it() {
    let Some(h) = Harness::new("exec_ghost") else {
        return;
    };
    let ghost = format!("berth-it-no-such-{}", std::process::id());
    let out = h.rt.exec(&ghost, &["true"]);
    assert_clear_error(&out, &[&ghost]);
    assert!(!h.rt.state_dir(&ghost).exists());
    assert!(h.rt.list_json().is_empty());
}

#[test]
fn exec_missing_executable_names_it() {
    let Some(h) = Harness::new("exec_noexe") else {
        return;
    };
    let b = sleeper(&h);
    let out = h.rt.exec(&b.id, &["/no/such/binary-xyz", "arg"]);
    assert_clear_error(&out, &["/no/such/binary-xyz"]);
    assert_only_init(&h, &b.id);
    let out = h.rt.exec(&b.id, &["no-such-cmd-xyz"]);
    assert_clear_error(&out, &["no-such-cmd-xyz"]);
    assert_only_init(&h, &b.id);
    assert_eq!(h.rt.status(&b.id), "running");
    finish(&h, &b);
}

#[test]
fn exec_bad_process_file_names_it() {
    let Some(h) = Harness::new("exec_badproc") else {
        return;
    };
    let b = sleeper(&h);
    let file = h.tempdir().join("broken-process.json");
    std::fs::write(&file, "{\"args\": [\"true\"], ").expect("write");
    let f = file.to_string_lossy().into_owned();
    let out = h.rt.exec_with(&b.id, &["--process", &f], &[]);
    assert_clear_error(&out, &["broken-process.json"]);
    assert_only_init(&h, &b.id);
    // A --process file that does not exist.
    let missing = h.tempdir().join("missing-process.json");
    let m = missing.to_string_lossy().into_owned();
    let out = h.rt.exec_with(&b.id, &["--process", &m], &[]);
    assert_clear_error(&out, &["missing-process.json"]);
    assert_only_init(&h, &b.id);
    assert_eq!(h.rt.status(&b.id), "running");
    finish(&h, &b);
}

#[test]
fn exec_into_paused_container_is_refused() {
    let Some(h) = Harness::new("exec_paused") else {
        return;
    };
    let b = sleeper(&h);
    h.rt.pause(&b.id).ok();
    assert_eq!(h.rt.status(&b.id), "paused");
    let out =
        h.rt.exec(&b.id, &["sh", "-c", "echo should-not-run > /ran"]);
    assert_clear_error(&out, &["paused"]);
    assert_eq!(h.rt.status(&b.id), "paused");
    assert_eq!(h.rt.ps_json(&b.id), vec![h.rt.pid(&b.id)]);
    h.rt.resume(&b.id).ok();
    assert_eq!(h.rt.status(&b.id), "running");
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !b.rootfs().join("ran").exists(),
        "refused exec ran after resume"
    );
    assert_only_init(&h, &b.id);
    finish(&h, &b);
}

#[test]
fn exec_into_stopped_container_is_refused() {
    let Some(h) = Harness::new("exec_stopped") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["true"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    h.rt.wait_status(&b.id, "stopped", SECS10);
    let out = h.rt.exec(&b.id, &["sh", "-c", "echo ran > /ran"]);
    assert_clear_error(&out, &["stopped"]);
    assert!(!b.rootfs().join("ran").exists());
    assert_eq!(h.rt.status(&b.id), "stopped");
    h.rt.delete(&b.id).ok();
    h.assert_no_leaks();
}
