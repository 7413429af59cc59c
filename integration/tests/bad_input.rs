//! Bad input: the runtime must fail with one clear error that names the
//! offending field, path or id, exit non-zero, and leave nothing behind.

use berth_integration::{CmdOutput, Harness};
use serde_json::json;

/// Asserts a clean failure: non-zero exit, a short stderr that mentions
/// every one of `names` (case-insensitively), and no leaks.
#[track_caller]
fn assert_clear_error(h: &Harness, out: &CmdOutput, names: &[&str]) {
    out.failed();
    let err = out.stderr.to_lowercase();
    let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines >= 1, "no error message at all: {out}");
    assert!(
        lines <= 3,
        "expected one clear error, got {lines} lines: {out}"
    );
    for n in names {
        assert!(
            err.contains(&n.to_lowercase()),
            "error does not name {n:?}: {out}"
        );
    }
    h.assert_no_leaks();
}

#[test]
fn missing_config_json() {
    let Some(h) = Harness::new("bad_noconfig") else {
        return;
    };
    let b = h.bundle(); // never written
    let out = h.rt.create(&b.id, b.path());
    assert_clear_error(&h, &out, &["config.json"]);
    let out = h.rt.run(&b.id, b.path());
    assert_clear_error(&h, &out, &["config.json"]);
}

#[test]
fn malformed_config_json() {
    let Some(h) = Harness::new("bad_json") else {
        return;
    };
    let b = h.bundle();
    std::fs::write(b.config_path(), "{\"ociVersion\": \"1.0.2\", \"process\": ").expect("write");
    let out = h.rt.create(&b.id, b.path());
    assert_clear_error(&h, &out, &["config.json"]);
}

#[test]
fn unknown_namespace_type() {
    let Some(h) = Harness::new("bad_ns") else {
        return;
    };
    let mut b = h.bundle();
    b.namespace("bogusns", None);
    b.write();
    let out = h.rt.create(&b.id, b.path());
    assert_clear_error(&h, &out, &["bogusns"]);
}

#[test]
fn namespace_path_that_cannot_be_joined() {
    let Some(h) = Harness::new("bad_ns_path") else {
        return;
    };
    let mut b = h.bundle();
    b.namespace("network", Some("/run/netns/berth-no-such-netns"));
    b.write();
    let out = h.rt.create(&b.id, b.path());
    assert_clear_error(
        &h,
        &out,
        &["linux.namespaces", "berth-no-such-netns", "no such file"],
    );
}

#[test]
fn nonexistent_rootfs() {
    let Some(h) = Harness::new("bad_rootfs") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/root/path", json!("no-such-rootfs"));
    b.write();
    let out = h.rt.create(&b.id, b.path());
    assert_clear_error(&h, &out, &["no-such-rootfs"]);
}

#[test]
fn id_already_used() {
    let Some(h) = Harness::new("bad_dup") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["sleep", "1000"]);
    b.write();
    h.rt.create(&b.id, b.path()).ok();
    let out = h.rt.create(&b.id, b.path());
    out.failed();
    assert!(out.stderr.contains(&b.id), "error must name the id: {out}");
    // The existing container is untouched.
    assert_eq!(h.rt.status(&b.id), "created");
    let out = h.rt.run(&b.id, b.path());
    out.failed();
    assert!(out.stderr.contains(&b.id), "error must name the id: {out}");
    assert_eq!(h.rt.status(&b.id), "created");
    h.rt.delete(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn id_with_slash() {
    let Some(h) = Harness::new("bad_slash") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["true"]);
    b.write();
    let id = format!("{}/../escape", b.id);
    h.track_id(&id, &b);
    let out = h.rt.create(&id, b.path());
    assert_clear_error(&h, &out, &[&id]);
    assert!(!h.rt.root().join(&b.id).exists());
    assert!(!h
        .rt
        .root()
        .parent()
        .map(|p| p.join("escape").exists())
        .unwrap_or(false));
    assert!(h.rt.list_json().is_empty());
}

