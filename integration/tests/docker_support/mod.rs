//! What the Docker API tests share: a berthd of their own (temp dir,
//! own sockets, the Docker API on `<tmp>/docker.sock`), the real docker
//! CLIs pointed at it with a temp `DOCKER_CONFIG`, and raw HTTP for the
//! requests a CLI never sends. Dropping the daemon stops it and checks its
//! sockets are gone and no mount is left under its directory.

// Test code: a panic is how these helpers report.
#![allow(clippy::unwrap_used, dead_code)]

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use berth_integration::berthd::Options;
use berth_integration::wait_until;

/// How long one docker command may take before the test fails.
pub const DOCKER_TIMEOUT: Duration = Duration::from_secs(120);

/// A docker CLI under test.
#[derive(Debug, Clone)]
pub struct Cli {
    pub path: PathBuf,
    pub name: &'static str,
}

/// Debian's docker.io 20.10 CLI (installed by hack/test).
pub const DEBIAN_CLI: &str = "/usr/bin/docker";
/// The current CLI shipped on the machine, when present.
pub const CURRENT_CLI: &str = "/usr/local/bin/docker";

/// The CLI at `path`, or `None` with a printed note when it is absent.
pub fn cli(path: &str, name: &'static str) -> Option<Cli> {
    if !Path::new(path).is_file() {
        eprintln!("skipped: {path} ({name}) is not installed");
        return None;
    }
    Some(Cli {
        path: path.into(),
        name,
    })
}

