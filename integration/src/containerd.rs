//! A private containerd 1.6 (Debian's package) for end-to-end tests of the
//! shim: its own config, root, state and socket in a temp dir, our shim and
//! runtime first on its PATH, and the busybox image from `hack/make-image`
//! imported. Dropping it kills what the test left, stops exactly the daemon
//! it started, and fails the test if mounts, shims, cgroups or sockets
//! remain.

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::locate::workspace_root;

/// The image every shim test runs.
pub const IMAGE: &str = "docker.io/library/berth-busybox:latest";
/// Runtime name that resolves to `containerd-shim-berth-v2`.
pub const BERTH_RUNTIME: &str = "io.containerd.berth.v2";

/// Which shim answers for containerd's default runtime name
/// (`io.containerd.runc.v2`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuncShim {
    /// Debian's containerd-shim-runc-v2.
    Real,
    /// Ours, so `ctr run --runc-binary` drives runc through our shim.
    Berth,
}

pub struct Containerd {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    config: PathBuf,
    path_env: String,
    child: Option<Child>,
}

/// A binary this workspace builds (debug preferred).
pub fn target_binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| {
            if t.is_absolute() {
                t
            } else {
                workspace_root().join(t)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    for profile in ["debug", "release"] {
        let p = target.join(profile).join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{name} not built: run `cargo build --workspace` first");
}

/// The shim under test.
pub fn shim_binary() -> PathBuf {
    target_binary("containerd-shim-berth-v2")
}

/// The busybox OCI archive, built once and shared by every test process
/// (hack/make-image is reproducible): `target/tmp/berth-busybox-<key>.tar`,
/// keyed by the script's and busybox's sizes and times, made under a
/// temporary name and renamed into place, so nothing is left in /tmp.
pub fn image_archive() -> &'static Path {
    static ARCHIVE: OnceLock<PathBuf> = OnceLock::new();
    ARCHIVE.get_or_init(|| {
        let script = workspace_root().join("hack/make-image");
        let stamp = |path: &Path| {
            std::fs::metadata(path)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)))
                .map(|(len, at)| {
                    let secs = at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs());
                    format!("{len:x}{secs:x}")
                })
                .unwrap_or_default()
        };
        let key = format!("{}-{}", stamp(&script), stamp(Path::new("/bin/busybox")));
        let dir = workspace_root().join("target/tmp");
        std::fs::create_dir_all(&dir).expect("target/tmp");
        let out = dir.join(format!("berth-busybox-{key}.tar"));
        if out.is_file() {
            return out;
        }
        let partial = dir.join(format!("berth-busybox-{key}.tar.{}", std::process::id()));
        let status = Command::new(&script)
            .arg(&partial)
            .arg(IMAGE)
            .stdout(Stdio::null())
            .status()
            .expect("running hack/make-image");
        assert!(status.success(), "hack/make-image failed");
        std::fs::rename(&partial, &out).expect("placing the image archive");
        out
    })
}

