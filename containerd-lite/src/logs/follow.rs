//! Reading a log as a stream: a snapshot ([`LogReader::into_stream`]) or a
//! follow ([`LogReader::follow`]) that shows entries as they are appended,
//! across rotations, until the container has exited and its logger has
//! written everything.
//!
//! The logger may still be writing when the container's exit is reported
//! (it drains the pipes after the last process is gone), so the end of a
//! follow is not the exit itself: after the exit, the follow waits until no
//! process holds the lock of the log's current file (see [`super::writer`]),
//! then reads what remains and ends. File reads run on tokio's blocking
//! pool; the log is looked at again every [`POLL_INTERVAL`] while nothing
//! new is there.

use std::fs::File;
use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::pin::Pin;
use std::time::Duration;

use futures::{Stream, StreamExt};
use rustix::fs::{flock, FlockOperation};

use super::reader::{file_id, next_entry, Cursor, LogReader, ReadOptions, Selected};
use super::writer::fresh_path;
use super::LogEntry;
use crate::error::{Context, Error, Result};

/// How often a follow looks for new entries once it has shown all.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// The most entries read in one go (one trip to the blocking pool).
const BATCH: usize = 256;

impl LogReader {
    /// The entries `options` selects as a stream, up to where the log ended
    /// when it was opened; for a response body.
    pub fn into_stream(self, options: ReadOptions) -> impl Stream<Item = Result<LogEntry>> + Send {
        entry_stream(self, options, None)
    }

    /// The entries `options` selects, then new ones as they are written,
    /// until `exited` resolves (the container stopped) and the logger has
    /// written everything; then the stream ends. With `until`, it ends at the
    /// first entry after that time.
    pub fn follow(
        self,
        options: ReadOptions,
        exited: impl Future<Output = ()> + Send + 'static,
    ) -> impl Stream<Item = Result<LogEntry>> + Send {
        entry_stream(self, options, Some(Box::pin(exited)))
    }
}

type Exit = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where a stream is.
enum Source {
    Opened(LogReader),
    Reading(Follower),
}

struct StreamState {
    source: Option<Source>,
    options: ReadOptions,
    /// `None`: a snapshot. Otherwise a follow, ended by the container's exit.
    exit: Option<Exit>,
    /// The exit came (a follow only).
    exited: bool,
    finished: bool,
}

fn entry_stream(
    reader: LogReader,
    options: ReadOptions,
    exit: Option<Exit>,
) -> impl Stream<Item = Result<LogEntry>> + Send {
    let state = StreamState {
        source: Some(Source::Opened(reader)),
        options,
        exit,
        exited: false,
        finished: false,
    };
    futures::stream::unfold(state, next_batch)
        .flat_map(|batch: Vec<Result<LogEntry>>| futures::stream::iter(batch))
}

/// The next entries to show (never empty), or `None` at the end.
async fn next_batch(mut state: StreamState) -> Option<(Vec<Result<LogEntry>>, StreamState)> {
    loop {
        if state.finished {
            return None;
        }
        let source = state.source.take()?;
        let options = state.options.clone();
        let (following, check_writer) = (state.exit.is_some(), state.exited);
        let polled = tokio::task::spawn_blocking(move || {
            let mut follower = match source {
                Source::Reading(follower) => follower,
                Source::Opened(reader) => Follower {
                    cursor: reader.cursor(&options, !following)?,
                    options,
                },
            };
            let batch = follower.read(check_writer)?;
            Ok::<_, Error>((follower, batch))
        })
        .await
        .unwrap_or_else(|e| Err(Error::internal(format!("reading a log: {e}"))));
        let (follower, batch) = match polled {
            Ok(polled) => polled,
            Err(e) => {
                state.finished = true;
                return Some((vec![Err(e)], state));
            }
        };
        state.source = Some(Source::Reading(follower));
        state.finished = batch.finished || (batch.caught_up && !following);
        if !batch.entries.is_empty() {
            return Some((batch.entries.into_iter().map(Ok).collect(), state));
        }
        if state.finished || !batch.caught_up {
            continue;
        }
        // All shown: wait for more, or for the exit.
        match &mut state.exit {
            Some(exit) if !state.exited => {
                tokio::select! {
                    () = exit.as_mut() => state.exited = true,
                    () = tokio::time::sleep(POLL_INTERVAL) => {}
                }
            }
            _ => tokio::time::sleep(POLL_INTERVAL).await,
        }
    }
}

