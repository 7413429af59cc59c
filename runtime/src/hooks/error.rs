//! The error returned when a hook cannot be run or fails.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;

use super::HookKind;

/// A hook failed: which hook ([`kind`](Error::kind), [`path`](Error::path))
/// and what happened ([`failure`](Error::failure)).
#[derive(Debug, thiserror::Error)]
#[error("error running hook ({kind} {}): {failure}", path.display())]
pub struct Error {
    /// The lifecycle point the hook belongs to.
    pub kind: HookKind,
    /// The hook's executable, as written in the spec.
    pub path: PathBuf,
    /// What went wrong.
    pub failure: Failure,
}

/// What went wrong with a hook.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// `timeout` was set to zero or a negative number.
    #[error("invalid timeout {0}: must be a positive number of seconds")]
    InvalidTimeout(i64),
    /// The executable could not be started (missing, not executable, ...).
    #[error("failed to start: {0}")]
    Spawn(#[source] io::Error),
    /// Supervising the running hook failed (polling its pipes or waiting
    /// for it). The hook has been killed.
    #[error("i/o error while running: {0}")]
    Io(#[source] io::Error),
    /// The hook exited unsuccessfully or was killed by a signal.
    #[error("{status}{}{}", Described(.status), Output(.stdout, .stderr))]
    Exit {
        /// The wait status.
        status: ExitStatus,
        /// The beginning of what the hook wrote to stdout.
        stdout: String,
        /// The beginning of what the hook wrote to stderr.
        stderr: String,
    },
    /// The hook ran longer than its timeout and was killed with `SIGKILL`.
    #[error("timed out after {timeout}s, killed{}", Output(.stdout, .stderr))]
    TimedOut {
        /// The configured timeout in seconds.
        timeout: u64,
        /// The beginning of what the hook wrote to stdout.
        stdout: String,
        /// The beginning of what the hook wrote to stderr.
        stderr: String,
    },
}

/// A few words on the signal that killed a hook, as shells print them.
struct Described<'a>(&'a ExitStatus);

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use std::os::unix::process::ExitStatusExt;
        let words = match self.0.signal() {
            Some(libc::SIGSYS) => "bad system call",
            Some(libc::SIGKILL) => "killed",
            Some(libc::SIGSEGV) => "segmentation fault",
            Some(libc::SIGABRT) => "aborted",
            Some(libc::SIGTERM) => "terminated",
            Some(libc::SIGBUS) => "bus error",
            _ => return Ok(()),
        };
        write!(f, ": {words}")
    }
}

impl Failure {
    /// Whether this is a [`Failure::TimedOut`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Failure::TimedOut { .. })
    }
}

/// Renders captured output as `, stdout: ..., stderr: ...`, omitting
/// empty streams.
struct Output<'a>(&'a String, &'a String);

impl fmt::Display for Output<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_empty() {
            write!(f, ", stdout: {}", self.0)?;
        }
        if !self.1.is_empty() {
            write!(f, ", stderr: {}", self.1)?;
        }
        Ok(())
    }
}
