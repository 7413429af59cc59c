//! Controlling a live container: `pause`/`resume` (freezer), `kill` of a
//! paused container, `ps` (json and table), and `update` of its resources.

use std::path::PathBuf;
use std::time::Duration;

use berth_integration::{wait_until, Bundle, CmdOutput, Harness, SECS10};
use serde_json::json;

fn cg_file(controller: &str, id: &str, file: &str) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/cgroup/{controller}/berth-integ/{id}/{file}"
    ))
}

fn read_cg(controller: &str, id: &str, file: &str) -> String {
    let p = cg_file(controller, id, file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

fn finish(h: &Harness, b: &Bundle) {
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

/// A non-zero exit with a short error mentioning at least one of `any`.
#[track_caller]
fn assert_clear_error(out: &CmdOutput, any: &[&str]) {
    out.failed();
    let err = out.stderr.to_lowercase();
    let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines >= 1, "no error message: {out}");
    assert!(lines <= 3, "expected one clear error, got {lines}: {out}");
    assert!(
        any.iter().any(|n| err.contains(&n.to_lowercase())),
        "error mentions none of {any:?}: {out}"
    );
}

/// A detached container running `args`.
fn running(h: &Harness, args: &[&str], edit: impl FnOnce(&mut Bundle)) -> Bundle {
    let mut b = h.bundle();
    b.args(args);
    edit(&mut b);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    assert_eq!(h.rt.status(&b.id), "running");
    b
}

fn counter(b: &Bundle) -> Option<u64> {
    std::fs::read_to_string(b.rootfs().join("counter"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[test]
fn pause_freezes_and_resume_thaws() {
    let Some(h) = Harness::new("pause_resume") else {
        return;
    };
    let b = running(
        &h,
        &[
            "sh",
            "-c",
            "i=0; while true; do i=$((i+1)); echo $i > /counter.tmp; mv /counter.tmp /counter; \
             sleep 0.02; done",
        ],
        |_| {},
    );
    assert!(
        wait_until(SECS10, || counter(&b).is_some_and(|c| c > 3)),
        "counter never started"
    );
    let init = h.rt.pid(&b.id);

    h.rt.pause(&b.id).ok();
    assert_eq!(h.rt.status(&b.id), "paused");
    assert_eq!(read_cg("freezer", &b.id, "freezer.state"), "FROZEN");
    let frozen = counter(&b).expect("counter readable while paused");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        counter(&b),
        Some(frozen),
        "the counter moved while the container was paused"
    );
    let status = std::fs::read_to_string(format!("/proc/{init}/status")).expect("init status");
    let state = status
        .lines()
        .find(|l| l.starts_with("State:"))
        .unwrap_or_default()
        .to_string();
    assert!(
        !state.contains("R (running)"),
        "a frozen task must not be runnable: {state}"
    );
    // The list view agrees.
    let listed = h.rt.list_json();
    assert!(
        listed
            .iter()
            .any(|c| c["id"] == b.id.as_str() && c["status"] == "paused"),
        "list must show paused: {listed:?}"
    );

    h.rt.resume(&b.id).ok();
    assert_eq!(h.rt.status(&b.id), "running");
    assert_eq!(read_cg("freezer", &b.id, "freezer.state"), "THAWED");
    assert!(
        wait_until(SECS10, || counter(&b).is_some_and(|c| c > frozen)),
        "the counter did not move after resume"
    );
    finish(&h, &b);
}

#[test]
fn pause_and_resume_in_wrong_states_fail() {
    let Some(h) = Harness::new("pause_bad") else {
        return;
    };
    // Resume of a running container.
    let r = running(&h, &["sleep", "1000"], |_| {});
    let out = h.rt.resume(&r.id);
    assert_clear_error(&out, &["not paused", "running", &r.id]);
    assert_eq!(h.rt.status(&r.id), "running");
    assert_eq!(read_cg("freezer", &r.id, "freezer.state"), "THAWED");
    // Pausing twice: the second is refused (or a no-op), the state stays paused.
    h.rt.pause(&r.id).ok();
    let _ = h.rt.pause(&r.id);
    assert_eq!(h.rt.status(&r.id), "paused");
    h.rt.resume(&r.id).ok();
    assert_eq!(h.rt.status(&r.id), "running");

    // Pause of a stopped container.
    let mut s = h.bundle();
    s.args(&["true"]);
    s.write();
    h.rt.run_detached(&s.id, s.path()).ok();
    h.rt.wait_status(&s.id, "stopped", SECS10);
    let out = h.rt.pause(&s.id);
    assert_clear_error(&out, &["stopped", "not running", &s.id]);
    assert_eq!(h.rt.status(&s.id), "stopped");
    let out = h.rt.resume(&s.id);
    assert_clear_error(&out, &["stopped", "not paused", &s.id]);
    assert_eq!(h.rt.status(&s.id), "stopped");

    // Pause of a created (not started) container.
    let mut c = h.bundle();
    c.args(&["sleep", "1000"]);
    c.write();
    h.rt.create(&c.id, c.path()).ok();
    let out = h.rt.pause(&c.id);
    assert_clear_error(&out, &["created", "not running", &c.id]);
    assert_eq!(h.rt.status(&c.id), "created");

    // Unknown id.
    let ghost = format!("berth-it-no-such-{}", std::process::id());
    assert_clear_error(&h.rt.pause(&ghost), &[&ghost]);
    assert_clear_error(&h.rt.resume(&ghost), &[&ghost]);

    h.rt.delete(&s.id).ok();
    h.rt.delete_force(&r.id).ok();
    h.rt.delete_force(&c.id).ok();
    h.assert_no_leaks();
}

#[test]
fn kill_paused_container_then_force_delete() {
    let Some(h) = Harness::new("kill_paused") else {
        return;
    };
    let b = running(&h, &["sleep", "1000"], |_| {});
    let pid_file = h.tempdir().join("exec.pid");
    let pf = pid_file.to_string_lossy().into_owned();
    h.rt.exec_with(&b.id, &["-d", "--pid-file", &pf], &["sleep", "1000"])
        .ok();
    h.rt.pause(&b.id).ok();
    assert_eq!(h.rt.status(&b.id), "paused");
    h.rt.kill(&b.id, "KILL").ok();
    h.rt.delete_force(&b.id).ok();
    assert!(
        h.rt.state_raw(&b.id).code != Some(0),
        "state must fail after delete --force"
    );
    h.assert_no_leaks();
}

#[test]
fn ps_json_and_table() {
    let Some(h) = Harness::new("ps") else {
        return;
    };
    let b = running(&h, &["sleep", "1000"], |_| {});
    let init = h.rt.pid(&b.id);
    assert_eq!(h.rt.ps_json(&b.id), vec![init]);

    let pid_file = h.tempdir().join("exec.pid");
    let pf = pid_file.to_string_lossy().into_owned();
    h.rt.exec_with(&b.id, &["-d", "--pid-file", &pf], &["sleep", "999"])
        .ok();
    assert!(
        wait_until(SECS10, || std::fs::read_to_string(&pid_file)
            .is_ok_and(|t| !t.trim().is_empty())),
        "no pid file"
    );
    let exec_pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let mut got = h.rt.ps_json(&b.id);
    got.sort();
    let mut want = vec![init, exec_pid];
    want.sort();
    assert_eq!(
        got, want,
        "ps -f json must list init and the exec'd process"
    );

    let out = h.rt.cmd(["ps", &b.id]);
    out.ok();
    let mut lines = out.stdout.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let col = header
        .iter()
        .position(|c| *c == "PID")
        .unwrap_or_else(|| panic!("no PID column in the header: {out}"));
    let pids: Vec<i32> = lines
        .filter_map(|l| l.split_whitespace().nth(col)?.parse().ok())
        .collect();
    assert!(pids.contains(&init), "init {init} missing: {out}");
    assert!(pids.contains(&exec_pid), "exec'd {exec_pid} missing: {out}");
    assert!(
        out.stdout.contains("sleep 999"),
        "the table shows the command: {out}"
    );
    // Nothing outside the container is listed.
    assert_eq!(pids.len(), 2, "only the container's processes: {out}");

    let out = h.rt.cmd(["ps", "-f", "json", "berth-it-no-such-ps"]);
    assert_clear_error(&out, &["berth-it-no-such-ps"]);
    finish(&h, &b);
}

#[test]
fn update_flags_change_cgroup_files() {
    let Some(h) = Harness::new("update_flags") else {
        return;
    };
    let b = running(&h, &["sleep", "1000"], |b| {
        b.set(
            "/linux/resources/memory",
            json!({"limit": 134217728, "reservation": 67108864}),
        );
        b.set(
            "/linux/resources/cpu",
            json!({"shares": 1024, "quota": 20000, "period": 100000}),
        );
        b.set("/linux/resources/pids", json!({"limit": 50}));
    });
    let id = &b.id;
    assert_eq!(read_cg("memory", id, "memory.limit_in_bytes"), "134217728");
    let memsw = cg_file("memory", id, "memory.memsw.limit_in_bytes").exists();
    let mut flags = vec![
        "--memory",
        "64m",
        "--memory-reservation",
        "32m",
        "--cpu-share",
        "512",
        "--cpu-quota",
        "50000",
        "--cpu-period",
        "200000",
        "--pids-limit",
        "20",
        "--cpuset-cpus",
        "0",
        "--cpuset-mems",
        "0",
    ];
    if memsw {
        flags.extend(["--memory-swap", "128m"]);
    }
    h.rt.update(id, &flags).ok();
    assert_eq!(read_cg("memory", id, "memory.limit_in_bytes"), "67108864");
    assert_eq!(
        read_cg("memory", id, "memory.soft_limit_in_bytes"),
        "33554432"
    );
    if memsw {
        assert_eq!(
            read_cg("memory", id, "memory.memsw.limit_in_bytes"),
            "134217728"
        );
    }
    assert_eq!(read_cg("cpu", id, "cpu.shares"), "512");
    assert_eq!(read_cg("cpu", id, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read_cg("cpu", id, "cpu.cfs_period_us"), "200000");
    assert_eq!(read_cg("pids", id, "pids.max"), "20");
    assert_eq!(read_cg("cpuset", id, "cpuset.cpus"), "0");
    assert_eq!(read_cg("cpuset", id, "cpuset.mems"), "0");
    // The container keeps running and sees the new limit.
    assert_eq!(h.rt.status(id), "running");
    let out =
        h.rt.exec(id, &["cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes"]);
    out.ok();
    assert_eq!(out.stdout.trim(), "67108864", "{out}");

    // A second update changes only what it names.
    h.rt.update(id, &["--pids-limit", "30"]).ok();
    assert_eq!(read_cg("pids", id, "pids.max"), "30");
    assert_eq!(read_cg("memory", id, "memory.limit_in_bytes"), "67108864");
    assert_eq!(read_cg("cpu", id, "cpu.shares"), "512");
    finish(&h, &b);
}

#[test]
fn update_from_resources_file_and_stdin() {
    let Some(h) = Harness::new("update_file") else {
        return;
    };
    let b = running(&h, &["sleep", "1000"], |_| {});
    let id = &b.id;
    let file = h.tempdir().join("resources.json");
    std::fs::write(
        &file,
        serde_json::to_string(&json!({
            "memory": {"limit": 100663296, "reservation": 50331648},
            "cpu": {"shares": 256, "quota": 30000, "period": 100000},
            "pids": {"limit": 40}
        }))
        .expect("serialize"),
    )
    .expect("write resources.json");
    let f = file.to_string_lossy().into_owned();
    h.rt.update(id, &["-r", &f]).ok();
    assert_eq!(read_cg("memory", id, "memory.limit_in_bytes"), "100663296");
    assert_eq!(
        read_cg("memory", id, "memory.soft_limit_in_bytes"),
        "50331648"
    );
    assert_eq!(read_cg("cpu", id, "cpu.shares"), "256");
    assert_eq!(read_cg("cpu", id, "cpu.cfs_quota_us"), "30000");
    assert_eq!(read_cg("pids", id, "pids.max"), "40");

    let stdin = serde_json::to_vec(&json!({
        "memory": {"limit": 83886080},
        "cpu": {"shares": 768},
        "pids": {"limit": 25}
    }))
    .expect("serialize");
    h.rt.cmd_input(["update", "-r", "-", id.as_str()], &stdin)
        .ok();
    assert_eq!(read_cg("memory", id, "memory.limit_in_bytes"), "83886080");
    assert_eq!(read_cg("cpu", id, "cpu.shares"), "768");
    assert_eq!(read_cg("pids", id, "pids.max"), "25");
    assert_eq!(h.rt.status(id), "running");
    finish(&h, &b);
}

#[test]
fn update_errors() {
    let Some(h) = Harness::new("update_bad") else {
        return;
    };
    let b = running(&h, &["sleep", "1000"], |b| {
        b.set(
            "/linux/resources/cpu",
            json!({"shares": 1024, "quota": 20000, "period": 100000}),
        );
    });
    let id = &b.id;
    // The kernel refuses a CFS quota below 1 ms.
    let out = h.rt.update(id, &["--cpu-quota", "500"]);
    assert_clear_error(&out, &["quota", "cpu"]);
    assert_eq!(read_cg("cpu", id, "cpu.cfs_quota_us"), "20000");
    assert_eq!(read_cg("cpu", id, "cpu.cfs_period_us"), "100000");
    assert_eq!(h.rt.status(id), "running");

    // A malformed resources file names the file and changes nothing.
    let file = h.tempdir().join("broken-resources.json");
    std::fs::write(&file, "{\"pids\": {\"limit\": ").expect("write");
    let f = file.to_string_lossy().into_owned();
    let out = h.rt.update(id, &["-r", &f]);
    assert_clear_error(&out, &["broken-resources.json"]);
    assert_eq!(read_cg("cpu", id, "cpu.shares"), "1024");
    assert_eq!(h.rt.status(id), "running");
    finish(&h, &b);

    let ghost = format!("berth-it-no-such-{}", std::process::id());
    assert_clear_error(&h.rt.update(&ghost, &["--pids-limit", "10"]), &[&ghost]);
}

#[test]
fn force_delete_of_paused_container() {
    let Some(h) = Harness::new("delete_paused") else {
        return;
    };
    let b = running(&h, &["sleep", "1000"], |_| {});
    h.rt.pause(&b.id).ok();
    assert_eq!(h.rt.status(&b.id), "paused");
    h.rt.delete_force(&b.id).ok();
    assert!(h.rt.state_raw(&b.id).code != Some(0));
    h.assert_no_leaks();
}
