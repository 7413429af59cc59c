//! Errors of the seccomp module.

use crate::error::ErrorKind;

/// Why `linux.seccomp` could not be compiled or the filter not installed.
///
/// Messages start with the JSON path of the offending field, e.g.
/// `linux.seccomp.syscalls[3].names[0]: ...`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A field has a value that is not valid.
    #[error("{field}: {reason}")]
    Invalid {
        /// JSON path of the field, from `linux.seccomp`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A field asks for something berth does not implement.
    #[error("{field}: {reason}")]
    Unsupported {
        /// JSON path of the field, from `linux.seccomp`.
        field: String,
        /// What is not supported.
        reason: String,
    },
    /// The whole filter needs more BPF instructions than the kernel accepts.
    #[error(
        "linux.seccomp: the filter needs {len} BPF instructions, more than the kernel's limit of {max}"
    )]
    TooLarge {
        /// Instructions needed.
        len: usize,
        /// The kernel's limit (BPF_MAXINSNS).
        max: usize,
    },
    /// The kernel refused the filter (or `no_new_privs`).
    #[error("installing the seccomp filter: {0}")]
    Install(String),
}

impl Error {
    pub(super) fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Invalid {
            field: field.into(),
            reason: reason.into(),
        }
    }

    pub(super) fn unsupported(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Unsupported {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<Error> for crate::error::Error {
    fn from(e: Error) -> Self {
        let kind = match e {
            Error::Invalid { .. } | Error::TooLarge { .. } => ErrorKind::InvalidArgument,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Install(_) => ErrorKind::Internal,
        };
        crate::error::Error::new(kind, e.to_string())
    }
}