/// Every CLI present: Debian's 20.10 and the current one.
pub fn clis() -> Vec<Cli> {
    [
        cli(DEBIAN_CLI, "docker.io 20.10"),
        cli(CURRENT_CLI, "docker 28"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// A berthd serving the Docker API (the shared fixture, with its own
/// Docker socket), for the docker CLIs.
pub struct Berthd {
    daemon: berth_integration::berthd::Berthd,
    pub docker_socket: PathBuf,
}

impl Berthd {
    /// Starts one, or `None` (with a note) when not root.
    pub fn start() -> Option<Berthd> {
        let daemon = berth_integration::berthd::Berthd::start_with(
            Options::empty("the Docker API tests").docker(),
        )?;
        let docker_socket = daemon.docker_socket()?.to_path_buf();
        let daemon = Berthd {
            daemon,
            docker_socket,
        };
        let answers = wait_until(Duration::from_secs(30), || {
            daemon.http("GET", "/_ping", b"").0 == 200
        });
        assert!(answers, "the Docker API did not answer: {}", daemon.log());
        Some(daemon)
    }

    /// [`Berthd::start`] with hack/make-image's busybox image loaded, and
    /// the CLIs to drive it.
    pub fn with_image() -> Option<(Berthd, Vec<Cli>)> {
        let daemon = Berthd::start()?;
        let clis = clis();
        assert!(!clis.is_empty(), "no docker CLI installed");
        daemon.ok(
            &clis[0],
            &[
                "load",
                "-i",
                &berth_integration::containerd::image_archive().to_string_lossy(),
            ],
        );
        Some((daemon, clis))
    }

    /// The temp dir everything lives in.
    pub fn dir(&self) -> &Path {
        self.daemon.dir()
    }

    /// The gRPC socket.
    pub fn socket(&self) -> &Path {
        self.daemon.socket()
    }

    pub fn log(&self) -> String {
        self.daemon.log()
    }

    pub fn root(&self) -> PathBuf {
        self.dir().join("root")
    }

    /// A docker command against this daemon.
    pub fn docker_cmd(&self, cli: &Cli, args: &[&str]) -> Command {
        let mut command = Command::new(&cli.path);
        command
            .args(args)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.docker_socket.display()),
            )
            .env("DOCKER_CONFIG", self.dir().join("docker-config"))
            // `docker build` speaks the legacy builder's protocol to berthd.
            .env("DOCKER_BUILDKIT", "0")
            .env_remove("DOCKER_API_VERSION")
            .env_remove("DOCKER_CONTEXT")
            .stdin(Stdio::null());
        command
    }

    /// Runs docker; a CLI still running after [`DOCKER_TIMEOUT`] is killed
    /// and the test fails (with the daemon's log), so a hang never stalls
    /// the suite.
    pub fn docker(&self, cli: &Cli, args: &[&str]) -> Output {
        let mut command = self.docker_cmd(cli, args);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let started = std::time::Instant::now();
        let child = command.spawn().unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let (done, finished) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if finished.recv_timeout(DOCKER_TIMEOUT).is_err() {
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        });
        let out = child.wait_with_output().unwrap();
        let _ = done.send(());
        let _ = watchdog.join();
        assert!(
            started.elapsed() < DOCKER_TIMEOUT,
            "{} {args:?} did not finish within {DOCKER_TIMEOUT:?}\nstdout: {}\nstderr: {}\n{}",
            cli.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        out
    }

    /// Runs docker and returns its stdout; panics (with both streams and
    /// the daemon's log) when it fails.
    pub fn ok(&self, cli: &Cli, args: &[&str]) -> String {
        let out = self.docker(cli, args);
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}\nstdout: {}\nstderr: {}\nberthd: {}",
            cli.name,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs docker expecting failure; returns its stderr.
    pub fn fails(&self, cli: &Cli, args: &[&str]) -> String {
        let out = self.docker(cli, args);
        assert!(
            !out.status.success(),
            "{} {args:?} should fail; stdout: {}",
            cli.name,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// A shell pipeline with this daemon's docker environment.
    pub fn sh(&self, script: &str) -> String {
        let out = Command::new("/bin/sh")
            .arg("-c")
            .arg(script)
            .env(
                "DOCKER_HOST",
                format!("unix://{}", self.docker_socket.display()),
            )
            .env("DOCKER_CONFIG", self.dir().join("docker-config"))
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One raw HTTP/1.0 request on the Docker socket: (status, body).
    /// Status 0 when nothing answers.
    pub fn http(&self, method: &str, path: &str, body: &[u8]) -> (u16, String) {
        let Ok(mut stream) = UnixStream::connect(&self.docker_socket) else {
            return (0, String::new());
        };
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let head = format!(
            "{method} {path} HTTP/1.0\r\nHost: docker\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
            return (0, String::new());
        }
        let mut response = Vec::new();
        if stream.read_to_end(&mut response).is_err() {
            return (0, String::new());
        }
        let text = String::from_utf8_lossy(&response).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_owned())
            .unwrap_or_default();
        (status, body)
    }

    /// containerd's ctr against this daemon's gRPC socket, in docker's
    /// namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        let mut all = vec!["--namespace", "moby"];
        all.extend_from_slice(args);
        self.daemon.ctr(&all)
    }

    /// berthctl against this daemon's gRPC socket, however it ends.
    pub fn berthctl_output(&self, args: &[&str]) -> Output {
        self.daemon.berthctl(args)
    }

    /// berthctl against this daemon's gRPC socket, which must succeed; its
    /// stdout.
    pub fn berthctl(&self, args: &[&str]) -> String {
        self.daemon.berthctl_ok(args)
    }

    /// Files under `<root>/<sub>` (recursively).
    pub fn files_under(&self, sub: &str) -> Vec<PathBuf> {
        walk(&self.root().join(sub))
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            found.extend(walk(&path));
        } else {
            found.push(path);
        }
    }
    found
}

impl Berthd {
    /// The daemon under the frontend, for restarts.
    pub fn daemon_mut(&mut self) -> &mut berth_integration::berthd::Berthd {
        &mut self.daemon
    }

    /// Force-removes every docker container (what a failed test left).
    pub fn remove_all_containers(&self) {
        let (status, body) = self.http("GET", "/containers/json?all=1", b"");
        if status != 200 {
            return;
        }
        let listed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        for container in listed.as_array().into_iter().flatten() {
            if let Some(id) = container["Id"].as_str() {
                let _ = self.http("DELETE", &format!("/containers/{id}?force=1&v=1"), b"");
            }
        }
    }
}

impl Drop for Berthd {
    fn drop(&mut self) {
        self.remove_all_containers();
        // User-defined networks (their bridge devices outlive berthd).
        let (status, body) = self.http("GET", "/networks", b"");
        if status == 200 {
            let listed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
            for network in listed.as_array().into_iter().flatten() {
                let user_defined = network["Driver"] == "bridge" && network["Name"] != "bridge";
                if let (true, Some(id)) = (user_defined, network["Id"].as_str()) {
                    let _ = self.http("DELETE", &format!("/networks/{id}"), b"");
                }
            }
        }
        // A removed container's task is gone with it; one left running
        // would outlive berthd (its shim keeps it).
        let left = self.daemon.sweep();
        if !std::thread::panicking() {
            assert!(
                left.is_empty(),
                "tasks left after every container was removed: {left:?}\n{}",
                self.log()
            );
            self.daemon.stop_cleanly();
        }
    }
}