/// The reading side of a stream, moved to the blocking pool for each read.
struct Follower {
    cursor: Cursor,
    options: ReadOptions,
}

/// What one read found.
struct Batch {
    entries: Vec<LogEntry>,
    /// Everything written so far has been read.
    caught_up: bool,
    /// Nothing more will come: past `until`, or the writer was gone before
    /// this read caught up.
    finished: bool,
}

impl Follower {
    /// Reads up to [`BATCH`] entries. With `check_writer`, first looks
    /// whether the logger is gone: if so, what this read catches up to is
    /// all there will be.
    fn read(&mut self, check_writer: bool) -> Result<Batch> {
        let writer_gone = check_writer
            && writer_gone(self.cursor.path()).with_context(|| {
                format!("checking the writer of {}", self.cursor.path().display())
            })?;
        let mut entries = Vec::new();
        while entries.len() < BATCH {
            let Some(line) = self.cursor.next_line()? else {
                if self.cursor.find_newer_files()? {
                    continue;
                }
                return Ok(Batch {
                    entries,
                    caught_up: true,
                    finished: writer_gone,
                });
            };
            match next_entry(&line, &self.options, self.cursor.path()) {
                Selected::Entry(entry) => entries.push(entry),
                Selected::Skip => {}
                Selected::PastUntil => {
                    return Ok(Batch {
                        entries,
                        caught_up: true,
                        finished: true,
                    })
                }
            }
        }
        Ok(Batch {
            entries,
            caught_up: false,
            finished: false,
        })
    }
}

