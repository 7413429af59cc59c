//! The OCI runtime binary, driven through runc's command-line contract:
//! `BINARY --root R --log L --log-format json VERB ...`. Works with berth,
//! runc and crun alike. Children are spawned (fork+exec, never a bare fork)
//! and reaped by the shim's [`Reaper`].

use crate::error::{Error, Result};
use crate::reaper::Reaper;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;
use tokio::io::AsyncReadExt;

/// The stdio a runtime command passes on to the container process.
pub struct ProcessStdio {
    pub stdin: Stdio,
    pub stdout: Stdio,
    pub stderr: Stdio,
}

/// `create` / `exec` settings besides stdio.
#[derive(Debug, Default)]
pub struct LaunchOptions {
    pub pid_file: PathBuf,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
}

#[derive(Debug, Clone)]
pub struct Runtime {
    binary: String,
    root: PathBuf,
    log: PathBuf,
    systemd_cgroup: bool,
    reaper: Reaper,
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Reaper")
    }
}

impl Runtime {
    pub fn new(
        binary: &str,
        root: PathBuf,
        bundle: &Path,
        systemd_cgroup: bool,
        reaper: Reaper,
    ) -> Self {
        Runtime {
            binary: binary.to_string(),
            root,
            log: bundle.join("log.json"),
            systemd_cgroup,
            reaper,
        }
    }

    fn command(&self, verb: &str) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--root").arg(&self.root);
        cmd.arg("--log")
            .arg(&self.log)
            .args(["--log-format", "json"]);
        if self.systemd_cgroup {
            cmd.arg("--systemd-cgroup");
        }
        cmd.arg(verb);
        cmd
    }

    /// `create --bundle B --pid-file F [--console-socket S] [--no-pivot] [--no-new-keyring] ID`
    pub async fn create(
        &self,
        id: &str,
        bundle: &Path,
        opts: &LaunchOptions,
        stdio: ProcessStdio,
    ) -> Result<()> {
        let mut cmd = self.command("create");
        cmd.arg("--bundle")
            .arg(bundle)
            .arg("--pid-file")
            .arg(&opts.pid_file);
        if let Some(socket) = &opts.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        if opts.no_pivot {
            cmd.arg("--no-pivot");
        }
        if opts.no_new_keyring {
            cmd.arg("--no-new-keyring");
        }
        cmd.arg(id);
        self.run_with_stdio(cmd, "create", stdio).await
    }

    /// `exec --detach --process P --pid-file F [--console-socket S] ID`
    pub async fn exec(
        &self,
        id: &str,
        process_file: &Path,
        opts: &LaunchOptions,
        stdio: ProcessStdio,
    ) -> Result<()> {
        let mut cmd = self.command("exec");
        cmd.arg("--detach").arg("--process").arg(process_file);
        cmd.arg("--pid-file").arg(&opts.pid_file);
        if let Some(socket) = &opts.console_socket {
            cmd.arg("--console-socket").arg(socket);
        }
        cmd.arg(id);
        self.run_with_stdio(cmd, "exec", stdio).await
    }

    pub async fn start(&self, id: &str) -> Result<()> {
        let mut cmd = self.command("start");
        cmd.arg(id);
        self.run_captured(cmd, "start").await.map(drop)
    }

    pub async fn kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let mut cmd = self.command("kill");
        if all {
            cmd.arg("--all");
        }
        cmd.arg(id).arg(signal.to_string());
        self.run_captured(cmd, "kill").await.map(drop)
    }

    pub async fn delete(&self, id: &str, force: bool) -> Result<()> {
        let mut cmd = self.command("delete");
        if force {
            cmd.arg("--force");
        }
        cmd.arg(id);
        self.run_captured(cmd, "delete").await.map(drop)
    }

    pub async fn pause(&self, id: &str) -> Result<()> {
        let mut cmd = self.command("pause");
        cmd.arg(id);
        self.run_captured(cmd, "pause").await.map(drop)
    }

    pub async fn resume(&self, id: &str) -> Result<()> {
        let mut cmd = self.command("resume");
        cmd.arg(id);
        self.run_captured(cmd, "resume").await.map(drop)
    }

    /// `update -r FILE ID`, FILE holding LinuxResources as JSON.
    pub async fn update(&self, id: &str, resources_file: &Path) -> Result<()> {
        let mut cmd = self.command("update");
        cmd.arg("-r").arg(resources_file).arg(id);
        self.run_captured(cmd, "update").await.map(drop)
    }

    /// `ps --format json ID`: the container's pids.
    pub async fn ps(&self, id: &str) -> Result<Vec<i32>> {
        let mut cmd = self.command("ps");
        cmd.args(["--format", "json"]).arg(id);
        let out = self.run_captured(cmd, "ps").await?;
        let text = String::from_utf8_lossy(&out);
        let text = text.trim();
        if text.is_empty() || text == "null" {
            return Ok(Vec::new());
        }
        serde_json::from_str(text).map_err(|e| {
            Error::internal(format!(
                "{} ps: unexpected output {text:?}: {e}",
                self.binary
            ))
        })
    }

    /// Run with the container's stdio; errors come from the json log.
    async fn run_with_stdio(
        &self,
        mut cmd: Command,
        verb: &str,
        stdio: ProcessStdio,
    ) -> Result<()> {
        cmd.stdin(stdio.stdin)
            .stdout(stdio.stdout)
            .stderr(stdio.stderr);
        let log_offset = file_len(&self.log);
        let since = Instant::now();
        let child = cmd.spawn().map_err(|e| self.spawn_error(verb, e))?;
        // The parent's copies of the container's stdio must close now, or
        // the relays never see end-of-file.
        drop(cmd);
        let exit = self.reaper.subscribe(child.id() as i32, since);
        let status = exit
            .await
            .map_err(|_| {
                Error::internal(format!("{} {verb}: lost track of the process", self.binary))
            })?
            .status;
        if status == 0 {
            return Ok(());
        }
        let message = last_log_error(&self.log, log_offset)
            .unwrap_or_else(|| format!("exit status {status}"));
        Err(Error::internal(format!(
            "{} {verb} failed: {message}",
            self.binary
        )))
    }

    /// Run with stdout and stderr captured; returns stdout.
    async fn run_captured(&self, mut cmd: Command, verb: &str) -> Result<Vec<u8>> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let log_offset = file_len(&self.log);
        let since = Instant::now();
        let mut child = cmd.spawn().map_err(|e| self.spawn_error(verb, e))?;
        let exit = self.reaper.subscribe(child.id() as i32, since);
        let stdout = read_pipe(child.stdout.take().map(OwnedFd::from));
        let stderr = read_pipe(child.stderr.take().map(OwnedFd::from));
        let (stdout, stderr) = tokio::join!(stdout, stderr);
        let status = exit
            .await
            .map_err(|_| {
                Error::internal(format!("{} {verb}: lost track of the process", self.binary))
            })?
            .status;
        if status == 0 {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
        let message = last_log_error(&self.log, log_offset)
            .or_else(|| (!stderr.is_empty()).then_some(stderr))
            .unwrap_or_else(|| format!("exit status {status}"));
        Err(Error::internal(format!(
            "{} {verb} failed: {message}",
            self.binary
        )))
    }

    fn spawn_error(&self, verb: &str, err: std::io::Error) -> Error {
        Error::internal(format!("running {} {verb}: {err}", self.binary))
    }
}

