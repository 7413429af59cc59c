//! Reading a json-file log back, across its rotated files.
//!
//! [`LogReader::open`] takes a snapshot: it opens every file of the log
//! (`<path>.N` ... `<path>.1`, `<path>`) at once, so a rotation while it reads
//! neither loses nor repeats entries. Files are told apart by inode, not by
//! name, since a rotation renames them. A tail is found by reading the files
//! backwards in blocks from their end, so `--tail 10` of a 1 GiB log reads a
//! few kilobytes. A line that is not an entry (a torn write after a crash) is
//! skipped with a warning.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead, BufReader, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;

use super::{format, LogEntry, LogStream};
use crate::error::{Context, Error, Result};

/// Which entries to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadOptions {
    pub stdout: bool,
    pub stderr: bool,
    /// Only entries written at or after this time.
    pub since: Option<OffsetDateTime>,
    /// Only entries written at or before this time; reading stops at the
    /// first later one (a follow ends there too).
    pub until: Option<OffsetDateTime>,
    /// Only the last N entries that the other options select (`Some(0)`:
    /// none of the existing ones; a follow still shows new ones).
    pub tail: Option<usize>,
}

impl Default for ReadOptions {
    /// Everything, both streams.
    fn default() -> ReadOptions {
        ReadOptions {
            stdout: true,
            stderr: true,
            since: None,
            until: None,
            tail: None,
        }
    }
}

impl ReadOptions {
    fn selects(&self, entry: &LogEntry) -> bool {
        let stream = match entry.stream {
            LogStream::Stdout => self.stdout,
            LogStream::Stderr => self.stderr,
        };
        stream && self.since.is_none_or(|since| entry.time >= since)
    }

    fn is_past_until(&self, entry: &LogEntry) -> bool {
        self.until.is_some_and(|until| entry.time > until)
    }
}

/// A file's identity, which survives renames: (device, inode).
pub(crate) type FileId = (u64, u64);

/// One file of the log, open, with its length when it was opened.
#[derive(Debug)]
pub(crate) struct LogFile {
    pub(crate) file: File,
    pub(crate) id: FileId,
    pub(crate) len: u64,
}