/// Whether no logger writes the log at `path` any more: the file `<path>`
/// names is not locked (a writer locks a file before naming it `<path>`, and
/// holds the lock until it moves on or exits).
pub(crate) fn writer_gone(path: &Path) -> std::io::Result<bool> {
    let file = match File::open(path) {
        Ok(file) => file,
        // Between a rotation's renames `<path>` is missing and the new file
        // is still `<path>.new`.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => match File::open(fresh_path(path)) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Neither: no logger ever ran, unless `<path>.new` just
                // became `<path>`.
                return Ok(file_id(path)?.is_none());
            }
            Err(e) => return Err(e),
        },
        Err(e) => return Err(e),
    };
    match flock(&file, FlockOperation::NonBlockingLockShared) {
        Ok(()) => {}
        Err(rustix::io::Errno::WOULDBLOCK) => return Ok(false),
        Err(e) => return Err(e.into()),
    }
    // Unlocked; but if a rotation replaced it meanwhile, the new file may
    // be written.
    let meta = file.metadata()?;
    Ok(file_id(path)? == Some((meta.dev(), meta.ino())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::{JsonFileWriter, LogStream, Rotation};
    use futures::stream::BoxStream;
    use time::OffsetDateTime;
    use tokio::sync::oneshot;

    /// A bound on waiting for an entry, so a broken follow fails the test
    /// instead of hanging it; never reached when it works.
    const HANG: Duration = Duration::from_secs(60);

    fn write(w: &mut JsonFileWriter, text: &str) {
        w.write(
            LogStream::Stdout,
            OffsetDateTime::now_utc(),
            format!("{text}\n").as_bytes(),
        )
        .unwrap();
    }

    async fn next_text(stream: &mut BoxStream<'static, Result<LogEntry>>) -> Option<String> {
        let entry = tokio::time::timeout(HANG, stream.next())
            .await
            .expect("the follow neither showed an entry nor ended")?;
        Some(
            String::from_utf8(entry.unwrap().bytes)
                .unwrap()
                .trim_end()
                .to_string(),
        )
    }

    async fn rest(mut stream: BoxStream<'static, Result<LogEntry>>) -> Vec<String> {
        let mut texts = Vec::new();
        while let Some(text) = next_text(&mut stream).await {
            texts.push(text);
        }
        texts
    }

    fn follow(
        path: &Path,
        options: ReadOptions,
    ) -> (BoxStream<'static, Result<LogEntry>>, oneshot::Sender<()>) {
        let (exit, exited) = oneshot::channel::<()>();
        let stream = LogReader::open(path).unwrap().follow(options, async move {
            let _ = exited.await;
        });
        (stream.boxed(), exit)
    }

    #[tokio::test]
    async fn a_snapshot_stream_ends_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = JsonFileWriter::open(&path, Rotation::default()).unwrap();
        for i in 0..600 {
            write(&mut w, &format!("{i}"));
        }
        let options = ReadOptions {
            tail: Some(300),
            ..ReadOptions::default()
        };
        let stream = LogReader::open(&path).unwrap().into_stream(options).boxed();
        let want: Vec<String> = (300..600).map(|i| i.to_string()).collect();
        assert_eq!(
            rest(stream).await,
            want,
            "more than one batch, then the end"
        );
    }

    #[tokio::test]
    async fn follows_across_rotations_and_ends_after_the_exit_once_the_writer_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let rotation = Rotation {
            max_size: Some(300),
            max_files: 50,
        };
        let mut w = JsonFileWriter::open(&path, rotation).unwrap();
        for i in 0..10 {
            write(&mut w, &format!("old {i}"));
        }
        let options = ReadOptions {
            tail: Some(2),
            ..ReadOptions::default()
        };
        let (mut stream, exit) = follow(&path, options);
        assert_eq!(next_text(&mut stream).await.unwrap(), "old 8");
        assert_eq!(next_text(&mut stream).await.unwrap(), "old 9");
        // New entries, across many rotations (several between two looks).
        for i in 0..40 {
            write(&mut w, &format!("new {i}"));
        }
        for i in 0..40 {
            assert_eq!(next_text(&mut stream).await.unwrap(), format!("new {i}"));
        }
        // The container exits; its logger still drains the pipes.
        exit.send(()).unwrap();
        tokio::time::sleep(POLL_INTERVAL * 3).await;
        for i in 0..5 {
            write(&mut w, &format!("after exit {i}"));
        }
        drop(w);
        let want: Vec<String> = (0..5).map(|i| format!("after exit {i}")).collect();
        assert_eq!(rest(stream).await, want);
    }

    #[tokio::test]
    async fn a_log_replaced_when_full_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let rotation = Rotation {
            max_size: Some(200),
            max_files: 1,
        };
        let mut w = JsonFileWriter::open(&path, rotation).unwrap();
        let (mut stream, exit) = follow(&path, ReadOptions::default());
        for i in 0..3 {
            write(&mut w, &format!("{i}"));
            assert_eq!(next_text(&mut stream).await.unwrap(), i.to_string());
        }
        // Each file holds three: this one goes to a fresh file.
        write(&mut w, "3");
        assert_eq!(next_text(&mut stream).await.unwrap(), "3");
        drop(w);
        exit.send(()).unwrap();
        assert!(rest(stream).await.is_empty());
    }

    #[tokio::test]
    async fn a_log_not_written_yet_is_waited_for() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let (mut stream, exit) = follow(&path, ReadOptions::default());
        tokio::time::sleep(POLL_INTERVAL * 2).await;
        let mut w = JsonFileWriter::open(&path, Rotation::default()).unwrap();
        write(&mut w, "first");
        assert_eq!(next_text(&mut stream).await.unwrap(), "first");
        drop(w);
        exit.send(()).unwrap();
        assert!(rest(stream).await.is_empty());
    }

    #[tokio::test]
    async fn an_exit_with_no_logger_ends_the_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = JsonFileWriter::open(&path, Rotation::default()).unwrap();
        write(&mut w, "only");
        drop(w);
        let (stream, exit) = follow(&path, ReadOptions::default());
        exit.send(()).unwrap();
        assert_eq!(rest(stream).await, ["only"]);
        // And a log that never existed.
        let (stream, exit) = follow(&dir.path().join("never.log"), ReadOptions::default());
        drop(exit);
        assert!(rest(stream).await.is_empty());
    }

    #[tokio::test]
    async fn until_ends_a_follow() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        let mut w = JsonFileWriter::open(&path, Rotation::default()).unwrap();
        write(&mut w, "before");
        let options = ReadOptions {
            until: Some(OffsetDateTime::now_utc()),
            ..ReadOptions::default()
        };
        let (mut stream, _exit) = follow(&path, options);
        assert_eq!(next_text(&mut stream).await.unwrap(), "before");
        tokio::time::sleep(Duration::from_millis(10)).await;
        write(&mut w, "after until");
        assert_eq!(next_text(&mut stream).await, None);
    }

    #[test]
    fn writer_gone_follows_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.log");
        assert!(writer_gone(&path).unwrap(), "no log, no writer");
        let rotation = Rotation {
            max_size: Some(1),
            max_files: 3,
        };
        let mut w = JsonFileWriter::open(&path, rotation).unwrap();
        assert!(!writer_gone(&path).unwrap());
        write(&mut w, "a");
        write(&mut w, "b");
        assert!(!writer_gone(&path).unwrap(), "after a rotation");
        drop(w);
        assert!(writer_gone(&path).unwrap());
    }
}
