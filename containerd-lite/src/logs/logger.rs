//! What `berth-logger` does: copy a container's stdout and stderr into its
//! json-file log until both end.
//!
//! Each stream is read by its own thread (blocking reads: a pipe's read
//! returns 0 once every writer is gone, with no reliance on poll's hang-up
//! rules). Entries go through one lock, which also stamps their time, so the
//! file is in time order across both streams. A failing write does not stop
//! the copy: the container must never block on a full pipe because its log
//! cannot be written; the first error is returned at the end.

use std::io::Read;
use std::sync::{Mutex, PoisonError};

use time::OffsetDateTime;

use super::split::{LineSplitter, MAX_ENTRY};
use super::{JsonFileWriter, LogStream, LoggerConfig};
use crate::error::{Error, Result};

/// Opens the log, calls `ready` (the logger's readiness signal), then copies
/// both streams into it until each reaches end-of-file.
pub fn run(
    config: &LoggerConfig,
    stdout: impl Read + Send,
    stderr: impl Read + Send,
    ready: impl FnOnce(),
) -> Result<()> {
    let writer = Mutex::new(JsonFileWriter::open(&config.path, config.rotation)?);
    ready();
    std::thread::scope(|scope| {
        let stderr = std::thread::Builder::new()
            .name("stderr".into())
            .spawn_scoped(scope, || {
                copy(LogStream::Stderr, stderr, &writer, config.raw)
            })
            .map_err(|e| Error::internal(format!("starting the stderr thread: {e}")))?;
        let stdout = copy(LogStream::Stdout, stdout, &writer, config.raw);
        let stderr = stderr
            .join()
            .unwrap_or_else(|_| Err(Error::internal("the stderr thread panicked")));
        stdout.and(stderr)
    })
}

