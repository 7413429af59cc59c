//! Seccomp user notification (`SCMP_ACT_NOTIFY`, `linux.seccomp.listenerPath`):
//! a tiny agent in the test receives the container process state and the
//! listener fd, for the container's init (`run`, with and without
//! noNewPrivileges) and for an exec'd process; a notified `mkdir` waits for
//! the agent and fails with ENOSYS once the agent closes the listener; a
//! missing agent fails `run` cleanly.

use std::io::{IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::Duration;

use berth_integration::{Bundle, Harness};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use serde_json::{json, Value};

const METADATA: &str = "meta-data";

/// What the agent got.
#[derive(Debug)]
struct Received {
    /// The `ContainerProcessState` JSON.
    message: Value,
    /// A notification was pending on the listener before it was closed.
    notified: bool,
}

/// A one-shot agent listening on `path`.
struct Agent {
    path: PathBuf,
    thread: JoinHandle<Result<Received, String>>,
}

impl Agent {
    /// Listen in `dir`; wait up to `wait_ms` for a notification.
    fn start(dir: &Path, wait_ms: u16) -> Agent {
        let path = dir.join("agent.sock");
        let listener = UnixListener::bind(&path).expect("binding the agent socket");
        let thread = std::thread::spawn(move || serve(&listener, wait_ms));
        Agent { path, thread }
    }

    fn received(self) -> Received {
        match self.thread.join().expect("agent thread") {
            Ok(r) => r,
            Err(e) => panic!("agent: {e}"),
        }
    }
}

/// Wait until `fd` is readable, at most `ms` milliseconds.
fn readable(fd: std::os::fd::BorrowedFd<'_>, ms: u16) -> Result<bool, String> {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::from(ms)).map_err(|e| format!("poll: {e}"))?;
    Ok(n > 0)
}

/// Accept one connection, read the one message and its fd, check the
/// runtime closed the connection, then wait for a notification on the
/// listener and close it (the notified syscall then fails with ENOSYS).
fn serve(listener: &UnixListener, wait_ms: u16) -> Result<Received, String> {
    if !readable(listener.as_fd(), 30_000)? {
        return Err("no connection from the runtime".into());
    }
    let (mut stream, _) = listener.accept().map_err(|e| format!("accept: {e}"))?;
    let mut buf = [0u8; 4096];
    let mut space = nix::cmsg_space!([RawFd; 2]);
    let (n, raw_fds) = {
        let mut iov = [IoSliceMut::new(&mut buf)];
        let msg = recvmsg::<()>(
            stream.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| format!("recvmsg: {e}"))?;
        let mut raw_fds = Vec::new();
        for cmsg in msg.cmsgs().map_err(|e| format!("cmsgs: {e}"))? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                raw_fds.extend(fds);
            }
        }
        (msg.bytes, raw_fds)
    };
    let fds: Vec<OwnedFd> = raw_fds
        .into_iter()
        // SAFETY: SCM_RIGHTS just installed these descriptors in our
        // table; nothing else refers to them.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    let message: Value =
        serde_json::from_slice(&buf[..n]).map_err(|e| format!("message {n} bytes: {e}"))?;
    let [listener_fd] = <[OwnedFd; 1]>::try_from(fds)
        .map_err(|fds| format!("{} fds with {message}, want 1", fds.len()))?;
    // One message, then the runtime closes its end (nothing else holds it).
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    let mut rest = Vec::new();
    stream
        .read_to_end(&mut rest)
        .map_err(|e| format!("waiting for the runtime to close the connection: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} more bytes after the message", rest.len()));
    }
    // A pending notification makes the listener readable.
    let notified = readable(listener_fd.as_fd(), wait_ms)?;
    drop(listener_fd);
    Ok(Received { message, notified })
}

fn notify_profile(b: &mut Bundle, listener: &Path, nnp: bool) {
    b.with(|spec| {
        spec["process"]["noNewPrivileges"] = json!(nnp);
        spec["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "listenerPath": listener,
            "listenerMetadata": METADATA,
            "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
        });
    });
}

const MKDIR: &str = "mkdir /tmp/notified 2>&1; echo rc=$?; [ -e /tmp/notified ] || echo absent";