/// The identity of the file `path` names now (`None` if none).
pub(crate) fn file_id(path: &Path) -> std::io::Result<Option<FileId>> {
    match std::fs::metadata(path) {
        Ok(meta) => Ok(Some((meta.dev(), meta.ino()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Opens every file of the log at `path`, oldest first. A missing log (or
/// directory) has no files.
pub(crate) fn open_files(path: &Path) -> Result<Vec<LogFile>> {
    let context = || format!("reading the log {}", path.display());
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(Error::invalid(format!(
            "{} names no log file",
            path.display()
        )));
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let name = name.as_encoded_bytes();
    // (generation, file name): 0 is `<path>`, N is `<path>.N`.
    let mut names = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::from(e).context(context())),
    };
    for entry in entries {
        let entry = entry.with_context(context)?;
        let file_name = entry.file_name();
        let Some(rest) = file_name.as_encoded_bytes().strip_prefix(name) else {
            continue;
        };
        let generation = match rest {
            [] => 0,
            [b'.', digits @ ..] => match std::str::from_utf8(digits)
                .ok()
                .and_then(|d| d.parse().ok())
            {
                Some(n) if n > 0 && !digits.starts_with(b"0") => n,
                _ => continue,
            },
            _ => continue,
        };
        names.push((generation, entry.path()));
    }
    // Newest first: a file renamed while we open them is then seen twice
    // (kept once), never missed.
    names.sort_unstable_by_key(|(generation, _): &(u64, PathBuf)| *generation);
    let mut files: Vec<LogFile> = Vec::with_capacity(names.len());
    for (_, name) in names {
        let file = match File::open(&name) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::from(e).context(format!("opening {}", name.display()))),
        };
        let meta = file
            .metadata()
            .with_context(|| format!("reading {}", name.display()))?;
        let id = (meta.dev(), meta.ino());
        if files.iter().all(|f| f.id != id) {
            files.push(LogFile {
                file,
                id,
                len: meta.len(),
            });
        }
    }
    files.reverse();
    Ok(files)
}

/// Where reading starts: a file (index, oldest first) and a byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Position {
    file: usize,
    offset: u64,
}

/// A json-file log opened for reading.
#[derive(Debug)]
pub struct LogReader {
    path: PathBuf,
    /// The snapshot, oldest file first.
    files: Vec<LogFile>,
}

impl LogReader {
    /// Opens the log at `path` with its rotated files. A log that does not
    /// exist yet (a container that never ran) reads as empty.
    pub fn open(path: &Path) -> Result<LogReader> {
        // A rotation between listing and opening moves `<path>` on: try
        // again, so the snapshot ends with the file being written.
        let mut files = open_files(path)?;
        for _ in 0..3 {
            let current = file_id(path).with_context(|| format!("reading {}", path.display()))?;
            if current == files.last().map(|f| f.id) {
                break;
            }
            files = open_files(path)?;
        }
        Ok(LogReader {
            path: path.to_path_buf(),
            files,
        })
    }

    /// The entries `options` selects, oldest first, up to where the log
    /// ended when it was opened.
    pub fn entries(self, options: &ReadOptions) -> Result<Entries> {
        let cursor = self.cursor(options, true)?;
        Ok(Entries {
            cursor,
            options: options.clone(),
            done: false,
        })
    }

    /// A cursor at the first entry to show; `bounded`: stop at the
    /// snapshot's end instead of following the log.
    pub(crate) fn cursor(self, options: &ReadOptions, bounded: bool) -> Result<Cursor> {
        let start = match options.tail {
            Some(n) => self.tail_start(n, options)?,
            None => Position { file: 0, offset: 0 },
        };
        Cursor::new(self.path, self.files, start, bounded)
    }

    /// Where the last `n` selected entries start, found from the end.
    fn tail_start(&self, n: usize, options: &ReadOptions) -> Result<Position> {
        let end = match self.files.last() {
            Some(last) => Position {
                file: self.files.len() - 1,
                offset: last.len,
            },
            None => Position { file: 0, offset: 0 },
        };
        if n == 0 {
            return Ok(end);
        }
        let mut start = end;
        let mut found = 0;
        for (index, log) in self.files.iter().enumerate().rev() {
            let mut lines = ReverseLines::new(&log.file, log.len);
            while let Some((offset, line)) = lines
                .next_line()
                .with_context(|| format!("reading {} backwards", self.path.display()))?
            {
                let Ok(entry) = format::decode(&line) else {
                    continue;
                };
                if options.is_past_until(&entry) || !options.selects(&entry) {
                    // Entries are in time order: one before `since` means
                    // all earlier ones are too.
                    if options.since.is_some_and(|since| entry.time < since) {
                        return Ok(start);
                    }
                    continue;
                }
                start = Position {
                    file: index,
                    offset,
                };
                found += 1;
                if found == n {
                    return Ok(start);
                }
            }
        }
        Ok(Position { file: 0, offset: 0 })
    }
}

/// The complete lines of a file's first `len` bytes, last line first, read
/// in blocks from the end.
struct ReverseLines<'a> {
    file: &'a File,
    /// `unread` holds the bytes from `pos` to the end of the next line to
    /// yield (its newline excluded).
    pos: u64,
    unread: Vec<u8>,
    /// Whatever follows the last newline (a line still being written) has
    /// been dropped.
    trimmed: bool,
    done: bool,
}

const BLOCK: u64 = 64 * 1024;

