//! berth as podman's OCI runtime (Debian's podman 4.3, `--runtime PATH`),
//! which drives it through conmon: run, exec, pause, top, stop/start,
//! restart, stdin, a terminal, exit statuses, a confined container, a user
//! namespace, and a berth error reaching podman.
//!
//! Every podman command gets its own storage root, run root and tmp dir
//! under a temp dir (and no network), so nothing of the host's podman
//! state is used or left; the bind mount podman's overlay driver makes of
//! its own directory is undone at the end.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use berth_integration::runtime::{run_bounded, run_bounded_input, CmdOutput};
use berth_integration::{containerd, is_root, locate};

const TIMEOUT: Duration = Duration::from_secs(60);
const IMAGE: &str = "docker.io/library/berth-busybox:latest";

struct Podman {
    dir: tempfile::TempDir,
    /// cgroup parents podman made that did not exist before (removed at
    /// the end when empty).
    new_cgroup_parents: Vec<PathBuf>,
}

impl Podman {
    fn new() -> Option<Self> {
        if !is_root() || !Path::new("/usr/bin/podman").is_file() {
            eprintln!("skipped: needs root and /usr/bin/podman");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("berth-podman-")
            .tempdir()
            .expect("temp dir");
        let new_cgroup_parents = std::fs::read_dir("/sys/fs/cgroup")
            .map(|hierarchies| {
                hierarchies
                    .flatten()
                    .map(|h| h.path().join("libpod_parent"))
                    .filter(|p| !p.exists())
                    .collect()
            })
            .unwrap_or_default();
        Some(Podman {
            dir,
            new_cgroup_parents,
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let d = self.dir.path();
        let mut c = Command::new("/usr/bin/podman");
        c.arg("--root")
            .arg(d.join("root"))
            .arg("--runroot")
            .arg(d.join("run"))
            .arg("--tmpdir")
            .arg(d.join("tmp"))
            .args([
                "--storage-driver",
                "overlay",
                "--cgroup-manager",
                "cgroupfs",
            ])
            .args(["--events-backend", "file"])
            .arg("--runtime")
            .arg(locate::runtime_binary())
            .args(args);
        c
    }

    fn podman(&self, args: &[&str]) -> CmdOutput {
        run_bounded(&mut self.command(args), TIMEOUT)
    }

    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.podman(args);
        assert!(out.success(), "{out}");
        out.stdout
    }

    /// `podman run` with no network, and open-files and process limits any
    /// host allows: podman asks for 1048576 of each, and raising a hard
    /// limit needs CAP_SYS_RESOURCE, which a sandboxed root may lack (runc
    /// then fails the same way).
    fn run_args(args: &[&str]) -> Vec<String> {
        let mut all: Vec<String> = ["run", "--network", "none"]
            .iter()
            .chain(&[
                "--ulimit",
                "nofile=1024:1024",
                "--ulimit",
                "nproc=1024:1024",
            ])
            .map(|s| s.to_string())
            .collect();
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

    fn run(&self, args: &[&str]) -> CmdOutput {
        let all = Self::run_args(args);
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        self.podman(&all)
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.podman(&["rm", "-af", "-t", "0"]);
        // Mounts under our dir (the overlay driver's bind of its home),
        // deepest first.
        let dir = self.dir.path().to_string_lossy().into_owned();
        let mut points: Vec<String> = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            .filter(|p| p.starts_with(&dir))
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
        for parent in &self.new_cgroup_parents {
            // Children first (conmon's own cgroup lives there too).
            if let Ok(children) = std::fs::read_dir(parent) {
                for child in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(parent);
        }
    }
}

#[test]
fn podman_runs_containers_with_berth_as_the_runtime() {
    let Some(p) = Podman::new() else {
        return;
    };
    p.ok(&["load", "-i", &containerd::image_archive().to_string_lossy()]);

    let out = p.run(&["--rm", IMAGE, "sh", "-c", "echo hello; id -u"]);
    assert_eq!(out.stdout, "hello\n0\n", "{out}");

    // A long-lived one: exec, pause, top, stop/start/restart.
    let out = p.run(&["-d", "--name", "box", IMAGE, "sleep", "1000"]);
    assert!(out.success(), "{out}");
    assert_eq!(p.ok(&["exec", "box", "echo", "exec-ok"]), "exec-ok\n");
    let out = p.ok(&[
        "exec",
        "-u",
        "1000:1000",
        "-w",
        "/tmp",
        "-e",
        "FOO=bar",
        "box",
        "sh",
        "-c",
        "id -u; pwd; echo $FOO",
    ]);
    assert_eq!(out, "1000\n/tmp\nbar\n");
    p.ok(&["pause", "box"]);
    assert_eq!(
        p.ok(&["inspect", "-f", "{{.State.Status}}", "box"]),
        "paused\n"
    );
    p.ok(&["unpause", "box"]);
    assert!(p.ok(&["top", "box"]).contains("sleep 1000"));
    p.ok(&["stop", "-t", "1", "box"]);
    assert_eq!(
        p.ok(&["inspect", "-f", "{{.State.ExitCode}}", "box"]),
        "137\n"
    );
    p.ok(&["start", "box"]);
    p.ok(&["restart", "-t", "1", "box"]);
    assert_eq!(p.ok(&["exec", "box", "echo", "again"]), "again\n");
    p.ok(&["rm", "-f", "-t", "0", "box"]);

    // Standard input, a terminal, the exit status.
    let args = Podman::run_args(&["--rm", "-i", IMAGE, "cat"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_bounded_input(&mut p.command(&args), TIMEOUT, Some(b"through stdin\n"));
    assert_eq!(out.stdout, "through stdin\n", "{out}");
    let out = p.run(&["--rm", "-t", IMAGE, "tty"]);
    assert_eq!(out.stdout.trim_end(), "/dev/pts/0", "{out}");
    assert_eq!(p.run(&["--rm", IMAGE, "sh", "-c", "exit 7"]).code, Some(7));

    // Confined: read-only root, a user, no capabilities.
    let out = p.run(&[
        "--rm",
        "--read-only",
        "--user",
        "1000",
        "--cap-drop",
        "ALL",
        IMAGE,
        "sh",
        "-c",
        "id -u; touch /x 2>/dev/null || echo read-only; grep CapEff /proc/self/status",
    ]);
    assert_eq!(
        out.stdout, "1000\nread-only\nCapEff:\t0000000000000000\n",
        "{out}"
    );

    // A user namespace (podman creates, then starts: the exec fifo).
    let out = p.run(&[
        "--rm",
        "--uidmap",
        "0:300000:65536",
        "--gidmap",
        "0:300000:65536",
        IMAGE,
        "sh",
        "-c",
        "cat /proc/self/uid_map; id -u; touch /tmp/x && echo writes",
    ]);
    let fields: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(fields, ["0", "300000", "65536", "0", "writes"], "{out}");

    // berth's error reaches podman.
    let out = p.run(&["--rm", IMAGE, "/no/such/program"]);
    out.failed();
    assert!(out.stderr.contains("/no/such/program"), "{out}");

    assert_eq!(p.ok(&["ps", "-aq"]), "");
}
