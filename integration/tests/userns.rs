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

/// `create` then `start`: init, root of its user namespace and so another
/// host user, opens the exec fifo berth made as root. It is the
/// container's root's, as runc makes it, whatever berth's umask.
#[test]
fn create_then_start_in_a_user_namespace() {
    let Some(h) = Harness::new("userns_start") else {
        return;
    };
    let mut b = h.bundle();
    with_userns(&mut b);
    b.sh("id -u > /started");
    b.write();
    let create = format!(
        "umask 077 && exec {} --root {} create --bundle {} {}",
        h.rt.bin.display(),
        h.rt.root().display(),
        b.path().display(),
        b.id
    );
    berth_integration::runtime::run_bounded(
        std::process::Command::new("/bin/sh").args(["-c", &create]),
        SECS10,
    )
    .ok();
    h.rt.start(&b.id).ok();
    h.rt.wait_status(&b.id, "stopped", SECS10);
    assert_eq!(
        std::fs::read_to_string(b.rootfs().join("started")).unwrap_or_default(),
        "0\n"
    );
    h.rt.delete(&b.id).ok();
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
/// a directory the user owns; with `run`, and with `create` then `start`.
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
    // The checkout may sit below a directory nobody cannot enter (CI clones
    // into `mktemp -d`, mode 0700): run a copy from the bundle dir it owns.
    let bin_copy = dir.join("berth");
    std::fs::copy(&h.rt.bin, &bin_copy).expect("copying the runtime binary");
    std::fs::set_permissions(&bin_copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = bin_copy.display().to_string();
    let script = format!(
        "set -e; cd {dir}; {bin} spec --rootless; \
         sed -i 's/\"terminal\": true/\"terminal\": false/; s/\"sh\"$/\"sh\", \"-c\", \"id -u; cat \\/proc\\/self\\/uid_map\"/' config.json; \
         {bin} --root {root} run rl-{id}; \
         {bin} --root {root} create rl2-{id}; {bin} --root {root} start rl2-{id}; \
         for i in $(seq 100); do {bin} --root {root} state rl2-{id} | grep -q '\"stopped\"' && break; sleep 0.1; done; \
         {bin} --root {root} delete rl2-{id}; {bin} --root {root} list -q",
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
    // Twice: `run`, then `create` and `start` (init opens the exec fifo
    // as the container's root: nobody, here).
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "both ran, and are gone: {stdout}");
    for pair in lines.chunks(2) {
        assert_eq!(pair[0], "0", "root inside: {stdout}");
        let map: Vec<&str> = pair[1].split_whitespace().collect();
        assert_eq!(map, ["0", "65534", "1"], "only nobody is mapped: {stdout}");
    }
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

/// A directory on the host owned by `uid`:`gid` with a file of the same
/// owner, both readable by everyone.
fn owned_dir(h: &Harness, uid: u32, gid: u32) -> std::path::PathBuf {
    let dir = h.tempdir().join("idmapped");
    std::fs::create_dir(&dir).expect("mkdir idmapped");
    std::fs::write(dir.join("file"), "data\n").expect("write file");
    for p in [&dir, &dir.join("file")] {
        std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
    }
    dir
}

fn host_owner(p: &std::path::Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}

/// Explicit mount mappings (spec 1.1): the host's 1000 is shown through
/// the mount as the host id the mapping names (HOST_BASE, the
/// container's root), so root inside owns the directory; what it writes
/// lands on the host as 1000. The same directory bound without mappings
/// shows the unmapped owner as nobody; a read-only one stays read-only.
#[test]
fn idmapped_bind_mount_shows_and_writes_host_ids() {
    let Some(h) = Harness::new("idmap_explicit") else {
        return;
    };
    let src = owned_dir(&h, 1000, 1000);
    let mut b = h.bundle();
    with_userns(&mut b);
    let map = json!([{"containerID": 1000, "hostID": HOST_BASE, "size": 1}]);
    b.mount(
        json!({"destination": "/mnt/idmapped", "type": "bind", "source": src,
                   "options": ["bind"], "uidMappings": map, "gidMappings": map}),
    );
    b.mount(
        json!({"destination": "/mnt/plain", "type": "bind", "source": src,
                   "options": ["bind"]}),
    );
    b.mount(
        json!({"destination": "/mnt/ro", "type": "bind", "source": src,
                   "options": ["bind", "ro"], "uidMappings": map, "gidMappings": map}),
    );
    b.sh(
        "stat -c 'idmapped %u:%g' /mnt/idmapped /mnt/idmapped/file /mnt/ro/file; \
          stat -c 'plain %u:%g' /mnt/plain/file; \
          touch /mnt/ro/x 2>&1; \
          echo new > /mnt/idmapped/new && mkdir /mnt/idmapped/sub && echo written",
    );
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout.matches("idmapped 0:0").count(), 3, "{out}");
    assert!(out.stdout.contains("Read-only file system"), "{out}");
    assert!(out.stdout.contains("plain 65534:65534"), "{out}");
    assert!(out.stdout.contains("written"), "{out}");
    assert_eq!(host_owner(&src.join("new")), (1000, 1000));
    assert_eq!(host_owner(&src.join("sub")), (1000, 1000));
    h.assert_no_leaks();
}

/// `idmap` without mappings of its own uses the container's: ids on disk
/// appear unchanged inside (the host's 1000 is 1000 in the container), and
/// what the container's 1000 writes belongs to the host's 1000.
#[test]
fn idmap_option_uses_the_container_mappings() {
    let Some(h) = Harness::new("idmap_option") else {
        return;
    };
    let src = owned_dir(&h, 1000, 1000);
    let mut b = h.bundle();
    with_userns(&mut b);
    b.mount(
        json!({"destination": "/mnt/idmapped", "type": "bind", "source": src,
                   "options": ["bind", "idmap"]}),
    );
    b.set("/process/user", json!({"uid": 1000, "gid": 1000}));
    b.sh("stat -c 'owner %u:%g' /mnt/idmapped/file; echo new > /mnt/idmapped/new && echo written");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.contains("owner 1000:1000"), "{out}");
    assert!(out.stdout.contains("written"), "{out}");
    assert_eq!(host_owner(&src.join("new")), (1000, 1000));
    h.assert_no_leaks();
}

