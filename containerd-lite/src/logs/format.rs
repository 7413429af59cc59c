//! One json-file entry as one line: `{"log":"...","stream":"...","time":"..."}`.
//!
//! The line is what docker's json-file driver writes, byte for byte, so a log
//! moves between docker and berthd and any tool that reads docker's logs reads
//! ours: keys in that order, `log` left out when empty, the time in UTC as
//! RFC 3339 with nanoseconds and trailing zeros trimmed (Go's `RFC3339Nano`).
//! The log text is escaped as docker escapes it: `"`, `\`, `\n` and `\r` with
//! a backslash; other control characters, `<`, `>`, `&`, U+2028 and U+2029 as
//! `\uXXXX`; and each byte that is not part of valid UTF-8 as `\ufffd`.

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{LogEntry, LogStream};
use crate::error::{Error, Result};

/// Appends one entry, with the line's final newline, to `out`.
pub fn encode(stream: LogStream, time: OffsetDateTime, bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'{');
    if !bytes.is_empty() {
        out.extend_from_slice(b"\"log\":");
        escape_into(bytes, out);
        out.push(b',');
    }
    out.extend_from_slice(b"\"stream\":\"");
    out.extend_from_slice(stream.as_str().as_bytes());
    out.extend_from_slice(b"\",\"time\":\"");
    // UTC formats as `Z`; only a year past 9999 could fail, which no clock
    // reading reaches.
    let time = time.to_offset(time::UtcOffset::UTC);
    if let Ok(text) = time.format(&Rfc3339) {
        out.extend_from_slice(text.as_bytes());
    }
    out.extend_from_slice(b"\"}\n");
}

/// Writes `bytes` as a JSON string (quotes included), escaped as docker does.
fn escape_into(bytes: &[u8], out: &mut Vec<u8>) {
    out.push(b'"');
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        // Runs of characters that need no escape are copied whole.
        let mut copied = 0;
        for (at, c) in valid.char_indices() {
            if !needs_escape(c) {
                continue;
            }
            out.extend_from_slice(&valid.as_bytes()[copied..at]);
            copied = at + c.len_utf8();
            match c {
                '"' => out.extend_from_slice(b"\\\""),
                '\\' => out.extend_from_slice(b"\\\\"),
                '\n' => out.extend_from_slice(b"\\n"),
                '\r' => out.extend_from_slice(b"\\r"),
                _ => push_unicode_escape(u32::from(c), out),
            }
        }
        out.extend_from_slice(&valid.as_bytes()[copied..]);
        for _ in chunk.invalid() {
            push_unicode_escape(0xfffd, out);
        }
    }
    out.push(b'"');
}

fn needs_escape(c: char) -> bool {
    matches!(
        c,
        '"' | '\\' | '\0'..='\u{1f}' | '<' | '>' | '&' | '\u{2028}' | '\u{2029}'
    )
}

/// `\uXXXX` for a code point below U+10000.
fn push_unicode_escape(code: u32, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[((code >> shift) & 0xf) as usize]);
    }
}

/// The fields of one line as they are stored.
#[derive(Deserialize)]
struct Line {
    #[serde(default)]
    log: String,
    stream: String,
    time: String,
}

