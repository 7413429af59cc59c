//! The docker containers berthd knows: loaded from their directories at
//! start, looked up as dockerd does (full ID, name, unique ID prefix),
//! their names kept unique, and each one's record written back atomically
//! whenever it changes.
//!
//! Layout under `<root>/docker/containers/`:
//!
//! ```text
//! <id>/config.v2.json    the record (see `record`)
//! <id>/<id>-json.log     the json-file log (and its rotations)
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

use super::record::{Record, Status};
use super::stdin::StdinPipe;
use crate::error::Context;
use crate::{Error, Result};

/// The record's file name in a container's directory.
const RECORD_FILE: &str = "config.v2.json";

/// Where a container's life has got to, for `wait`: every exit bumps
/// `exits`; removal sets `removed`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub exits: u64,
    /// The code of the last exit.
    pub exit_code: i64,
    pub removed: bool,
}

/// One docker container: its record (in memory and on disk) and the
/// serialization of operations on it.
#[derive(Debug)]
pub struct Container {
    pub id: String,
    dir: PathBuf,
    record: Mutex<Record>,
    progress: watch::Sender<Progress>,
    /// Held across a lifecycle operation (start, stop, remove, ...), so
    /// two never interleave on one container.
    operation: tokio::sync::Mutex<()>,
    /// The write end of stdin while a task with `OpenStdin` runs.
    stdin: watch::Sender<Option<Arc<StdinPipe>>>,
    /// Set while an exited task is being cleaned up (its task deleted,
    /// its network torn down): starts and removals wait for the end.
    cleaning: watch::Sender<bool>,
}

impl Container {
    /// The container's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A copy of the record as it is now.
    pub fn record(&self) -> Record {
        self.lock().clone()
    }

    /// The state's status now.
    pub fn status(&self) -> Status {
        self.lock().state.status
    }

    /// Changes the record and writes it to disk before anyone else sees
    /// the change. On a write failure the record is left as it was.
    pub fn update<T>(&self, change: impl FnOnce(&mut Record) -> T) -> Result<T> {
        let mut record = self.lock();
        let mut changed = record.clone();
        let out = change(&mut changed);
        write_record(&self.dir, &changed)?;
        *record = changed;
        Ok(out)
    }

    /// Records an exit (for `wait` conditions `next-exit`/`not-running`).
    pub fn notify_exit(&self, exit_code: i64) {
        self.progress.send_modify(|p| {
            p.exits += 1;
            p.exit_code = exit_code;
        });
    }

    /// Watches exits and removal.
    pub fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Serializes lifecycle operations on this container.
    pub async fn operation(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.operation.lock().await
    }

    /// Marks the exited task's cleanup as started.
    pub fn begin_cleanup(&self) {
        self.cleaning.send_replace(true);
    }

    /// Marks the exited task's cleanup as finished.
    pub fn end_cleanup(&self) {
        self.cleaning.send_replace(false);
    }

    /// Resolves once no cleanup of an exited task is under way.
    pub async fn cleaned(&self) {
        let mut cleaning = self.cleaning.subscribe();
        let _ = cleaning.wait_for(|busy| !*busy).await;
    }

    /// The write end of the running task's stdin (`OpenStdin` only).
    pub fn stdin(&self) -> Option<Arc<StdinPipe>> {
        self.stdin.borrow().clone()
    }

    /// Sets (at start) or clears (at exit) the task's stdin.
    pub fn set_stdin(&self, stdin: Option<Arc<StdinPipe>>) {
        self.stdin.send_replace(stdin);
    }

    /// The task's stdin once it has one (an attach made before the start
    /// waits here); `None` if the container exits more than `seen` times
    /// (see [`Progress::exits`]) or is removed first.
    pub async fn stdin_once_started(&self, seen: u64) -> Option<Arc<StdinPipe>> {
        let mut stdin = self.stdin.subscribe();
        tokio::select! {
            ready = stdin.wait_for(Option::is_some) => ready.ok().and_then(|s| s.clone()),
            () = self.exited_after(seen) => None,
        }
    }