impl<'a> ReverseLines<'a> {
    fn new(file: &'a File, len: u64) -> ReverseLines<'a> {
        ReverseLines {
            file,
            pos: len,
            unread: Vec::new(),
            trimmed: false,
            done: false,
        }
    }

    /// The next line back and the offset where it starts.
    fn next_line(&mut self) -> std::io::Result<Option<(u64, Vec<u8>)>> {
        loop {
            if self.done {
                return Ok(None);
            }
            let newline = self.unread.iter().rposition(|&b| b == b'\n');
            match (self.trimmed, newline) {
                (false, Some(at)) => {
                    self.unread.truncate(at);
                    self.trimmed = true;
                    continue;
                }
                (true, Some(at)) => {
                    let line = self.unread.split_off(at + 1);
                    self.unread.truncate(at);
                    return Ok(Some((self.pos + at as u64 + 1, line)));
                }
                (trimmed, None) if self.pos == 0 => {
                    self.done = true;
                    // The file's first line, if a newline ended it.
                    return Ok(trimmed.then(|| (0, std::mem::take(&mut self.unread))));
                }
                (_, None) => self.read_block()?,
            }
        }
    }

    /// Puts the block before `pos` in front of `unread`.
    fn read_block(&mut self) -> std::io::Result<()> {
        let start = self.pos.saturating_sub(BLOCK);
        let mut block = vec![0u8; (self.pos - start) as usize];
        self.file.read_exact_at(&mut block, start)?;
        block.extend_from_slice(&self.unread);
        self.unread = block;
        self.pos = start;
        Ok(())
    }
}

/// Reads a log's lines forward from a position, file after file; with
/// `bounded` unset, it also finds the files a rotation made after it
/// started (see [`Cursor::find_newer_files`]).
#[derive(Debug)]
pub(crate) struct Cursor {
    path: PathBuf,
    current: Option<Current>,
    /// Newer files, open, oldest first.
    queue: VecDeque<LogFile>,
    bounded: bool,
    /// The start of a line whose end is not written yet.
    partial: Vec<u8>,
}

#[derive(Debug)]
struct Current {
    reader: BufReader<File>,
    id: FileId,
    /// The length at the snapshot (where a bounded read stops).
    len: u64,
    offset: u64,
}

impl Current {
    fn new(log: LogFile, offset: u64) -> std::io::Result<Current> {
        let mut file = log.file;
        file.seek(SeekFrom::Start(offset))?;
        Ok(Current {
            reader: BufReader::new(file),
            id: log.id,
            len: log.len,
            offset,
        })
    }
}

impl Cursor {
    fn new(path: PathBuf, files: Vec<LogFile>, start: Position, bounded: bool) -> Result<Cursor> {
        let mut queue: VecDeque<LogFile> = files.into_iter().skip(start.file).collect();
        let current = match queue.pop_front() {
            Some(first) => Some(
                Current::new(first, start.offset)
                    .with_context(|| format!("reading {}", path.display()))?,
            ),
            None => None,
        };
        Ok(Cursor {
            path,
            current,
            queue,
            bounded,
            partial: Vec::new(),
        })
    }

    /// The log's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The next whole line, or `None` when there is none yet (following) or
    /// no more (bounded).
    pub(crate) fn next_line(&mut self) -> Result<Option<Vec<u8>>> {
        loop {
            let Some(current) = &mut self.current else {
                let Some(next) = self.queue.pop_front() else {
                    return Ok(None);
                };
                self.current = Some(
                    Current::new(next, 0)
                        .with_context(|| format!("reading {}", self.path.display()))?,
                );
                continue;
            };
            if self.bounded && current.offset >= current.len && self.partial.is_empty() {
                self.current = None;
                continue;
            }
            let n = current
                .reader
                .read_until(b'\n', &mut self.partial)
                .with_context(|| format!("reading {}", self.path.display()))?;
            current.offset += n as u64;
            if self.partial.last() == Some(&b'\n') {
                self.partial.pop();
                return Ok(Some(std::mem::take(&mut self.partial)));
            }
            // The end of this file, maybe inside a line being written.
            if self.bounded || !self.queue.is_empty() {
                // The file is complete (or the snapshot ends here): a line
                // without its newline is torn, or not ours to show yet.
                self.partial.clear();
                self.current = None;
                continue;
            }
            return Ok(None);
        }
    }

    /// Following: when `<path>` names another file than the one being read
    /// (the log was rotated, or created), queues the files newer than it.
    /// The file being read is finished only after that: its writer moved to
    /// the new file before renaming it, so reading it to its end once more
    /// gets all of it. True when files were queued; never for a bounded
    /// cursor, which reads the snapshot alone.
    pub(crate) fn find_newer_files(&mut self) -> Result<bool> {
        if self.bounded {
            return Ok(false);
        }
        let current = self.current.as_ref().map(|c| c.id);
        let now =
            file_id(&self.path).with_context(|| format!("reading {}", self.path.display()))?;
        if now.is_none() || now == current || !self.queue.is_empty() {
            return Ok(false);
        }
        let mut files = open_files(&self.path)?;
        // Files newer than ours; all of them if ours was already rotated out.
        if let Some(at) = current.and_then(|id| files.iter().position(|f| f.id == id)) {
            files.drain(..=at);
        }
        let found = !files.is_empty();
        self.queue.extend(files);
        Ok(found)
    }
}

/// The entries of a snapshot, oldest first (see [`LogReader::entries`]).
#[derive(Debug)]
pub struct Entries {
    cursor: Cursor,
    options: ReadOptions,
    done: bool,
}

impl Iterator for Entries {
    type Item = Result<LogEntry>;

