//! The process section: user and groups, umask, env, cwd, args.

use berth_integration::Harness;
use serde_json::json;

#[test]
fn user_uid_gid_additional_gids() {
    let Some(h) = Harness::new("user") else {
        return;
    };
    let mut b = h.bundle();
    b.set(
        "/process/user",
        json!({"uid": 1000, "gid": 1000, "additionalGids": [10, 100]}),
    );
    b.sh("id -u; id -g; id -G; id -un; grep -E '^(Uid|Gid|Groups):' /proc/self/status");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    let l: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(l[0], "1000", "{out}");
    assert_eq!(l[1], "1000", "{out}");
    let mut groups: Vec<&str> = l[2].split_whitespace().collect();
    groups.sort();
    assert_eq!(groups, ["10", "100", "1000"], "{out}");
    assert_eq!(l[3], "nobody", "{out}");
    assert!(out.stdout.contains("Uid:\t1000\t1000\t1000\t1000"), "{out}");
    assert!(out.stdout.contains("Gid:\t1000\t1000\t1000\t1000"), "{out}");
}

#[test]
fn non_root_user_cannot_write_root_files() {
    let Some(h) = Harness::new("user_perm") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/process/user", json!({"uid": 1000, "gid": 1000}));
    b.rootfs_file("/root-only", "x", 0o600);
    b.sh("cat /root-only; echo cat=$?; echo x > /root-only; echo write=$?");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert!(out.stdout.contains("cat=1"), "{out}");
    assert!(out.stdout.contains("write=1"), "{out}");
}

#[test]
fn umask_applied() {
    let Some(h) = Harness::new("umask") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/process/user/umask", json!(0o027));
    b.sh("umask; touch /tmp/f; stat -c %a /tmp/f");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout, "0027\n640\n", "{out}");
}

#[test]
fn env_and_cwd() {
    let Some(h) = Harness::new("env_cwd") else {
        return;
    };
    let mut b = h.bundle();
    b.env("GREETING", "hello world");
    b.env("EMPTY", "");
    b.rootfs_dir("/work/dir");
    b.set("/process/cwd", json!("/work/dir"));
    b.sh("pwd; echo \"$GREETING\"; env | grep -c '^EMPTY=$'; echo $PATH");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(
        out.stdout,
        "/work/dir\nhello world\n1\n/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n",
        "{out}"
    );
}

/// A cwd that does not exist is created, as runc does, before the root
/// turns read-only; an exec's cwd is not (runc refuses it too).
#[test]
fn a_missing_cwd_is_created_before_the_root_turns_read_only() {
    let Some(h) = Harness::new("cwd_created") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/root/readonly", json!(true));
    b.set("/process/cwd", json!("/not/yet/there"));
    b.args(&["sleep", "1000"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    assert!(b.rootfs().join("not/yet/there").is_dir());
    let out = h.rt.exec(&b.id, &["pwd"]);
    out.ok();
    assert_eq!(out.stdout, "/not/yet/there\n", "{out}");

    let out = h.rt.exec_with(&b.id, &["--cwd", "/no/such/dir"], &["pwd"]);
    out.failed();
    assert!(out.stderr.contains("/no/such/dir"), "{out}");
    assert!(!b.rootfs().join("no").exists());
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

/// systemd's socket activation, as runc supports it: with `LISTEN_PID` =
/// berth's pid and `LISTEN_FDS` = N, descriptors 3..3+N go to the container
/// (before any `--preserve-fds` ones), whose process gets `LISTEN_FDS=N`
/// and `LISTEN_PID=1`; an exec'd process does not. With `LISTEN_PID` of
/// another process nothing is passed.
#[test]
fn socket_activation_descriptors_are_passed_on() {
    let Some(h) = Harness::new("listen_fds") else {
        return;
    };
    let dir = h.tempdir();
    std::fs::write(dir.join("activated"), "activated\n").expect("write");
    std::fs::write(dir.join("preserved"), "preserved\n").expect("write");
    let run = |listen_pid: &str| {
        let mut b = h.bundle();
        b.sh("echo \"fds=$LISTEN_FDS pid=$LISTEN_PID\"; cat <&3; cat <&4");
        b.write();
        let script = format!(
            "cd {dir} && LISTEN_PID={listen_pid} LISTEN_FDS=1 exec {bin} --root {root} \
             run --preserve-fds 1 --bundle {bundle} {id} 3<activated 4<preserved",
            dir = dir.display(),
            bin = h.rt.bin.display(),
            root = h.rt.root().display(),
            bundle = b.path().display(),
            id = b.id,
        );
        berth_integration::runtime::run_bounded(
            std::process::Command::new("/bin/sh").args(["-c", &script]),
            berth_integration::SECS10,
        )
    };
    let out = run("$$");
    out.ok();
    assert_eq!(out.stdout, "fds=1 pid=1\nactivated\npreserved\n", "{out}");

    // Not meant for berth: only --preserve-fds' descriptor (fd 3) passes.
    let out = run("1");
    assert_eq!(out.stdout.lines().next(), Some("fds= pid="), "{out}");
    assert!(out.stdout.contains("activated"), "{out}");
    assert!(!out.stdout.contains("preserved"), "{out}");
    h.assert_no_leaks();
}

#[test]
fn env_is_exactly_the_spec_env() {
    let Some(h) = Harness::new("env_exact") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/process/env", json!(["PATH=/bin", "ONLY=this"]));
    b.args(&["/bin/env"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    let mut vars: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| !l.starts_with("HOME="))
        .collect();
    vars.sort();
    assert_eq!(
        vars,
        ["ONLY=this", "PATH=/bin"],
        "host environment leaked in: {out}"
    );
}

#[test]
fn args_passed_verbatim() {
    let Some(h) = Harness::new("args") else {
        return;
    };
    let mut b = h.bundle();
    b.args(&["/bin/printf", "[%s]\\n", "a b", "", "$HOME", "--flag"]);
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.ok();
    assert_eq!(out.stdout, "[a b]\n[]\n[$HOME]\n[--flag]\n", "{out}");
}