    /// Resolves once the container has exited more than `seen` times
    /// (see [`Progress::exits`]) or has been removed.
    pub async fn exited_after(&self, seen: u64) {
        let mut progress = self.progress();
        let _ = progress.wait_for(|p| p.exits > seen || p.removed).await;
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[derive(Debug, Default)]
struct Table {
    by_id: BTreeMap<String, Arc<Container>>,
    /// Name (without `/`) -> ID; names reserved by a create in progress
    /// are here before their container is.
    names: HashMap<String, String>,
}

/// Every docker container. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    table: Arc<Mutex<Table>>,
}

impl Registry {
    /// Loads every container under `dir` (created if missing). A directory
    /// without a readable record (a create cut short by a crash) is
    /// removed; one with an unreadable record is skipped with a warning.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Registry> {
        let dir = dir.into();
        DirBuilder::new()
            .recursive(true)
            .mode(0o710)
            .create(&dir)
            .context(format!("creating {}", dir.display()))?;
        let mut table = Table::default();
        for entry in std::fs::read_dir(&dir).context(format!("reading {}", dir.display()))? {
            let entry = entry.context(format!("reading {}", dir.display()))?;
            let path = entry.path();
            let file = path.join(RECORD_FILE);
            let bytes = match std::fs::read(&file) {
                Ok(bytes) => bytes,
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                    tracing::warn!(dir = %path.display(), "container directory without a record: removing it");
                    let _ = std::fs::remove_dir_all(&path);
                    continue;
                }
                Err(err) => {
                    tracing::warn!(file = %file.display(), "skipping container: {err}");
                    continue;
                }
            };
            let record: Record = match serde_json::from_slice(&bytes) {
                Ok(record) => record,
                Err(err) => {
                    tracing::warn!(file = %file.display(), "skipping container: unreadable record: {err}");
                    continue;
                }
            };
            table.names.insert(record.name.clone(), record.id.clone());
            let container = Arc::new(Container {
                id: record.id.clone(),
                dir: path,
                record: Mutex::new(record),
                progress: watch::channel(Progress::default()).0,
                operation: tokio::sync::Mutex::new(()),
                stdin: watch::channel(None).0,
                cleaning: watch::channel(false).0,
            });
            table.by_id.insert(container.id.clone(), container);
        }
        Ok(Registry {
            dir,
            table: Arc::new(Mutex::new(table)),
        })
    }

    /// Where container `id`'s directory is.
    pub fn dir_of(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// The container `text` names, as dockerd looks one up: a full ID, a
    /// name (with or without its `/`), or a prefix of exactly one ID.
    pub fn resolve(&self, text: &str) -> Result<Arc<Container>> {
        let table = self.lock();
        if let Some(container) = table.by_id.get(text) {
            return Ok(container.clone());
        }
        let name = text.strip_prefix('/').unwrap_or(text);
        if let Some(container) = table.names.get(name).and_then(|id| table.by_id.get(id)) {
            return Ok(container.clone());
        }
        if !text.is_empty() && text.bytes().all(|b| b.is_ascii_hexdigit()) {
            let mut matching = table
                .by_id
                .range(text.to_owned()..)
                .take_while(|(id, _)| id.starts_with(text));
            if let Some((_, first)) = matching.next() {
                if matching.next().is_some() {
                    return Err(Error::invalid(format!(
                        "multiple IDs found with provided prefix: {text}"
                    )));
                }
                return Ok(first.clone());
            }
        }
        Err(Error::not_found(format!("No such container: {text}")))
    }

    /// Every container, in no particular order.
    pub fn all(&self) -> Vec<Arc<Container>> {
        self.lock().by_id.values().cloned().collect()
    }

    /// Reserves `name` for container `id`. `AlreadyExists` with dockerd's
    /// message when another container has it.
    pub fn reserve_name(&self, name: &str, id: &str) -> Result<()> {
        let mut table = self.lock();
        match table.names.get(name) {
            Some(holder) if holder != id => Err(Error::already_exists(format!(
                "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". You have to remove (or rename) that container to be able to reuse that name."
            ))),
            _ => {
                table.names.insert(name.to_owned(), id.to_owned());
                Ok(())
            }
        }
    }

    /// Gives `name` back (a create that failed, a rename's old name).
    pub fn release_name(&self, name: &str, id: &str) {
        let mut table = self.lock();
        if table.names.get(name).is_some_and(|holder| holder == id) {
            table.names.remove(name);
        }
    }

    /// Whether `name` is taken.
    pub fn name_taken(&self, name: &str) -> bool {
        self.lock().names.contains_key(name)
    }

    /// Writes a new container's record (its directory must exist) and
    /// makes it visible. Its name must have been reserved.
    pub fn insert(&self, record: Record) -> Result<Arc<Container>> {
        let dir = self.dir_of(&record.id);
        write_record(&dir, &record)?;
        let container = Arc::new(Container {
            id: record.id.clone(),
            dir,
            record: Mutex::new(record),
            progress: watch::channel(Progress::default()).0,
            operation: tokio::sync::Mutex::new(()),
            stdin: watch::channel(None).0,
            cleaning: watch::channel(false).0,
        });
        self.lock()
            .by_id
            .insert(container.id.clone(), container.clone());
        Ok(container)
    }

    /// Renames a container: the new name is reserved, the record written,
    /// then the old name released.
    pub fn rename(&self, container: &Container, new_name: &str) -> Result<String> {
        self.reserve_name(new_name, &container.id)?;
        let old = match container
            .update(|record| std::mem::replace(&mut record.name, new_name.to_owned()))
        {
            Ok(old) => old,
            Err(err) => {
                self.release_name(new_name, &container.id);
                return Err(err);
            }
        };
        self.release_name(&old, &container.id);
        Ok(old)
    }

    /// Forgets a container and removes its directory (log included).
    /// Anyone waiting for its removal is told.
    pub fn remove(&self, container: &Container) -> Result<()> {
        let name = container.record().name;
        std::fs::remove_dir_all(&container.dir)
            .or_else(|err| match err.kind() {
                std::io::ErrorKind::NotFound => Ok(()),
                _ => Err(err),
            })
            .context(format!("removing {}", container.dir.display()))?;
        let mut table = self.lock();
        table.by_id.remove(&container.id);
        if table
            .names
            .get(&name)
            .is_some_and(|holder| *holder == container.id)
        {
            table.names.remove(&name);
        }
        drop(table);
        container.progress.send_modify(|p| p.removed = true);
        Ok(())
    }

    /// The IDs of the containers mounting volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.all()
            .into_iter()
            .filter(|container| {
                container
                    .lock()
                    .mounts
                    .iter()
                    .any(|m| m.name.as_deref() == Some(name))
            })
            .map(|container| container.id.clone())
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Writes `record` to `<dir>/config.v2.json` atomically.
fn write_record(dir: &Path, record: &Record) -> Result<()> {
    let bytes = serde_json::to_vec(record)
        .map_err(|err| Error::internal(format!("encoding container {}: {err}", record.id)))?;
    write_file_atomically(&dir.join(RECORD_FILE), &bytes)
}

/// Replaces the file at `path` with `bytes` atomically: a temp file in the
/// same directory, synced, then renamed over it.
pub(crate) fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut file = tempfile::NamedTempFile::new_in(dir)
        .context(format!("creating a temp file in {}", dir.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.as_file().sync_data())
        .context(format!("writing {}", path.display()))?;
    file.persist(path)
        .map_err(|err| Error::from(err.error).context(format!("writing {}", path.display())))?;
    Ok(())
}

/// A new container ID: 64 random hex characters whose 12-character short
/// form is not all digits (docker avoids IDs a CLI could read as a number).
pub fn new_id() -> String {
    loop {
        let id = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        if !id[..12].bytes().all(|b| b.is_ascii_digit()) {
            return id;
        }
    }
}

/// Checks a container name as dockerd does: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`
/// (after an optional leading `/`). Returns it without the `/`.
pub fn check_name(name: &str) -> Result<&str> {
    let bare = name.strip_prefix('/').unwrap_or(name);
    let mut chars = bare.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && bare.len() >= 2 {
        Ok(bare)
    } else {
        Err(Error::invalid(format!(
            "Invalid container name ({name}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )))
    }
}
