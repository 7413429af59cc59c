//! Attacks on the runtime's hardening, modelled on known runc CVEs:
//! CVE-2019-5736 (overwriting the runtime through /proc/<pid>/exe),
//! CVE-2024-21626 (leaked host fds and a cwd through /proc/self/fd),
//! CVE-2021-30465 (mount destinations through symlinks out of the rootfs),
//! and docker's default /proc and /sys masking.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::time::Duration;

use berth_integration::leak::mounts_mentioning;
use berth_integration::{wait_until, Bundle, CmdOutput, Harness, SECS10};
use serde_json::json;

/// Shell loop run inside a container: for every visible process other than
/// the shell itself, report an exe that is a runtime binary and any exe that
/// can be opened for writing (`>>` opens O_WRONLY|O_APPEND and writes nothing).
const PROBE_EXES: &str = r#"
for p in /proc/[0-9]*; do
  n=${p#/proc/}
  [ "$n" = "$$" ] && continue
  l=$(readlink $p/exe 2>/dev/null)
  case "$l" in *berth*|*runc*) echo "RUNTIME-EXE $n $l";; esac
  if ( exec 3>>$p/exe ) 2>/dev/null; then echo "WRITABLE-EXE $n $l"; fi
done
echo probe-done
"#;

fn file_bytes(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
fn cve_2019_5736_runtime_exe_not_reachable_from_container() {
    let Some(h) = Harness::new("exe_overwrite") else {
        return;
    };
    let runtime_before = file_bytes(&h.rt.bin);
    let mut b = h.bundle();
    b.args(&["sleep", "1000"]);
    b.write();
    let busybox_before = file_bytes(&b.rootfs().join("bin/busybox"));
    h.rt.create(&b.id, b.path()).ok();
    assert_eq!(h.rt.status(&b.id), "created");

    // While init is still the runtime waiting for `start`, an exec'd process
    // must not be able to read its environment or its exe.
    let out = h.rt.exec(
        &b.id,
        &[
            "sh",
            "-c",
            &format!(
                "cat /proc/1/environ >/dev/null 2>&1 && echo environ-readable || echo environ-denied; \
                 readlink /proc/1/exe >/dev/null 2>&1 && echo exe-link-readable || echo exe-link-denied; \
                 ( exec 3</proc/1/exe ) 2>/dev/null && echo exe-openable || echo exe-open-denied; \
                 {PROBE_EXES}"
            ),
        ],
    );
    out.ok();
    for want in [
        "environ-denied",
        "exe-link-denied",
        "exe-open-denied",
        "probe-done",
    ] {
        assert!(
            out.stdout.lines().any(|l| l == want),
            "{want} expected while created: {out}"
        );
    }
    assert!(
        !out.stdout.contains("RUNTIME-EXE") && !out.stdout.contains("WRITABLE-EXE"),
        "runtime binary reachable from the container: {out}"
    );

    // A detached process tries to keep a handle on init's exe across `start`
    // and to reopen it for writing once the runtime is gone.
    let out = h.rt.exec_with(
        &b.id,
        &["-d"],
        &[
            "sh",
            "-c",
            "if ( exec 3</proc/1/exe ) 2>/dev/null; then exec 3</proc/1/exe; \
             echo opened:$(readlink /proc/self/fd/3) > /attack; \
             else echo open-denied > /attack; fi; \
             while [ ! -e /go ]; do sleep 0.05; done; \
             if ( exec 4>>/proc/self/fd/3 ) 2>/dev/null; then echo REOPENED-FOR-WRITE >> /attack; \
             else echo reopen-denied >> /attack; fi; touch /attack-done",
        ],
    );
    out.ok();
    assert!(
        wait_until(SECS10, || b.rootfs().join("attack").exists()),
        "attacker never ran"
    );
    h.rt.start(&b.id).ok();
    assert_eq!(h.rt.status(&b.id), "running");
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(b.rootfs().join("go"), "").expect("write /go");
    assert!(
        wait_until(SECS10, || b.rootfs().join("attack-done").exists()),
        "attacker never finished"
    );
    let attack = std::fs::read_to_string(b.rootfs().join("attack")).expect("read /attack");
    assert!(
        attack.starts_with("open-denied"),
        "init's exe could be opened while created: {attack:?}"
    );
    assert!(!attack.contains("REOPENED-FOR-WRITE"), "{attack:?}");

    // After start, /proc/1/exe is the container's program, not the runtime,
    // and no visible exe can be opened for writing.
    let out = h.rt.exec(
        &b.id,
        &[
            "sh",
            "-c",
            &format!("readlink /proc/1/exe; readlink /proc/self/exe; {PROBE_EXES}"),
        ],
    );
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.first().copied(), Some("/bin/busybox"), "{out}");
    assert_eq!(lines.get(1).copied(), Some("/bin/busybox"), "{out}");
    assert!(lines.contains(&"probe-done"), "{out}");
    assert!(
        !out.stdout.contains("RUNTIME-EXE") && !out.stdout.contains("WRITABLE-EXE"),
        "{out}"
    );

    h.rt.delete_force(&b.id).ok();
    assert!(
        file_bytes(&h.rt.bin) == runtime_before,
        "the runtime binary {} changed",
        h.rt.bin.display()
    );
    assert!(
        file_bytes(&b.rootfs().join("bin/busybox")) == busybox_before,
        "the container's busybox changed"
    );
    h.assert_no_leaks();
}

