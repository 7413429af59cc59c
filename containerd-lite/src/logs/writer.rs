//! The json-file log on disk: appending entries and rotating the file.
//!
//! One writer owns a log. It holds an exclusive `flock` on the file it
//! appends to for as long as it writes it, which is how a reader tells that
//! the logger has finished (see [`super::reader`]). A new file is always made
//! as `<path>.new`, locked, and only then renamed to `<path>`, so `<path>`
//! never names a file its writer has not locked yet.
//!
//! Each entry is one `write` on a file opened with `O_APPEND`, so entries
//! never interleave and a reader never sees half a line except while it is
//! being written.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};
use time::OffsetDateTime;

use super::{format, LogStream};
use crate::error::{Context, Error, Result};

/// When the log file is rotated, as docker's `max-size` and `max-file`
/// log options say. The default keeps one file that grows without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    /// Start a new file once the current one has this many bytes (`None`:
    /// never).
    pub max_size: Option<u64>,
    /// How many files to keep, the current one included (at least 1; with 1
    /// a full file is replaced by an empty one).
    pub max_files: u32,
}

impl Default for Rotation {
    fn default() -> Rotation {
        Rotation {
            max_size: None,
            max_files: 1,
        }
    }
}

impl Rotation {
    /// Reads docker's json-file log options (`max-size=10m`, `max-file=3`);
    /// any other option is refused, as dockerd does.
    pub fn from_log_opts<'a>(
        opts: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Rotation> {
        let mut rotation = Rotation::default();
        let mut max_files = None;
        for (key, value) in opts {
            match key {
                "max-size" => rotation.max_size = Some(parse_size(value)?),
                "max-file" => {
                    let n: u32 = value.parse().map_err(|_| {
                        Error::invalid(format!("max-file {value:?}: not a whole number"))
                    })?;
                    if n < 1 {
                        return Err(Error::invalid("max-file cannot be less than 1"));
                    }
                    max_files = Some(n);
                }
                other => {
                    return Err(Error::invalid(format!(
                        "unknown log opt {other:?} for the json-file log driver"
                    )))
                }
            }
        }
        if let Some(n) = max_files {
            if n > 1 && rotation.max_size.is_none() {
                return Err(Error::invalid(
                    "max-file needs max-size: a file is only rotated once it reaches max-size",
                ));
            }
            rotation.max_files = n;
        }
        Ok(rotation)
    }
}

/// Parses a size as docker's log options write it: a number, optionally
/// with a fraction, and a unit `k`, `m`, `g`, `t` or `p` (powers of 1024,
/// any case, optionally followed by `i` and/or `b`): `10m`, `1.5g`, `512kb`,
/// `4096`. It must be positive.
pub fn parse_size(text: &str) -> Result<u64> {
    let bad = || {
        Error::invalid(format!(
            "size {text:?}: want a number and a unit such as 10m"
        ))
    };
    let digits = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return Err(bad());
    }
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit = unit.strip_prefix(' ').unwrap_or(unit).to_ascii_lowercase();
    let unit = unit.strip_suffix('b').unwrap_or(&unit);
    let unit = unit.strip_suffix('i').unwrap_or(unit);
    let multiplier: u64 = match unit {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        "p" => 1 << 50,
        _ => return Err(bad()),
    };
    let bytes = number * multiplier as f64;
    if bytes < 1.0 || bytes >= u64::MAX as f64 {
        return Err(Error::invalid(format!(
            "size {text:?}: must be at least one byte and fit in 64 bits"
        )));
    }
    Ok(bytes as u64)
}

/// `<path>.<n>`: the n-th older file of a rotated log.
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    with_suffix(path, &n.to_string())
}

/// `<path>.new`: a fresh file before it becomes `<path>`.
pub(crate) fn fresh_path(path: &Path) -> PathBuf {
    with_suffix(path, "new")
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = OsString::from(path.as_os_str());
    name.push(".");
    name.push(suffix);
    PathBuf::from(name)
}

/// Appends entries to a json-file log, rotating it as configured.
#[derive(Debug)]
pub struct JsonFileWriter {
    path: PathBuf,
    rotation: Rotation,
    /// The file `path` names, locked.
    file: File,
    /// Its length.
    size: u64,
    /// The line being written (kept to reuse its allocation).
    line: Vec<u8>,
}