#[test]
fn empty_id() {
    let Some(h) = Harness::new("bad_empty_id") else {
        return;
    };
    let b = h.bundle();
    b.write();
    let out = h.rt.create("", b.path());
    out.failed();
    assert!(out.stderr.to_lowercase().contains("id"), "{out}");
    assert!(h.rt.list_json().is_empty());
}

#[test]
fn cgroup_value_refused_by_kernel() {
    let Some(h) = Harness::new("bad_quota") else {
        return;
    };
    let mut b = h.bundle();
    // The kernel refuses a CFS quota below 1000 us.
    b.set(
        "/linux/resources/cpu",
        json!({"quota": 500, "period": 100000}),
    );
    b.args(&["true"]);
    b.write();
    let out = h.rt.create(&b.id, b.path());
    assert_clear_error(&h, &out, &["cfs_quota"]);
    let out = h.rt.run(&b.id, b.path());
    assert_clear_error(&h, &out, &["cfs_quota"]);
}

/// What fails in init after `start` released it (a startContainer hook
/// here) is what `start` (and `run`) report, not just that init is gone.
#[test]
fn failing_start_container_hook_is_reported_by_start() {
    let Some(h) = Harness::new("bad_start_hook") else {
        return;
    };
    let mut b = h.bundle();
    b.hook(
        "startContainer",
        json!({"path": "/bin/sh", "args": ["sh", "-c", "echo hook-says-no >&2; exit 3"]}),
    );
    b.args(&["true"]);
    b.write();
    h.rt.create(&b.id, b.path()).ok();
    let out = h.rt.start(&b.id);
    out.failed();
    for word in ["startContainer", "/bin/sh", "hook-says-no"] {
        assert!(out.stderr.contains(word), "{word}: {out}");
    }
    h.rt.delete(&b.id).ok();
    let out = h.rt.run(&b.id, b.path());
    assert_clear_error(&h, &out, &["startContainer", "hook-says-no"]);
}

#[test]
fn failing_create_runtime_hook() {
    let Some(h) = Harness::new("bad_hook") else {
        return;
    };
    let mut b = h.bundle();
    b.hook(
        "createRuntime",
        json!({"path": "/bin/false", "args": ["false"]}),
    );
    b.args(&["true"]);
    b.write();
    let out = h.rt.create(&b.id, b.path());
    assert_clear_error(&h, &out, &["hook"]);
    assert!(
        h.rt.state_raw(&b.id).code != Some(0),
        "container left behind"
    );
    assert!(h.rt.list_json().is_empty());
}

#[test]
fn missing_hook_binary() {
    let Some(h) = Harness::new("bad_hook_path") else {
        return;
    };
    let mut b = h.bundle();
    b.hook("prestart", json!({"path": "/no/such/hook-binary"}));
    b.args(&["true"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    assert_clear_error(&h, &out, &["hook-binary"]);
}

#[test]
fn executable_not_found() {
    let Some(h) = Harness::new("bad_exe") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["no-such-program"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    assert_clear_error(&h, &out, &["no-such-program"]);
}

#[test]
fn empty_args() {
    let Some(h) = Harness::new("bad_args") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&[]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    assert_clear_error(&h, &out, &["args"]);
}

#[test]
fn commands_on_unknown_id_name_it() {
    let Some(h) = Harness::new("bad_unknown") else {
        return;
    };
    let id = berth_integration::harness::unique_id("nosuch");
    for args in [
        vec!["state", id.as_str()],
        vec!["start", id.as_str()],
        vec!["kill", id.as_str(), "KILL"],
        vec!["delete", id.as_str()],
    ] {
        let out = h.rt.cmd(&args);
        out.failed();
        assert!(out.stderr.contains(&id), "{args:?} must name the id: {out}");
    }
}

#[test]
fn missing_bind_mount_source() {
    let Some(h) = Harness::new("bad_bind") else {
        return;
    };
    let mut b = h.bundle();
    b.mount(json!({"destination": "/data", "type": "bind",
                   "source": "/nonexistent/bind-source", "options": ["rbind"]}));
    b.args(&["true"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    assert_clear_error(&h, &out, &["bind-source"]);
}