/// A host directory holding a marker file, open without O_CLOEXEC games:
/// [`berth_integration::Runtime::cmd_leaking_fd`] hands it to the runtime as fd 5.
fn host_secret_dir(h: &Harness) -> (std::path::PathBuf, File) {
    let dir = h.tempdir();
    std::fs::write(dir.join("HOST-SECRET"), "host secret\n").expect("write marker");
    let f = File::open(&dir).expect("open host dir");
    (dir, f)
}

/// Parses `ls -l /proc/self/fd` output into `(fd, target)` pairs.
fn fd_list(out: &str) -> Vec<(u32, String)> {
    out.lines()
        .filter_map(|l| {
            let (left, target) = l.split_once(" -> ")?;
            let fd = left.split_whitespace().last()?.parse().ok()?;
            Some((fd, target.trim().to_string()))
        })
        .collect()
}

#[track_caller]
fn assert_only_stdio(out: &CmdOutput, host_dir: &Path) {
    let fds = fd_list(&out.stdout);
    assert!(
        fds.iter().any(|(fd, _)| *fd == 0),
        "could not parse the fd list: {out}"
    );
    for (fd, target) in &fds {
        assert!(
            *fd <= 2 || target.starts_with("/proc/"),
            "fd {fd} -> {target} leaked into the container: {out}"
        );
        assert!(
            !target.contains(&*host_dir.to_string_lossy()),
            "host dir leaked as fd {fd}: {out}"
        );
    }
    assert!(fds.len() <= 4, "more than stdio and ls's own dir fd: {out}");
}

