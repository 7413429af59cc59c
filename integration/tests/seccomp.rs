//! Seccomp from `linux.seccomp`: actions, errno values, argument
//! conditions, unknown syscalls, both installation orders (with and without
//! noNewPrivileges), exec'd processes filtered too, bad profiles refused.

use berth_integration::{Harness, SECS10};
use serde_json::{json, Value};

fn profile(bundle: &mut berth_integration::Bundle, seccomp: Value, nnp: bool) {
    bundle.with(|spec| {
        spec["linux"]["seccomp"] = seccomp;
        spec["process"]["noNewPrivileges"] = json!(nnp);
    });
}

#[test]
fn errno_action_with_value_and_unknown_syscalls_skipped() {
    let Some(h) = Harness::new("seccomp_errno") else {
        return;
    };
    for nnp in [true, false] {
        let mut b = h.bundle();
        profile(
            &mut b,
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir", "mkdirat", "no_such_syscall_anywhere"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13}
            ]}),
            nnp,
        );
        b.sh(
            "mkdir /tmp/x 2>&1; echo mkdir=$?; grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status",
        );
        b.write();
        let out = h.rt.run(&b.id, b.path());
        out.ok();
        assert!(
            out.stdout.contains("Permission denied"),
            "errno 13 is EACCES: {out}"
        );
        assert!(out.stdout.contains("mkdir=1"), "{out}");
        assert!(out.stdout.contains("Seccomp:\t2"), "filter mode: {out}");
        let nnp_line = if nnp {
            "NoNewPrivs:\t1"
        } else {
            "NoNewPrivs:\t0"
        };
        assert!(out.stdout.contains(nnp_line), "{out}");
    }
    h.assert_no_leaks();
}

#[test]
fn kill_action_kills_with_sigsys() {
    let Some(h) = Harness::new("seccomp_kill") else {
        return;
    };
    let mut b = h.bundle();
    profile(
        &mut b,
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"}
        ]}),
        true,
    );
    // busybox sh calls getppid() at startup (for $PPID): killed at once.
    b.sh("echo never");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    assert_eq!(out.code, Some(128 + 31), "killed by SIGSYS: {out}");
    assert!(!out.stdout.contains("never"), "{out}");
    h.assert_no_leaks();
}

#[test]
fn argument_conditions() {
    let Some(h) = Harness::new("seccomp_args") else {
        return;
    };
    let mut b = h.bundle();
    // kill(pid, SIGUSR1=10) refused, kill(pid, 0) allowed.
    profile(
        &mut b,
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
             "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"}]}
        ]}),
        true,
    );
    b.sh("trap 'echo got-usr1' USR1; kill -USR1 $$ 2>&1; echo usr1=$?; kill -0 $$; echo zero=$?");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.contains("usr1=1"), "{out}");
    assert!(!out.stdout.contains("got-usr1"), "{out}");
    assert!(out.stdout.contains("zero=0"), "{out}");
    h.assert_no_leaks();
}

#[test]
fn exec_is_filtered_too() {
    let Some(h) = Harness::new("seccomp_exec") else {
        return;
    };
    let mut b = h.bundle();
    profile(
        &mut b,
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]}),
        false,
    );
    b.args(&["sleep", "100"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    let out = h.rt.cmd_timeout(
        [
            "exec",
            b.id.as_str(),
            "sh",
            "-c",
            "mkdir /tmp/y; echo mkdir=$?",
        ],
        SECS10,
    );
    assert!(out.stdout.contains("mkdir=1"), "{out}");
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn malformed_profiles_are_refused_and_leave_nothing() {
    let Some(h) = Harness::new("seccomp_bad") else {
        return;
    };
    for (what, seccomp) in [
        ("action", json!({"defaultAction": "SCMP_ACT_NOPE"})),
        (
            "operator",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_WHAT"}]}]}),
        ),
        (
            "index",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ERRNO", "args": [{"index": 9, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
        ),
        (
            "notify",
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_NOTIFY"}]}),
        ),
    ] {
        let mut b = h.bundle();
        profile(&mut b, seccomp, true);
        b.write();
        let out = h.rt.run(&b.id, b.path());
        out.failed();
        assert!(out.stderr.contains("seccomp"), "{what}: {out}");
    }
    h.assert_no_leaks();
}
