//! Container logs in docker's json-file format.
//!
//! A container's stdout and stderr never pass through berthd: the shim hands
//! them to a logging program (`berth-logger`, started through containerd's
//! `binary://` stdio contract), which writes them to a json-file log that
//! outlives any berthd restart. berthd only reads that file back for
//! `docker logs`.
//!
//! The pieces, one per module:
//!
//! - [`format`]: one entry as one line of JSON, byte for byte as docker's
//!   json-file driver writes it, and back.
//! - [`split`]: cutting a byte stream into entries (at each newline, or every
//!   16 KiB of an overlong line).
//! - [`writer`]: the log file and its rotation (`max-size`, `max-file`).
//! - [`uri`]: the logger's options, as a `binary://` URI for the task's stdio
//!   and as the arguments the logger receives.
//! - [`logger`]: what `berth-logger` does with its two pipes.
//! - [`reader`]: reading a (rotated) log back: since, until, tail, stream
//!   selection.
//! - `follow`: a log as an async stream, following it as it grows.
//! - [`frame`]: entries framed for a Docker API client (multiplexed or raw).
//!
//! On disk, for a log at `<path>` (docker's names):
//!
//! ```text
//! <path>        the file being written, entries appended in time order
//! <path>.1      the previous file once <path> reached max-size
//! <path>.2 ...  older ones, up to max-file files in all
//! <path>.new    a fresh file, briefly, before it is renamed to <path>
//! ```

mod follow;
pub mod format;
pub mod frame;
pub mod logger;
pub mod reader;
pub mod split;
pub mod uri;
pub mod writer;

use time::OffsetDateTime;

pub use frame::{encode_frame, format_timestamp, StreamFormat};
pub use reader::{LogReader, ReadOptions};
pub use uri::{logger_uri, LoggerConfig};
pub use writer::{JsonFileWriter, Rotation};

/// The output stream an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogStream {
    Stdout,
    Stderr,
}

impl LogStream {
    /// The name the json-file format records ("stdout" or "stderr").
    pub fn as_str(self) -> &'static str {
        match self {
            LogStream::Stdout => "stdout",
            LogStream::Stderr => "stderr",
        }
    }
}

/// One entry of a container's log: what the container wrote on one stream,
/// one line (with its newline) or one piece of an overlong line (without).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: LogStream,
    /// When the logger read it (UTC).
    pub time: OffsetDateTime,
    pub bytes: Vec<u8>,
}
