//! cgroup resources (memory, pids, cpu) written and enforced; rlimits; oomScoreAdj.

use std::path::PathBuf;

use berth_integration::{wait_until, Bundle, Harness, SECS10};
use serde_json::json;

fn cg_file(controller: &str, id: &str, file: &str) -> PathBuf {
    PathBuf::from(format!(
        "/sys/fs/cgroup/{controller}/berth-integ/{id}/{file}"
    ))
}

fn read_trim(p: &std::path::Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .to_string()
}

/// Runs the bundle detached, waits until `/done` appears in its rootfs, and
/// returns the contents of `/out`.
fn run_until_done(h: &Harness, b: &Bundle) -> String {
    h.rt.run_detached(&b.id, b.path()).ok();
    let done = b.rootfs().join("done");
    assert!(
        wait_until(SECS10, || done.exists()),
        "container never wrote /done"
    );
    std::fs::read_to_string(b.rootfs().join("out")).unwrap_or_default()
}

fn finish(h: &Harness, b: &Bundle) {
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn memory_limit_written_and_visible_inside() {
    let Some(h) = Harness::new("memory") else {
        return;
    };
    let mut b = h.bundle();
    b.set(
        "/linux/resources/memory",
        json!({"limit": 67108864, "reservation": 33554432}),
    );
    b.sh("cat /sys/fs/cgroup/memory/memory.limit_in_bytes > /out; touch /done; sleep 1000");
    b.write();
    let inside = run_until_done(&h, &b);
    assert_eq!(inside.trim(), "67108864", "limit seen inside");
    assert_eq!(
        read_trim(&cg_file("memory", &b.id, "memory.limit_in_bytes")),
        "67108864"
    );
    assert_eq!(
        read_trim(&cg_file("memory", &b.id, "memory.soft_limit_in_bytes")),
        "33554432"
    );
    let pid = h.rt.pid(&b.id);
    let procs = read_trim(&cg_file("memory", &b.id, "cgroup.procs"));
    assert!(
        procs.lines().any(|l| l == pid.to_string()),
        "init {pid} not in cgroup: {procs}"
    );
    finish(&h, &b);
}

#[test]
fn pids_limit_written_and_enforced() {
    let Some(h) = Harness::new("pids") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/linux/resources/pids", json!({"limit": 10}));
    // The subshell dies when fork fails; the outer shell reports it.
    b.sh(
        "(for i in $(seq 1 30); do sleep 1000 & done; echo all-forked) > /out 2>&1; \
         echo sub=$? >> /out; cat /sys/fs/cgroup/pids/pids.max >> /out; touch /done; sleep 1000",
    );
    b.write();
    let out = run_until_done(&h, &b);
    assert!(
        !out.contains("all-forked"),
        "30 processes forked despite pids.limit=10: {out}"
    );
    assert!(out.contains("fork"), "fork failure expected: {out}");
    assert!(
        out.contains("\n10\n") || out.ends_with("10\n"),
        "pids.max inside: {out}"
    );
    assert_eq!(read_trim(&cg_file("pids", &b.id, "pids.max")), "10");
    let current: u32 = read_trim(&cg_file("pids", &b.id, "pids.current"))
        .parse()
        .expect("pids.current");
    assert!(current <= 10, "pids.current {current} > limit");
    finish(&h, &b);
}

#[test]
fn cpu_shares_quota_period_written() {
    let Some(h) = Harness::new("cpu") else { return };
    let mut b = h.bundle();
    b.set(
        "/linux/resources/cpu",
        json!({"shares": 512, "quota": 50000, "period": 100000}),
    );
    b.sh("cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us > /out; touch /done; sleep 1000");
    b.write();
    let inside = run_until_done(&h, &b);
    assert_eq!(inside.trim(), "50000");
    assert_eq!(read_trim(&cg_file("cpu", &b.id, "cpu.shares")), "512");
    assert_eq!(
        read_trim(&cg_file("cpu", &b.id, "cpu.cfs_quota_us")),
        "50000"
    );
    assert_eq!(
        read_trim(&cg_file("cpu", &b.id, "cpu.cfs_period_us")),
        "100000"
    );
    finish(&h, &b);
}

#[test]
fn cgroup_removed_after_foreground_run() {
    let Some(h) = Harness::new("cg_removed") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/linux/resources/pids", json!({"limit": 50}));
    b.args(&["cat", "/proc/self/cgroup"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(":pids:") && l.ends_with(&format!("/berth-integ/{}", b.id))),
        "process not in its pids cgroup: {out}"
    );
    assert!(!cg_file("pids", &b.id, "").exists());
    h.assert_no_leaks();
}

#[test]
fn rlimits_applied() {
    let Some(h) = Harness::new("rlimits") else {
        return;
    };
    let mut b = h.bundle();
    b.set(
        "/process/rlimits",
        json!([
            {"type": "RLIMIT_NOFILE", "soft": 512, "hard": 2048},
            {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400}
        ]),
    );
    b.sh("ulimit -n; ulimit -Hn; ulimit -u; grep 'Max open files' /proc/self/limits");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(&lines[..3], &["512", "2048", "300"], "{out}");
    let limits: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(&limits[3..5], &["512", "2048"], "{out}");
}

#[test]
fn oom_score_adj_applied() {
    let Some(h) = Harness::new("oom_adj") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/process/oomScoreAdj", json!(456));
    b.args(&["cat", "/proc/self/oom_score_adj"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout.trim(), "456", "{out}");
}