/// Everything a child writes to one of its output pipes.
async fn read_pipe(fd: Option<OwnedFd>) -> Vec<u8> {
    let mut buf = Vec::new();
    if let Some(mut pipe) =
        fd.and_then(|fd| tokio::net::unix::pipe::Receiver::from_owned_fd(fd).ok())
    {
        let _ = pipe.read_to_end(&mut buf).await;
    }
    buf
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The message of the last `"level":"error"` line the runtime appended to
/// its json log after `offset` (runc, crun and berth all write that shape).
fn last_log_error(path: &Path, offset: u64) -> Option<String> {
    let data = std::fs::read(path).ok()?;
    let start = usize::try_from(offset)
        .ok()
        .filter(|o| *o <= data.len())
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&data[start..]);
    text.lines().rev().find_map(|line| {
        let value: serde_json::Value = serde_json::from_str(line).ok()?;
        if value.get("level")?.as_str()? != "error" {
            return None;
        }
        Some(value.get("msg")?.as_str()?.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_only_the_new_error_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log.json");
        std::fs::write(&log, "{\"level\":\"error\",\"msg\":\"old\"}\n").unwrap();
        let offset = file_len(&log);
        assert_eq!(last_log_error(&log, offset), None);
        let mut text = std::fs::read_to_string(&log).unwrap();
        text.push_str("{\"level\":\"error\",\"msg\":\"container \\\"x\\\" does not exist\"}\n");
        text.push_str("{\"level\":\"warning\",\"msg\":\"later\"}\n");
        std::fs::write(&log, text).unwrap();
        assert_eq!(
            last_log_error(&log, offset).as_deref(),
            Some("container \"x\" does not exist")
        );
        assert_eq!(last_log_error(&dir.path().join("missing"), 0), None);
    }
}