impl Containerd {
    /// Start a private containerd, or `None` (with a SKIP line) when not
    /// root or containerd is not installed.
    pub fn start(runc_shim: RuncShim) -> Option<Containerd> {
        if !crate::is_root() {
            eprintln!("SKIP: the containerd tests need root");
            return None;
        }
        if !Path::new("/usr/bin/containerd").is_file() {
            eprintln!("SKIP: containerd is not installed (apt-get install containerd)");
            return None;
        }
        // Short path: the shim sockets live in <dir>/s/<64 hex>.
        let dir = tempfile::Builder::new()
            .prefix("bctd")
            .tempdir_in("/tmp")
            .expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        let shim = target_binary("containerd-shim-berth-v2");
        symlink(&shim, bin.join("containerd-shim-berth-v2")).expect("symlink shim");
        symlink(target_binary("berth"), bin.join("berth")).expect("symlink berth");
        if runc_shim == RuncShim::Berth {
            symlink(&shim, bin.join("containerd-shim-runc-v2")).expect("symlink shim as runc's");
        }
        let socket = dir.path().join("containerd.sock");
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "version = 2\nroot = \"{0}/root\"\nstate = \"{0}/state\"\n\
                 disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
                 [grpc]\n  address = \"{1}\"\n[debug]\n  level = \"debug\"\n",
                dir.path().display(),
                socket.display()
            ),
        )
        .expect("config");
        let path_env = format!(
            "{}:{}",
            bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut ctd = Containerd {
            dir,
            socket,
            config,
            path_env,
            child: None,
        };
        ctd.launch();
        let out = ctd.ctr(&["images", "import", &image_archive().to_string_lossy()]);
        assert!(
            out.status.success(),
            "ctr images import: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Some(ctd)
    }

    fn launch(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("containerd.log"))
            .expect("log file");
        let child = Command::new("/usr/bin/containerd")
            .arg("--config")
            .arg(&self.config)
            .env("PATH", &self.path_env)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("starting containerd");
        self.child = Some(child);
        let up = crate::wait_until(Duration::from_secs(20), || {
            self.socket.exists() && self.ctr(&["version"]).status.success()
        });
        assert!(up, "containerd did not come up; log:\n{}", self.log());
    }

    /// Stop the daemon (SIGTERM, exactly the pid we started) and start it
    /// again on the same root, state and socket.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let stopped = crate::wait_until(Duration::from_secs(10), || {
                matches!(child.try_wait(), Ok(Some(_)))
            });
            if !stopped {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("containerd.log")).unwrap_or_default()
    }

    /// `ctr --address SOCK ARGS...`
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd(args).output().expect("running ctr")
    }

    pub fn ctr_cmd(&self, args: &[&str]) -> Command {
        let fifos = self.dir.path().join("fifo");
        let fifos = fifos.to_str().expect("a UTF-8 temp dir");
        let mut cmd = Command::new("ctr");
        cmd.arg("--address")
            .arg(&self.socket)
            .args(crate::ctr_args_with_fifo_dir(args, fifos))
            .stdin(Stdio::null());
        cmd
    }

    /// `ctr` that must succeed; returns stdout.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {args:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The STATUS column of `ctr task ls` for `id` (None if not listed).
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = self.ctr_ok(&["task", "ls"]);
        out.lines().skip(1).find_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            (cols.first() == Some(&id)).then(|| cols.get(2).unwrap_or(&"").to_string())
        })
    }

    /// pids of the shims serving this containerd (their cmdline names our socket).
    pub fn shim_pids(&self) -> Vec<i32> {
        let needle = self.socket.to_string_lossy().into_owned();
        crate::leak::processes_with_cmdline("containerd-shim", &needle)
    }

    /// What is left of containers: mounts under our dir, shims, containers.
    pub fn leaks(&self) -> Vec<String> {
        let mut found = Vec::new();
        for m in crate::leak::mounts_mentioning(&self.dir.path().to_string_lossy()) {
            found.push(format!("mount: {m}"));
        }
        for pid in self.shim_pids() {
            found.push(format!("shim process {pid}"));
        }
        let sockets = self.dir.path().join("s");
        if let Ok(entries) = std::fs::read_dir(&sockets) {
            for e in entries.flatten() {
                found.push(format!("shim socket {}", e.path().display()));
            }
        }
        found
    }

    pub fn assert_no_leaks(&self) {
        let clean = crate::wait_until(Duration::from_secs(10), || self.leaks().is_empty());
        assert!(clean, "left behind: {:?}", self.leaks());
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Whatever a failed test left: kill and delete tasks and containers.
        if self.child.is_some() {
            let tasks = self.ctr(&["task", "ls", "-q"]);
            for id in String::from_utf8_lossy(&tasks.stdout).lines() {
                let _ = self.ctr(&["task", "kill", "-a", "-s", "KILL", id]);
                let _ = self.ctr(&["task", "rm", "-f", id]);
            }
            let containers = self.ctr(&["containers", "ls", "-q"]);
            for id in String::from_utf8_lossy(&containers.stdout).lines() {
                let _ = self.ctr(&["containers", "rm", id]);
            }
        }
        self.stop();
        for pid in self.shim_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        for target in crate::leak::mounts_mentioning(&self.dir.path().to_string_lossy()) {
            let _ = nix::mount::umount2(target.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}
