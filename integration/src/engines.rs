//! Container engines that run berth as their OCI runtime (dockerd through
//! the docker CLI, podman through conmon), driven through the same
//! scenario: their command lines agree on everything it uses.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::runtime::{run_bounded, run_bounded_input, CmdOutput};

/// Bound on one engine command.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The cgroup parents an engine will make (`docker`, `libpod_parent`)
/// that do not exist yet in the hierarchies, for [`CgroupParents::drop`]
/// to remove again.
pub struct CgroupParents(Vec<PathBuf>);

impl CgroupParents {
    pub fn not_yet_made(name: &str) -> Self {
        let missing = std::fs::read_dir("/sys/fs/cgroup")
            .map(|hierarchies| {
                hierarchies
                    .flatten()
                    .map(|h| h.path().join(name))
                    .filter(|p| !p.exists())
                    .collect()
            })
            .unwrap_or_default();
        CgroupParents(missing)
    }
}

impl Drop for CgroupParents {
    /// Removes them when empty, with their empty children (conmon's own
    /// cgroup, for one).
    fn drop(&mut self) {
        for parent in &self.0 {
            if let Ok(children) = std::fs::read_dir(parent) {
                for child in children.flatten().filter(|c| c.path().is_dir()) {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            let _ = std::fs::remove_dir(parent);
        }
    }
}

/// An engine's command line, set up to use berth.
pub trait Engine {
    /// `CLI [global flags] ARGS`.
    fn command(&self, args: &[&str]) -> Command;

    /// What follows `run` in every run: the runtime to use, and whatever
    /// else this host needs.
    fn run_flags(&self) -> Vec<String>;

    /// Removes a container at once, running or not.
    fn force_remove(&self, name: &str);

    /// Extra context for a failed command (a daemon's log).
    fn diagnostics(&self) -> String {
        String::new()
    }

    fn cli(&self, args: &[&str]) -> CmdOutput {
        run_bounded(&mut self.command(args), TIMEOUT)
    }

    /// `ARGS`, which must succeed; its stdout.
    #[track_caller]
    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(out.success(), "{out}\n{}", self.diagnostics());
        out.stdout
    }

    /// The full argument list of `run [flags] ARGS`.
    fn run_args(&self, args: &[&str]) -> Vec<String> {
        let mut all = vec!["run".to_string()];
        all.extend(self.run_flags());
        all.extend(args.iter().map(|s| s.to_string()));
        all
    }

    fn run(&self, args: &[&str]) -> CmdOutput {
        let all = self.run_args(args);
        self.cli(&all.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

/// What any engine must do with berth: run, exec with a user, cwd and
/// env, pause, top, stop/start/restart, stdin, a terminal, exit statuses,
/// a confined container, and a berth error reaching the engine's CLI.
pub fn common_scenario(e: &dyn Engine, image: &str) {
    let out = e.run(&["--rm", image, "sh", "-c", "echo hello; id -u"]);
    assert_eq!(out.stdout, "hello\n0\n", "{out}\n{}", e.diagnostics());

    let out = e.run(&["-d", "--name", "box", image, "sleep", "1000"]);
    assert!(out.success(), "{out}\n{}", e.diagnostics());
    assert_eq!(e.ok(&["exec", "box", "echo", "exec-ok"]), "exec-ok\n");
    let out = e.ok(&[
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
    e.ok(&["pause", "box"]);
    assert_eq!(
        e.ok(&["inspect", "-f", "{{.State.Status}}", "box"]),
        "paused\n"
    );
    e.ok(&["unpause", "box"]);
    assert!(e.ok(&["top", "box"]).contains("sleep 1000"));
    e.ok(&["stop", "-t", "1", "box"]);
    assert_eq!(
        e.ok(&["inspect", "-f", "{{.State.ExitCode}}", "box"]),
        "137\n"
    );
    e.ok(&["start", "box"]);
    e.ok(&["restart", "-t", "1", "box"]);
    assert_eq!(e.ok(&["exec", "box", "echo", "again"]), "again\n");
    e.force_remove("box");

    let args = e.run_args(&["--rm", "-i", image, "cat"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_bounded_input(&mut e.command(&args), TIMEOUT, Some(b"through stdin\n"));
    assert_eq!(out.stdout, "through stdin\n", "{out}");
    let out = e.run(&["--rm", "-t", image, "tty"]);
    assert_eq!(out.stdout.trim_end(), "/dev/pts/0", "{out}");
    assert_eq!(e.run(&["--rm", image, "sh", "-c", "exit 7"]).code, Some(7));

    let out = e.run(&[
        "--rm",
        "--read-only",
        "--user",
        "1000",
        "--cap-drop",
        "ALL",
        image,
        "sh",
        "-c",
        "id -u; touch /x 2>/dev/null || echo read-only; grep CapEff /proc/self/status",
    ]);
    assert_eq!(
        out.stdout, "1000\nread-only\nCapEff:\t0000000000000000\n",
        "{out}"
    );

    let out = e.run(&["--rm", image, "/no/such/program"]);
    out.failed();
    assert!(out.stderr.contains("/no/such/program"), "{out}");
}