/// Copies one stream until its end; the first error, if any. `raw`: each
/// read is one entry (a terminal's output), else entries are lines.
fn copy(
    stream: LogStream,
    mut from: impl Read,
    writer: &Mutex<JsonFileWriter>,
    raw: bool,
) -> Result<()> {
    let mut first_error = None;
    let mut write = |entry: &[u8]| {
        let mut writer = writer.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = writer.write(stream, OffsetDateTime::now_utc(), entry) {
            first_error.get_or_insert(e);
        }
    };
    let mut splitter = LineSplitter::new();
    let mut buf = vec![0u8; MAX_ENTRY];
    let mut read_error = None;
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if raw => write(&buf[..n]),
            Ok(n) => splitter.push(&buf[..n], &mut write),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => {
                read_error = Some(Error::from(e).context(format!("reading {}", stream.as_str())));
                break;
            }
        }
    }
    splitter.finish(&mut write);
    match read_error.or(first_error) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::format::decode;
    use crate::logs::writer::rotated_path;
    use crate::logs::{LogEntry, Rotation};
    use std::io::Write;

    fn entries(path: &std::path::Path) -> Vec<LogEntry> {
        std::fs::read(path)
            .unwrap()
            .split_inclusive(|&b| b == b'\n')
            .map(|l| decode(l).unwrap())
            .collect()
    }

    #[test]
    fn copies_both_pipes_until_both_end() {
        let dir = tempfile::tempdir().unwrap();
        let config = LoggerConfig {
            path: dir.path().join("c.log"),
            rotation: Rotation::default(),
            raw: false,
        };
        let pipe = || {
            let (r, w) = nix::unistd::pipe().unwrap();
            (std::fs::File::from(r), std::fs::File::from(w))
        };
        let (out_r, mut out_w) = pipe();
        let (err_r, mut err_w) = pipe();
        let mut readied = false;
        std::thread::scope(|s| {
            let logger = s.spawn(|| run(&config, out_r, err_r, || readied = true));
            for i in 0..100 {
                writeln!(out_w, "out {i}").unwrap();
                writeln!(err_w, "err {i}").unwrap();
            }
            out_w.write_all(b"no newline at the end").unwrap();
            drop(out_w);
            err_w.write_all(b"last err\n").unwrap();
            drop(err_w);
            logger.join().unwrap().unwrap();
        });
        assert!(readied);
        let all = entries(&config.path);
        assert_eq!(all.len(), 202);
        let of = |stream| {
            all.iter()
                .filter(|e| e.stream == stream)
                .map(|e| String::from_utf8(e.bytes.clone()).unwrap())
                .collect::<Vec<_>>()
        };
        let mut want: Vec<String> = (0..100).map(|i| format!("out {i}\n")).collect();
        want.push("no newline at the end".into());
        assert_eq!(of(LogStream::Stdout), want);
        let mut want: Vec<String> = (0..100).map(|i| format!("err {i}\n")).collect();
        want.push("last err\n".into());
        assert_eq!(of(LogStream::Stderr), want);
        assert!(
            all.windows(2).all(|w| w[0].time <= w[1].time),
            "entries are in time order"
        );
    }

    #[test]
    fn a_terminals_output_goes_in_as_read() {
        let dir = tempfile::tempdir().unwrap();
        let config = LoggerConfig {
            path: dir.path().join("c.log"),
            rotation: Rotation::default(),
            raw: true,
        };
        run(&config, &b"/ # "[..], &b""[..], || {}).unwrap();
        let entries: Vec<_> = crate::logs::LogReader::open(&config.path)
            .unwrap()
            .entries(&Default::default())
            .unwrap()
            .map(|e| e.unwrap().bytes)
            .collect();
        assert_eq!(entries, [b"/ # ".to_vec()], "a prompt without a newline");
    }

    #[test]
    fn rotates_while_copying() {
        let dir = tempfile::tempdir().unwrap();
        let config = LoggerConfig {
            path: dir.path().join("c.log"),
            rotation: Rotation {
                max_size: Some(1000),
                max_files: 2,
            },
            raw: false,
        };
        let out: Vec<u8> = (0..100)
            .flat_map(|i| format!("{i}\n").into_bytes())
            .collect();
        run(&config, &out[..], &b""[..], || {}).unwrap();
        let kept: Vec<_> = entries(&rotated_path(&config.path, 1))
            .into_iter()
            .chain(entries(&config.path))
            .map(|e| String::from_utf8(e.bytes).unwrap())
            .collect();
        let want: Vec<String> = (100 - kept.len()..100).map(|i| format!("{i}\n")).collect();
        assert_eq!(
            kept, want,
            "the newest entries, in order, nothing in between lost"
        );
        assert!(kept.len() < 100);
    }

    #[test]
    fn a_log_that_cannot_be_opened_is_an_error_before_ready() {
        let config = LoggerConfig {
            path: "/nonexistent-dir/c.log".into(),
            rotation: Rotation::default(),
            raw: false,
        };
        let mut readied = false;
        let err = run(&config, &b""[..], &b""[..], || readied = true).unwrap_err();
        assert!(
            err.message.contains("/nonexistent-dir/c.log"),
            "{}",
            err.message
        );
        assert!(!readied);
    }

    /// A reader that fails after some data.
    struct Broken;
    impl Read for Broken {
        fn read(&mut self, _: &mut [u8]) -> std::io::Result<usize> {
            Err(std::io::Error::other("pipe broke"))
        }
    }

    #[test]
    fn a_read_error_ends_that_stream_only() {
        let dir = tempfile::tempdir().unwrap();
        let config = LoggerConfig {
            path: dir.path().join("c.log"),
            rotation: Rotation::default(),
            raw: false,
        };
        let err = run(&config, &b"fine\n"[..], Broken, || {}).unwrap_err();
        assert!(
            err.message.contains("reading stderr: pipe broke"),
            "{}",
            err.message
        );
        let all = entries(&config.path);
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].bytes, b"fine\n");
    }
}