/// Parses one line (without or with its newline) back into an entry.
pub fn decode(line: &[u8]) -> Result<LogEntry> {
    let line: Line = serde_json::from_slice(line)
        .map_err(|e| Error::invalid(format!("not a json-file log entry: {e}")))?;
    let stream = match line.stream.as_str() {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        other => {
            return Err(Error::invalid(format!(
                "log entry of an unknown stream {other:?}"
            )))
        }
    };
    let time = OffsetDateTime::parse(&line.time, &Rfc3339)
        .map_err(|e| Error::invalid(format!("log entry time {:?}: {e}", line.time)))?;
    Ok(LogEntry {
        stream,
        time,
        bytes: line.log.into_bytes(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(nanos: i128) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap()
    }

    fn line(bytes: &[u8]) -> String {
        let mut out = Vec::new();
        encode(
            LogStream::Stdout,
            at(1_700_000_000_123_456_789),
            bytes,
            &mut out,
        );
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn a_line_is_docker_s_layout() {
        assert_eq!(
            line(b"hello\n"),
            "{\"log\":\"hello\\n\",\"stream\":\"stdout\",\"time\":\"2023-11-14T22:13:20.123456789Z\"}\n"
        );
        let mut out = Vec::new();
        encode(
            LogStream::Stderr,
            at(1_700_000_000_000_000_000),
            b"",
            &mut out,
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "{\"stream\":\"stderr\",\"time\":\"2023-11-14T22:13:20Z\"}\n",
            "no log key when empty, no fraction on a whole second"
        );
    }

    #[test]
    fn time_trims_trailing_zeros_like_go() {
        let mut out = Vec::new();
        encode(
            LogStream::Stdout,
            at(1_700_000_000_120_000_000),
            b"x",
            &mut out,
        );
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.contains("\"time\":\"2023-11-14T22:13:20.12Z\""),
            "{text}"
        );
    }

    #[test]
    fn escapes_as_docker_does() {
        assert_eq!(line(b"a\"b\\c\r\n"), line_with(r#"a\"b\\c\r\n"#));
        assert_eq!(line(b"\t\x01\x1f"), line_with(r"\u0009\u0001\u001f"));
        assert_eq!(line(b"<a & b>"), line_with(r"\u003ca \u0026 b\u003e"));
        assert_eq!(
            line("\u{2028}\u{2029}é✓".as_bytes()),
            line_with("\\u2028\\u2029é✓")
        );
        // One replacement per byte that is not valid UTF-8, as Go decodes.
        assert_eq!(
            line(b"a\xffb\xe2\x82c"),
            line_with(r"a\ufffdb\ufffd\ufffdc")
        );
        assert_eq!(line(b"\xed\xa0\x80"), line_with(r"\ufffd\ufffd\ufffd"));
    }

    fn line_with(escaped: &str) -> String {
        format!(
            "{{\"log\":\"{escaped}\",\"stream\":\"stdout\",\"time\":\"2023-11-14T22:13:20.123456789Z\"}}\n"
        )
    }

    #[test]
    fn decode_reverses_encode() {
        for bytes in [
            &b"plain\n"[..],
            b"partial without newline",
            b"crlf\r\n",
            b"\n",
            b"<&>\"\\\t\x00",
            "\u{2028}é".as_bytes(),
        ] {
            let mut out = Vec::new();
            let time = at(1_700_000_000_000_000_001);
            encode(LogStream::Stderr, time, bytes, &mut out);
            let entry = decode(&out).unwrap();
            assert_eq!(entry.bytes, bytes);
            assert_eq!(entry.stream, LogStream::Stderr);
            assert_eq!(entry.time, time);
        }
        // Invalid UTF-8 comes back as U+FFFD, one per byte.
        let mut out = Vec::new();
        encode(LogStream::Stdout, at(0), b"\xff\xfe", &mut out);
        assert_eq!(decode(&out).unwrap().bytes, "\u{fffd}\u{fffd}".as_bytes());
    }

    #[test]
    fn decode_reads_docker_s_own_lines() {
        let entry = decode(
            br#"{"log":"hi \u003cthere\u003e\n","stream":"stdout","time":"2024-01-02T03:04:05.6Z"}"#,
        )
        .unwrap();
        assert_eq!(entry.bytes, b"hi <there>\n");
        assert_eq!(entry.time, at(1_704_164_645_600_000_000));
        // docker's attrs (from --log-opt labels) are skipped.
        let entry = decode(
            br#"{"log":"x","stream":"stderr","attrs":{"a":"b"},"time":"2024-01-02T03:04:05Z"}"#,
        )
        .unwrap();
        assert_eq!(entry.stream, LogStream::Stderr);
    }

    #[test]
    fn decode_refuses_what_is_not_an_entry() {
        for (bad, why) in [
            (&b"not json"[..], "not a json-file log entry"),
            (
                br#"{"log":"x","stream":"stdin","time":"2024-01-02T03:04:05Z"}"#,
                "unknown stream",
            ),
            (
                br#"{"log":"x","stream":"stdout","time":"yesterday"}"#,
                "time \"yesterday\"",
            ),
            (br#"{"log":"x","stream":"stdout"}"#, "missing field `time`"),
            (
                br#"{"log":"x","stream":"stdout","time":"2024-01-02T03:04"#,
                "not a json-file",
            ),
        ] {
            let err = decode(bad).unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::InvalidArgument);
            assert!(
                err.message.contains(why),
                "{}: {}",
                String::from_utf8_lossy(bad),
                err.message
            );
        }
    }
}
