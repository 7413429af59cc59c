//! Namespace isolation: pid, uts, ipc, net, mount, cgroup, and joining by path.

use berth_integration::{host_sh, Harness, MountGuard, NetnsGuard, SECS10};

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .expect("read host ns link")
        .to_string_lossy()
        .into_owned()
}

#[test]
fn pid_namespace_makes_process_pid_1() {
    let Some(h) = Harness::new("pidns") else {
        return;
    };
    let mut b = h.bundle();
    b.sh("echo $$; cut -d' ' -f1 /proc/self/stat; ls -d /proc/[0-9]* | wc -l");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"1"), "shell must be pid 1: {out}");
    assert_ne!(lines.get(1), Some(&"1"), "cut is a child, not pid 1: {out}");
    let n: usize = lines
        .get(2)
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(999);
    assert!(
        n <= 4,
        "only the container's processes may be visible, saw {n}: {out}"
    );
}

#[test]
fn all_namespaces_differ_from_host() {
    let Some(h) = Harness::new("ns_differ") else {
        return;
    };
    let mut b = h.bundle();
    b.namespace("cgroup", None);
    b.sh("for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    let inside: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(inside.len(), 6, "{out}");
    for (i, kind) in ["pid", "net", "ipc", "uts", "mnt", "cgroup"]
        .iter()
        .enumerate()
    {
        assert_ne!(
            inside[i],
            host_ns(kind),
            "{kind} namespace is the host's: {out}"
        );
    }
}

#[test]
fn without_a_namespace_the_host_one_is_kept() {
    let Some(h) = Harness::new("ns_shared") else {
        return;
    };
    let mut b = h.bundle();
    b.without_namespace("ipc");
    b.sh("readlink /proc/self/ns/ipc");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout.trim(), host_ns("ipc"), "{out}");
}

#[test]
fn hostname_from_config_and_uts_isolated() {
    let Some(h) = Harness::new("uts") else { return };
    let host_before = nix::unistd::gethostname().expect("hostname");
    let mut b = h.bundle();
    b.set("/hostname", serde_json::json!("iso-host"));
    // Changing the hostname inside must not touch the host's.
    b.set(
        "/process/capabilities/effective",
        serde_json::json!(["CAP_SYS_ADMIN"]),
    );
    b.set(
        "/process/capabilities/permitted",
        serde_json::json!(["CAP_SYS_ADMIN"]),
    );
    b.set(
        "/process/capabilities/bounding",
        serde_json::json!(["CAP_SYS_ADMIN"]),
    );
    b.sh("hostname; hostname changed-inside && hostname");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout, "iso-host\nchanged-inside\n", "{out}");
    assert_eq!(nix::unistd::gethostname().expect("hostname"), host_before);
}

#[test]
fn ipc_namespace_isolated() {
    let Some(h) = Harness::new("ipc") else { return };
    let mut b = h.bundle();
    // A fresh ipc namespace has no SysV objects and default limits.
    b.sh("cat /proc/sysvipc/shm | wc -l; readlink /proc/self/ns/ipc");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.first().map(|s| s.trim()),
        Some("1"),
        "only the header line expected: {out}"
    );
    assert_ne!(lines.get(1).copied(), Some(host_ns("ipc").as_str()));
}

#[test]
fn network_namespace_has_only_loopback() {
    let Some(h) = Harness::new("netns") else {
        return;
    };
    let mut b = h.bundle();
    b.sh("ls /sys/class/net; echo ---; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout, "lo\n---\nlo\n", "{out}");
}

#[test]
fn mount_namespace_hides_host_mounts() {
    let Some(h) = Harness::new("mntns") else {
        return;
    };
    let dir = h.tempdir();
    let mp = dir.join("host-only-tmpfs");
    let _g = MountGuard::tmpfs(&mp);
    std::fs::write(mp.join("secret"), "host").expect("write in host tmpfs");
    let mut b = h.bundle();
    b.sh("cat /proc/self/mountinfo");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.split_whitespace().nth(4) == Some("/")),
        "container root mount missing: {out}"
    );
    assert!(
        !out.stdout.contains("host-only-tmpfs"),
        "host mount visible inside the container: {out}"
    );
    // And the container's mounts do not show up on the host.
    assert!(berth_integration::leak::mounts_mentioning(&b.rootfs().to_string_lossy()).is_empty());
}