#[test]
fn cve_2024_21626_no_host_fds_leak_into_container() {
    let Some(h) = Harness::new("fd_leak") else {
        return;
    };
    let (host_dir, f) = host_secret_dir(&h);

    // Foreground run: init itself lists its fds.
    let mut b = h.bundle();
    b.args(&["ls", "-l", "/proc/self/fd"]);
    b.write();
    let bp = b.path().to_string_lossy().into_owned();
    let out =
        h.rt.cmd_leaking_fd(["run", "--bundle", &bp, &b.id], f.as_fd(), 5);
    out.ok();
    assert_only_stdio(&out, &host_dir);

    // Detached run and exec, both started with the fd leaked.
    let mut d = h.bundle();
    d.args(&["sleep", "1000"]);
    d.write();
    let dp = d.path().to_string_lossy().into_owned();
    h.rt.cmd_leaking_fd(["run", "--detach", "--bundle", &dp, &d.id], f.as_fd(), 5)
        .ok();
    let init = h.rt.pid(&d.id);
    let host_view: Vec<String> = std::fs::read_dir(format!("/proc/{init}/fd"))
        .expect("read init fds")
        .flatten()
        .map(|e| {
            format!(
                "{} -> {}",
                e.file_name().to_string_lossy(),
                std::fs::read_link(e.path())
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default()
            )
        })
        .collect();
    assert!(
        host_view.len() <= 3,
        "init holds more than stdio: {host_view:?}"
    );
    let out =
        h.rt.cmd_leaking_fd(["exec", &d.id, "ls", "-l", "/proc/self/fd"], f.as_fd(), 5);
    out.ok();
    assert_only_stdio(&out, &host_dir);
    // An exec'd process cannot reach the host dir through its own fds either.
    let out = h.rt.cmd_leaking_fd(
        [
            "exec",
            &d.id,
            "sh",
            "-c",
            "for n in 3 4 5 6 7 8 9; do ls /proc/self/fd/$n/ 2>/dev/null; done; echo end",
        ],
        f.as_fd(),
        5,
    );
    out.ok();
    assert!(!out.stdout.contains("HOST-SECRET"), "{out}");

    h.rt.delete_force(&d.id).ok();
    h.assert_no_leaks();
}

const CWD_SCRIPT: &str = "pwd -P; ls -a; test -e /container-marker && echo IN-CONTAINER";

/// Checks that a process started with a hostile cwd either was refused with
/// an error or runs inside the container's rootfs.
#[track_caller]
fn assert_cwd_inside(out: &CmdOutput, host_dir: &Path, what: &str) {
    let host = host_dir.to_string_lossy();
    assert!(!out.timed_out, "{what}: {out}");
    assert!(
        !out.stdout.contains("HOST-SECRET") && !out.stdout.contains("unreachable"),
        "{what}: the process escaped the rootfs: {out}"
    );
    assert!(!out.stdout.contains(&*host), "{what}: {out}");
    if out.success() {
        assert!(
            out.stdout.lines().any(|l| l == "IN-CONTAINER"),
            "{what}: started, but not inside the container's rootfs: {out}"
        );
        let pwd = out.stdout.lines().next().unwrap_or_default();
        assert!(
            pwd.starts_with('/'),
            "{what}: the cwd has no path inside the container ({pwd:?}): {out}"
        );
    } else {
        assert!(
            !out.stderr.trim().is_empty(),
            "{what}: silent failure: {out}"
        );
    }
}