    fn next(&mut self) -> Option<Result<LogEntry>> {
        while !self.done {
            let line = match self.cursor.next_line() {
                Ok(Some(line)) => line,
                Ok(None) => break,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            match next_entry(&line, &self.options, self.cursor.path()) {
                Selected::Entry(entry) => return Some(Ok(entry)),
                Selected::Skip => {}
                Selected::PastUntil => break,
            }
        }
        self.done = true;
        None
    }
}

/// What to do with one line of the log.
pub(crate) enum Selected {
    Entry(LogEntry),
    Skip,
    PastUntil,
}

pub(crate) fn next_entry(line: &[u8], options: &ReadOptions, path: &Path) -> Selected {
    let entry = match format::decode(line) {
        Ok(entry) => entry,
        Err(e) => {
            tracing::warn!("{}: skipping a line: {e}", path.display());
            return Selected::Skip;
        }
    };
    if options.is_past_until(&entry) {
        Selected::PastUntil
    } else if options.selects(&entry) {
        Selected::Entry(entry)
    } else {
        Selected::Skip
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::writer::rotated_path;
    use crate::logs::{JsonFileWriter, Rotation};
    use std::io::Write;

    /// Second `s` of a fixed day.
    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).unwrap()
    }

    /// A log of `n` entries `<stream> <i>\n` at second i (stdout for even
    /// i, stderr for odd), rotated every `max_size` bytes into up to
    /// `max_files` files.
    fn write_log(path: &Path, n: i64, max_size: u64, max_files: u32) {
        let rotation = Rotation {
            max_size: Some(max_size),
            max_files,
        };
        let mut w = JsonFileWriter::open(path, rotation).unwrap();
        for i in 0..n {
            let stream = if i % 2 == 0 {
                LogStream::Stdout
            } else {
                LogStream::Stderr
            };
            w.write(
                stream,
                at(i),
                format!("{} {i}\n", stream.as_str()).as_bytes(),
            )
            .unwrap();
        }
    }

    fn read(path: &Path, options: &ReadOptions) -> Vec<String> {
        LogReader::open(path)
            .unwrap()
            .entries(options)
            .unwrap()
            .map(|e| {
                String::from_utf8(e.unwrap().bytes)
                    .unwrap()
                    .trim_end()
                    .to_string()
            })
            .collect()
    }

    fn numbers(lines: &[String]) -> Vec<i64> {
        lines
            .iter()
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect()
    }

    fn tail(n: usize) -> ReadOptions {
        ReadOptions {
            tail: Some(n),
            ..ReadOptions::default()
        }
    }

    #[test]
    fn reads_every_file_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        write_log(&path, 100, 500, 100);
        assert!(rotated_path(&path, 10).exists(), "more than ten files");
        let all = read(&path, &ReadOptions::default());
        assert_eq!(numbers(&all), (0..100).collect::<Vec<_>>());
        assert_eq!(all[0], "stdout 0");
        assert_eq!(all[1], "stderr 1");
    }

