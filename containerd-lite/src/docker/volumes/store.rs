//! Docker's `local` volumes on disk, laid out as dockerd lays them out:
//! `<root>/volumes/<name>/_data` is what containers mount, and
//! `<root>/volumes/<name>/volume.json` what berthd keeps about it (labels,
//! creation time, whether a container made it anonymously).
//!
//! A volume is never removed while a container mounts it: removal checks
//! the containers (the caller's `in_use`) and the creates still in flight
//! (claims taken by [`Store::claim`] until the container is recorded),
//! under the store's lock.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::error::Context;
use crate::{Error, Result};

/// The file berthd keeps a volume's metadata in.
const META_FILE: &str = "volume.json";
/// The directory containers mount.
const DATA_DIR: &str = "_data";
/// The label dockerd (23 and later) puts on anonymous volumes.
pub const ANONYMOUS_LABEL: &str = "com.docker.volume.anonymous";

/// What is kept about one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// RFC 3339.
    pub created_at: String,
    /// Made for a container (`-v /path`, an image's `VOLUME`), named by a
    /// random ID; removed with the container by `docker rm -v` and `--rm`.
    pub anonymous: bool,
    /// Where containers mount it (filled in when read).
    #[serde(skip)]
    pub mountpoint: PathBuf,
}

/// Every volume. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
    /// Creates in flight: volume name -> how many.
    claims: Arc<Mutex<HashMap<String, usize>>>,
    /// One lock per volume being filled from an image, so two creates
    /// cannot both find it empty and copy into it.
    fills: Arc<Mutex<HashMap<String, Arc<Mutex<()>>>>>,
}

/// Volumes a container create is about to use; released when dropped
/// (after the container is recorded, or the create failed).
#[derive(Debug)]
pub struct Claims {
    store: Store,
    names: Vec<String>,
}

impl Drop for Claims {
    fn drop(&mut self) {
        let mut claims = self.store.lock();
        for name in &self.names {
            if let Some(count) = claims.get_mut(name) {
                *count -= 1;
                if *count == 0 {
                    claims.remove(name);
                }
            }
        }
    }
}