#[test]
fn cve_2024_21626_run_cwd_through_proc_self_fd_stays_inside() {
    let Some(h) = Harness::new("fd_cwd_run") else {
        return;
    };
    let (host_dir, f) = host_secret_dir(&h);
    // fd 5 is the leaked host dir; the others probe the runtime's own fds.
    // A cwd that does not exist is created (as runc does): never through
    // such a descriptor, in a host directory.
    let cwds = (3..=12).flat_map(|n| {
        [
            format!("/proc/self/fd/{n}"),
            format!("/proc/self/fd/{n}/created-by-the-runtime"),
        ]
    });
    for cwd in cwds {
        let mut b = h.bundle();
        b.rootfs_file("/container-marker", "", 0o644);
        b.sh(CWD_SCRIPT);
        b.set("/process/cwd", json!(cwd));
        b.write();
        let bp = b.path().to_string_lossy().into_owned();
        let out =
            h.rt.cmd_leaking_fd(["run", "--bundle", &bp, &b.id], f.as_fd(), 5);
        assert_cwd_inside(&out, &host_dir, &format!("run with cwd {cwd}"));
        let _ = h.rt.delete_force(&b.id);
    }
    let names: Vec<String> = std::fs::read_dir(&host_dir)
        .expect("read host dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["HOST-SECRET".to_string()]);

    // Parent-directory escapes resolve to the container's root (or are refused).
    for cwd in ["/../../../..", "../../../.."] {
        let mut b = h.bundle();
        b.rootfs_file("/container-marker", "", 0o644);
        b.sh(CWD_SCRIPT);
        b.set("/process/cwd", json!(cwd));
        b.write();
        let out = h.rt.run(&b.id, b.path());
        assert_cwd_inside(&out, &host_dir, &format!("run with cwd {cwd}"));
        if out.success() {
            assert_eq!(out.stdout.lines().next(), Some("/"), "{out}");
        }
        let _ = h.rt.delete_force(&b.id);
    }
    h.assert_no_leaks();
}

#[test]
fn cve_2024_21626_exec_cwd_through_proc_self_fd_stays_inside() {
    let Some(h) = Harness::new("fd_cwd_exec") else {
        return;
    };
    let (host_dir, f) = host_secret_dir(&h);
    let mut d = h.bundle();
    d.rootfs_file("/container-marker", "", 0o644);
    d.args(&["sleep", "1000"]);
    d.write();
    h.rt.run_detached(&d.id, d.path()).ok();
    for n in 3..=12 {
        let cwd = format!("/proc/self/fd/{n}");
        let out = h.rt.cmd_leaking_fd(
            ["exec", "--cwd", &cwd, &d.id, "sh", "-c", CWD_SCRIPT],
            f.as_fd(),
            5,
        );
        assert_cwd_inside(&out, &host_dir, &format!("exec --cwd {cwd}"));
    }
    let out =
        h.rt.exec_with(&d.id, &["--cwd", "/../../../.."], &["sh", "-c", CWD_SCRIPT]);
    assert_cwd_inside(&out, &host_dir, "exec --cwd /../../../..");
    assert_eq!(out.stdout.lines().next(), Some("/"), "{out}");
    h.rt.delete_force(&d.id).ok();
    h.assert_no_leaks();
}

/// Mount points (field 5) of a mountinfo text.
fn mount_points(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4).map(String::from))
        .collect()
}

