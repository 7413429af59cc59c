//! berth as podman's OCI runtime (Debian's podman 4.3, `--runtime PATH`),
//! which drives it through conmon: run, exec, pause, top, stop/start,
//! restart, stdin, a terminal, exit statuses, a confined container, a user
//! namespace, and a berth error reaching podman.
//!
//! Every podman command gets its own storage root, run root and tmp dir
//! under a temp dir (and no network), so nothing of the host's podman
//! state is used or left; the bind mount podman's overlay driver makes of
//! its own directory is undone at the end.

use std::path::Path;
use std::process::Command;

use berth_integration::engines::{self, CgroupParents, Engine};
use berth_integration::{containerd, is_root, locate};

const IMAGE: &str = "docker.io/library/berth-busybox:latest";

struct Podman {
    dir: tempfile::TempDir,
    /// Removed once `drop` removed the containers (fields drop after it).
    _cgroup_parents: CgroupParents,
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
        let cgroup_parents = CgroupParents::not_yet_made("libpod_parent");
        Some(Podman {
            dir,
            _cgroup_parents: cgroup_parents,
        })
    }
}

impl Engine for Podman {
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

    /// No network, and open-files and process limits any host allows:
    /// podman asks for 1048576 of each, and raising a hard limit needs
    /// CAP_SYS_RESOURCE, which a sandboxed root may lack (runc then fails
    /// the same way).
    fn run_flags(&self) -> Vec<String> {
        [
            "--network",
            "none",
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn force_remove(&self, name: &str) {
        self.ok(&["rm", "-f", "-t", "0", name]);
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cli(&["rm", "-af", "-t", "0"]);
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
    }
}

#[test]
fn podman_runs_containers_with_berth_as_the_runtime() {
    let Some(p) = Podman::new() else {
        return;
    };
    p.ok(&["load", "-i", &containerd::image_archive().to_string_lossy()]);
    engines::common_scenario(&p, IMAGE);

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
    assert_eq!(p.ok(&["ps", "-aq"]), "");
}
