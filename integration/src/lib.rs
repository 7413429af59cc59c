//! Helpers for Berth's end-to-end tests.
//!
//! The tests drive an OCI runtime binary with a runc-compatible command line.
//! By default that is the workspace's own `berth` binary; set `BERTH_RUNTIME`
//! (for example to `/usr/sbin/runc`) to validate the suite against another
//! runtime.
//!
//! Every test builds a [`Harness`]: it owns a private `--root` state
//! directory, the bundles of the test and, when dropped, checks that nothing
//! was leaked (mounts, cgroups, processes, state directories).

pub mod berthd;
pub mod bundle;
pub mod caps;
pub mod console;
pub mod containerd;
pub mod engines;
pub mod harness;
pub mod leak;
pub mod locate;
pub mod pty;
pub mod registry;
pub mod runtime;
pub mod throttle;

pub use bundle::Bundle;
pub use harness::{Harness, MountGuard, NetnsGuard};
pub use runtime::{CmdOutput, Runtime};

/// Whether the tests run as root; they need it.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Runs a host command (not the runtime) and returns its stdout, panicking on failure.
pub fn host_sh(script: &str) -> String {
    let out = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(script)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run host command {script:?}: {e}"));
    assert!(
        out.status.success(),
        "host command {script:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cond` every 20 ms until it is true or `timeout` passes; returns its last value.
pub fn wait_until(timeout: std::time::Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Shorthand for the usual 10 s bound.
pub const SECS10: std::time::Duration = std::time::Duration::from_secs(10);

/// ctr's `args` with `--fifo-dir DIR` after a `run` or `task exec`
/// subcommand (past a leading `--namespace NS`), so the stdio fifos it
/// makes live in the test's own directory: a detached run leaves them
/// behind, by default in the host's /run/containerd/fifo.
pub fn ctr_args_with_fifo_dir<'a>(args: &[&'a str], dir: &'a str) -> Vec<&'a str> {
    let global = match args {
        ["--namespace" | "-n", _, ..] => 2,
        _ => 0,
    };
    let after = match &args[global..] {
        ["run", ..] => Some(global + 1),
        ["task" | "tasks" | "t", "exec", ..] => Some(global + 2),
        _ => None,
    };
    let mut all = args.to_vec();
    if let Some(at) = after {
        all.splice(at..at, ["--fifo-dir", dir]);
    }
    all
}

#[cfg(test)]
mod tests {
    use super::ctr_args_with_fifo_dir as with;

    #[test]
    fn the_fifo_dir_goes_after_run_and_task_exec_only() {
        assert_eq!(
            with(&["run", "-d", "img", "id"], "/f"),
            ["run", "--fifo-dir", "/f", "-d", "img", "id"]
        );
        assert_eq!(
            with(
                &[
                    "--namespace",
                    "moby",
                    "task",
                    "exec",
                    "--exec-id",
                    "e",
                    "c",
                    "true"
                ],
                "/f"
            ),
            [
                "--namespace",
                "moby",
                "task",
                "exec",
                "--fifo-dir",
                "/f",
                "--exec-id",
                "e",
                "c",
                "true"
            ]
        );
        assert_eq!(with(&["task", "ls"], "/f"), ["task", "ls"]);
        assert_eq!(with(&["images", "run"], "/f"), ["images", "run"]);
    }
}
