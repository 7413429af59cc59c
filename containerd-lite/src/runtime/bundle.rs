//! Task bundles: `<state>/<namespace>/<id>/` with the OCI `config.json`, an
//! empty `rootfs/` for the shim to mount on, and the files that let a later
//! berthd find the task's shim again: `shim-binary-path` and `runtime`
//! (ours) and `address` (written by the shim's `start`).

use crate::error::{Context, Error, Result};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

const SHIM_BINARY_FILE: &str = "shim-binary-path";
const RUNTIME_FILE: &str = "runtime";

#[derive(Debug, Clone)]
pub struct Bundle {
    path: PathBuf,
    namespace: String,
    id: String,
}

/// Namespaces and ids name directories: containerd's identifier rules keep
/// them from escaping (no `/`, no `..`).
fn validate(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 76
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} {name:?}: must be 1-76 letters, digits, '.', '_' or '-', starting with a letter or digit"
        )))
    }
}

/// Write `data` to `path` through a temp file and a rename.
fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data).context(format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).context(format!("writing {}", path.display()))
}

impl Bundle {
    /// Make the bundle of a new task. Fails with AlreadyExists if the
    /// directory is there (a task of that id exists or was not cleaned up).
    pub fn create(
        state_dir: &Path,
        namespace: &str,
        id: &str,
        spec: &[u8],
        shim_binary: &Path,
        runtime: &str,
    ) -> Result<Bundle> {
        validate("namespace", namespace)?;
        validate("task id", id)?;
        serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(spec).map_err(
            |e| Error::invalid(format!("task {id}: the OCI spec is not a JSON object: {e}")),
        )?;
        let parent = state_dir.join(namespace);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(&parent)
            .context(format!("creating {}", parent.display()))?;
        let path = parent.join(id);
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(&path)
            .context(format!("bundle {}", path.display()))?;
        let bundle = Bundle {
            path,
            namespace: namespace.to_string(),
            id: id.to_string(),
        };
        let filled = (|| {
            write_atomic(&bundle.path.join("config.json"), spec)?;
            std::fs::create_dir(bundle.path.join("rootfs")).context("creating rootfs/")?;
            write_atomic(
                &bundle.path.join(SHIM_BINARY_FILE),
                shim_binary.as_os_str().as_encoded_bytes(),
            )?;
            write_atomic(&bundle.path.join(RUNTIME_FILE), runtime.as_bytes())
        })();
        if let Err(e) = filled {
            let _ = bundle.remove();
            return Err(e);
        }
        Ok(bundle)
    }

    /// Every bundle under `state_dir` (a missing dir has none).
    pub fn scan(state_dir: &Path) -> Result<Vec<Bundle>> {
        let mut found = Vec::new();
        let namespaces = match std::fs::read_dir(state_dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
            Err(e) => return Err(Error::from(e).context(state_dir.display())),
        };
        for ns in namespaces.flatten() {
            let namespace = ns.file_name().to_string_lossy().into_owned();
            if validate("namespace", &namespace).is_err() || !ns.path().is_dir() {
                continue;
            }
            let Ok(tasks) = std::fs::read_dir(ns.path()) else {
                continue;
            };
            for task in tasks.flatten() {
                let id = task.file_name().to_string_lossy().into_owned();
                if validate("task id", &id).is_ok() && task.path().is_dir() {
                    found.push(Bundle {
                        path: task.path(),
                        namespace: namespace.clone(),
                        id,
                    });
                }
            }
        }
        Ok(found)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// The shim that serves this bundle (empty path if unknown).
    pub fn shim_binary(&self) -> PathBuf {
        std::fs::read_to_string(self.path.join(SHIM_BINARY_FILE))
            .map(|s| PathBuf::from(s.trim()))
            .unwrap_or_default()
    }

    pub fn runtime(&self) -> String {
        std::fs::read_to_string(self.path.join(RUNTIME_FILE))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// The shim's ttrpc address, as its `start` recorded it.
    pub fn address(&self) -> Result<String> {
        let path = self.path.join("address");
        let text = std::fs::read_to_string(&path).context(path.display())?;
        Ok(text.trim().to_string())
    }

    /// Remove the bundle (unmounting a rootfs a dead shim left mounted).
    pub fn remove(&self) -> Result<()> {
        let rootfs = self.path.join("rootfs");
        for _ in 0..16 {
            if nix::mount::umount2(&rootfs, nix::mount::MntFlags::MNT_DETACH).is_err() {
                break;
            }
        }
        match std::fs::remove_dir_all(&self.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                Err(Error::from(e).context(format!("removing bundle {}", self.path.display())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_scan_remove() {
        let state = tempfile::tempdir().unwrap();
        let b = Bundle::create(
            state.path(),
            "default",
            "c1",
            b"{}",
            Path::new("/bin/shim"),
            "io.containerd.berth.v2",
        )
        .unwrap();
        assert!(b.path().join("rootfs").is_dir());
        assert_eq!(b.shim_binary(), PathBuf::from("/bin/shim"));
        assert_eq!(b.runtime(), "io.containerd.berth.v2");
        let err = Bundle::create(
            state.path(),
            "default",
            "c1",
            b"{}",
            Path::new("/bin/shim"),
            "r",
        )
        .unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::AlreadyExists);
        let found = Bundle::scan(state.path()).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].namespace(), found[0].id()), ("default", "c1"));
        b.remove().unwrap();
        assert!(Bundle::scan(state.path()).unwrap().is_empty());
        assert!(Bundle::scan(&state.path().join("missing"))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn names_cannot_escape_and_specs_must_be_json() {
        let state = tempfile::tempdir().unwrap();
        for (ns, id) in [
            ("..", "x"),
            ("default", "../x"),
            ("default", "a/b"),
            ("", "x"),
            ("default", ""),
        ] {
            let err =
                Bundle::create(state.path(), ns, id, b"{}", Path::new("/s"), "r").unwrap_err();
            assert_eq!(
                err.kind,
                crate::error::ErrorKind::InvalidArgument,
                "{ns}/{id}"
            );
        }
        let err = Bundle::create(
            state.path(),
            "default",
            "x",
            b"not json",
            Path::new("/s"),
            "r",
        )
        .unwrap_err();
        assert_eq!(err.kind, crate::error::ErrorKind::InvalidArgument);
        assert!(!state.path().join("default/x").exists());
    }
}
