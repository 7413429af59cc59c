//! Mounts from the spec: tmpfs options, bind mounts (ro and rw), rootfsPropagation.

use berth_integration::{Harness, MountGuard};
use serde_json::json;

#[test]
fn tmpfs_mount_with_size_and_mode() {
    let Some(h) = Harness::new("tmpfs") else {
        return;
    };
    let mut b = h.bundle();
    b.mount(
        json!({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                   "options": ["nosuid", "nodev", "size=1m", "mode=1777"]}),
    );
    b.sh(
        "stat -c %a /scratch; grep ' /scratch ' /proc/self/mountinfo; \
         dd if=/dev/zero of=/scratch/big bs=1k count=2048 2>/dev/null; echo dd=$?; rm -f /scratch/big; \
         echo small > /scratch/s && cat /scratch/s",
    );
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0], "1777", "{out}");
    assert!(
        l[1].contains(" - tmpfs ") && l[1].contains("size=1024k"),
        "{out}"
    );
    assert!(l[1].contains("nosuid") && l[1].contains("nodev"), "{out}");
    assert!(
        out.stdout.contains("dd=1"),
        "a 2 MiB file must not fit in size=1m: {out}"
    );
    assert!(out.stdout.ends_with("small\n"), "{out}");
    // The mount point was created in the rootfs, but the tmpfs content stays inside.
    assert!(!b.rootfs().join("scratch/s").exists());
}

#[test]
fn bind_mount_read_only() {
    let Some(h) = Harness::new("bind_ro") else {
        return;
    };
    let mut b = h.bundle();
    let host = b.host_dir("hostdata");
    std::fs::write(host.join("hello"), "from host\n").expect("write host file");
    b.mount(
        json!({"destination": "/data", "type": "bind", "source": host,
                   "options": ["rbind", "ro"]}),
    );
    b.sh("cat /data/hello; echo x > /data/new; echo write=$?; grep ' /data ' /proc/self/mountinfo");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.starts_with("from host\n"), "{out}");
    assert!(out.stdout.contains("write=1"), "{out}");
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains(" /data "))
        .unwrap_or_default();
    assert!(
        line.split_whitespace()
            .nth(5)
            .is_some_and(|o| o.split(',').any(|x| x == "ro")),
        "{out}"
    );
    assert!(!host.join("new").exists());
}

#[test]
fn bind_mount_read_write_visible_on_host() {
    let Some(h) = Harness::new("bind_rw") else {
        return;
    };
    let mut b = h.bundle();
    let host = b.host_dir("shared");
    b.mount(
        json!({"destination": "/shared", "type": "bind", "source": host,
                   "options": ["bind", "rw"]}),
    );
    b.sh("echo written-inside > /shared/out");
    b.write();
    h.rt.run(&b.id, b.path()).ok();
    assert_eq!(
        std::fs::read_to_string(host.join("out")).unwrap_or_default(),
        "written-inside\n"
    );
}

#[test]
fn bind_mount_of_single_file() {
    let Some(h) = Harness::new("bind_file") else {
        return;
    };
    let mut b = h.bundle();
    let host = b.host_dir("files");
    std::fs::write(host.join("motd"), "file bind\n").expect("write");
    b.mount(
        json!({"destination": "/etc/motd", "type": "bind", "source": host.join("motd"),
                   "options": ["bind", "ro"]}),
    );
    b.args(&["cat", "/etc/motd"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout, "file bind\n", "{out}");
}

fn sys_admin(b: &mut berth_integration::Bundle) {
    let caps = ["CAP_SYS_ADMIN", "CAP_KILL", "CAP_AUDIT_WRITE"];
    for set in ["bounding", "effective", "permitted"] {
        b.set(&format!("/process/capabilities/{set}"), json!(caps));
    }
}

#[test]
fn rootfs_propagation_values_accepted() {
    let Some(h) = Harness::new("rootfs_prop") else {
        return;
    };
    for p in ["private", "slave", "shared", "rprivate", "rslave"] {
        let mut b = h.bundle();
        b.set("/linux/rootfsPropagation", json!(p));
        b.args(&["cat", "/etc/hostname"]);
        b.write();
        let out = h.rt.run(&b.id, b.path());
        out.ok();
        assert_eq!(out.stdout, "berth\n", "rootfsPropagation={p}: {out}");
    }
}

#[test]
fn rootfs_propagation_private_keeps_container_mounts_inside() {
    let Some(h) = Harness::new("rootfs_private") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/linux/rootfsPropagation", json!("private"));
    sys_admin(&mut b);
    b.sh("mount -t tmpfs inner /mnt && touch /mnt/inside && echo mounted");
    b.write();
    // Even when the rootfs sits on a shared mount on the host, a private
    // rootfs must not propagate the container's mounts back.
    let guard = MountGuard::bind_shared(&b.rootfs());
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout, "mounted\n", "{out}");
    let mnt = b.rootfs().join("mnt");
    let leaked = berth_integration::leak::mounts_mentioning(&mnt.to_string_lossy());
    assert!(
        leaked.is_empty(),
        "container mount propagated to host: {leaked:?}"
    );
    assert!(!mnt.join("inside").exists());
    drop(guard);
}