#[test]
fn cgroup_namespace_hides_host_cgroup_paths() {
    let Some(h) = Harness::new("cgroupns") else {
        return;
    };
    let mut b = h.bundle();
    b.namespace("cgroup", None);
    b.sh("cat /proc/self/cgroup");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(!out.stdout.trim().is_empty(), "{out}");
    for l in out.stdout.lines() {
        assert!(
            l.ends_with(":/"),
            "cgroup path not namespaced: {l:?} in {out}"
        );
        assert!(!l.contains(&b.id), "{out}");
    }
}

#[test]
fn without_cgroup_namespace_host_path_visible() {
    let Some(h) = Harness::new("no_cgroupns") else {
        return;
    };
    let mut b = h.bundle();
    b.sh("cat /proc/self/cgroup");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(
        out.stdout.contains(&format!("/berth-integ/{}", b.id)),
        "process must be in the configured cgroupsPath: {out}"
    );
}

#[test]
fn join_named_network_namespace_by_path() {
    let Some(h) = Harness::new("join_netns") else {
        return;
    };
    let name = format!("berth-it-{}", std::process::id());
    let ns = NetnsGuard::new(&format!("{name}-{}", b_counter()));
    // Put something recognisable in that namespace: loopback up.
    host_sh(&format!("ip netns exec {} ip link set lo up", ns.name));
    let want = format!(
        "net:[{}]",
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(ns.path()).expect("netns file"))
    );
    let mut b = h.bundle();
    b.namespace("network", Some(&ns.path().to_string_lossy()));
    b.sh("readlink /proc/self/ns/net; cat /sys/class/net/lo/operstate");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some(want.as_str()), "{out}");
    assert_eq!(
        lines.get(1).copied(),
        Some("unknown"),
        "lo is up in the joined ns: {out}"
    );
}

fn b_counter() -> usize {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::SeqCst)
}

#[test]
fn join_network_namespace_of_running_container() {
    let Some(h) = Harness::new("join_ctr_netns") else {
        return;
    };
    let mut a = h.bundle();
    a.args(&["sleep", "1000"]);
    a.write();
    h.rt.run_detached(&a.id, a.path()).ok();
    let pid = h.rt.pid(&a.id);
    let a_net = std::fs::read_link(format!("/proc/{pid}/ns/net"))
        .expect("ns of A")
        .to_string_lossy()
        .into_owned();

    let mut b = h.bundle();
    b.namespace("network", Some(&format!("/proc/{pid}/ns/net")));
    b.sh("readlink /proc/self/ns/net; ls /sys/class/net");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout, format!("{a_net}\nlo\n"), "{out}");
    assert_ne!(a_net, host_ns("net"));

    h.rt.kill(&a.id, "KILL").ok();
    h.rt.wait_status(&a.id, "stopped", SECS10);
    h.rt.delete(&a.id).ok();
    h.assert_no_leaks();
}

/// A time namespace with `timeOffsets`: the container's boot clock is a day
/// ahead of the host's, for init and for exec'd processes alike.
#[test]
fn time_namespace_with_offsets() {
    let Some(h) = Harness::new("timens") else {
        return;
    };
    let mut b = h.bundle();
    b.namespace("time", None);
    b.with(|spec| {
        spec["linux"]["timeOffsets"] = serde_json::json!({"boottime": {"secs": 86400}});
    });
    b.args(&["sleep", "100"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    let host: f64 = std::fs::read_to_string("/proc/uptime")
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let out =
        h.rt.cmd_timeout(["exec", b.id.as_str(), "cat", "/proc/uptime"], SECS10);
    out.ok();
    let inside: f64 = out
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0.0);
    assert!(inside - host > 86_000.0, "host {host}, container {inside}");
    assert_ne!(
        std::fs::read_link(format!("/proc/{}/ns/time", h.rt.pid(&b.id))).unwrap(),
        std::fs::read_link("/proc/self/ns/time").unwrap()
    );
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}
