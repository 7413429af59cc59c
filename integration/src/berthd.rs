//! An isolated berthd for end-to-end tests: root, state, config, log and
//! sockets in one temp dir under /tmp (shim socket paths must stay short),
//! our shim and `berth` first on its PATH, driven with the real containerd
//! 1.6 `ctr` and with `berthctl`. Dropping it kills what a failed test left
//! (tasks, containers, the daemon, shims) and unmounts what it mounted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::containerd::{image_archive, target_binary};
use crate::leak::{mounts_mentioning, processes_with_cmdline};
use crate::wait_until;

/// Debian's containerd client.
pub const CTR: &str = "/usr/bin/ctr";

/// How to start a [`Berthd`].
#[derive(Debug, Clone)]
pub struct Options {
    /// What the tests are, for the SKIP line (`"the berthd task tests"`).
    pub what: &'static str,
    /// Appended to the generated config file (TOML).
    pub extra_config: String,
    /// Import `hack/make-image`'s busybox archive ([`crate::containerd::IMAGE`]).
    pub import_image: bool,
    /// Serve the Docker API on `<dir>/docker.sock` (otherwise none).
    pub docker: bool,
}

impl Options {
    /// A daemon with the busybox image imported and nothing else configured.
    pub fn new(what: &'static str) -> Options {
        Options {
            what,
            extra_config: String::new(),
            import_image: true,
            docker: false,
        }
    }

    /// Without the image: for tests of the stores themselves.
    pub fn empty(what: &'static str) -> Options {
        Options {
            import_image: false,
            ..Options::new(what)
        }
    }

    /// Serving the Docker API too, on `<dir>/docker.sock`.
    pub fn docker(mut self) -> Options {
        self.docker = true;
        self
    }

    /// With `toml` appended to the config file.
    pub fn config(mut self, toml: &str) -> Options {
        self.extra_config.push_str(toml);
        self
    }
}

/// A berthd of the test's own.
pub struct Berthd {
    dir: tempfile::TempDir,
    socket: PathBuf,
    docker_socket: Option<PathBuf>,
    config: PathBuf,
    path_env: String,
    child: Option<Child>,
    /// The default network's bridge, this daemon's own.
    bridge: String,
}

/// A bridge name and subnet for one test daemon's default network, so
/// daemons running side by side never share (or fight over) one: unique
/// in this process by a counter, across processes by the pid.
fn private_network() -> (String, String) {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let pid = std::process::id();
    (
        format!("bt{}x{n}", pid % 100_000),
        format!("10.{}.{}.0/24", 100 + pid % 100, n % 256),
    )
}

impl Berthd {
    /// Starts one with the busybox image imported; `None` with a SKIP line
    /// when not root or ctr is missing.
    pub fn start(what: &'static str) -> Option<Berthd> {
        Berthd::start_with(Options::new(what))
    }

    /// Starts one as `options` say; `None` with a SKIP line when not root
    /// or ctr is missing.
    pub fn start_with(options: Options) -> Option<Berthd> {
        if !crate::is_root() {
            eprintln!("SKIP: {} need root", options.what);
            return None;
        }
        if !Path::new(CTR).is_file() {
            eprintln!("SKIP: {CTR} is not installed (apt-get install containerd)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("bbd")
            .tempdir_in("/tmp")
            .expect("temp dir for berthd");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        for name in ["containerd-shim-berth-v2", "berth"] {
            std::os::unix::fs::symlink(target_binary(name), bin.join(name)).expect("symlink");
        }
        // berthctl's temporary files (run's fifo directories) go here, to be
        // checked for leftovers.
        std::fs::create_dir(dir.path().join("tmp")).expect("tmp dir");
        let socket = dir.path().join("berthd.sock");
        let docker_socket = options.docker.then(|| dir.path().join("docker.sock"));
        let config = dir.path().join("berthd.toml");
        let (bridge, subnet) = private_network();
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 [grpc]\naddress = \"{1}\"\n[debug]\nlevel = \"debug\"\n\
                 [docker]\naddress = \"{2}\"\n\
                 [network]\nbridge = \"{bridge}\"\nsubnet = \"{subnet}\"\n{3}",
                dir.path().display(),
                socket.display(),
                docker_socket.as_deref().unwrap_or(Path::new("")).display(),
                options.extra_config
            ),
        )
        .expect("berthd config");
        let path_env = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut berthd = Berthd {
            dir,
            socket,
            docker_socket,
            config,
            path_env,
            child: None,
            bridge,
        };
        berthd.launch();
        if options.import_image {
            berthd.ctr_ok(&["images", "import", &image_archive().to_string_lossy()]);
        }
        Some(berthd)
    }

