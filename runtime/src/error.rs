//! The runtime's error type: a kind plus a message that names what went
//! wrong and where. Messages already contain the text of their cause, so they
//! are printed once, at the command-line boundary.

use std::fmt;

/// What kind of failure this is; callers (the CLI, later the shim) map kinds
/// to exit codes and protocol status codes in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The caller asked for something malformed (flags, id, config.json).
    InvalidArgument,
    /// The container does not exist.
    NotFound,
    /// The container id is already in use.
    AlreadyExists,
    /// The container is not in a state that allows the operation.
    FailedPrecondition,
    /// The operation is not supported by berth.
    Unsupported,
    /// The system refused (a syscall, a cgroup write, a hook).
    Internal,
}

/// A runtime error: a kind and a complete, human-readable message.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidArgument, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unsupported, message)
    }

    pub fn precondition(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::FailedPrecondition, message)
    }

    pub fn not_found(id: &str) -> Self {
        Self::new(
            ErrorKind::NotFound,
            format!("container {id:?} does not exist"),
        )
    }

    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// Prefix the message with more context, keeping the kind.
    pub fn context(self, context: impl fmt::Display) -> Self {
        Self {
            kind: self.kind,
            message: format!("{context}: {}", self.message),
        }
    }
}

/// Attach context to the errors of system calls and file operations.
pub trait Context<T> {
    /// On error, produce an [`Error`] of kind Internal whose message is
    /// `context: cause`.
    fn context<C: fmt::Display>(self, context: C) -> Result<T>;
    /// Like [`Context::context`] with the context built lazily.
    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T>;
}

impl<T, E: fmt::Display> Context<T> for std::result::Result<T, E> {
    fn context<C: fmt::Display>(self, context: C) -> Result<T> {
        self.map_err(|e| Error::internal(format!("{context}: {e}")))
    }

    fn with_context<C: fmt::Display, F: FnOnce() -> C>(self, f: F) -> Result<T> {
        self.map_err(|e| Error::internal(format!("{}: {e}", f())))
    }
}

impl From<crate::cgroups::Error> for Error {
    fn from(e: crate::cgroups::Error) -> Self {
        Error::internal(e.to_string())
    }
}

impl From<crate::hooks::Error> for Error {
    fn from(e: crate::hooks::Error) -> Self {
        Error::internal(e.to_string())
    }
}