#[test]
fn cve_2021_30465_mounts_through_symlinks_stay_in_rootfs() {
    let Some(h) = Harness::new("symlink_mount") else {
        return;
    };
    let target_a = h.tempdir();
    let target_b = h.tempdir();
    let target_c = h.tempdir();
    for t in [&target_a, &target_b, &target_c] {
        std::fs::write(t.join("host-marker"), "host\n").expect("marker");
    }
    let rel = |p: &Path| p.to_string_lossy().trim_start_matches('/').to_string();
    let mut b = h.bundle();
    let root = b.rootfs();
    // Absolute symlink to a host path.
    std::os::unix::fs::symlink(&target_a, root.join("abs-link")).expect("symlink");
    // Relative symlink climbing out of the rootfs to a host path.
    std::os::unix::fs::symlink(
        format!("../../../../../../../../{}", rel(&target_b)),
        root.join("rel-link"),
    )
    .expect("symlink");
    // A symlink to "the host /" used as an intermediate component.
    std::os::unix::fs::symlink("../../../../../../../..", root.join("up-link")).expect("symlink");
    let bind_src = b.host_dir("bind-src");
    std::fs::write(bind_src.join("bind-marker"), "bound\n").expect("bind marker");
    b.mount(
        json!({"destination": "/abs-link", "type": "tmpfs", "source": "tmpfs",
                   "options": ["size=1m"]}),
    );
    b.mount(json!({"destination": "/rel-link", "type": "bind",
                   "source": bind_src.to_string_lossy(), "options": ["rbind", "rw"]}));
    b.mount(
        json!({"destination": format!("/up-link/{}", rel(&target_c)), "type": "tmpfs",
                   "source": "tmpfs", "options": ["size=1m"]}),
    );
    b.sh(&format!(
        "echo x > /abs-link/from-container; echo x > /rel-link/from-container; \
         echo x > /up-link/{c}/from-container; \
         ls /abs-link /rel-link /up-link/{c} > /out 2>&1; cat /proc/self/mountinfo > /mounts; \
         touch /done; sleep 1000",
        c = rel(&target_c)
    ));
    b.write();
    let out = h.rt.run_detached(&b.id, b.path());
    if out.success() {
        assert!(
            wait_until(SECS10, || root.join("done").exists()),
            "container never finished its script"
        );
        let mounts = std::fs::read_to_string(root.join("mounts")).expect("mounts");
        let points = mount_points(&mounts);
        // The mounts landed at the symlinks' targets resolved inside the rootfs.
        for t in [&target_a, &target_b, &target_c] {
            let p = t.to_string_lossy().into_owned();
            assert!(
                points.contains(&p),
                "no mount at {p} inside the container: {points:?}"
            );
        }
        let ls = std::fs::read_to_string(root.join("out")).expect("out");
        assert!(ls.contains("bind-marker"), "bind mount not visible: {ls}");
        assert!(
            !ls.contains("host-marker"),
            "the container sees a host directory: {ls}"
        );
        assert_eq!(h.rt.status(&b.id), "running");
    } else {
        // Refusing the config is also safe, as long as it says why.
        assert!(!out.stderr.trim().is_empty(), "{out}");
    }
    // The host directories are untouched and nothing is mounted on them.
    for t in [&target_a, &target_b, &target_c] {
        let names: Vec<String> = std::fs::read_dir(t)
            .expect("read host dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["host-marker".to_string()], "{}", t.display());
        assert!(
            mounts_mentioning(&t.to_string_lossy()).is_empty(),
            "host mount on {}",
            t.display()
        );
    }
    if out.success() {
        assert!(
            bind_src.join("from-container").exists(),
            "the write through /rel-link did not reach the bind source"
        );
    }
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

/// The names in a host directory, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A host directory holding only a marker file, and its path relative to
/// `/` (for symlinks that name it from inside a rootfs).
fn host_victim(h: &Harness) -> (std::path::PathBuf, String) {
    let dir = h.tempdir();
    std::fs::write(dir.join("host-marker"), "host\n").expect("marker");
    let rel = dir.to_string_lossy().trim_start_matches('/').to_string();
    (dir, rel)
}

/// The host directory still holds only its marker, and nothing is mounted
/// on or under it.
fn assert_host_untouched(dir: &Path) {
    assert_eq!(
        names_in(dir),
        vec!["host-marker".to_string()],
        "{} was written to",
        dir.display()
    );
    assert!(
        mounts_mentioning(&dir.to_string_lossy()).is_empty(),
        "host mount on {}",
        dir.display()
    );
}

/// Drop the spec's /dev mounts, so devices are created in the image's own
/// /dev (where a planted symlink would lead them).
fn without_dev_mounts(b: &mut Bundle) {
    b.with(|spec| {
        if let Some(mounts) = spec["mounts"].as_array_mut() {
            mounts.retain(|m| {
                !m["destination"]
                    .as_str()
                    .is_some_and(|d| d == "/dev" || d.starts_with("/dev/"))
            });
        }
    });
}

/// Device nodes, the /dev links and /dev/ptmx are created in the rootfs
/// even when the image's /dev is a symlink to a host directory: the link
/// is followed as if the rootfs were `/` (as runc >= 1.2 does), so they
/// land in `<rootfs>/<that dir>`, never in the host's. (Debian's runc
/// 1.1.5 fails this: it writes the /dev/fd, /dev/std* and /dev/ptmx links
/// into the host directory.)
#[test]
fn rootfs_dev_symlink_to_a_host_dir_creates_devices_inside() {
    let Some(h) = Harness::new("dev_symlink") else {
        return;
    };
    let (victim, rel) = host_victim(&h);
    let mut b = h.bundle();
    let root = b.rootfs();
    std::fs::remove_dir(root.join("dev")).expect("rmdir rootfs/dev");
    std::os::unix::fs::symlink(&victim, root.join("dev")).expect("symlink /dev");
    without_dev_mounts(&mut b);
    b.sh("[ -c /dev/null ] && [ -L /dev/fd ] && [ -L /dev/ptmx ] && echo x > /dev/null && echo devices-ok");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.contains("devices-ok"), "{out}");
    assert_host_untouched(&victim);
    // They are in the rootfs, at the link's target resolved inside it.
    let inside = root.join(&rel);
    use std::os::unix::fs::FileTypeExt;
    let null = std::fs::symlink_metadata(inside.join("null")).expect("null inside");
    assert!(null.file_type().is_char_device(), "{null:?}");
    h.assert_no_leaks();
}

/// A mount destination under a symlink to `/`: the missing directories
/// and the file a file bind needs are created inside the rootfs.
#[test]
fn mount_destination_under_a_symlink_to_root_is_created_inside() {
    let Some(h) = Harness::new("dest_symlink") else {
        return;
    };
    let (victim, rel) = host_victim(&h);
    let mut b = h.bundle();
    let root = b.rootfs();
    std::os::unix::fs::symlink("/", root.join("to-root")).expect("symlink");
    let file_src = b.host_dir("src").join("file");
    std::fs::write(&file_src, "bound\n").expect("bind source");
    b.mount(
        json!({"destination": format!("/to-root/{rel}/new/dir"), "type": "tmpfs",
                   "source": "tmpfs", "options": ["size=1m"]}),
    );
    b.mount(
        json!({"destination": format!("/to-root/{rel}/new/file"), "type": "bind",
                   "source": file_src.to_string_lossy(), "options": ["bind", "ro"]}),
    );
    b.sh(&format!(
        "grep -q ' /{rel}/new/dir ' /proc/self/mountinfo && cat /{rel}/new/file && echo mounted-inside"
    ));
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(
        out.stdout.contains("bound") && out.stdout.contains("mounted-inside"),
        "{out}"
    );
    assert_host_untouched(&victim);
    assert!(root.join(&rel).join("new/dir").is_dir());
    assert!(root.join(&rel).join("new/file").is_file());
    h.assert_no_leaks();
}

/// linux.devices whose path goes through a symlink planted in /dev (to a
/// host directory, and one to a host file): the nodes are made inside the
/// rootfs; the host's directory and file stay as they were.
#[test]
fn device_paths_through_symlinks_stay_inside() {
    let Some(h) = Harness::new("device_symlink") else {
        return;
    };
    let (victim, rel) = host_victim(&h);
    let mut b = h.bundle();
    let root = b.rootfs();
    std::os::unix::fs::symlink(&victim, root.join("dev/sub")).expect("symlink dir");
    let host_file = victim.join("host-marker");
    std::os::unix::fs::symlink(&host_file, root.join("dev/evil")).expect("symlink file");
    without_dev_mounts(&mut b);
    let dev =
        |path: &str| json!({"path": path, "type": "c", "major": 1, "minor": 3, "fileMode": 0o666});
    b.set(
        "/linux/devices",
        json!([dev("/dev/sub/null"), dev("/dev/evil")]),
    );
    b.sh("[ -c /dev/sub/null ] && [ -c /dev/evil ] && echo x > /dev/evil && echo nodes-ok");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.contains("nodes-ok"), "{out}");
    assert_host_untouched(&victim);
    assert_eq!(
        std::fs::read_to_string(&host_file).expect("host file"),
        "host\n"
    );
    use std::os::unix::fs::FileTypeExt;
    let node = std::fs::symlink_metadata(root.join(&rel).join("null")).expect("node inside");
    assert!(node.file_type().is_char_device(), "{node:?}");
    h.assert_no_leaks();
}