#[track_caller]
fn check_message(r: &Received, id: &str, pid: i32, init_pid: i32) {
    let m = &r.message;
    assert!(
        m["ociVersion"].as_str().is_some_and(|v| !v.is_empty()),
        "{m}"
    );
    assert_eq!(m["fds"], json!(["seccompFd"]), "{m}");
    assert_eq!(m["metadata"], json!(METADATA), "{m}");
    assert_eq!(m["pid"], json!(pid), "the process's host pid: {m}");
    assert_eq!(m["state"]["id"], json!(id), "{m}");
    assert_eq!(m["state"]["pid"], json!(init_pid), "init's host pid: {m}");
    assert!(m["state"]["bundle"].is_string(), "{m}");
    assert!(r.notified, "mkdir reached the agent: {m}");
}

#[test]
fn run_hands_the_listener_to_the_agent() {
    let Some(h) = Harness::new("seccomp_notify_run") else {
        return;
    };
    for nnp in [false, true] {
        let dir = h.tempdir();
        let agent = Agent::start(&dir, 10_000);
        let mut b = h.bundle();
        notify_profile(&mut b, &agent.path, nnp);
        b.sh(MKDIR);
        b.write();
        let pid_file = dir.join("pid");
        let out = h.rt.run_with(
            &b.id,
            b.path(),
            &["--pid-file", pid_file.to_str().expect("utf-8 path")],
        );
        out.ok();
        let received = agent.received();
        assert!(
            out.stdout.contains("Function not implemented"),
            "nnp {nnp}: {out}"
        );
        assert!(
            out.stdout.contains("rc=1") && out.stdout.contains("absent"),
            "{out}"
        );
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .expect("pid file")
            .trim()
            .parse()
            .expect("a pid");
        assert!(pid > 1, "a host pid, not the namespaced 1");
        check_message(&received, &b.id, pid, pid);
        assert_eq!(received.message["state"]["status"], json!("running"));
    }
    h.assert_no_leaks();
}

#[test]
fn exec_hands_the_listener_to_the_agent() {
    let Some(h) = Harness::new("seccomp_notify_exec") else {
        return;
    };
    let dir = h.tempdir();
    // Init hands its listener to a first agent; the exec'd process, whose
    // profile is the container's, to a second one at the same path.
    let for_init = Agent::start(&dir, 300);
    let socket = for_init.path.clone();
    let mut b = h.bundle();
    notify_profile(&mut b, &for_init.path, false);
    b.args(&["sleep", "1000"]);
    b.write();
    h.rt.run_detached(&b.id, b.path()).ok();
    // Init's filter is in; init (sleep) never calls mkdir: the agent
    // sees no notification and closes that listener.
    let init_received = for_init.received();
    let init_pid = h.rt.pid(&b.id);
    assert_eq!(init_received.message["pid"], json!(init_pid));
    assert!(!init_received.notified, "init made no mkdir");

    // `exec` reads the profile from the container's state: point it at a
    // new agent by recreating the socket at the same path.
    std::fs::remove_file(&socket).expect("rm socket");
    let agent = Agent::start(&dir, 10_000);
    let pid_file = dir.join("exec.pid");
    let out = h.rt.exec_with(
        &b.id,
        &["--pid-file", pid_file.to_str().expect("utf-8 path")],
        &["sh", "-c", MKDIR],
    );
    out.ok();
    let received = agent.received();
    assert!(out.stdout.contains("Function not implemented"), "{out}");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid");
    assert_ne!(pid, init_pid);
    check_message(&received, &b.id, pid, init_pid);
    h.rt.delete_force(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn no_agent_fails_run_cleanly() {
    let Some(h) = Harness::new("seccomp_notify_none") else {
        return;
    };
    let dir = h.tempdir();
    let mut b = h.bundle();
    notify_profile(&mut b, &dir.join("nobody.sock"), false);
    b.sh("echo never");
    b.write();
    let out = h.rt.run(&b.id, b.path());
    out.failed();
    assert!(
        out.stderr.contains("failed to connect with seccomp agent"),
        "{out}"
    );
    assert!(!out.stdout.contains("never"), "{out}");
    h.assert_no_leaks();
}
