//! A wrapper around the runtime binary's runc-compatible command line.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Default bound on any runtime invocation.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The captured result of one runtime invocation.
#[derive(Debug, Clone)]
pub struct CmdOutput {
    /// The command line, for messages.
    pub cmdline: String,
    /// Exit code; `None` if killed by a signal or timed out.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: bool,
}

impl CmdOutput {
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Panics (with both streams) unless the command exited 0.
    #[track_caller]
    pub fn ok(&self) -> &Self {
        assert!(self.success(), "command failed: {self}");
        self
    }

    /// Panics unless the command exited non-zero (and did not time out).
    #[track_caller]
    pub fn failed(&self) -> &Self {
        assert!(!self.timed_out, "command timed out: {self}");
        assert!(
            matches!(self.code, Some(c) if c != 0),
            "command was expected to fail: {self}"
        );
        self
    }
}

impl std::fmt::Display for CmdOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` -> code {:?}{}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.code,
            if self.timed_out { " (TIMED OUT)" } else { "" },
            self.stdout,
            self.stderr
        )
    }
}

/// Runs `cmd` with stdin from /dev/null and stdout/stderr captured in
/// anonymous temp files (not pipes: a detached container inherits them and
/// would keep a pipe open forever). Kills it after `timeout`.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> CmdOutput {
    run_bounded_input(cmd, timeout, None)
}

/// Like [`run_bounded`], but with `input` (if given) as stdin instead of
/// /dev/null. The input goes through an anonymous temp file, not a pipe.
pub fn run_bounded_input(cmd: &mut Command, timeout: Duration, input: Option<&[u8]>) -> CmdOutput {
    let cmdline = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut out = tempfile::tempfile().expect("tempfile for stdout");
    let mut err = tempfile::tempfile().expect("tempfile for stderr");
    let stdin = match input {
        None => Stdio::null(),
        Some(bytes) => {
            use std::io::Write;
            let mut f = tempfile::tempfile().expect("tempfile for stdin");
            f.write_all(bytes).expect("write stdin file");
            f.seek(SeekFrom::Start(0)).expect("rewind stdin file");
            Stdio::from(f)
        }
    };
    cmd.stdin(stdin)
        .stdout(Stdio::from(out.try_clone().expect("dup stdout file")))
        .stderr(Stdio::from(err.try_clone().expect("dup stderr file")));
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot spawn `{cmdline}`: {e}"));
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status: Option<ExitStatus> = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("waiting for `{cmdline}`: {e}"),
        }
    };
    let read = |f: &mut File| {
        let mut s = Vec::new();
        let _ = f.seek(SeekFrom::Start(0));
        let _ = f.read_to_end(&mut s);
        String::from_utf8_lossy(&s).into_owned()
    };
    CmdOutput {
        cmdline,
        code: status.and_then(|s| s.code()),
        stdout: read(&mut out),
        stderr: read(&mut err),
        timed_out,
    }
}

/// The runtime under test, with a private `--root` state directory.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub bin: PathBuf,
    root_dir: Arc<tempfile::TempDir>,
    pub timeout: Duration,
}

impl Runtime {
    /// Locates the binary (see [`crate::locate::runtime_binary`]) and makes a
    /// fresh state root.
    pub fn new() -> Self {
        Self::with_binary(crate::locate::runtime_binary())
    }

    pub fn with_binary(bin: PathBuf) -> Self {
        let root_dir = tempfile::Builder::new()
            .prefix("berth-it-root-")
            .tempdir()
            .expect("create runtime root dir");
        Runtime {
            bin,
            root_dir: Arc::new(root_dir),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The `--root` directory handed to every invocation.
    pub fn root(&self) -> &Path {
        self.root_dir.path()
    }

    /// Runs `<bin> --root <root> ARGS...` with the default timeout.
    pub fn cmd<I, S>(&self, args: I) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd_timeout(args, self.timeout)
    }

    pub fn cmd_timeout<I, S>(&self, args: I, timeout: Duration) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root()).args(args);
        run_bounded(&mut c, timeout)
    }

    /// Runs `<bin> --root <root> ARGS...` with `input` as stdin.
    pub fn cmd_input<I, S>(&self, args: I, input: &[u8]) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root()).args(args);
        run_bounded_input(&mut c, self.timeout, Some(input))
    }

    /// Runs `<bin> --root <root> ARGS...` after `customize` had a chance to
    /// adjust the [`Command`] (e.g. a `pre_exec` that leaves an extra fd open).
    pub fn cmd_custom<I, S>(&self, args: I, customize: impl FnOnce(&mut Command)) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root()).args(args);
        customize(&mut c);
        run_bounded(&mut c, self.timeout)
    }

    /// Runs `<bin> --root <root> ARGS...` with `fd` of the test process
    /// inherited by the runtime as descriptor `target` (without CLOEXEC), as
    /// if a careless parent leaked it.
    pub fn cmd_leaking_fd<I, S>(
        &self,
        args: I,
        fd: std::os::fd::BorrowedFd<'_>,
        target: std::os::fd::RawFd,
    ) -> CmdOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let src = fd.as_raw_fd();
        self.cmd_custom(args, |c| {
            // SAFETY: the closure runs in the forked child before exec and
            // only calls the async-signal-safe dup2/fcntl on descriptors.
            unsafe {
                c.pre_exec(move || {
                    if src == target {
                        let fl = libc::fcntl(target, libc::F_GETFD);
                        if fl < 0 || libc::fcntl(target, libc::F_SETFD, fl & !libc::FD_CLOEXEC) < 0
                        {
                            return Err(std::io::Error::last_os_error());
                        }
                    } else if libc::dup2(src, target) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        })
    }

    /// `exec ID CMD...`.
    pub fn exec(&self, id: &str, cmd: &[&str]) -> CmdOutput {
        self.exec_with(id, &[], cmd)
    }

    /// `exec FLAGS... ID CMD...`.
    pub fn exec_with(&self, id: &str, flags: &[&str], cmd: &[&str]) -> CmdOutput {
        let mut a: Vec<&str> = vec!["exec"];
        a.extend_from_slice(flags);
        a.push(id);
        a.extend_from_slice(cmd);
        self.cmd(a)
    }

    /// `ps -f json ID`, parsed as a list of host pids.
    #[track_caller]
    pub fn ps_json(&self, id: &str) -> Vec<i32> {
        let out = self.cmd(["ps", "-f", "json", id]);
        out.ok();
        match serde_json::from_str::<Value>(out.stdout.trim()) {
            Ok(Value::Array(v)) => v
                .iter()
                .map(|p| {
                    p.as_i64()
                        .unwrap_or_else(|| panic!("non-numeric pid {p} in: {out}"))
                        as i32
                })
                .collect(),
            Ok(Value::Null) => Vec::new(),
            other => panic!("ps -f json printed {other:?}: {out}"),
        }
    }

    pub fn pause(&self, id: &str) -> CmdOutput {
        self.cmd(["pause", id])
    }

    pub fn resume(&self, id: &str) -> CmdOutput {
        self.cmd(["resume", id])
    }

    /// `update FLAGS... ID`.
    pub fn update(&self, id: &str, flags: &[&str]) -> CmdOutput {
        let mut a: Vec<&str> = vec!["update"];
        a.extend_from_slice(flags);
        a.push(id);
        self.cmd(a)
    }

    /// `run --bundle B ID` in the foreground; returns the container's output.
    pub fn run(&self, id: &str, bundle: &Path) -> CmdOutput {
        self.cmd([
            OsStr::new("run"),
            "--bundle".as_ref(),
            bundle.as_os_str(),
            id.as_ref(),
        ])
    }

    /// `run` with extra flags placed before the id (e.g. `--no-pivot`).
    pub fn run_with(&self, id: &str, bundle: &Path, flags: &[&str]) -> CmdOutput {
        let mut a: Vec<&OsStr> = vec!["run".as_ref(), "--bundle".as_ref(), bundle.as_os_str()];
        a.extend(flags.iter().map(OsStr::new));
        a.push(id.as_ref());
        self.cmd(a)
    }

    /// `run --detach --bundle B ID`.
    pub fn run_detached(&self, id: &str, bundle: &Path) -> CmdOutput {
        self.run_with(id, bundle, &["--detach"])
    }

    /// `create --bundle B ID`.
    pub fn create(&self, id: &str, bundle: &Path) -> CmdOutput {
        self.create_with(id, bundle, &[])
    }

    pub fn create_with(&self, id: &str, bundle: &Path, flags: &[&str]) -> CmdOutput {
        let mut a: Vec<&OsStr> = vec!["create".as_ref(), "--bundle".as_ref(), bundle.as_os_str()];
        a.extend(flags.iter().map(OsStr::new));
        a.push(id.as_ref());
        self.cmd(a)
    }

    pub fn start(&self, id: &str) -> CmdOutput {
        self.cmd(["start", id])
    }

    /// `state ID` output (not parsed).
    pub fn state_raw(&self, id: &str) -> CmdOutput {
        self.cmd(["state", id])
    }

    /// `state ID`, parsed; panics if the command fails or prints bad JSON.
    #[track_caller]
    pub fn state(&self, id: &str) -> Value {
        let out = self.state_raw(id);
        out.ok();
        serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("state output is not JSON ({e}): {out}"))
    }

    /// The `status` field of `state ID`.
    #[track_caller]
    pub fn status(&self, id: &str) -> String {
        self.state(id)["status"]
            .as_str()
            .unwrap_or_else(|| panic!("state of {id} has no status string"))
            .to_string()
    }

    /// The `pid` field of `state ID`.
    #[track_caller]
    pub fn pid(&self, id: &str) -> i32 {
        let st = self.state(id);
        st["pid"]
            .as_i64()
            .unwrap_or_else(|| panic!("state of {id} has no pid: {st}")) as i32
    }

    /// Polls `state ID` until its status is `want`; panics after `timeout`.
    #[track_caller]
    pub fn wait_status(&self, id: &str, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let st = self.status(id);
            if st == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} still {st:?} after {timeout:?}, wanted {want:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill(&self, id: &str, signal: &str) -> CmdOutput {
        self.cmd(["kill", id, signal])
    }

    pub fn delete(&self, id: &str) -> CmdOutput {
        self.cmd(["delete", id])
    }

    pub fn delete_force(&self, id: &str) -> CmdOutput {
        self.cmd(["delete", "--force", id])
    }

    /// `list` (table format).
    pub fn list(&self) -> CmdOutput {
        self.cmd(["list"])
    }

    /// `list --format json`, parsed (`null` is treated as an empty list).
    #[track_caller]
    pub fn list_json(&self) -> Vec<Value> {
        let out = self.cmd(["list", "--format", "json"]);
        out.ok();
        match serde_json::from_str::<Value>(out.stdout.trim()) {
            Ok(Value::Array(v)) => v,
            Ok(Value::Null) => Vec::new(),
            other => panic!("list --format json printed {other:?}: {out}"),
        }
    }

    /// The state directory the runtime keeps for `id` (runc layout: `<root>/<id>`).
    pub fn state_dir(&self, id: &str) -> PathBuf {
        self.root().join(id)
    }
}

impl Default for Runtime {
    fn default() -> Self {
        Self::new()
    }
}
