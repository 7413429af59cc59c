//! Log entries as a Docker API client reads them (`GET /containers/{id}/logs`
//! and attach).
//!
//! Without a terminal, docker multiplexes stdout and stderr in one byte
//! stream: each piece is preceded by an 8-byte header, the stream (1 stdout,
//! 2 stderr), three zero bytes and the length as a big-endian u32. With a
//! terminal there is one stream and the bytes go as they are (a tty
//! container's log holds only "stdout" entries). With timestamps, each entry
//! starts with its time (RFC 3339, nanoseconds always 9 digits) and a space.

use std::sync::LazyLock;

use time::format_description::BorrowedFormatItem;
use time::OffsetDateTime;

use super::{LogEntry, LogStream};

/// How entries are framed for a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamFormat {
    /// 8-byte headers naming the stream (containers without a terminal).
    Multiplexed,
    /// The bytes alone (containers with a terminal).
    Raw,
}

impl StreamFormat {
    /// The format for a container with or without a terminal.
    pub fn for_tty(tty: bool) -> StreamFormat {
        if tty {
            StreamFormat::Raw
        } else {
            StreamFormat::Multiplexed
        }
    }
}

/// Docker's stream byte in a multiplexed header.
fn stream_byte(stream: LogStream) -> u8 {
    match stream {
        LogStream::Stdout => 1,
        LogStream::Stderr => 2,
    }
}

/// The 8-byte header of a multiplexed frame of `len` bytes of `stream`.
/// Longer pieces must be cut into frames of at most `u32::MAX` bytes.
pub fn frame_header(stream: LogStream, len: u32) -> [u8; 8] {
    let len = len.to_be_bytes();
    [stream_byte(stream), 0, 0, 0, len[0], len[1], len[2], len[3]]
}

/// Appends `entry` to `out` as `format` frames it, with its time first if
/// `timestamps`.
pub fn encode_frame(format: StreamFormat, entry: &LogEntry, timestamps: bool, out: &mut Vec<u8>) {
    let stamp = timestamps.then(|| format_timestamp(entry.time));
    let stamp_len = stamp.as_ref().map_or(0, |s| s.len() + 1);
    if format == StreamFormat::Multiplexed {
        // An entry is at most 16 KiB (plus its newline), far below u32::MAX.
        let len = u32::try_from(stamp_len + entry.bytes.len()).unwrap_or(u32::MAX);
        out.extend_from_slice(&frame_header(entry.stream, len));
    }
    if let Some(stamp) = stamp {
        out.extend_from_slice(stamp.as_bytes());
        out.push(b' ');
    }
    out.extend_from_slice(&entry.bytes);
}

/// `2024-01-02T03:04:05.600000000Z`: docker's fixed-width timestamp, in UTC.
pub fn format_timestamp(time: OffsetDateTime) -> String {
    static FIXED: LazyLock<Vec<BorrowedFormatItem<'static>>> = LazyLock::new(|| {
        time::format_description::parse_borrowed::<2>(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z",
        )
        .unwrap_or_default()
    });
    time.to_offset(time::UtcOffset::UTC)
        .format(&FIXED[..])
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(stream: LogStream, bytes: &[u8]) -> LogEntry {
        LogEntry {
            stream,
            time: OffsetDateTime::from_unix_timestamp_nanos(1_704_164_645_600_000_000).unwrap(),
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn multiplexed_headers_name_the_stream_and_length() {
        let mut out = Vec::new();
        encode_frame(
            StreamFormat::Multiplexed,
            &entry(LogStream::Stdout, b"hi\n"),
            false,
            &mut out,
        );
        encode_frame(
            StreamFormat::Multiplexed,
            &entry(LogStream::Stderr, b"oops\n"),
            false,
            &mut out,
        );
        assert_eq!(
            out,
            b"\x01\x00\x00\x00\x00\x00\x00\x03hi\n\x02\x00\x00\x00\x00\x00\x00\x05oops\n"
        );
        let big = entry(LogStream::Stdout, &[b'x'; 70_000]);
        let mut out = Vec::new();
        encode_frame(StreamFormat::Multiplexed, &big, false, &mut out);
        assert_eq!(&out[..8], &[1, 0, 0, 0, 0, 1, 0x11, 0x70]);
        assert_eq!(out.len(), 8 + 70_000);
    }

    #[test]
    fn timestamps_are_fixed_width_and_counted_in_the_length() {
        assert_eq!(
            format_timestamp(entry(LogStream::Stdout, b"").time),
            "2024-01-02T03:04:05.600000000Z"
        );
        let mut out = Vec::new();
        encode_frame(
            StreamFormat::Multiplexed,
            &entry(LogStream::Stderr, b"x\n"),
            true,
            &mut out,
        );
        assert_eq!(&out[..8], &[2, 0, 0, 0, 0, 0, 0, 33]);
        assert_eq!(&out[8..], b"2024-01-02T03:04:05.600000000Z x\n");
    }

    #[test]
    fn raw_is_the_bytes_alone() {
        let mut out = Vec::new();
        encode_frame(
            StreamFormat::for_tty(true),
            &entry(LogStream::Stdout, b"a\r\n"),
            false,
            &mut out,
        );
        encode_frame(
            StreamFormat::Raw,
            &entry(LogStream::Stdout, b"b"),
            true,
            &mut out,
        );
        assert_eq!(out, b"a\r\n2024-01-02T03:04:05.600000000Z b");
        assert_eq!(StreamFormat::for_tty(false), StreamFormat::Multiplexed);
    }
}