    /// Deletes this daemon's default bridge (berthd keeps it, as dockerd
    /// keeps docker0).
    fn remove_bridge(&self) {
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "delete", &self.bridge])
                .status();
        }
        // And its forwarding and masquerading rules (berthd's chains).
        for (table, chain) in [("filter", "BERTH-FORWARD"), ("nat", "BERTH-POSTROUTING")] {
            let Ok(listed) = Command::new("iptables")
                .args(["-w", "-t", table, "-S", chain])
                .output()
            else {
                continue;
            };
            for rule in String::from_utf8_lossy(&listed.stdout).lines() {
                let mentions = rule.split_whitespace().any(|word| word == self.bridge);
                if let (true, Some(spec)) = (mentions, rule.strip_prefix("-A ")) {
                    let mut args = vec!["-w", "-t", table, "-D"];
                    args.extend(spec.split_whitespace());
                    let _ = Command::new("iptables").args(&args).status();
                }
            }
        }
    }

    /// The temp dir everything lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The gRPC socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The Docker API socket, if it serves one.
    pub fn docker_socket(&self) -> Option<&Path> {
        self.docker_socket.as_deref()
    }

    /// The pid of the running daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Starts the daemon (again, after [`Berthd::kill_hard`] or
    /// [`Berthd::stop`]) and waits until it answers.
    pub fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("berthd.log"))
            .expect("berthd log");
        let child = Command::new(target_binary("berthd"))
            .arg("--config")
            .arg(&self.config)
            .env("PATH", &self.path_env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("berthd log"))
            .stderr(log)
            .spawn()
            .expect("starting berthd");
        self.child = Some(child);
        let up = wait_until(Duration::from_secs(20), || {
            self.socket.exists() && self.ctr(&["version"]).status.success()
        });
        assert!(up, "berthd did not come up; log:\n{}", self.log());
    }

    /// SIGKILL (exactly the pid we started): no cleanup at all.
    pub fn kill_hard(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM, then SIGKILL if it has not exited after 15 s; its exit
    /// status (`None` if it was not running or had to be killed).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let mut status = None;
        let exited = wait_until(Duration::from_secs(15), || {
            status = child.try_wait().ok().flatten();
            status.is_some()
        });
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
        }
        status
    }

    /// [`Berthd::stop`] that checks a clean shutdown: exit status 0, the
    /// sockets removed, nothing mounted from the temp dir.
    pub fn stop_cleanly(&mut self) {
        let status = self.stop();
        assert!(
            status.is_some_and(|s| s.success()),
            "berthd did not exit cleanly on SIGTERM ({status:?}): {}",
            self.log()
        );
        assert!(!self.socket.exists(), "the gRPC socket is left behind");
        if let Some(docker) = &self.docker_socket {
            assert!(!docker.exists(), "the Docker socket is left behind");
        }
        assert_eq!(
            mounts_mentioning(&self.dir.path().to_string_lossy()),
            Vec::<String>::new()
        );
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("berthd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCKET ARGS`, stdin from /dev/null.
    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let fifos = self.dir.path().join("fifo");
        let fifos = fifos.to_str().expect("a UTF-8 temp dir");
        let mut cmd = Command::new(CTR);
        cmd.arg("--address")
            .arg(&self.socket)
            .args(crate::ctr_args_with_fifo_dir(args, fifos))
            .stdin(Stdio::null());
        cmd
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().expect("running ctr")
    }

    /// `ctr ARGS` that must succeed; its stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}): {}{}\nberthd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `ctr ARGS` that must fail; its stderr.
    pub fn ctr_err(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            !out.status.success(),
            "ctr {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// `berthctl --address SOCKET ARGS`, stdin from /dev/null, temporary
    /// files in the fixture's `tmp` dir.
    pub fn berthctl_cmd(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(target_binary("berthctl"));
        cmd.arg("--address")
            .arg(&self.socket)
            .args(args)
            .env("TMPDIR", self.dir.path().join("tmp"))
            .stdin(Stdio::null());
        cmd
    }

    pub fn berthctl(&self, args: &[&str]) -> Output {
        self.berthctl_cmd(args).output().expect("running berthctl")
    }

    /// `berthctl ARGS` that must succeed; its stdout.
    pub fn berthctl_ok(&self, args: &[&str]) -> String {
        let out = self.berthctl(args);
        assert!(
            out.status.success(),
            "berthctl {args:?} failed ({}): {}{}\nberthd log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `berthctl ARGS` that must fail; its stderr.
    pub fn berthctl_err(&self, args: &[&str]) -> String {
        let out = self.berthctl(args);
        assert!(
            !out.status.success(),
            "berthctl {args:?} should have failed: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The STATUS column of `ctr task ls` for `id` (None if not listed).
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
        })
    }

    /// Waits (15 s at most) until `ctr task ls` shows `id` as `status`.
    pub fn wait_status(&self, id: &str, status: &str) {
        let reached = wait_until(Duration::from_secs(15), || {
            self.task_status(id).as_deref() == Some(status)
        });
        assert!(
            reached,
            "task {id} never {status}: {:?}\nlog:\n{}",
            self.task_status(id),
            self.log()
        );
    }

    /// `ctr task rm ID`, which must succeed; the task's exit status (ctr
    /// warns "exit with non-zero exit code N" on stderr).
    pub fn task_rm(&self, id: &str) -> u32 {
        let out = self.ctr(&["task", "rm", id]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "ctr task rm {id}: {stderr}\nlog:\n{}",
            self.log()
        );
        stderr
            .split("exit with non-zero exit code ")
            .nth(1)
            .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
            .and_then(|code| code.parse().ok())
            .unwrap_or(0)
    }

    /// Kills, deletes and removes a detached container with the real ctr.
    pub fn remove_detached(&self, id: &str) {
        self.ctr_ok(&["task", "kill", "-s", "KILL", id]);
        self.wait_status(id, "STOPPED");
        self.ctr_ok(&["task", "rm", id]);
        self.ctr_ok(&["containers", "rm", id]);
    }

    /// The shims serving this daemon.
    pub fn shim_pids(&self) -> Vec<i32> {
        processes_with_cmdline("containerd-shim", &self.socket.to_string_lossy())
    }

    /// The pid of the shim serving task `id`.
    pub fn shim_of(&self, id: &str) -> i32 {
        let serving_id = processes_with_cmdline("containerd-shim", &format!("-id {id} "));
        let ours: Vec<i32> = self
            .shim_pids()
            .into_iter()
            .filter(|pid| serving_id.contains(pid))
            .collect();
        assert_eq!(ours.len(), 1, "shims of {id}: {ours:?}");
        ours[0]
    }

    /// The task bundle directories.
    pub fn bundles(&self) -> Vec<PathBuf> {
        let tasks = self.dir.path().join("state/io.containerd.runtime.v2.task");
        let mut found = Vec::new();
        for ns in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            for task in std::fs::read_dir(ns.path()).into_iter().flatten().flatten() {
                found.push(task.path());
            }
        }
        found
    }

    /// What is left behind: mounts under the temp dir, shims, shim sockets,
    /// bundle directories, berthctl's temporary files.
    pub fn leaks(&self) -> Vec<String> {
        let mut found = Vec::new();
        for m in mounts_mentioning(&self.dir.path().to_string_lossy()) {
            found.push(format!("mount: {m}"));
        }
        for pid in self.shim_pids() {
            found.push(format!("shim process {pid}"));
        }
        let entries = |dir: &str| {
            std::fs::read_dir(self.dir.path().join(dir))
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
        };
        for socket in entries("s") {
            found.push(format!("shim socket {}", socket.display()));
        }
        for bundle in self.bundles() {
            found.push(format!("bundle {}", bundle.display()));
        }
        for file in entries("tmp") {
            found.push(format!("berthctl temp file {}", file.display()));
        }
        found
    }

    /// Kills and deletes every task and deletes every container, in every
    /// namespace; returns the tasks it found (`namespace/id`).
    pub fn sweep(&self) -> Vec<String> {
        let lines = |out: Output| -> Vec<String> {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .collect()
        };
        let mut found = Vec::new();
        for ns in lines(self.ctr(&["namespaces", "ls", "-q"])) {
            for id in lines(self.ctr(&["-n", &ns, "task", "ls", "-q"])) {
                let _ = self.ctr(&["-n", &ns, "task", "kill", "-a", "-s", "KILL", &id]);
                let _ = self.ctr(&["-n", &ns, "task", "rm", "-f", &id]);
                found.push(format!("{ns}/{id}"));
            }
            for id in lines(self.ctr(&["-n", &ns, "containers", "ls", "-q"])) {
                let _ = self.ctr(&["-n", &ns, "containers", "rm", &id]);
            }
        }
        found
    }

    /// Waits (10 s at most) until nothing is left behind.
    pub fn assert_no_leaks(&self) {
        let clean = wait_until(Duration::from_secs(10), || self.leaks().is_empty());
        assert!(
            clean,
            "left behind: {:?}\nlog:\n{}",
            self.leaks(),
            self.log()
        );
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        // Whatever a failed test left: kill and delete tasks and containers.
        if self.child.is_some() {
            self.sweep();
        }
        self.stop();
        for pid in self.shim_pids() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        self.remove_bridge();
        for target in mounts_mentioning(&self.dir.path().to_string_lossy())
            .iter()
            .rev()
        {
            let _ = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
