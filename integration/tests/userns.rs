//! User namespaces: mappings applied, root inside is not root outside, the
//! rootfs usable by the mapped root, and bad mappings refused cleanly.

use berth_integration::{Harness, SECS10};
use serde_json::json;

const HOST_BASE: u32 = 200_000;

fn with_userns(b: &mut berth_integration::Bundle) {
    b.namespace("user", None);
    b.with(|spec| {
        spec["linux"]["uidMappings"] =
            json!([{"containerID": 0, "hostID": HOST_BASE, "size": 65536}]);
        spec["linux"]["gidMappings"] =
            json!([{"containerID": 0, "hostID": HOST_BASE, "size": 65536}]);
        spec["root"]["readonly"] = json!(false);
    });
}

#[test]
fn mapped_root_inside_is_unprivileged_outside() {
    let Some(h) = Harness::new("userns_map") else {
        return;
    };
    let mut b = h.bundle();
    with_userns(&mut b);
    b.args(&["sleep", "100"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    let pid = h.rt.pid(&b.id);
    // Seen from the host, the container's root is HOST_BASE.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap()
        .to_string();
    assert!(
        uid_line
            .split_whitespace()
            .skip(1)
            .all(|u| u == HOST_BASE.to_string()),
        "{uid_line}"
    );
    let map = std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    let fields: Vec<&str> = map.split_whitespace().collect();
    assert_eq!(fields, ["0", &HOST_BASE.to_string(), "65536"], "{map}");
    assert_ne!(
        std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap(),
        std::fs::read_link("/proc/self/ns/user").unwrap()
    );
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn root_inside_owns_and_writes_the_rootfs() {
    let Some(h) = Harness::new("userns_rootfs") else {
        return;
    };
    let mut b = h.bundle();
    with_userns(&mut b);
    b.rootfs_dir("data");
    b.sh("id -u; stat -c %u /bin /data; echo hi > /data/f && echo wrote; hostname");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"0"), "uid inside: {out}");
    assert_eq!(lines.get(1), Some(&"0"), "/bin owner inside: {out}");
    assert!(out.stdout.contains("wrote"), "{out}");
    // On disk the file belongs to the host's view of the container root
    // (through the id-mapped rootfs) — never to a privileged host user
    // other than the mapping's.
    use std::os::unix::fs::MetadataExt;
    let owner = std::fs::metadata(b.rootfs().join("data/f")).unwrap().uid();
    assert!(owner == 0 || owner == HOST_BASE, "owner {owner}");
    h.assert_no_leaks();
}

#[test]
fn capabilities_do_not_reach_the_host() {
    let Some(h) = Harness::new("userns_caps") else {
        return;
    };
    let mut b = h.bundle();
    with_userns(&mut b);
    // CAP_MKNOD inside, yet device nodes are out of reach, and the host's
    // sysctls too: the kernel checks those against the initial namespace.
    b.sh(
        "grep CapEff /proc/self/status; mknod /tmp/null c 1 3 2>/dev/null; echo mknod=$?; \
          echo 3 > /proc/sys/vm/drop_caches 2>/dev/null; echo sysctl=$?",
    );
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.contains("mknod=1"), "{out}");
    assert!(out.stdout.contains("sysctl=1"), "{out}");
    h.assert_no_leaks();
}

