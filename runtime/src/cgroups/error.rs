//! Error type for the cgroups module.
//!
//! Every variant that touches the filesystem names the file, the value (when
//! writing) and the OCI field that asked for it, and carries the OS error.
//! The OS error is rendered into the message (not exposed as `source()`) so
//! that `{:#}` chains don't print it twice; use [`Error::io_error`] to
//! inspect it programmatically.

use std::io;
use std::path::PathBuf;

/// Result alias for this module.
pub type Result<T> = std::result::Result<T, Error>;

/// Errors from creating, configuring or removing cgroups.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Writing a cgroup control file failed.
    #[error("cgroups: writing {value:?} to {} (for {field}): {os}", path.display())]
    Write {
        /// The control file.
        path: PathBuf,
        /// The value we tried to write.
        value: String,
        /// The OCI field (e.g. `linux.resources.memory.limit`) or the
        /// internal purpose of the write.
        field: String,
        /// The OS error.
        os: io::Error,
    },
    /// Reading a cgroup control file (or directory) failed.
    #[error("cgroups: reading {} (for {field}): {os}", path.display())]
    Read {
        /// The file or directory.
        path: PathBuf,
        /// What the read was for.
        field: String,
        /// The OS error.
        os: io::Error,
    },
    /// Creating a cgroup directory failed.
    #[error("cgroups: creating directory {}: {os}", path.display())]
    Create {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        os: io::Error,
    },
    /// Removing a cgroup directory failed.
    #[error("cgroups: removing directory {}: {os}", path.display())]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        os: io::Error,
    },
    /// `linux.cgroupsPath` (or the container id used in its place) is not
    /// acceptable.
    #[error("cgroups: invalid linux.cgroupsPath {path:?}: {reason}")]
    InvalidPath {
        /// The offending path as given.
        path: String,
        /// Why it was refused.
        reason: String,
    },
    /// The spec sets a value for a controller that is not available.
    #[error("cgroups: {field} is set but the {controller} controller is not available")]
    MissingController {
        /// The controller (e.g. `hugetlb`).
        controller: String,
        /// The OCI field that needs it.
        field: String,
    },
    /// A spec value is out of range or inconsistent.
    #[error("cgroups: invalid value {value:?} for {field}: {reason}")]
    InvalidValue {
        /// The OCI field.
        field: String,
        /// The value as given.
        value: String,
        /// Why it was refused.
        reason: String,
    },
    /// The spec asks for something this cgroup version or host cannot do.
    #[error("cgroups: {field}: {reason}")]
    Unsupported {
        /// The OCI field.
        field: String,
        /// Why.
        reason: String,
    },
    /// No usable cgroup mounts were found.
    #[error("cgroups: detecting cgroup mounts: {reason}")]
    Detect {
        /// What was wrong.
        reason: String,
    },
    /// A cgroup statistics/events file had content we could not parse.
    #[error("cgroups: parsing {} (for {field}): {reason}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the read was for.
        field: String,
        /// What was wrong.
        reason: String,
    },
    /// Setting up or waiting on an event notification (eventfd, epoll,
    /// `cgroup.event_control`) failed.
    #[error("cgroups: {what} for {}: {os}", path.display())]
    Notify {
        /// The cgroup directory or file concerned.
        path: PathBuf,
        /// The step that failed.
        what: String,
        /// The OS error.
        os: io::Error,
    },
    /// Freezing or thawing did not complete in time.
    #[error("cgroups: timed out waiting for {} to report {wanted}", path.display())]
    FreezeTimeout {
        /// The state/events file polled.
        path: PathBuf,
        /// The state we waited for.
        wanted: String,
    },
    /// Loading, attaching or detaching the eBPF device filter of a cgroup
    /// v2 directory failed (`linux.resources.devices`).
    #[error(
        "cgroups: {step} for {} (linux.resources.devices): {os}{}",
        path.display(),
        verifier_log.as_deref().map(|log| format!("; verifier log:\n{log}")).unwrap_or_default()
    )]
    DeviceFilter {
        /// The cgroup directory.
        path: PathBuf,
        /// The bpf(2) step that failed.
        step: String,
        /// The OS error.
        os: io::Error,
        /// What the kernel's verifier said, when it refused the program.
        verifier_log: Option<String>,
    },
}

impl Error {
    /// The underlying OS error, if this error came from a syscall.
    pub fn io_error(&self) -> Option<&io::Error> {
        match self {
            Error::Write { os, .. }
            | Error::Read { os, .. }
            | Error::Create { os, .. }
            | Error::Remove { os, .. }
            | Error::Notify { os, .. }
            | Error::DeviceFilter { os, .. } => Some(os),
            _ => None,
        }
    }
}
