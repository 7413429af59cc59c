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
    /// `None`: a snapshot. Otherwise the container's exit, until it came.
    exit: Option<Exit>,
    following: bool,
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
        following: exit.is_some(),
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
        let (following, check_writer) = (state.following, state.exited);
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
        state.finished = batch.finished || (batch.caught_up && !state.following);
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