impl JsonFileWriter {
    /// Opens the log at `path` to append to it (creating it if need be) and
    /// locks it; waits while another writer holds it.
    pub fn open(path: &Path, rotation: Rotation) -> Result<JsonFileWriter> {
        let file = match OpenOptions::new().append(true).open(path) {
            Ok(file) => {
                lock_exclusive(&file)
                    .with_context(|| format!("locking the log {}", path.display()))?;
                file
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let file = create_locked(path)?;
                std::fs::rename(fresh_path(path), path)
                    .with_context(|| format!("creating the log {}", path.display()))?;
                file
            }
            Err(e) => {
                return Err(Error::from(e).context(format!("opening the log {}", path.display())))
            }
        };
        let size = file
            .metadata()
            .with_context(|| format!("reading the size of the log {}", path.display()))?
            .len();
        Ok(JsonFileWriter {
            path: path.to_path_buf(),
            rotation,
            file,
            size,
            line: Vec::new(),
        })
    }

    /// Appends one entry. When the file is full it is rotated first; if that
    /// fails the entry still goes into the current file and the rotation's
    /// error is returned (the next entry tries again).
    pub fn write(&mut self, stream: LogStream, time: OffsetDateTime, bytes: &[u8]) -> Result<()> {
        let rotated = match self.rotation.max_size {
            Some(max) if self.size >= max => self.rotate(),
            _ => Ok(()),
        };
        self.line.clear();
        format::encode(stream, time, bytes, &mut self.line);
        self.file
            .write_all(&self.line)
            .with_context(|| format!("writing to the log {}", self.path.display()))?;
        self.size += self.line.len() as u64;
        rotated
    }

    /// Shifts `<path>.<n>` to `<path>.<n+1>` (dropping the oldest), `<path>`
    /// to `<path>.1`, and starts an empty `<path>`.
    fn rotate(&mut self) -> Result<()> {
        let fresh = create_locked(&self.path)?;
        let context = || format!("rotating the log {}", self.path.display());
        if self.rotation.max_files > 1 {
            for n in (1..self.rotation.max_files - 1).rev() {
                match std::fs::rename(rotated_path(&self.path, n), rotated_path(&self.path, n + 1))
                {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(Error::from(e).context(context()))
                    }
                    _ => {}
                }
            }
            std::fs::rename(&self.path, rotated_path(&self.path, 1)).with_context(context)?;
        }
        std::fs::rename(fresh_path(&self.path), &self.path).with_context(context)?;
        // Dropping the previous file unlocks it.
        self.file = fresh;
        self.size = 0;
        Ok(())
    }
}

/// Creates `<path>.new` empty, mode 0640 as docker's logs, and locks it.
fn create_locked(path: &Path) -> Result<File> {
    let fresh = fresh_path(path);
    // A leftover from a logger that died mid-rotation.
    match std::fs::remove_file(&fresh) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(Error::from(e).context(format!("removing {}", fresh.display())))
        }
        _ => {}
    }
    let file = OpenOptions::new()
        .append(true)
        .create_new(true)
        .mode(0o640)
        .open(&fresh)
        .with_context(|| format!("creating {}", fresh.display()))?;
    lock_exclusive(&file).with_context(|| format!("locking {}", fresh.display()))?;
    Ok(file)
}