    #[test]
    fn tail_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        // About six entries per file, the newest 30 kept.
        write_log(&path, 100, 400, 5);
        let kept = numbers(&read(&path, &ReadOptions::default()));
        let oldest = kept[0];
        assert_eq!(kept, (oldest..100).collect::<Vec<_>>());
        for n in [1, 5, 7, 13, kept.len() - 1] {
            assert_eq!(
                numbers(&read(&path, &tail(n))),
                (100 - n as i64..100).collect::<Vec<_>>(),
                "tail {n}"
            );
        }
        assert_eq!(numbers(&read(&path, &tail(1000))), kept);
        assert!(read(&path, &tail(0)).is_empty());
    }

    #[test]
    fn stream_selection_with_and_without_tail() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        write_log(&path, 40, 300, 100);
        let stderr = ReadOptions {
            stdout: false,
            ..ReadOptions::default()
        };
        let odd: Vec<i64> = (0..40).filter(|i| i % 2 == 1).collect();
        assert_eq!(numbers(&read(&path, &stderr)), odd);
        // The tail counts the selected entries only.
        let last3 = ReadOptions {
            tail: Some(3),
            ..stderr.clone()
        };
        assert_eq!(numbers(&read(&path, &last3)), [35, 37, 39]);
        let neither = ReadOptions {
            stdout: false,
            stderr: false,
            ..ReadOptions::default()
        };
        assert!(read(&path, &neither).is_empty());
    }

    #[test]
    fn since_and_until() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        write_log(&path, 50, 350, 100);
        let window = ReadOptions {
            since: Some(at(10)),
            until: Some(at(19)),
            ..ReadOptions::default()
        };
        assert_eq!(numbers(&read(&path, &window)), (10..20).collect::<Vec<_>>());
        // With a tail: the last of the window.
        let window_tail = ReadOptions {
            tail: Some(4),
            ..window.clone()
        };
        assert_eq!(numbers(&read(&path, &window_tail)), [16, 17, 18, 19]);
        // A tail longer than the window stops at since.
        let long_tail = ReadOptions {
            tail: Some(40),
            ..window
        };
        assert_eq!(
            numbers(&read(&path, &long_tail)),
            (10..20).collect::<Vec<_>>()
        );
        let after = ReadOptions {
            since: Some(at(1000)),
            ..ReadOptions::default()
        };
        assert!(read(&path, &after).is_empty());
        let before = ReadOptions {
            until: Some(at(-1)),
            tail: Some(3),
            ..ReadOptions::default()
        };
        assert!(read(&path, &before).is_empty());
    }

    #[test]
    fn a_missing_log_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("never.log"), &ReadOptions::default()).is_empty());
        assert!(read(&dir.path().join("no-dir/never.log"), &tail(3)).is_empty());
    }

    #[test]
    fn a_snapshot_ends_where_the_log_ended_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        write_log(&path, 3, 1 << 20, 1);
        let reader = LogReader::open(&path).unwrap();
        let mut w = JsonFileWriter::open(&path, Rotation::default()).unwrap();
        w.write(LogStream::Stdout, at(3), b"later\n").unwrap();
        let seen: Vec<_> = reader.entries(&ReadOptions::default()).unwrap().collect();
        assert_eq!(seen.len(), 3);
    }

    #[test]
    fn broken_lines_are_skipped_and_an_unfinished_one_is_not_shown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        write_log(&path, 2, 1 << 20, 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"log\":\"torn\n").unwrap();
        f.write_all(b"\n").unwrap();
        drop(f);
        write_log(&path, 4, 1 << 20, 1);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"log\":\"being written").unwrap();
        drop(f);
        let all = numbers(&read(&path, &ReadOptions::default()));
        assert_eq!(all, [0, 1, 0, 1, 2, 3]);
        assert_eq!(numbers(&read(&path, &tail(5))), [1, 0, 1, 2, 3]);
    }

    #[test]
    fn a_tail_reads_only_the_end_of_a_big_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        write_log(&path, 1, 1 << 40, 1);
        // A gigabyte with no newline in it (sparse: costs no disk), then
        // three entries.
        let f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.set_len(1 << 30).unwrap();
        let mut w = JsonFileWriter::open(&path, Rotation::default()).unwrap();
        w.write(LogStream::Stdout, at(0), b"\n").unwrap();
        for i in 1..4 {
            w.write(LogStream::Stdout, at(i), format!("stdout {i}\n").as_bytes())
                .unwrap();
        }
        let file = File::open(&path).unwrap();
        let len = file.metadata().unwrap().len();
        let mut lines = ReverseLines::new(&file, len);
        for _ in 0..3 {
            lines.next_line().unwrap().unwrap();
        }
        assert!(
            len - lines.pos <= BLOCK,
            "read {} bytes back",
            len - lines.pos
        );
        assert_eq!(numbers(&read(&path, &tail(3))), [1, 2, 3]);
    }

    #[test]
    fn reverse_lines_handles_lines_longer_than_a_block() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw");
        let long = "y".repeat(3 * BLOCK as usize + 5);
        let text = format!("first\n{long}\n\nlast\nunfinished");
        std::fs::write(&path, &text).unwrap();
        let file = File::open(&path).unwrap();
        let mut lines = ReverseLines::new(&file, text.len() as u64);
        let mut seen = Vec::new();
        while let Some((offset, line)) = lines.next_line().unwrap() {
            assert_eq!(&text.as_bytes()[offset as usize..][..line.len()], &line[..]);
            seen.push(String::from_utf8(line).unwrap());
        }
        assert_eq!(seen, ["last", "", long.as_str(), "first"]);
        let mut none = ReverseLines::new(&file, 5);
        assert_eq!(
            none.next_line().unwrap(),
            None,
            "no newline in the first 5 bytes"
        );
    }
}
