//! berth under the real dockerd 20.10 (Debian's docker.io), plugged in the
//! way docker users add a runtime: `dockerd --add-runtime berth=PATH`, then
//! `docker run --runtime berth`. dockerd drives it through containerd's runc
//! shim with a config.json of its own making (zero resource values for
//! "unset", its capabilities, masked paths and device rules).
//!
//! The daemon runs in a temp dir with its own socket, containerd, bridge and
//! no iptables rules; it is stopped, and its bridge deleted, at the end.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use berth_integration::engines::{self, CgroupParents, Engine, TIMEOUT};
use berth_integration::runtime::run_bounded;
use berth_integration::{bundle, is_root, locate};

/// A dockerd of the test's own, with berth added as the runtime "berth".
struct Dockerd {
    dir: tempfile::TempDir,
    child: Child,
    bridge: String,
    cli: PathBuf,
    /// Removed once `drop` stopped the daemon (fields drop after it).
    _cgroup_parents: CgroupParents,
}

impl Dockerd {
    /// Starts the daemon, or says why not and returns None (not root, no
    /// dockerd or docker CLI on this machine).
    fn start() -> Option<Self> {
        let cli = ["/usr/bin/docker", "/usr/local/bin/docker"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file());
        let (true, Some(cli), true) = (is_root(), cli, Path::new("/usr/sbin/dockerd").is_file())
        else {
            eprintln!("skipped: needs root, /usr/sbin/dockerd and a docker CLI");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("berth-dockerd-")
            .tempdir()
            .expect("temp dir");
        let bridge = format!("bdk{}", std::process::id() % 100_000);
        let cgroup_parents = CgroupParents::not_yet_made("docker");
        let ip = |args: &[&str]| {
            let out = run_bounded(Command::new("ip").args(args), TIMEOUT);
            assert!(out.success(), "{out}");
        };
        ip(&["link", "add", &bridge, "type", "bridge"]);
        ip(&["addr", "add", "10.93.0.1/24", "dev", &bridge]);
        ip(&["link", "set", &bridge, "up"]);
        let d = dir.path();
        let log = std::fs::File::create(d.join("dockerd.log")).expect("log file");
        let child = Command::new("/usr/sbin/dockerd")
            .arg("--data-root")
            .arg(d.join("root"))
            .arg("--exec-root")
            .arg(d.join("exec"))
            .arg("--pidfile")
            .arg(d.join("dockerd.pid"))
            .arg("--host")
            .arg(format!("unix://{}", d.join("docker.sock").display()))
            .args(["--bridge", &bridge, "--iptables=false", "--ip-masq=false"])
            .args(["--storage-driver", "overlay2"])
            .arg("--add-runtime")
            .arg(format!("berth={}", locate::runtime_binary().display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("start dockerd");
        let daemon = Dockerd {
            dir,
            child,
            bridge,
            cli,
            _cgroup_parents: cgroup_parents,
        };
        let deadline = Instant::now() + TIMEOUT;
        while !daemon.cli(&["version"]).success() {
            assert!(
                Instant::now() < deadline,
                "dockerd did not start: {}",
                daemon.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Some(daemon)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dockerd.log")).unwrap_or_default()
    }

    /// Imports a busybox root filesystem as the image `name`.
    fn import_busybox(&self, name: &str) {
        let rootfs = self.dir.path().join("image-rootfs");
        bundle::make_rootfs(&rootfs).expect("busybox rootfs");
        let tar = self.dir.path().join("image.tar");
        let out = run_bounded(
            Command::new("tar")
                .arg("-C")
                .arg(&rootfs)
                .arg("-cf")
                .arg(&tar)
                .arg("."),
            TIMEOUT,
        );
        assert!(out.success(), "{out}");
        self.ok(&["import", &tar.to_string_lossy(), name]);
    }
}

impl Engine for Dockerd {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.cli);
        c.arg("--host")
            .arg(format!(
                "unix://{}",
                self.dir.path().join("docker.sock").display()
            ))
            .args(args);
        c
    }

    fn run_flags(&self) -> Vec<String> {
        vec!["--runtime".into(), "berth".into()]
    }

    fn force_remove(&self, name: &str) {
        self.ok(&["rm", "-f", name]);
    }

    fn diagnostics(&self) -> String {
        format!("--- dockerd log ---\n{}", self.log())
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let ids = self.cli(&["ps", "-aq"]).stdout;
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut args = vec!["rm", "-f"];
            args.extend(ids);
            let _ = self.cli(&args);
        }
        // dockerd stops the containerd it started when it stops itself.
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + TIMEOUT;
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("ip")
            .args(["link", "delete", &self.bridge])
            .status();
    }
}

#[test]
fn docker_runs_containers_with_berth_as_the_runtime() {
    let Some(d) = Dockerd::start() else {
        return;
    };
    d.import_busybox("berth-bb");
    engines::common_scenario(&d, "berth-bb");

    // dockerd's own config: zero resource values for "unset", then an
    // update of a running container's memory limit.
    d.ok(&[
        "run",
        "--runtime",
        "berth",
        "-d",
        "--name",
        "box",
        "berth-bb",
        "sleep",
        "1000",
    ]);
    d.ok(&["update", "--memory", "64m", "--memory-swap", "64m", "box"]);
    let limit = d.ok(&[
        "exec", "box", "sh", "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max",
    ]);
    assert_eq!(limit, "67108864\n");
    d.force_remove("box");
    assert_eq!(d.ok(&["ps", "-aq"]), "");
}
