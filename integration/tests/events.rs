//! `events`: statistics from the container's cgroup, once and streamed,
//! and OOM kills reported as they happen.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::{Harness, SECS10};
use serde_json::{json, Value};

#[test]
fn stats_once_reflect_the_cgroup() {
    let Some(h) = Harness::new("events_stats") else {
        return;
    };
    let mut b = h.bundle();
    b.with(|spec| {
        spec["linux"]["resources"]["memory"] = json!({"limit": 64 << 20});
        spec["linux"]["resources"]["pids"] = json!({"limit": 50});
    });
    b.args(&["sleep", "100"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    let out =
        h.rt.cmd_timeout(["events", "--stats", b.id.as_str()], SECS10);
    out.ok();
    let v: Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(v["type"], "stats");
    assert_eq!(v["id"], b.id.as_str());
    assert_eq!(v["data"]["memory"]["usage"]["limit"], 64 << 20, "{v}");
    assert!(
        v["data"]["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    assert_eq!(v["data"]["pids"]["limit"], 50, "{v}");
    assert!(
        v["data"]["pids"]["current"].as_u64().unwrap_or(0) >= 1,
        "{v}"
    );
    assert!(
        v["data"]["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0,
        "{v}"
    );
    h.rt.delete_force(&b.id).ok();
    // Stats of a container that is gone: a clear error naming it.
    let out = h.rt.cmd(["events", "--stats", b.id.as_str()]);
    out.failed();
    assert!(out.stderr.contains(&b.id), "{out}");
    h.assert_no_leaks();
}

#[test]
fn stream_reports_oom_and_ends_with_the_container() {
    let Some(h) = Harness::new("events_oom") else {
        return;
    };
    let mut b = h.bundle();
    b.with(|spec| spec["linux"]["resources"]["memory"] = json!({"limit": 16 << 20}));
    b.args(&["sleep", "100"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    let mut child = Reaped(
        Command::new(&h.rt.bin)
            .args(["--root"])
            .arg(h.rt.root())
            .args(["events", "--interval", "1s", b.id.as_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn events"),
    );
    let stdout = child.0.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // The first stats event shows the stream is up; then cause an OOM.
    let first = rx.recv_timeout(SECS10).expect("a first stats event");
    assert!(first.contains("\"stats\""), "{first}");
    h.rt.cmd_timeout(
        [
            "exec",
            b.id.as_str(),
            "dd",
            "if=/dev/zero",
            "of=/dev/null",
            "bs=64M",
            "count=1",
        ],
        SECS10,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut saw_oom = false;
    while Instant::now() < deadline && !saw_oom {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            let v: Value = serde_json::from_str(&line).expect("JSON lines");
            saw_oom = v["type"] == "oom" && v["id"] == b.id.as_str();
        }
    }
    assert!(saw_oom, "no oom event");
    h.rt.delete_force(&b.id).ok();
    // The stream ends by itself once the container is gone.
    let deadline = Instant::now() + SECS10;
    let mut exited = None;
    while Instant::now() < deadline && exited.is_none() {
        exited = child.0.try_wait().expect("wait events");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        exited.is_some(),
        "events kept running after the container was deleted"
    );
    h.assert_no_leaks();
}

/// A child process killed and reaped when the test ends, however it ends.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