/// While containers are set up, a host thread keeps swapping directories
/// of the rootfs (the parents of device nodes, of a mount destination and
/// of a file-bind target) with symlinks to a host directory (renameat2
/// RENAME_EXCHANGE, so either is always there). Whatever setup sees, it
/// never creates, chmods or mounts anything in the host directory; a
/// container may fail (a component changed under it), never leak.
#[test]
fn symlinks_swapped_in_during_setup_never_reach_the_host() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let Some(h) = Harness::new("swap_race") else {
        return;
    };
    let (victim, _) = host_victim(&h);
    let file_src = h.tempdir().join("file");
    std::fs::write(&file_src, "bound\n").expect("bind source");
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..12 {
        let mut b = h.bundle();
        let root = b.rootfs();
        // (real directory, symlink to the host) pairs to exchange.
        let pairs = ["dev/sub", "swapm", "swapf"].map(|p| {
            let dir = root.join(p);
            let link = root.join(format!("{p}-link"));
            std::fs::create_dir_all(&dir).expect("mkdir");
            std::os::unix::fs::symlink(&victim, &link).expect("symlink");
            (dir, link)
        });
        without_dev_mounts(&mut b);
        b.set(
            "/linux/devices",
            json!([{"path": "/dev/sub/null", "type": "c", "major": 1, "minor": 3, "fileMode": 0o666}]),
        );
        b.mount(
            json!({"destination": "/swapm/dir", "type": "tmpfs", "source": "tmpfs",
                       "options": ["size=1m"]}),
        );
        b.mount(json!({"destination": "/swapf/file", "type": "bind",
                       "source": file_src.to_string_lossy(), "options": ["bind"]}));
        b.args(&["true"]);
        b.write();
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for (dir, link) in &pairs {
                        let _ = nix::fcntl::renameat2(
                            nix::fcntl::AT_FDCWD,
                            dir.as_path(),
                            nix::fcntl::AT_FDCWD,
                            link.as_path(),
                            nix::fcntl::RenameFlags::RENAME_EXCHANGE,
                        );
                    }
                }
            })
        };
        let out = h.rt.run(&b.id, b.path());
        stop.store(true, Ordering::Relaxed);
        swapper.join().expect("swapper thread");
        if out.success() {
            ok += 1;
        } else {
            failed += 1;
            h.rt.delete_force(&b.id);
        }
        assert_host_untouched(&victim);
    }
    eprintln!("swap race: {ok} containers ran, {failed} refused");
    h.assert_no_leaks();
}

