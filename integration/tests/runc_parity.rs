//! Behaviour runc's users rely on beyond the OCI spec: signal 0, run
//! --keep, a read-only /dev, recursive mount options, proc on a symlink.

use berth_integration::{Harness, MountGuard, SECS10};
use serde_json::json;

#[test]
fn kill_with_signal_zero_probes_liveness() {
    let Some(h) = Harness::new("kill0") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["sleep", "100"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    h.rt.kill(&b.id, "0").ok();
    assert_eq!(h.rt.status(&b.id), "running", "signal 0 must not kill");
    h.rt.kill(&b.id, "KILL").ok();
    h.rt.wait_status(&b.id, "stopped", SECS10);
    h.rt.kill(&b.id, "0").failed();
    h.rt.delete(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn run_keep_leaves_a_stopped_container() {
    let Some(h) = Harness::new("keep") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["true"]);
    b.write();
    h.rt.run_with(&b.id, b.path(), &["--keep"]).ok();
    assert_eq!(h.rt.status(&b.id), "stopped");
    h.rt.delete(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn read_only_dev_still_gets_its_submounts_and_devices() {
    let Some(h) = Harness::new("ro_dev") else {
        return;
    };
    let mut b = h.bundle();
    b.with(|spec| {
        for m in spec["mounts"].as_array_mut().unwrap() {
            if m["destination"] == "/dev" {
                m["options"].as_array_mut().unwrap().push(json!("ro"));
            }
        }
    });
    b.sh("grep '^tmpfs /dev ' /proc/mounts; [ -c /dev/null ] && echo null; [ -d /dev/pts ] && echo pts; touch /dev/x 2>&1; true");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(
        out.stdout.contains(" ro,") || out.stdout.contains(" ro "),
        "{out}"
    );
    assert!(
        out.stdout.contains("null") && out.stdout.contains("pts"),
        "{out}"
    );
    assert!(out.stdout.contains("Read-only file system"), "{out}");
    h.assert_no_leaks();
}

#[test]
fn rro_makes_submounts_read_only_too() {
    let Some(h) = Harness::new("rro") else { return };
    let mut b = h.bundle();
    let vol = b.host_dir("vol");
    let sub = MountGuard::tmpfs(&vol.join("sub"));
    b.mount(
        json!({"destination": "/mnt", "type": "bind", "source": vol, "options": ["rbind", "rro"]}),
    );
    b.sh("touch /mnt/a 2>&1; echo top=$?; touch /mnt/sub/b 2>&1; echo sub=$?");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.contains("top=1"), "{out}");
    assert!(out.stdout.contains("sub=1"), "{out}");
    drop(sub);
    h.assert_no_leaks();
}

#[test]
fn proc_on_a_symlink_is_refused() {
    let Some(h) = Harness::new("proc_link") else {
        return;
    };
    let b = h.bundle();
    let proc_dir = b.rootfs().join("proc");
    let _ = std::fs::remove_dir(&proc_dir);
    std::os::unix::fs::symlink("/etc", &proc_dir).unwrap();
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.failed();
    assert!(out.stderr.contains("symlink"), "{out}");
    h.assert_no_leaks();
}

/// Without pivot_root the host's mounts stay below the chroot; a nested
/// user namespace must still not be able to mount an unmasked /proc.
#[test]
fn no_pivot_does_not_expose_the_hosts_proc() {
    let Some(h) = Harness::new("nopivot_proc") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&[
        "unshare",
        "-mrpf",
        "sh",
        "-c",
        "mount -t proc none /proc && echo mounted",
    ]);
    b.with(|spec| {
        for set in ["bounding", "permitted"] {
            if let Some(list) = spec["process"]["capabilities"][set].as_array_mut() {
                list.push(json!("CAP_SETFCAP"));
            }
        }
    });
    b.write();
    let out = h.rt.run_with(&b.id, b.path(), &["--no-pivot"]);
    assert!(!out.stdout.contains("mounted"), "{out}");
    assert!(
        out.stderr.contains("permission denied") || out.stdout.contains("permission denied"),
        "{out}"
    );
    h.assert_no_leaks();
}

/// `exec --cgroup [CONTROLLERS:]PATH` puts the process in a sub-cgroup of
/// the container's, and refuses paths outside it, unknown controllers and
/// sub-cgroups that do not exist.
#[test]
fn exec_into_sub_cgroups() {
    let Some(h) = Harness::new("exec_subcg") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["sleep", "100"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    for (arg, words) in [
        ("..", "not a sub cgroup path"),
        ("nope", "no such file"),
        ("whaaat:/", "unknown controller"),
    ] {
        let out = h.rt.cmd(["exec", "--cgroup", arg, b.id.as_str(), "true"]);
        out.failed();
        assert!(out.stderr.contains(words), "{arg}: {out}");
    }
    let pid = h.rt.pid(&b.id);
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let mem = cgroup
        .lines()
        .find(|l| l.contains(":memory:"))
        .unwrap()
        .rsplit(':')
        .next()
        .unwrap()
        .to_string();
    let sub = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(mem.trim_start_matches('/'))
        .join("sub");
    std::fs::create_dir(&sub).unwrap();
    let out = h.rt.cmd_timeout(
        [
            "exec",
            "--cgroup",
            "memory:sub",
            b.id.as_str(),
            "cat",
            "/proc/self/cgroup",
        ],
        SECS10,
    );
    out.ok();
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(":memory:"))
        .unwrap_or_default()
        .to_string();
    assert!(line.ends_with("/sub"), "{out}");
    let pids = out
        .stdout
        .lines()
        .find(|l| l.contains(":pids:"))
        .unwrap_or_default()
        .to_string();
    assert!(!pids.ends_with("/sub"), "only memory moved: {out}");
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}