/// Waits for and takes the exclusive lock on `file`.
fn lock_exclusive(file: &File) -> std::io::Result<()> {
    flock(file, FlockOperation::LockExclusive).map_err(std::io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::format::decode;
    use crate::ErrorKind;

    #[test]
    fn sizes_as_docker_writes_them() {
        for (text, bytes) in [
            ("4096", 4096),
            ("10k", 10 << 10),
            ("10m", 10 << 20),
            ("10M", 10 << 20),
            ("10mb", 10 << 20),
            ("10MiB", 10 << 20),
            ("1.5g", 3 << 29),
            ("2 g", 2 << 30),
            ("1t", 1 << 40),
            ("3b", 3),
        ] {
            assert_eq!(parse_size(text).unwrap(), bytes, "{text}");
        }
        for bad in ["", "m", "10x", "-1m", "0", "1.m", ".5m", "10 mm", "1e3"] {
            let err = parse_size(bad).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad}");
            assert!(err.message.contains(&format!("{bad:?}")), "{}", err.message);
        }
    }

    #[test]
    fn log_opts() {
        assert_eq!(Rotation::from_log_opts([]).unwrap(), Rotation::default());
        assert_eq!(
            Rotation::from_log_opts([("max-size", "10m"), ("max-file", "3")]).unwrap(),
            Rotation {
                max_size: Some(10 << 20),
                max_files: 3
            }
        );
        assert_eq!(
            Rotation::from_log_opts([("max-size", "1k")]).unwrap(),
            Rotation {
                max_size: Some(1024),
                max_files: 1
            }
        );
        for (opts, why) in [
            (vec![("max-file", "0")], "less than 1"),
            (vec![("max-file", "two")], "\"two\""),
            (vec![("max-file", "3")], "needs max-size"),
            (vec![("max-size", "big")], "\"big\""),
            (vec![("compress", "true")], "unknown log opt \"compress\""),
        ] {
            let err = Rotation::from_log_opts(opts).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument);
            assert!(err.message.contains(why), "{}", err.message);
        }
    }

    fn lines(path: &Path) -> Vec<String> {
        std::fs::read(path)
            .unwrap()
            .split_inclusive(|&b| b == b'\n')
            .map(|l| String::from_utf8(decode(l).unwrap().bytes).unwrap())
            .collect()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    #[test]
    fn appends_to_an_existing_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = JsonFileWriter::open(&path, Rotation::default()).unwrap();
        w.write(LogStream::Stdout, now(), b"one\n").unwrap();
        drop(w);
        let mut w = JsonFileWriter::open(&path, Rotation::default()).unwrap();
        w.write(LogStream::Stderr, now(), b"two\n").unwrap();
        assert_eq!(lines(&path), ["one\n", "two\n"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        assert!(!fresh_path(&path).exists());
    }

    #[test]
    fn rotates_into_numbered_files_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let rotation = Rotation {
            max_size: Some(200),
            max_files: 3,
        };
        let mut w = JsonFileWriter::open(&path, rotation).unwrap();
        // Each line is about 70 bytes: three fill a file past 200.
        for i in 0..20 {
            w.write(
                LogStream::Stdout,
                now(),
                format!("line {i:02}\n").as_bytes(),
            )
            .unwrap();
        }
        assert_eq!(lines(&path), ["line 18\n", "line 19\n"]);
        assert_eq!(
            lines(&rotated_path(&path, 1)),
            ["line 15\n", "line 16\n", "line 17\n"]
        );
        assert_eq!(
            lines(&rotated_path(&path, 2)),
            ["line 12\n", "line 13\n", "line 14\n"]
        );
        assert!(!rotated_path(&path, 3).exists());
        assert!(!fresh_path(&path).exists());
        // A file is rotated only once it reached max-size: none is much bigger.
        for n in 1..=2 {
            let len = std::fs::metadata(rotated_path(&path, n)).unwrap().len();
            assert!((200..300).contains(&len), "{len}");
        }
    }

    #[test]
    fn one_file_is_replaced_when_full() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let rotation = Rotation {
            max_size: Some(100),
            max_files: 1,
        };
        let mut w = JsonFileWriter::open(&path, rotation).unwrap();
        for i in 0..5 {
            w.write(LogStream::Stdout, now(), format!("line {i}\n").as_bytes())
                .unwrap();
        }
        assert_eq!(lines(&path), ["line 4\n"]);
        assert!(!rotated_path(&path, 1).exists());
    }

    #[test]
    fn the_file_being_written_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let try_lock = |p: &Path| {
            let f = File::open(p).unwrap();
            flock(&f, FlockOperation::NonBlockingLockShared).is_ok()
        };
        let rotation = Rotation {
            max_size: Some(10),
            max_files: 2,
        };
        let mut w = JsonFileWriter::open(&path, rotation).unwrap();
        assert!(!try_lock(&path));
        w.write(LogStream::Stdout, now(), b"first\n").unwrap();
        w.write(LogStream::Stdout, now(), b"second\n").unwrap();
        assert!(!try_lock(&path), "the new file is locked");
        assert!(try_lock(&rotated_path(&path, 1)), "the rotated one is not");
        drop(w);
        assert!(try_lock(&path));
    }

    #[test]
    fn errors_name_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing-dir/c.log");
        let err = JsonFileWriter::open(&path, Rotation::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.message.contains("c.log.new"), "{}", err.message);
    }
}