/// What cannot be created inside the rootfs is an error naming the mount
/// (a directory asked for under a regular file; a symlink loop), as with
/// runc; nothing is created on the host and nothing is left behind.
#[test]
fn uncreatable_mount_destinations_are_refused() {
    let Some(h) = Harness::new("dest_refused") else {
        return;
    };
    for (dest, why) in [
        ("/etc/passwd/sub", "not a directory"),
        ("/loop/sub", "symbolic links"),
    ] {
        let mut b = h.bundle();
        std::os::unix::fs::symlink("loop", b.rootfs().join("loop")).expect("symlink");
        b.mount(json!({"destination": dest, "type": "tmpfs", "source": "tmpfs"}));
        b.write();
        let out = h.rt.run(&b.id, b.path());
        out.failed();
        if berth_integration::locate::runtime_name() == "berth" {
            assert!(
                out.stderr.contains(&format!("({dest})")) && out.stderr.contains(why),
                "{out}"
            );
        }
        assert!(
            h.rt.state_raw(&b.id)
                .failed()
                .stderr
                .contains("does not exist"),
            "{out}"
        );
    }
    h.assert_no_leaks();
}

/// docker's default masked paths; each is checked only if it exists on the host.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
];

const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn masking_script() -> String {
    let mut s = String::new();
    for p in MASKED {
        if !Path::new(p).exists() {
            continue;
        }
        if Path::new(p).is_dir() {
            s.push_str(&format!(
                "echo \"{p} entries=$(ls -A {p} 2>/dev/null | wc -l)\"; "
            ));
        } else {
            s.push_str(&format!(
                "echo \"{p} bytes=$(head -c 4096 {p} 2>/dev/null | wc -c)\"; "
            ));
        }
        s.push_str(&format!(
            "umount {p} 2>/dev/null && echo \"UNMOUNTED {p}\"; \
             umount -l {p} 2>/dev/null && echo \"UNMOUNTED {p}\"; "
        ));
    }
    s.push_str(
        "echo evil > /proc/sys/kernel/domainname 2>/dev/null && echo WROTE-domainname; \
         echo 1 > /proc/sys/vm/drop_caches 2>/dev/null && echo WROTE-drop_caches; \
         echo h > /proc/sysrq-trigger 2>/dev/null && echo WROTE-sysrq; \
         mount -o remount,rw /proc/sys 2>/dev/null && echo REMOUNTED-sys; \
         mount -t proc proc /mnt 2>/dev/null && echo MOUNTED-proc; \
         mount -t sysfs sysfs /mnt 2>/dev/null && echo MOUNTED-sysfs; \
         touch /proc/bus/x /proc/fs/x /proc/irq/x 2>/dev/null && echo WROTE-ro; \
         for p in /proc/bus /proc/fs /proc/irq /proc/sys; do \
           grep -q \" $p ro[, ]\" /proc/self/mountinfo && echo \"RO $p\"; done; \
         echo masking-done",
    );
    s
}

