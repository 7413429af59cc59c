//! Container lifecycle: run, create/start, state, list, kill, delete.

use berth_integration::{wait_until, Harness, SECS10};

#[test]
fn run_captures_stdout_and_passes_exit_code() {
    let Some(h) = Harness::new("run_exit") else {
        return;
    };
    let mut b = h.bundle();
    b.sh("echo hello from the container; echo to-stderr >&2; exit 3");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    assert!(!out.timed_out, "{out}");
    assert_eq!(out.code, Some(3), "exit code must be passed through: {out}");
    assert_eq!(out.stdout, "hello from the container\n", "{out}");
    assert!(out.stderr.contains("to-stderr"), "{out}");
    // A foreground run deletes the container when it exits.
    assert!(
        h.rt.state_raw(&b.id).code != Some(0),
        "state must fail after run returned"
    );
}

#[test]
fn run_zero_exit() {
    let Some(h) = Harness::new("run_zero") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["echo", "zero"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout, "zero\n", "{out}");
    h.assert_no_leaks();
}

#[test]
fn run_detach_then_kill_and_delete() {
    let Some(h) = Harness::new("run_detach") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["sleep", "1000"]);
    b.write();
    let out = h.rt.run_detached(&b.id, b.path());
    out.ok();
    assert_eq!(h.rt.status(&b.id), "running");
    let pid = h.rt.pid(&b.id);
    assert!(pid > 0);
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).expect("container pid alive");
    assert_eq!(comm.trim(), "sleep");
    h.rt.kill(&b.id, "KILL").ok();
    h.rt.wait_status(&b.id, "stopped", SECS10);
    h.rt.delete(&b.id).ok();
    assert!(h.rt.state_raw(&b.id).code != Some(0));
    h.assert_no_leaks();
}

