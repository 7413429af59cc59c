//! `checkpoint` and `restore` with CRIU: a container's processes are saved
//! to images and brought back with their memory, their pipes and their
//! terminal; the argument and failure paths leave nothing behind.
//!
//! CRIU must work on the host (`criu check`); hack/install-criu provides
//! one. Without it the tests skip, unless BERTH_REQUIRE_CRIU is set (as in
//! CI), where that is a failure.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::console::{read_until, ConsoleSocket};
use berth_integration::leak::cgroup_dirs_named;
use berth_integration::{Bundle, Harness, SECS10};
use serde_json::json;

/// Whether CRIU works here; see the module comment.
fn criu_ready(name: &str) -> bool {
    let works = Command::new("criu")
        .arg("check")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !works {
        assert!(
            std::env::var_os("BERTH_REQUIRE_CRIU").is_none(),
            "{name}: `criu check` fails and BERTH_REQUIRE_CRIU is set (install one: hack/install-criu)"
        );
        eprintln!("SKIP {name}: criu is missing or does not work on this host (hack/install-criu)");
    }
    works
}

/// The harness of a checkpoint test, or `None` (skipped: see
/// [`criu_ready`]).
fn harness(name: &str) -> Option<Harness> {
    let h = Harness::new(name)?;
    criu_ready(&h.name).then_some(h)
}

/// A bundle whose shell runs `script`, with or without a terminal.
fn shell_bundle(h: &Harness, script: &str, terminal: bool) -> Bundle {
    let mut b = h.bundle();
    b.set("/process/terminal", json!(terminal));
    b.sh(script);
    b.write();
    b
}