#[track_caller]
fn assert_masked(out: &CmdOutput, who: &str) {
    out.ok();
    let text = &out.stdout;
    assert!(text.contains("masking-done"), "{who}: {out}");
    for p in MASKED {
        if !Path::new(p).exists() {
            continue;
        }
        let want = if Path::new(p).is_dir() {
            format!("{p} entries=0")
        } else {
            format!("{p} bytes=0")
        };
        assert!(
            text.lines().any(|l| l == want),
            "{who}: {p} is not masked (want {want:?}): {out}"
        );
    }
    for bad in [
        "UNMOUNTED",
        "WROTE-",
        "REMOUNTED-",
        "MOUNTED-proc",
        "MOUNTED-sysfs",
    ] {
        assert!(
            !text.contains(bad),
            "{who}: attack succeeded ({bad}): {out}"
        );
    }
    for p in READONLY {
        if Path::new(p).is_dir() {
            assert!(
                text.lines().any(|l| l == format!("RO {p}")),
                "{who}: {p} is not a read-only mount: {out}"
            );
        }
    }
}

#[test]
fn proc_and_sys_masking_resists_attacks() {
    let Some(h) = Harness::new("masking") else {
        return;
    };
    // The host has real content behind at least some masked paths, so the
    // checks below are meaningful.
    assert!(
        MASKED.iter().any(|p| {
            let p = Path::new(p);
            if p.is_dir() {
                std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some())
            } else {
                std::fs::read(p).is_ok_and(|b| !b.is_empty())
            }
        }),
        "no masked path has content on this host"
    );
    let domain_before = std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap_or_default();
    let script = masking_script();
    let mut b: Bundle = h.bundle();
    b.args(&["sleep", "1000"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    // Exec'd processes get the same view.
    let ex = h.rt.exec(&b.id, &["sh", "-c", &script]);
    assert_masked(&ex, "exec");
    // With CAP_SYS_ADMIN dropped (the default), even root in the container
    // cannot undo the masks; check the foreground run path too.
    let mut f = h.bundle();
    f.sh(&script);
    f.write();
    let fg = h.rt.run(&f.id, f.path());
    assert_masked(&fg, "init");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/domainname").unwrap_or_default(),
        domain_before,
        "host domainname changed"
    );
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}
