//! `process.terminal` with `--console-socket`: the pty master is handed over
//! SCM_RIGHTS and the container's stdio is the pty slave.

use std::time::Duration;

use berth_integration::console::{read_until, read_until_closed, ConsoleSocket};
use berth_integration::{Harness, SECS10};
use serde_json::json;

#[test]
fn console_socket_receives_working_pty() {
    let Some(h) = Harness::new("console") else {
        return;
    };
    let sock = ConsoleSocket::bind(&h.tempdir());
    let mut b = h.bundle();
    b.set("/process/terminal", json!(true));
    b.sh(
        "tty; test -t 0 && echo stdin-tty; test -t 1 && echo stdout-tty; \
         test -t 2 && echo stderr-tty; sleep 0.3",
    );
    b.write();
    let sock_path = sock.path.to_string_lossy().into_owned();
    h.rt.create_with(&b.id, b.path(), &["--console-socket", &sock_path])
        .ok();
    let master = sock.master(SECS10);
    h.rt.start(&b.id).ok();
    let text = read_until_closed(&master, Duration::from_secs(15));
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines.first().copied(),
        Some("/dev/pts/0"),
        "tty output: {text:?}"
    );
    for w in ["stdin-tty", "stdout-tty", "stderr-tty"] {
        assert!(lines.contains(&w), "{w} missing in {text:?}");
    }
    h.rt.wait_status(&b.id, "stopped", SECS10);
    h.rt.delete(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn console_input_reaches_container() {
    let Some(h) = Harness::new("console_in") else {
        return;
    };
    let sock = ConsoleSocket::bind(&h.tempdir());
    let mut b = h.bundle();
    b.set("/process/terminal", json!(true));
    b.sh("stty -echo; echo ready; read line; echo \"got:$line\"");
    b.write();
    let sock_path = sock.path.to_string_lossy().into_owned();
    h.rt.run_with(
        &b.id,
        b.path(),
        &["--detach", "--console-socket", &sock_path],
    )
    .ok();
    let master = sock.master(SECS10);
    // Wait for the prompt before typing.
    let seen = read_until(&master, Some("ready"), SECS10);
    assert!(seen.contains("ready"), "{seen:?}");
    nix::unistd::write(&master, b"typed-in\n").expect("write to pty master");
    let text = read_until_closed(&master, Duration::from_secs(15));
    assert!(text.contains("got:typed-in"), "{text:?}");
    h.rt.wait_status(&b.id, "stopped", SECS10);
    h.rt.delete(&b.id).ok();
    h.assert_no_leaks();
}

#[test]
fn terminal_without_console_socket_in_detached_mode_fails_cleanly() {
    let Some(h) = Harness::new("console_missing") else {
        return;
    };
    let mut b = h.bundle();
    b.set("/process/terminal", json!(true));
    b.args(&["true"]);
    b.write();
    let out = h.rt.create(&b.id, b.path());
    out.failed();
    assert!(
        out.stderr.contains("console"),
        "error must mention the console socket: {out}"
    );
    h.assert_no_leaks();
}