#[test]
fn create_does_not_run_user_process_until_start() {
    let Some(h) = Harness::new("create_start") else {
        return;
    };
    let mut b = h.bundle();
    b.sh("echo ran > /ran; sleep 1000");
    b.write();
    let marker = b.rootfs().join("ran");
    h.rt.create(&b.id, b.path()).ok();
    assert_eq!(h.rt.status(&b.id), "created");
    // Give a wrongly-early process a chance to write the marker.
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(!marker.exists(), "user process ran before start");
    assert_eq!(h.rt.status(&b.id), "created");
    let pid = h.rt.pid(&b.id);
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "init pid of a created container must exist"
    );

    h.rt.start(&b.id).ok();
    assert!(
        wait_until(SECS10, || std::fs::read_to_string(&marker)
            .is_ok_and(|t| t == "ran\n")),
        "user process did not run after start"
    );
    assert_eq!(h.rt.status(&b.id), "running");
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn state_has_required_fields() {
    let Some(h) = Harness::new("state_fields") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["sleep", "1000"]);
    b.write();
    h.rt.create(&b.id, b.path()).ok();
    let st = h.rt.state(&b.id);
    assert!(
        st["ociVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "ociVersion: {st}"
    );
    assert_eq!(st["id"], b.id.as_str(), "{st}");
    assert_eq!(st["status"], "created", "{st}");
    assert!(st["pid"].as_i64().is_some_and(|p| p > 0), "pid: {st}");
    let bundle = st["bundle"]
        .as_str()
        .unwrap_or_else(|| panic!("bundle missing: {st}"));
    assert_eq!(
        std::path::Path::new(bundle)
            .canonicalize()
            .expect("bundle path exists"),
        b.path(),
        "{st}"
    );
    h.rt.start(&b.id).ok();
    let st = h.rt.state(&b.id);
    assert_eq!(st["status"], "running", "{st}");
    h.rt.kill(&b.id, "KILL").ok();
    h.rt.wait_status(&b.id, "stopped", SECS10);
    let st = h.rt.state(&b.id);
    assert_eq!(st["status"], "stopped", "{st}");
    assert_eq!(st["id"], b.id.as_str());
    h.rt.delete(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn list_table_and_json() {
    let Some(h) = Harness::new("list") else {
        return;
    };
    assert!(h.rt.list_json().is_empty(), "fresh root must list nothing");
    let mut a = h.bundle();
    a.args(&["sleep", "1000"]);
    a.write();
    let mut c = h.bundle();
    c.args(&["sleep", "1000"]);
    c.write();
    h.rt.run_detached(&a.id, a.path()).ok();
    h.rt.create(&c.id, c.path()).ok();

    let table = h.rt.list();
    table.ok();
    let header = table.stdout.lines().next().unwrap_or_default();
    assert!(
        header.contains("ID") && header.contains("STATUS"),
        "table header: {table}"
    );
    let row = |id: &str| {
        table
            .stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(id))
            .unwrap_or_else(|| panic!("{id} not in list: {table}"))
            .to_string()
    };
    assert!(row(&a.id).contains("running"), "{table}");
    assert!(row(&c.id).contains("created"), "{table}");

    let json = h.rt.list_json();
    assert_eq!(json.len(), 2, "{json:?}");
    let find = |id: &str| {
        json.iter()
            .find(|e| e["id"] == id)
            .unwrap_or_else(|| panic!("{id} not in {json:?}"))
            .clone()
    };
    let ea = find(&a.id);
    assert_eq!(ea["status"], "running");
    assert!(ea["pid"].as_i64().is_some_and(|p| p > 0));
    assert_eq!(
        ea["bundle"]
            .as_str()
            .map(std::path::PathBuf::from)
            .as_deref(),
        Some(a.path())
    );
    assert_eq!(find(&c.id)["status"], "created");

    h.rt.delete_force(&a.id).ok();
    h.rt.delete_force(&c.id).ok();
    assert!(h.rt.list_json().is_empty());
    h.assert_no_leaks();
}

#[test]
fn kill_created_container() {
    let Some(h) = Harness::new("kill_created") else {
        return;
    };
    let mut b = h.bundle();
    b.sh("echo ran > /ran");
    b.write();
    h.rt.create(&b.id, b.path()).ok();
    h.rt.kill(&b.id, "KILL").ok();
    h.rt.wait_status(&b.id, "stopped", SECS10);
    assert!(
        !b.rootfs().join("ran").exists(),
        "killed created container must never run"
    );
    h.rt.delete(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn kill_running_container_with_signal_name_and_number() {
    let Some(h) = Harness::new("kill_running") else {
        return;
    };
    // sh as pid 1 with a TERM trap: the signal must be delivered to it.
    let mut b = h.bundle();
    b.sh("trap 'echo got-term > /term; exit 0' TERM; while true; do sleep 0.1; done");
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    h.rt.kill(&b.id, "TERM").ok();
    assert!(
        wait_until(SECS10, || b.rootfs().join("term").exists()),
        "TERM not delivered"
    );
    h.rt.wait_status(&b.id, "stopped", SECS10);
    h.rt.delete(&b.id).ok();

    let mut b2 = h.bundle();
    b2.args(&["sleep", "1000"]);
    b2.write();
    h.rt.run_detached(&b2.id, b2.path()).ok();
    h.rt.kill(&b2.id, "9").ok();
    h.rt.wait_status(&b2.id, "stopped", SECS10);
    h.rt.delete(&b2.id).ok();
    h.assert_no_leaks();
}

#[test]
fn delete_force_running_container() {
    let Some(h) = Harness::new("delete_force") else {
        return;
    };
    let mut b = h.bundle();
    b.sh("sleep 1000 & sleep 1000");
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    assert_eq!(h.rt.status(&b.id), "running");
    // Plain delete of a running container must be refused.
    h.rt.delete(&b.id).failed();
    assert_eq!(h.rt.status(&b.id), "running");
    h.rt.delete_force(&b.id).ok();
    assert!(h.rt.state_raw(&b.id).code != Some(0));
    h.assert_no_leaks();
}

#[test]
fn delete_created_container() {
    let Some(h) = Harness::new("delete_created") else {
        return;
    };
    let mut b = h.bundle();
    b.sh("echo ran > /ran");
    b.write();
    h.rt.create(&b.id, b.path()).ok();
    h.rt.delete(&b.id).ok();
    assert!(h.rt.state_raw(&b.id).code != Some(0));
    assert!(!b.rootfs().join("ran").exists());
    h.assert_no_leaks();
}

#[test]
fn run_no_pivot() {
    let Some(h) = Harness::new("no_pivot") else {
        return;
    };
    let mut b = h.bundle();
    b.sh("cat /etc/hostname; ls /");
    b.write();
    let out = h.rt.run_with(&b.id, b.path(), &["--no-pivot"]);
    out.ok();
    assert!(out.stdout.starts_with("berth\n"), "{out}");
    assert!(out.stdout.lines().any(|l| l == "bin"), "{out}");
    h.assert_no_leaks();
}