/// Checks a volume name as dockerd's local driver does.
pub fn check_name(name: &str) -> Result<()> {
    if name.len() < 2 {
        return Err(Error::invalid(format!(
            "volume name is too short, names should be at least two alphanumeric characters: {name:?}"
        )));
    }
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok {
        return Err(Error::invalid(format!(
            "{name:?} includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        )));
    }
    Ok(())
}

impl Store {
    /// The store under `dir` (made if missing).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store> {
        let dir = dir.into();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o701)
            .create(&dir)
            .context(format!("creating {}", dir.display()))?;
        Ok(Store {
            dir,
            claims: Arc::new(Mutex::new(HashMap::new())),
            fills: Arc::new(Mutex::new(HashMap::new())),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.claims.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The volume `name` (404 in dockerd's words when there is none).
    pub fn get(&self, name: &str) -> Result<Volume> {
        if check_name(name).is_err() {
            return Err(Error::not_found(format!("get {name}: no such volume")));
        }
        self.read(name)?
            .ok_or_else(|| Error::not_found(format!("get {name}: no such volume")))
    }

    fn read(&self, name: &str) -> Result<Option<Volume>> {
        let path = self.path_of(name).join(META_FILE);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(Error::from(err).context(format!("reading {}", path.display()))),
        };
        let mut volume: Volume = serde_json::from_slice(&bytes)
            .map_err(|err| Error::internal(format!("{}: {err}", path.display())))?;
        volume.mountpoint = self.path_of(name).join(DATA_DIR);
        Ok(Some(volume))
    }

    /// Every volume, by name.
    pub fn list(&self) -> Result<Vec<Volume>> {
        let mut volumes = Vec::new();
        let entries =
            std::fs::read_dir(&self.dir).context(format!("listing {}", self.dir.display()))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            match self.read(&name) {
                Ok(Some(volume)) => volumes.push(volume),
                Ok(None) => {}
                Err(err) => tracing::warn!("volume {name}: {err}"),
            }
        }
        volumes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(volumes)
    }

    /// Makes volume `name` unless it exists (then it is returned as it
    /// is); `created` says which.
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<(Volume, bool)> {
        check_name(name)?;
        let _guard = self.lock();
        if let Some(volume) = self.read(name)? {
            return Ok((volume, false));
        }
        let dir = self.path_of(name);
        let made = (|| -> Result<Volume> {
            std::fs::DirBuilder::new()
                .mode(0o701)
                .create(&dir)
                .context(format!("creating {}", dir.display()))?;
            let data = dir.join(DATA_DIR);
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&data)
                .context(format!("creating {}", data.display()))?;
            let volume = Volume {
                name: name.to_owned(),
                labels,
                created_at: crate::docker::containers::record::now_rfc3339(),
                anonymous,
                mountpoint: data,
            };
            let bytes = serde_json::to_vec(&volume)
                .map_err(|err| Error::internal(format!("encoding volume {name}: {err}")))?;
            crate::docker::containers::registry::write_file_atomically(
                &dir.join(META_FILE),
                &bytes,
            )?;
            Ok(volume)
        })();
        match made {
            Ok(volume) => Ok((volume, true)),
            Err(err) => {
                let _ = std::fs::remove_dir_all(&dir);
                Err(err)
            }
        }
    }

    /// The lock to hold while checking whether volume `name` is empty and
    /// filling it. Locks of volumes nobody fills are dropped as they go.
    pub fn fill_lock(&self, name: &str) -> Arc<Mutex<()>> {
        let mut fills = self.fills.lock().unwrap_or_else(|e| e.into_inner());
        fills.retain(|_, lock| Arc::strong_count(lock) > 1);
        fills.entry(name.to_owned()).or_default().clone()
    }

    /// Marks `names` as about to be mounted by a container being made.
    pub fn claim(&self, names: Vec<String>) -> Claims {
        let mut claims = self.lock();
        for name in &names {
            *claims.entry(name.clone()).or_default() += 1;
        }
        drop(claims);
        Claims {
            store: self.clone(),
            names,
        }
    }

    /// Removes volume `name` and its data; refused (409) while `in_use`
    /// names containers or a create claims it.
    pub fn remove(&self, name: &str, in_use: impl FnOnce() -> Vec<String>) -> Result<()> {
        let claims = self.lock();
        if self.read(name)?.is_none() {
            return Err(Error::not_found(format!("get {name}: no such volume")));
        }
        let users = in_use();
        if !users.is_empty() || claims.contains_key(name) {
            return Err(Error::precondition(format!(
                "remove {name}: volume is in use - [{}]",
                users.join(", ")
            )));
        }
        let dir = self.path_of(name);
        // The metadata goes first: a removal cut short leaves no volume
        // that looks whole.
        std::fs::remove_file(dir.join(META_FILE)).context(format!("removing volume {name}"))?;
        std::fs::remove_dir_all(&dir).context(format!("removing {}", dir.display()))?;
        Ok(())
    }

    /// The bytes under the volume's data directory (each inode once).
    pub fn size(&self, volume: &Volume) -> u64 {
        let mut seen = std::collections::HashSet::new();
        walkdir::WalkDir::new(&volume.mountpoint)
            .follow_links(false)
            .into_iter()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .filter(|m| seen.insert((m.dev(), m.ino())))
            .map(|m| m.blocks() * 512)
            .sum()
    }
}

/// Whether `dir` has no entries (a missing one counts as empty).
pub fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_as_the_local_driver_takes_them() {
        for good in ["ab", "data", "my_vol.1-x", "0abc"] {
            check_name(good).unwrap();
        }
        for bad in ["a", "", "-ab", "_ab", "a/b", "a b", "../x", "/abs"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn one_fill_lock_per_volume_while_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store.fill_lock("data");
        let held = first.lock().unwrap();
        let second = store.fill_lock("data");
        assert!(Arc::ptr_eq(&first, &second));
        assert!(second.try_lock().is_err(), "the second filler must wait");
        drop(held);
        drop((first, second));
        let _other = store.fill_lock("other");
        let fills = store.fills.lock().unwrap();
        assert!(!fills.contains_key("data"), "an unused lock is dropped");
    }

    #[test]
    fn create_is_idempotent_and_removal_respects_users_and_claims() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("volumes")).unwrap();
        let (made, created) = store
            .create("data", BTreeMap::from([("k".into(), "v".into())]), false)
            .unwrap();
        assert!(created);
        assert!(made.mountpoint.is_dir());
        std::fs::write(made.mountpoint.join("f"), b"x").unwrap();
        let (again, created) = store.create("data", BTreeMap::new(), false).unwrap();
        assert!(!created);
        assert_eq!(again.labels["k"], "v", "the first create's labels stay");
        assert_eq!(store.list().unwrap().len(), 1);
        assert!(store.size(&again) > 0);

        let err = store.remove("data", || vec!["abc".into()]).unwrap_err();
        assert!(err.message.contains("volume is in use - [abc]"), "{err}");
        let claims = store.claim(vec!["data".into()]);
        assert!(store.remove("data", Vec::new).is_err(), "claimed");
        drop(claims);
        store.remove("data", Vec::new).unwrap();
        assert!(!dir.path().join("volumes/data").exists());
        assert_eq!(
            store.get("data").unwrap_err().kind,
            crate::error::ErrorKind::NotFound
        );
        assert_eq!(
            store.remove("data", Vec::new).unwrap_err().kind,
            crate::error::ErrorKind::NotFound
        );
    }
}