/// `ridmap` maps every mount in an `rbind`'s tree; `idmap` only its top
/// mount, leaving a mount below it unmapped (its files show as nobody).
#[test]
fn ridmap_maps_submounts_and_idmap_does_not() {
    let Some(h) = Harness::new("idmap_recursive") else {
        return;
    };
    let src = owned_dir(&h, 1000, 1000);
    let sub = berth_integration::MountGuard::tmpfs(&src.join("sub"));
    std::fs::write(sub.path.join("file"), "sub\n").expect("write sub file");
    std::os::unix::fs::chown(sub.path.join("file"), Some(1000), Some(1000))
        .expect("chown sub file");
    let mut b = h.bundle();
    with_userns(&mut b);
    let map = json!([{"containerID": 1000, "hostID": HOST_BASE, "size": 1}]);
    for (dest, option) in [("/mnt/r", "ridmap"), ("/mnt/n", "idmap")] {
        b.mount(json!({"destination": dest, "type": "bind", "source": src,
                       "options": ["rbind", option], "uidMappings": map, "gidMappings": map}));
    }
    b.sh("stat -c 'r %u' /mnt/r/file /mnt/r/sub/file; stat -c 'n %u' /mnt/n/file /mnt/n/sub/file");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout.matches("r 0").count(), 2, "{out}");
    assert!(out.stdout.contains("n 0\nn 65534"), "{out}");
    drop(sub);
    h.assert_no_leaks();
}

/// Id-mapped mounts that cannot be made are refused before anything is
/// created, with the mount named: mappings on a non-bind mount, without a
/// user namespace, only one of the two mappings, bad mappings, and a
/// source whose filesystem cannot be id-mapped (procfs).
#[test]
fn bad_idmapped_mounts_are_refused_and_leave_nothing() {
    let Some(h) = Harness::new("idmap_bad") else {
        return;
    };
    let src = owned_dir(&h, 1000, 1000);
    let map = json!([{"containerID": 0, "hostID": HOST_BASE, "size": 10}]);
    let overlap = json!([{"containerID": 0, "hostID": HOST_BASE, "size": 10},
                         {"containerID": 5, "hostID": 300000, "size": 10}]);
    let cases = [
        (
            "tmpfs",
            true,
            json!({"destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs",
                   "uidMappings": map, "gidMappings": map}),
            "only for bind mounts",
        ),
        (
            "tmpfs idmap",
            true,
            json!({"destination": "/mnt/x", "type": "tmpfs", "source": "tmpfs",
                   "options": ["idmap"]}),
            "only for bind mounts",
        ),
        (
            "no userns",
            false,
            json!({"destination": "/mnt/x", "type": "bind", "source": src,
                   "options": ["bind"], "uidMappings": map, "gidMappings": map}),
            "user namespace",
        ),
        (
            "uids only",
            true,
            json!({"destination": "/mnt/x", "type": "bind", "source": src,
                   "options": ["bind"], "uidMappings": map}),
            "both uidMappings and gidMappings",
        ),
        (
            "overlap",
            true,
            json!({"destination": "/mnt/x", "type": "bind", "source": src,
                   "options": ["bind"], "uidMappings": overlap, "gidMappings": map}),
            "overlap",
        ),
        (
            "procfs",
            true,
            json!({"destination": "/mnt/x", "type": "bind", "source": "/proc",
                   "options": ["bind", "idmap"]}),
            "id-mapping source /proc",
        ),
    ];
    for (name, userns, mount, why) in cases {
        let mut b = h.bundle();
        if userns {
            with_userns(&mut b);
        }
        b.mount(mount);
        b.write();
        let out = h.rt.run(&b.id, b.path());
        out.failed();
        assert!(
            out.stderr.contains("(/mnt/x)") && out.stderr.contains(why),
            "{name}: {out}"
        );
        assert!(
            h.rt.state_raw(&b.id)
                .failed()
                .stderr
                .contains("does not exist"),
            "{name}"
        );
    }
    assert_eq!(std::fs::read_dir(&src).expect("read source").count(), 1);
    h.assert_no_leaks();
}

/// `features` tells callers id-mapped mounts work.
#[test]
fn features_report_idmapped_mounts() {
    let Some(h) = Harness::new("idmap_features") else {
        return;
    };
    if berth_integration::locate::runtime_name() != "berth" {
        return;
    }
    let out = h.rt.cmd(["features"]);
    out.ok();
    let f: serde_json::Value = serde_json::from_str(&out.stdout).expect("features JSON");
    assert_eq!(
        f.pointer("/linux/mountExtensions/idmap/enabled"),
        Some(&json!(true)),
        "{out}"
    );
    let options = f["mountOptions"].as_array().expect("mountOptions");
    for o in ["idmap", "ridmap"] {
        assert!(options.contains(&json!(o)), "{o} missing: {out}");
    }
}