#[test]
fn exec_joins_the_user_namespace() {
    let Some(h) = Harness::new("userns_exec") else {
        return;
    };
    let mut b = h.bundle();
    with_userns(&mut b);
    b.args(&["sleep", "100"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    let out = h.rt.cmd_timeout(
        [
            "exec",
            b.id.as_str(),
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map",
        ],
        SECS10,
    );
    out.ok();
    assert!(out.stdout.starts_with("0\n"), "{out}");
    assert!(out.stdout.contains(&HOST_BASE.to_string()), "{out}");
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn bad_mappings_are_refused_and_leave_nothing() {
    let Some(h) = Harness::new("userns_bad") else {
        return;
    };
    for (name, uids) in [
        (
            "overlap",
            json!([{"containerID": 0, "hostID": HOST_BASE, "size": 100}, {"containerID": 50, "hostID": 300000, "size": 10}]),
        ),
        ("empty", json!([])),
        (
            "zero size",
            json!([{"containerID": 0, "hostID": HOST_BASE, "size": 0}]),
        ),
    ] {
        let mut b = h.bundle();
        with_userns(&mut b);
        b.with(|spec| spec["linux"]["uidMappings"] = uids.clone());
        b.write();
        let out = h.rt.run(&b.id, b.path());
        out.failed();
        assert!(out.stderr.contains("uidMappings"), "{name}: {out}");
    }
    // Mappings without a user namespace.
    let mut b = h.bundle();
    b.with(|spec| {
        spec["linux"]["uidMappings"] = json!([{"containerID": 0, "hostID": HOST_BASE, "size": 1}]);
    });
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.failed();
    assert!(out.stderr.contains("user namespace"), "{out}");
    h.assert_no_leaks();
}

/// `berth spec --rootless` plus `berth run` as an unprivileged user: a
/// user namespace mapping only that user, no cgroup of its own, state in
/// a directory the user owns.
#[test]
fn rootless_run_as_an_unprivileged_user() {
    use std::os::unix::fs::PermissionsExt;
    let Some(h) = Harness::new("rootless") else {
        return;
    };
    if std::fs::read_to_string("/proc/sys/user/max_user_namespaces").is_ok_and(|n| n.trim() == "0")
    {
        eprintln!("SKIP: user namespaces are disabled on this kernel");
        return;
    }
    let b = h.bundle();
    let dir = b.path().to_path_buf();
    let root = dir.join("state");
    let status = std::process::Command::new("chown")
        .args(["-R", "nobody:nogroup"])
        .arg(&dir)
        .status()
        .expect("chown");
    assert!(status.success());
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::remove_file(dir.join("config.json")).ok();
    let bin = h.rt.bin.display().to_string();
    let script = format!(
        "set -e; cd {dir}; {bin} spec --rootless; \
         sed -i 's/\"terminal\": true/\"terminal\": false/; s/\"sh\"$/\"sh\", \"-c\", \"id -u; cat \\/proc\\/self\\/uid_map\"/' config.json; \
         {bin} --root {root} run rl-{id}; {bin} --root {root} list -q",
        dir = dir.display(),
        root = root.display(),
        id = std::process::id(),
    );
    let out = std::process::Command::new("runuser")
        .args(["-u", "nobody", "--", "sh", "-c", &script])
        .output()
        .expect("runuser");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"0"), "root inside: {stdout}");
    let map: Vec<&str> = lines
        .get(1)
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(map, ["0", "65534", "1"], "only nobody is mapped: {stdout}");
    assert_eq!(lines.len(), 2, "the container is gone after run: {stdout}");
}

/// A bind source the container's root could not reach on its own (a
/// parent directory closed to everyone but the host's root) is still
/// mounted: the runtime opens it before entering the user namespace.
#[test]
fn inaccessible_bind_source_is_mounted_anyway() {
    use std::os::unix::fs::PermissionsExt;
    let Some(h) = Harness::new("userns_bind") else {
        return;
    };
    let mut b = h.bundle();
    with_userns(&mut b);
    let closed = b.host_dir("closed");
    std::fs::create_dir_all(closed.join("dir")).unwrap();
    std::fs::write(closed.join("dir/foo.txt"), "hello").unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();
    b.mount(json!({"destination": "/mnt/a", "type": "bind", "source": closed.join("dir"), "options": ["bind"]}));
    b.mount(json!({"destination": "/mnt/b", "type": "bind", "source": closed.join("dir"), "options": ["rbind", "ro"]}));
    b.sh("cat /mnt/a/foo.txt; echo; cat /mnt/b/foo.txt; echo; touch /mnt/b/x 2>&1");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(out.stdout.matches("hello").count(), 2, "{out}");
    assert!(out.stdout.contains("Read-only file system"), "{out}");
    h.assert_no_leaks();
}
