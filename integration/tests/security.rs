//! Privileges and hardening: capabilities, noNewPrivileges, read-only rootfs,
//! masked and read-only paths, sysctl, device nodes.

use berth_integration::caps::{mask, parse_status_mask};
use berth_integration::{Harness, NetnsGuard};
use serde_json::json;

fn set_caps(b: &mut berth_integration::Bundle, eff: &[&str], bounding: &[&str]) {
    b.set(
        "/process/capabilities",
        json!({
            "bounding": bounding,
            "effective": eff,
            "permitted": bounding,
            "inheritable": []
        }),
    );
}

#[test]
fn capabilities_match_spec_for_root() {
    let Some(h) = Harness::new("caps") else {
        return;
    };
    // For uid 0 the kernel makes effective = permitted = bounding at execve,
    // so the spec's sets are all equal here.
    let set = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let mut b = h.bundle();
    set_caps(&mut b, &set, &set);
    b.args(&["cat", "/proc/self/status"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(
        parse_status_mask(&out.stdout, "CapEff"),
        Some(mask(&set)),
        "{out}"
    );
    assert_eq!(
        parse_status_mask(&out.stdout, "CapPrm"),
        Some(mask(&set)),
        "{out}"
    );
    assert_eq!(
        parse_status_mask(&out.stdout, "CapBnd"),
        Some(mask(&set)),
        "{out}"
    );
    assert_eq!(parse_status_mask(&out.stdout, "CapInh"), Some(0), "{out}");
}

/// Names that are no capability (a newer kernel's, a typo) are ignored
/// with a warning, in config.json, process.json and `exec --cap`, as runc
/// and crun ignore them.
#[test]
fn unknown_capabilities_are_ignored_with_a_warning() {
    let Some(h) = Harness::new("caps_unknown") else {
        return;
    };
    let set = ["CAP_KILL", "CAP_NOT_YET_INVENTED"];
    let mut b = h.bundle();
    set_caps(&mut b, &set, &set);
    b.args(&["sleep", "1000"]);
    b.write();
    let out = h.rt.run_detached(&b.id, b.path());
    out.ok();
    assert!(
        out.stderr
            .contains("ignoring unknown capabilities: CAP_NOT_YET_INVENTED"),
        "{out}"
    );
    let status = h.rt.exec(&b.id, &["cat", "/proc/self/status"]);
    status.ok();
    assert_eq!(
        parse_status_mask(&status.stdout, "CapEff"),
        Some(mask(&["CAP_KILL"])),
        "{status}"
    );

    let out = h.rt.exec_with(
        &b.id,
        &["--cap", "CAP_NOT_YET_INVENTED", "--cap", "CAP_CHOWN"],
        &["cat", "/proc/self/status"],
    );
    out.ok();
    assert!(out.stderr.contains("CAP_NOT_YET_INVENTED"), "{out}");
    assert_eq!(
        parse_status_mask(&out.stdout, "CapEff"),
        Some(mask(&["CAP_KILL", "CAP_CHOWN"])),
        "{out}"
    );

    let file = h.tempdir().join("process.json");
    let process = json!({"args": ["cat", "/proc/self/status"], "cwd": "/",
        "user": {"uid": 0, "gid": 0},
        "capabilities": {"bounding": set, "effective": set, "permitted": set}});
    std::fs::write(&file, process.to_string()).expect("write process.json");
    let out =
        h.rt.exec_with(&b.id, &["--process", &file.to_string_lossy()], &[]);
    out.ok();
    assert_eq!(
        parse_status_mask(&out.stdout, "CapEff"),
        Some(mask(&["CAP_KILL"])),
        "{out}"
    );
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn capabilities_match_spec_for_non_root_with_ambient() {
    let Some(h) = Harness::new("caps_user") else {
        return;
    };
    let eff = ["CAP_NET_BIND_SERVICE"];
    let bnd = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
    let mut b = h.bundle();
    b.set("/process/user", json!({"uid": 1000, "gid": 1000}));
    b.set(
        "/process/capabilities",
        json!({
            "bounding": bnd,
            "effective": eff,
            "permitted": eff,
            "inheritable": eff,
            "ambient": eff
        }),
    );
    b.args(&["cat", "/proc/self/status"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(
        parse_status_mask(&out.stdout, "CapEff"),
        Some(mask(&eff)),
        "{out}"
    );
    assert_eq!(
        parse_status_mask(&out.stdout, "CapPrm"),
        Some(mask(&eff)),
        "{out}"
    );
    assert_eq!(
        parse_status_mask(&out.stdout, "CapAmb"),
        Some(mask(&eff)),
        "{out}"
    );
    assert_eq!(
        parse_status_mask(&out.stdout, "CapBnd"),
        Some(mask(&bnd)),
        "{out}"
    );
}

#[test]
fn dropped_capability_is_really_gone() {
    let Some(h) = Harness::new("caps_gone") else {
        return;
    };
    let mut b = h.bundle();
    set_caps(&mut b, &["CAP_KILL"], &["CAP_KILL"]);
    // Without CAP_CHOWN/CAP_DAC_OVERRIDE even root cannot chown or read 000 files.
    b.rootfs_file("/secret", "x", 0o000);
    b.rootfs_file("/owned", "x", 0o644);
    b.sh(
        "chown 1000 /owned; echo chown=$?; cat /secret; echo cat=$?; grep CapEff /proc/self/status",
    );
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.contains("chown=1"), "{out}");
    assert!(out.stdout.contains("cat=1"), "{out}");
    assert_eq!(
        parse_status_mask(&out.stdout, "CapEff"),
        Some(mask(&["CAP_KILL"])),
        "{out}"
    );
}

#[test]
fn no_new_privileges_set() {
    let Some(h) = Harness::new("nnp") else { return };
    let mut b = h.bundle();
    b.set("/process/noNewPrivileges", json!(true));
    b.args(&["grep", "NoNewPrivs", "/proc/self/status"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout.split_whitespace().last(), Some("1"), "{out}");

    let mut b = h.bundle();
    b.set("/process/noNewPrivileges", json!(false));
    b.args(&["grep", "NoNewPrivs", "/proc/self/status"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout.split_whitespace().last(), Some("0"), "{out}");
}

#[test]
fn readonly_rootfs_refuses_writes() {
    let Some(h) = Harness::new("ro_rootfs") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/root/readonly", json!(true));
    b.sh("touch /newfile; echo touch=$?; echo ok > /dev/shm/x && cat /dev/shm/x");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.contains("touch=1"), "{out}");
    assert!(out.stderr.contains("Read-only file system"), "{out}");
    assert!(
        out.stdout.contains("ok"),
        "tmpfs mounts stay writable: {out}"
    );
    assert!(!b.rootfs().join("newfile").exists());
}

#[test]
fn masked_paths_are_empty_or_unreadable() {
    let Some(h) = Harness::new("masked") else {
        return;
    };
    let mut b = h.bundle();
    b.rootfs_file("/masked-dir/inner", "should not be seen", 0o644);
    b.rootfs_file("/masked-file", "should not be seen", 0o644);
    b.with(|s| {
        let m = s["linux"]["maskedPaths"]
            .as_array_mut()
            .expect("maskedPaths");
        m.push(json!("/masked-dir"));
        m.push(json!("/masked-file"));
    });
    b.sh(
        "echo dir:$(ls -A /masked-dir | wc -l); echo file:$(wc -c < /masked-file); \
         echo keys:$(wc -c < /proc/keys); \
         if [ -e /proc/kcore ]; then echo kcore:$(head -c 16 /proc/kcore | wc -c); else echo kcore:0; fi; \
         touch /masked-dir/x; echo touch=$?; \
         grep -c ' /masked-dir ' /proc/self/mountinfo",
    );
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    for want in ["dir:0", "file:0", "keys:0", "kcore:0", "touch=1"] {
        assert!(
            out.stdout.lines().any(|l| l == want),
            "{want} expected: {out}"
        );
    }
    // The host files are untouched.
    assert!(b.rootfs().join("masked-dir/inner").exists());
}

#[test]
fn readonly_paths_are_readonly() {
    let Some(h) = Harness::new("ro_paths") else {
        return;
    };
    let mut b = h.bundle();
    b.rootfs_file("/ro-dir/file", "readable", 0o644);
    b.with(|s| {
        s["linux"]["readonlyPaths"]
            .as_array_mut()
            .expect("readonlyPaths")
            .push(json!("/ro-dir"));
    });
    b.sh(
        "cat /ro-dir/file; echo; touch /ro-dir/new; echo touch=$?; \
         echo 1 > /proc/sys/kernel/domainname; echo sys=$?; echo > /proc/sysrq-trigger; echo sysrq=$?",
    );
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.starts_with("readable\n"), "{out}");
    assert!(out.stdout.contains("touch=1"), "{out}");
    assert!(out.stdout.contains("sys=1"), "{out}");
    assert!(out.stdout.contains("sysrq=1"), "{out}");
    assert!(!b.rootfs().join("ro-dir/new").exists());
}

#[test]
fn sysctl_applied_inside() {
    let Some(h) = Harness::new("sysctl") else {
        return;
    };
    let host_fwd = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default();
    let mut b = h.bundle();
    b.set(
        "/linux/sysctl",
        json!({"net.ipv4.ip_forward": "1", "kernel.shm_rmid_forced": "1"}),
    );
    b.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shm_rmid_forced");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout, "1\n1\n", "{out}");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap_or_default(),
        host_fwd,
        "the host's sysctl must not change"
    );
}

/// A network namespace joined by path takes net.* sysctls, unless it is
/// the runtime's own (the host's): that is refused before anything is
/// made, as runc refuses it. kernel.hostname is never a sysctl.
#[test]
fn sysctls_that_would_change_the_host_are_refused() {
    let Some(h) = Harness::new("sysctl_host") else {
        return;
    };
    let netns = NetnsGuard::new(&format!("berth-sysctl-{}", std::process::id()));
    let mut b = h.bundle();
    b.namespace("network", Some(&netns.path().to_string_lossy()));
    b.set("/linux/sysctl", json!({"net.ipv4.ip_forward": "1"}));
    b.args(&["cat", "/proc/sys/net/ipv4/ip_forward"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout, "1\n", "{out}");

    for (ns, sysctl, why) in [
        (
            "/proc/self/ns/net",
            json!({"net.ipv4.ip_forward": "1"}),
            "runtime's own",
        ),
        ("", json!({"kernel.hostname": "other"}), "hostname field"),
    ] {
        let mut b = h.bundle();
        if !ns.is_empty() {
            b.namespace("network", Some(ns));
        }
        b.set("/linux/sysctl", sysctl);
        b.args(&["true"]);
        b.write();
        let out = h.rt.run(&b.id, b.path());
        out.failed();
        assert!(out.stderr.contains(why), "{out}");
        assert!(!h.rt.state_dir(&b.id).exists(), "{out}");
    }
    h.assert_no_leaks();
}

#[test]
fn linux_devices_create_nodes() {
    let Some(h) = Harness::new("devices") else {
        return;
    };
    let mut b = h.bundle();
    b.set(
        "/linux/devices",
        json!([{"path": "/dev/mynull", "type": "c", "major": 1, "minor": 3,
                "fileMode": 438, "uid": 0, "gid": 0},
               // Anywhere, as under runc and crun, its directory created.
               {"path": "/var/new/dir/null", "type": "c", "major": 1, "minor": 3}]),
    );
    b.with(|s| {
        s["linux"]["resources"]["devices"]
            .as_array_mut()
            .expect("device rules")
            .push(json!({"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}));
    });
    b.sh("stat -c '%F %t:%T %a' /dev/mynull /var/new/dir/null; echo hi > /dev/mynull && echo write-ok");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(
        out.stdout, "character special file 1:3 666\ncharacter special file 1:3 666\nwrite-ok\n",
        "{out}"
    );
}

#[test]
fn device_cgroup_denies_unlisted_devices() {
    let Some(h) = Harness::new("devices_deny") else {
        return;
    };
    let mut b = h.bundle();
    let mut caps = vec!["CAP_MKNOD"];
    caps.extend(["CAP_AUDIT_WRITE", "CAP_KILL"]);
    set_caps(&mut b, &caps, &caps);
    // Default rules deny everything not listed: a hand-made sda node is unusable.
    b.sh("mknod /tmp/sda b 8 0; echo mknod=$?; head -c 1 /tmp/sda >/dev/null 2>&1; echo read=$?");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.contains("mknod=0"), "{out}");
    assert!(out.stdout.contains("read=1"), "{out}");
}

#[test]
fn default_dev_nodes_and_symlinks() {
    let Some(h) = Harness::new("default_dev") else {
        return;
    };
    let mut b = h.bundle();
    b.sh(
        "for d in null zero full random urandom tty; do [ -c /dev/$d ] && echo c:$d; done; \
         for l in fd stdin stdout stderr; do [ -L /dev/$l ] && echo l:$l:$(readlink /dev/$l); done; \
         [ -e /dev/ptmx ] && echo ptmx; [ -d /dev/pts ] && echo pts; [ -d /dev/shm ] && echo shm; \
         head -c 4 /dev/zero | wc -c; echo x > /dev/full; echo full=$?; echo via-fd >> /dev/stdout",
    );
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        assert!(
            out.stdout.lines().any(|l| l == format!("c:{d}")),
            "/dev/{d} missing: {out}"
        );
    }
    for (l, t) in [
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        assert!(
            out.stdout.lines().any(|x| x == format!("l:{l}:{t}")),
            "/dev/{l} -> {t} missing: {out}"
        );
    }
    for w in ["ptmx", "pts", "shm", "4", "full=1", "via-fd"] {
        assert!(out.stdout.lines().any(|x| x == w), "{w} expected: {out}");
    }
}
