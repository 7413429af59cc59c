//! The runtime options containerd passes in `CreateTaskRequest.options`
//! (`containerd.runc.v1.Options`, the runc shim's, so existing containerd
//! configs work unchanged), and their copy in the bundle that `delete` reads
//! after the serving shim is gone.

use crate::error::{Context, Error, Result};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::Message;
use containerd_shim_protos::shim::oci::Options as RuncOptions;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// Type URLs containerd uses for the runc options message.
const OPTIONS_TYPE_URLS: &[&str] = &[
    "containerd.runc.v1.Options",
    "types.containerd.io/containerd.runc.v1.Options",
];

/// Where runtime state lives unless `Root` says otherwise:
/// `/run/containerd/<binary name>/<namespace>`, as the runc shim does.
const DEFAULT_ROOT_PARENT: &str = "/run/containerd";

/// The options the shim acts on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Runtime binary: a name looked up on PATH, or a path.
    pub binary_name: String,
    /// The runtime's `--root` (state dir) without the namespace.
    pub root: String,
    pub no_pivot_root: bool,
    pub no_new_keyring: bool,
    pub systemd_cgroup: bool,
    pub io_uid: u32,
    pub io_gid: u32,
    pub shim_cgroup: String,
}

pub const DEFAULT_BINARY: &str = "berth";
const STORED: &str = "options.json";

impl Options {
    /// Decode the `options` Any of a create request; absent means defaults.
    pub fn from_any(any: Option<&Any>) -> Result<Options> {
        let Some(any) = any else {
            return Ok(Options::default());
        };
        if any.type_url.is_empty() && any.value.is_empty() {
            return Ok(Options::default());
        }
        if !OPTIONS_TYPE_URLS.contains(&any.type_url.as_str()) {
            return Err(Error::invalid(format!(
                "options: unsupported type {:?} (want containerd.runc.v1.Options)",
                any.type_url
            )));
        }
        let raw = RuncOptions::parse_from_bytes(&any.value).map_err(|e| {
            Error::invalid(format!(
                "options: malformed containerd.runc.v1.Options: {e}"
            ))
        })?;
        Ok(Options {
            binary_name: raw.binary_name,
            root: raw.root,
            no_pivot_root: raw.no_pivot_root,
            no_new_keyring: raw.no_new_keyring,
            systemd_cgroup: raw.systemd_cgroup,
            io_uid: raw.io_uid,
            io_gid: raw.io_gid,
            shim_cgroup: raw.shim_cgroup,
        })
    }

    pub fn binary(&self) -> &str {
        if self.binary_name.is_empty() {
            DEFAULT_BINARY
        } else {
            &self.binary_name
        }
    }

    /// The runtime's `--root` for containers of `namespace`.
    pub fn runtime_root(&self, namespace: &str) -> PathBuf {
        let parent = if self.root.is_empty() {
            let name = Path::new(self.binary())
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| DEFAULT_BINARY.to_string());
            Path::new(DEFAULT_ROOT_PARENT).join(name)
        } else {
            PathBuf::from(&self.root)
        };
        parent.join(namespace)
    }

    /// Keep a copy in the bundle for `delete`.
    pub fn store(&self, bundle: &Path) -> Result<()> {
        let json = serde_json::to_vec(self).map_err(|e| Error::internal(e.to_string()))?;
        let path = bundle.join(STORED);
        let tmp = bundle.join(".options.json.tmp");
        std::fs::write(&tmp, json).context(format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &path).context(format!("writing {}", path.display()))
    }

    /// The copy `store` left, or defaults if there is none.
    pub fn load(bundle: &Path) -> Result<Options> {
        let path = bundle.join(STORED);
        match std::fs::read(&path) {
            Ok(data) => serde_json::from_slice(&data)
                .map_err(|e| Error::invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Options::default()),
            Err(e) => Err(Error::from(e).context(path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(opts: &RuncOptions) -> Any {
        Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: opts.write_to_bytes().unwrap(),
            ..Default::default()
        }
    }

    #[test]
    fn decodes_binary_and_root() {
        let mut raw = RuncOptions::new();
        raw.binary_name = "/usr/bin/crun".into();
        raw.root = "/run/x".into();
        raw.io_uid = 1000;
        let o = Options::from_any(Some(&any(&raw))).unwrap();
        assert_eq!(o.binary(), "/usr/bin/crun");
        assert_eq!(o.io_uid, 1000);
        assert_eq!(o.runtime_root("k8s.io"), PathBuf::from("/run/x/k8s.io"));
    }

    #[test]
    fn defaults_to_berth_under_run_containerd() {
        let o = Options::from_any(None).unwrap();
        assert_eq!(o.binary(), "berth");
        assert_eq!(
            o.runtime_root("default"),
            PathBuf::from("/run/containerd/berth/default")
        );
        let runc = Options {
            binary_name: "/usr/sbin/runc".into(),
            ..Default::default()
        };
        assert_eq!(
            runc.runtime_root("n"),
            PathBuf::from("/run/containerd/runc/n")
        );
    }

    #[test]
    fn bad_payloads_are_invalid_argument() {
        let wrong_type = Any {
            type_url: "something.Else".into(),
            value: vec![1],
            ..Default::default()
        };
        let e = Options::from_any(Some(&wrong_type)).unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::InvalidArgument);
        assert!(e.message.contains("something.Else"), "{}", e.message);
        let garbage = Any {
            type_url: "containerd.runc.v1.Options".into(),
            value: vec![0xff, 0xff, 0xff],
            ..Default::default()
        };
        let e = Options::from_any(Some(&garbage)).unwrap_err();
        assert_eq!(e.kind, crate::error::Kind::InvalidArgument);
    }

    #[test]
    fn store_and_load() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Options::load(dir.path()).unwrap(), Options::default());
        let o = Options {
            binary_name: "runc".into(),
            root: "/r".into(),
            ..Default::default()
        };
        o.store(dir.path()).unwrap();
        assert_eq!(Options::load(dir.path()).unwrap(), o);
    }
}