/// Whether `criu check --feature NAME` passes.
fn criu_has_feature(name: &str) -> bool {
    Command::new("criu")
        .args(["check", "--feature", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The container's stdio as three pipes; we keep the other ends.
struct Pipes {
    stdin: (OwnedFd, OwnedFd),
    stdout: (OwnedFd, OwnedFd),
    stderr: (OwnedFd, OwnedFd),
}

impl Pipes {
    fn new() -> Self {
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        Pipes {
            stdin: pipe(),
            stdout: pipe(),
            stderr: pipe(),
        }
    }

    /// Run `berth ARGS` with these pipes as its stdio (which a detached
    /// container keeps); panics, with what it wrote, unless it succeeds.
    #[track_caller]
    fn run(&self, h: &Harness, args: &[&str]) {
        let status = self.run_status(h, args);
        if !status.success() {
            let err = read_until(&self.stderr.0, None, Duration::from_millis(300));
            panic!("berth {args:?} failed ({status}): {err}");
        }
    }

    /// Run `berth ARGS` as [`Pipes::run`] does; its exit status.
    #[track_caller]
    fn run_status(&self, h: &Harness, args: &[&str]) -> std::process::ExitStatus {
        let dup = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup"));
        let mut child = Command::new(&h.rt.bin)
            .arg("--root")
            .arg(h.rt.root())
            .args(args)
            .stdin(dup(&self.stdin.0))
            .stdout(dup(&self.stdout.1))
            .stderr(dup(&self.stderr.1))
            .spawn()
            .expect("spawn berth");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "berth {args:?} timed out");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Close the container's stdin (it reads end-of-file).
    fn close_stdin(&mut self) {
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        drop(std::mem::replace(&mut self.stdin.1, null.into()));
    }

    fn send(&self, line: &str) {
        nix::unistd::write(&self.stdin.1, format!("{line}\n").as_bytes()).expect("write stdin");
    }

    #[track_caller]
    fn expect(&self, needle: &str) {
        let seen = read_until(&self.stdout.0, Some(needle), SECS10);
        assert!(seen.contains(needle), "waited for {needle:?}, got {seen:?}");
    }
}

/// A shell that numbers the lines it reads: its count lives in memory.
const COUNTER: &str = "n=0; while read line; do n=$((n+1)); echo \"$n:$line\"; done";

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn a_restored_container_keeps_its_memory_and_gets_the_new_pipes() {
    let Some(h) = harness("cr_pipes") else {
        return;
    };
    let b = shell_bundle(&h, COUNTER, false);
    let bundle = path_str(b.path());
    let images = path_str(&h.tempdir().join("images"));
    let work = path_str(&h.tempdir());

    let first = Pipes::new();
    first.run(&h, &["run", "-d", "-b", &bundle, &b.id]);
    first.send("a");
    first.expect("1:a");

    h.rt.cmd([
        "checkpoint",
        "--image-path",
        &images,
        "--work-path",
        &work,
        &b.id,
    ])
    .ok();
    // The container is gone, as runc leaves it: no state, no cgroup.
    h.rt.state_raw(&b.id).failed();
    assert!(cgroup_dirs_named(&b.id).is_empty());
    assert!(Path::new(&work).join("dump.log").exists());
    assert!(Path::new(&images).join("descriptors.json").exists());

    // Each restored container lives as long as its stdin is open.
    let mut restored = Vec::new();
    for (round, line) in [(2, "b"), (3, "c")] {
        let next = Pipes::new();
        next.run(
            &h,
            &[
                "restore",
                "-d",
                "--image-path",
                &images,
                "-b",
                &bundle,
                &b.id,
            ],
        );
        assert_eq!(h.rt.status(&b.id), "running");
        next.send(line);
        next.expect(&format!("{round}:{line}"));
        // Restoring twice from the same images is allowed once the first
        // restored container is gone.
        if round == 2 {
            h.rt.cmd(["checkpoint", "--image-path", &images, &b.id])
                .ok();
        }
        restored.push(next);
    }
    // It is a container like any other: exec, then delete.
    let out = h.rt.exec(&b.id, &["echo", "inside"]);
    assert_eq!(out.ok().stdout.trim(), "inside");
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn a_restore_in_the_foreground_waits_and_passes_the_exit_status() {
    let Some(h) = harness("cr_foreground") else {
        return;
    };
    let b = shell_bundle(&h, &format!("{COUNTER}; exit 7"), false);
    let bundle = path_str(b.path());
    let images = path_str(&h.tempdir().join("images"));
    let first = Pipes::new();
    first.run(&h, &["run", "-d", "-b", &bundle, &b.id]);
    first.send("a");
    first.expect("1:a");
    h.rt.cmd(["checkpoint", "--image-path", &images, &b.id])
        .ok();

    // The input is there before the restore, then ends: the restored shell
    // answers, exits 7, and berth passes that on and removes the container.
    let mut next = Pipes::new();
    next.send("b");
    next.close_stdin();
    let status = next.run_status(
        &h,
        &["restore", "--image-path", &images, "-b", &bundle, &b.id],
    );
    assert_eq!(status.code(), Some(7), "restore in the foreground");
    next.expect("2:b");
    h.rt.state_raw(&b.id).failed();
    h.assert_no_leaks();
}

#[test]
fn a_terminal_container_is_restored_onto_the_console_socket() {
    let Some(h) = harness("cr_tty") else {
        return;
    };
    let b = shell_bundle(&h, COUNTER, true);
    let bundle = path_str(b.path());
    let images = path_str(&h.tempdir().join("images"));

    let sock = ConsoleSocket::bind(&h.tempdir());
    h.rt.run_with(
        &b.id,
        b.path(),
        &["-d", "--console-socket", &path_str(&sock.path)],
    )
    .ok();
    let master = sock.master(SECS10);
    nix::unistd::write(&master, b"x\n").expect("write");
    let seen = read_until(&master, Some("1:x"), SECS10);
    assert!(seen.contains("1:x"), "{seen:?}");

    // Each restored container lives as long as its pty master is open.
    let mut masters = vec![master];
    for round in 2..4 {
        h.rt.cmd(["checkpoint", "--image-path", &images, &b.id])
            .ok();
        h.rt.state_raw(&b.id).failed();
        let sock = ConsoleSocket::bind(&h.tempdir());
        h.rt.cmd([
            "restore",
            "-d",
            "--image-path",
            &images,
            "--console-socket",
            &path_str(&sock.path),
            "-b",
            &bundle,
            &b.id,
        ])
        .ok();
        let master = sock.master(SECS10);
        nix::unistd::write(&master, b"y\n").expect("write");
        let want = format!("{round}:y");
        let seen = read_until(&master, Some(&want), SECS10);
        assert!(seen.contains(&want), "{seen:?}");
        assert_eq!(h.rt.status(&b.id), "running");
        masters.push(master);
    }
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn pre_dump_and_leave_running_keep_the_container_running() {
    let Some(h) = harness("cr_predump") else {
        return;
    };
    let b = shell_bundle(&h, COUNTER, false);
    let bundle = path_str(b.path());
    let dir = h.tempdir();
    let parent = path_str(&dir.join("parent"));
    let images = path_str(&dir.join("images"));

    let io = Pipes::new();
    io.run(&h, &["run", "-d", "-b", &bundle, &b.id]);
    io.send("a");
    io.expect("1:a");
    if !criu_has_feature("mem_dirty_track") {
        // This kernel cannot track dirty memory (soft-dirty bits): the
        // pre-dump is refused up front, and the container is unharmed.
        let out =
            h.rt.cmd(["checkpoint", "--pre-dump", "--image-path", &parent, &b.id]);
        out.failed();
        assert!(out.stderr.contains("--pre-dump"), "{out}");
        assert!(!Path::new(&parent).exists());
        assert_eq!(h.rt.status(&b.id), "running");
        io.send("b");
        io.expect("2:b");
        h.rt.delete_force(&b.id).ok();
        h.assert_no_leaks();
        return;
    }
    h.rt.cmd(["checkpoint", "--pre-dump", "--image-path", &parent, &b.id])
        .ok();
    assert_eq!(h.rt.status(&b.id), "running");
    h.rt.cmd([
        "checkpoint",
        "--leave-running",
        "--image-path",
        &images,
        "--parent-path",
        "../parent",
        &b.id,
    ])
    .ok();
    assert_eq!(h.rt.status(&b.id), "running");
    assert!(
        dir.join("images/parent").exists(),
        "no link to the parent images"
    );
    // Still serving its pipes.
    io.send("b");
    io.expect("2:b");
    h.rt.delete_force(&b.id).ok();

    // The incremental images restore the state they were taken in.
    let next = Pipes::new();
    next.run(
        &h,
        &[
            "restore",
            "-d",
            "--image-path",
            &images,
            "-b",
            &bundle,
            &b.id,
        ],
    );
    next.send("c");
    next.expect("2:c");
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn bad_checkpoints_and_restores_fail_clearly_and_leave_nothing() {
    let Some(h) = harness("cr_errors") else {
        return;
    };
    let dir = h.tempdir();
    let images = path_str(&dir.join("images"));
    let fails_with = |args: &[&str], needle: &str| {
        let out = h.rt.cmd(args);
        out.failed();
        assert!(out.stderr.contains(needle), "{needle:?} not in {out}");
    };

    fails_with(
        &["checkpoint", "--image-path", &images, "nosuch"],
        "does not exist",
    );

    // Created but not started: nothing to checkpoint yet.
    let b = shell_bundle(&h, COUNTER, false);
    let bundle = path_str(b.path());
    h.rt.create(&b.id, b.path()).ok();
    fails_with(
        &["checkpoint", "--image-path", &images, &b.id],
        "cannot be checkpointed: it is created",
    );
    assert_eq!(h.rt.status(&b.id), "created");
    h.rt.delete_force(&b.id).ok();

    let io = Pipes::new();
    io.run(&h, &["run", "-d", "-b", &bundle, &b.id]);
    let absolute = path_str(&dir.join("parent"));
    for parent in [absolute.as_str(), "../missing"] {
        fails_with(
            &[
                "checkpoint",
                "--image-path",
                &images,
                "--parent-path",
                parent,
                &b.id,
            ],
            "--parent-path",
        );
    }
    assert!(
        !Path::new(&images).exists(),
        "a failed checkpoint made its image dir"
    );
    fails_with(
        &[
            "--criu",
            "/nonexistent/criu",
            "checkpoint",
            "--image-path",
            &images,
            &b.id,
        ],
        "/nonexistent/criu",
    );
    assert_eq!(h.rt.status(&b.id), "running");

    // Restoring onto an id in use.
    h.rt.cmd([
        "checkpoint",
        "--leave-running",
        "--image-path",
        &images,
        &b.id,
    ])
    .ok();
    fails_with(
        &[
            "restore",
            "-d",
            "--image-path",
            &images,
            "-b",
            &bundle,
            &b.id,
        ],
        "exists",
    );
    assert_eq!(h.rt.status(&b.id), "running");
    h.rt.delete_force(&b.id).ok();

    // Images that are not there, not a checkpoint, or broken.
    let missing = path_str(&dir.join("missing"));
    fails_with(
        &[
            "restore",
            "-d",
            "--image-path",
            &missing,
            "-b",
            &bundle,
            &b.id,
        ],
        "--image-path",
    );
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).expect("mkdir");
    fails_with(
        &[
            "restore",
            "-d",
            "--image-path",
            &path_str(&empty),
            "-b",
            &bundle,
            &b.id,
        ],
        "not a checkpoint",
    );
    std::fs::write(empty.join("descriptors.json"), "[]").expect("write");
    fails_with(
        &[
            "restore",
            "-d",
            "--image-path",
            &path_str(&empty),
            "-b",
            &bundle,
            &b.id,
        ],
        "criu restore failed",
    );
    h.rt.state_raw(&b.id).failed();
    h.assert_no_leaks();
    drop(io);
}
