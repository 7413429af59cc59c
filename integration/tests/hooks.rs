//! OCI hooks: all kinds run, in order, with the state on stdin.

use berth_integration::{wait_until, Harness, SECS10};
use serde_json::{json, Value};

const KINDS_BEFORE_START: [&str; 3] = ["prestart", "createRuntime", "createContainer"];

fn host_hook(kind: &str, dir: &str) -> Value {
    // Runtime-namespace hooks (and createContainer, whose path resolves in the
    // runtime namespace) use the host's /bin/sh and host paths.
    json!({
        "path": "/bin/sh",
        "args": ["sh", "-c", format!("cat > {dir}/{kind}.json; echo {kind}${{HOOK_SUFFIX}} >> {dir}/log")],
        "env": ["HOOK_SUFFIX=", "PATH=/usr/sbin:/usr/bin:/sbin:/bin"]
    })
}

fn read_log(dir: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn start_container_hook() -> Value {
    // startContainer runs in the container: its path resolves in the rootfs.
    json!({"path": "/bin/sh",
           "args": ["sh", "-c", "cat > /hooklog/startContainer.json; echo startContainer >> /hooklog/log"]})
}

#[test]
fn hooks_run_in_order_with_state_on_stdin() {
    let Some(h) = Harness::new("hooks") else {
        return;
    };
    let mut b = h.bundle();
    let dir = b.host_dir("hooklog");
    let d = dir.to_string_lossy().into_owned();
    for k in KINDS_BEFORE_START {
        b.hook(k, host_hook(k, &d));
    }
    b.hook("startContainer", start_container_hook());
    b.hook("poststop", host_hook("poststop", &d));
    b.mount(
        json!({"destination": "/hooklog", "type": "bind", "source": d, "options": ["rbind", "rw"]}),
    );
    b.sh("echo process-ran > /hooklog/process");
    b.write();

    h.rt.create(&b.id, b.path()).ok();
    assert_eq!(read_log(&dir), KINDS_BEFORE_START, "after create");
    h.rt.start(&b.id).ok();
    assert!(
        wait_until(SECS10, || dir.join("process").exists()),
        "process did not run"
    );
    assert_eq!(
        read_log(&dir),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer"
        ],
        "after start"
    );
    h.rt.wait_status(&b.id, "stopped", SECS10);
    assert_eq!(read_log(&dir).len(), 4, "poststop must wait for delete");
    h.rt.delete(&b.id).ok();
    assert_eq!(
        read_log(&dir),
        [
            "prestart",
            "createRuntime",
            "createContainer",
            "startContainer",
            "poststop"
        ]
    );

    for k in [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststop",
    ] {
        let text = std::fs::read_to_string(dir.join(format!("{k}.json"))).unwrap_or_default();
        let st: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{k} hook got no JSON state on stdin ({e}): {text:?}"));
        assert_eq!(st["id"], b.id.as_str(), "{k}: {st}");
        assert!(st["ociVersion"].is_string(), "{k}: {st}");
        let bundle = st["bundle"].as_str().unwrap_or_default();
        assert_eq!(std::path::Path::new(bundle), b.path(), "{k}: {st}");
        if k != "poststop" {
            assert!(st["pid"].as_i64().is_some_and(|p| p > 0), "{k}: {st}");
        }
    }
    h.assert_no_leaks();
}

/// The spec: poststart hooks run as part of `start`, after the user process
/// was started and before `start` returns; never at `create` time.
/// (runc 1.1 runs them at `create`: it fails this test, berth must not.)
#[test]
fn poststart_runs_at_start_after_start_container() {
    let Some(h) = Harness::new("poststart") else {
        return;
    };
    let mut b = h.bundle();
    let dir = b.host_dir("hooklog");
    let d = dir.to_string_lossy().into_owned();
    b.hook("createRuntime", host_hook("createRuntime", &d));
    b.hook("startContainer", start_container_hook());
    b.hook("poststart", host_hook("poststart", &d));
    b.mount(
        json!({"destination": "/hooklog", "type": "bind", "source": d, "options": ["rbind", "rw"]}),
    );
    b.args(&["sleep", "1000"]);
    b.write();
    h.rt.create(&b.id, b.path()).ok();
    assert_eq!(
        read_log(&dir),
        ["createRuntime"],
        "poststart must not run at create"
    );
    h.rt.start(&b.id).ok();
    // poststart has completed when start returns.
    assert_eq!(
        read_log(&dir),
        ["createRuntime", "startContainer", "poststart"],
        "after start"
    );
    let st: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("poststart.json")).unwrap_or_default(),
    )
    .expect("poststart state JSON");
    assert_eq!(st["id"], b.id.as_str());
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn hooks_get_their_env_and_args() {
    let Some(h) = Harness::new("hook_env") else {
        return;
    };
    let mut b = h.bundle();
    let dir = b.host_dir("hookout");
    b.hook(
        "createRuntime",
        json!({"path": "/bin/sh",
               "args": ["custom-argv0", "-c", format!("echo \"$0 $HOOK_VAR\" > {}/out", dir.display())],
               "env": ["HOOK_VAR=from-spec"]}),
    );
    b.args(&["true"]);
    b.write();
    h.rt.run(&b.id, b.path()).ok();
    assert_eq!(
        std::fs::read_to_string(dir.join("out")).unwrap_or_default(),
        "custom-argv0 from-spec\n"
    );
}

/// A hook without `env` inherits one, as under runc and crun: the
/// runtime's own for hooks the runtime runs (Docker's prestart hook relies
/// on that), the container process's for startContainer.
#[test]
fn hooks_without_env_inherit_one() {
    let Some(h) = Harness::new("hook_inherit") else {
        return;
    };
    let mut b = h.bundle();
    let dir = b.host_dir("hookout");
    let d = dir.display();
    b.hook(
        "createRuntime",
        json!({"path": "/bin/sh",
               "args": ["sh", "-c", format!("echo \"$BERTH_TEST_MARK\" > {d}/runtime")]}),
    );
    b.hook(
        "startContainer",
        json!({"path": "/bin/sh",
               "args": ["sh", "-c", "echo \"$PROCESS_MARK\" > /hookout/container"]}),
    );
    b.mount(
        json!({"destination": "/hookout", "type": "bind", "source": d.to_string(),
                   "options": ["rbind", "rw"]}),
    );
    b.env("PROCESS_MARK", "from-process-env");
    b.args(&["true"]);
    b.write();
    h.rt.cmd_custom(
        ["run", "--bundle", &b.path().to_string_lossy(), &b.id],
        |c| {
            c.env("BERTH_TEST_MARK", "from-the-runtime");
        },
    )
    .ok();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    assert_eq!(read("runtime"), "from-the-runtime\n");
    assert_eq!(read("container"), "from-process-env\n");
    h.assert_no_leaks();
}

#[test]
fn poststop_runs_after_foreground_run() {
    let Some(h) = Harness::new("poststop_run") else {
        return;
    };
    let mut b = h.bundle();
    let dir = b.host_dir("hooklog");
    b.hook("poststop", host_hook("poststop", &dir.to_string_lossy()));
    b.args(&["true"]);
    b.write();
    h.rt.run(&b.id, b.path()).ok();
    assert_eq!(read_log(&dir), ["poststop"]);
}
