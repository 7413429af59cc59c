//! The one place a [`crate::Error`] becomes a gRPC status.

use tonic::{Code, Status};

use crate::{Error, ErrorKind};

/// The gRPC code a client sees for each kind, as containerd maps its own
/// error classes (ctr turns them back into "not found", "already exists").
pub fn code(kind: ErrorKind) -> Code {
    match kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::AlreadyExists => Code::AlreadyExists,
        ErrorKind::InvalidArgument => Code::InvalidArgument,
        ErrorKind::FailedPrecondition => Code::FailedPrecondition,
        ErrorKind::Unavailable => Code::Unavailable,
        ErrorKind::Unimplemented => Code::Unimplemented,
        ErrorKind::Internal => Code::Internal,
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        Status::new(code(err.kind), err.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_keeps_its_meaning_and_message() {
        let cases = [
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::AlreadyExists, Code::AlreadyExists),
            (ErrorKind::InvalidArgument, Code::InvalidArgument),
            (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
            (ErrorKind::Unavailable, Code::Unavailable),
            (ErrorKind::Unimplemented, Code::Unimplemented),
            (ErrorKind::Internal, Code::Internal),
        ];
        for (kind, expected) in cases {
            let status = Status::from(Error::new(kind, "image \"x\": gone"));
            assert_eq!(status.code(), expected);
            assert_eq!(status.message(), "image \"x\": gone");
        }
    }
}
