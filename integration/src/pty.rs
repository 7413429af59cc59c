//! A client (ctr, berthctl, docker) driven through a real pty, as a person
//! at a terminal would drive it.

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::pty::{openpty, Winsize};

/// How long [`PtySession::read_until`] waits for its text.
const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// A command running with a pty as its stdin, stdout and stderr.
pub struct PtySession {
    master: File,
    slave: File,
    child: Child,
    seen: String,
}

impl PtySession {
    /// Runs `cmd` on a new pty of `rows` x `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> PtySession {
        let size = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&size), None).expect("openpty");
        let slave = File::from(pty.slave);
        cmd.stdin(slave.try_clone().expect("pty slave"))
            .stdout(slave.try_clone().expect("pty slave"))
            .stderr(slave.try_clone().expect("pty slave"));
        let child = cmd.spawn().expect("spawning the command on the pty");
        let master = File::from(pty.master);
        fcntl(&master, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).expect("non-blocking pty master");
        PtySession {
            master,
            slave,
            child,
            seen: String::new(),
        }
    }

    /// The command's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the terminal showed so far.
    pub fn seen(&self) -> &str {
        &self.seen
    }

    /// Types `bytes` (`\r` is Enter, `\x03` Ctrl-C).
    pub fn type_in(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).expect("writing to the pty");
    }

    /// Reads what the terminal shows now, without waiting.
    pub fn read_now(&mut self) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.master.read(&mut buf) {
            if n == 0 {
                break;
            }
            self.seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }

    /// Reads until the terminal has shown `needle` (15 s at most).
    #[track_caller]
    pub fn read_until(&mut self, needle: &str) {
        let deadline = Instant::now() + READ_TIMEOUT;
        while !self.seen.contains(needle) && Instant::now() < deadline {
            self.read_now();
            if !self.seen.contains(needle) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        assert!(
            self.seen.contains(needle),
            "never saw {needle:?} in {:?}",
            self.seen
        );
    }

    /// Sets the terminal's size, as a window resize does (the command is
    /// not signalled: send it SIGWINCH if it should notice).
    pub fn resize(&self, rows: u16, cols: u16) {
        let status = Command::new("stty")
            .args(["rows", &rows.to_string(), "cols", &cols.to_string()])
            .stdin(self.slave.try_clone().expect("pty slave"))
            .status()
            .expect("running stty");
        assert!(status.success(), "stty rows {rows} cols {cols} failed");
    }

    /// Waits for the command to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let status = self.child.wait().expect("waiting for the pty's command");
        self.read_now();
        status
    }
}

impl Drop for PtySession {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
