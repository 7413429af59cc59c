//! The default `config.json` written by `berth spec`.
//!
//! The generated configuration is the same as the one `runc spec` (1.1)
//! writes, except for the hostname (`"berth"`): a read-only `rootfs`
//! running `sh` on a terminal as root with three capabilities, the usual
//! `/proc`, `/dev`, `/dev/pts`, `/dev/shm`, `/dev/mqueue`, `/sys` and
//! `/sys/fs/cgroup` mounts, a deny-all device cgroup rule, fresh
//! pid/network/ipc/uts/mount namespaces and the usual masked and read-only
//! paths.
//!
//! With `rootless` the spec is adapted the way `runc spec --rootless` does
//! it: a user namespace is added that maps root in the container to the
//! caller's effective uid/gid, the network namespace is dropped (an
//! unprivileged user cannot configure one), `/sys` becomes a recursive bind
//! mount of the host's `/sys` (sysfs cannot be mounted without owning the
//! network namespace), `gid=` mount options are removed (the group may not
//! be mapped) and no cgroup resources are set.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use oci_spec::runtime::Spec;
use serde_json::{json, Value};

/// The OCI runtime-spec version written into generated configurations.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// The hostname of the default configuration.
pub const DEFAULT_HOSTNAME: &str = "berth";

/// The name of the bundle configuration file.
pub const CONFIG_FILE: &str = "config.json";

/// Errors from generating or writing the default spec.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// `config.json` already exists in the bundle; it is never overwritten.
    #[error("File {CONFIG_FILE} exists. Remove it first")]
    Exists(PathBuf),
    /// The generated JSON did not match the `oci-spec` model, or could not
    /// be serialized.
    #[error("default spec: {0}")]
    Json(#[from] serde_json::Error),
    /// Creating or writing `config.json` failed.
    #[error("writing {}: {source}", path.display())]
    Io {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

/// The default spec as the `oci-spec` model.
///
/// For `rootless`, the user namespace maps container root to the current
/// effective uid and gid. Only fails if the built-in configuration does not
/// deserialize, which the unit tests rule out.
pub fn default_spec(rootless: bool) -> Result<Spec, SpecError> {
    Ok(serde_json::from_value(default_spec_json(rootless))?)
}

/// The default spec as JSON, in the form `berth spec` writes it.
///
/// This is the source of truth for [`default_spec`]; it exists because the
/// `oci-spec` model keeps capabilities in a `HashSet`, whose serialization
/// order changes from run to run, while the file written should be stable.
pub fn default_spec_json(rootless: bool) -> Value {
    let ids = if rootless {
        Some((
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        ))
    } else {
        None
    };
    build(ids)
}

/// Writes the default spec to `dir/config.json` as pretty-printed JSON and
/// returns the path written.
///
/// Refuses to overwrite an existing file (the file is created with
/// `O_EXCL`, so this also holds against a concurrent writer). The file mode
/// is `0666` minus the umask, like `runc spec`.
pub fn write_default_spec(dir: &Path, rootless: bool) -> Result<PathBuf, SpecError> {
    let path = dir.join(CONFIG_FILE);
    let mut text = serde_json::to_string_pretty(&OrderedTop(&default_spec_json(rootless)))?;
    text.push('\n');

    let io_err = |source| SpecError::Io {
        path: path.clone(),
        source,
    };
    let mut file = match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(SpecError::Exists(path));
        }
        Err(e) => return Err(io_err(e)),
    };
    file.write_all(text.as_bytes()).map_err(io_err)?;
    file.sync_all().map_err(io_err)?;
    Ok(path)
}

/// Builds the spec; `rootless_ids` is `Some((uid, gid))` for a rootless
/// spec mapping container root to that host uid/gid.
fn build(rootless_ids: Option<(u32, u32)>) -> Value {
    let rootless = rootless_ids.is_some();
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);

    let mut devpts_opts = vec![
        "nosuid",
        "noexec",
        "newinstance",
        "ptmxmode=0666",
        "mode=0620",
    ];
    if !rootless {
        devpts_opts.push("gid=5");
    }
    let sys_mount = if rootless {
        json!({
            "destination": "/sys",
            "type": "none",
            "source": "/sys",
            "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]
        })
    } else {
        json!({
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"]
        })
    };

    let mut namespaces = vec![json!({"type": "pid"})];
    if !rootless {
        namespaces.push(json!({"type": "network"}));
    }
    namespaces.extend([
        json!({"type": "ipc"}),
        json!({"type": "uts"}),
        json!({"type": "mount"}),
    ]);
    if rootless {
        namespaces.push(json!({"type": "user"}));
    }

    let mut linux = json!({
        "namespaces": namespaces,
        "maskedPaths": [
            "/proc/acpi",
            "/proc/asound",
            "/proc/kcore",
            "/proc/keys",
            "/proc/latency_stats",
            "/proc/timer_list",
            "/proc/timer_stats",
            "/proc/sched_debug",
            "/sys/firmware",
            "/proc/scsi"
        ],
        "readonlyPaths": [
            "/proc/bus",
            "/proc/fs",
            "/proc/irq",
            "/proc/sys",
            "/proc/sysrq-trigger"
        ]
    });
    if let Some(obj) = linux.as_object_mut() {
        match rootless_ids {
            Some((uid, gid)) => {
                obj.insert(
                    "uidMappings".into(),
                    json!([{"containerID": 0, "hostID": uid, "size": 1}]),
                );
                obj.insert(
                    "gidMappings".into(),
                    json!([{"containerID": 0, "hostID": gid, "size": 1}]),
                );
            }
            None => {
                obj.insert(
                    "resources".into(),
                    json!({"devices": [{"allow": false, "access": "rwm"}]}),
                );
            }
        }
    }

    json!({
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": true,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "ambient": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": true},
        "hostname": DEFAULT_HOSTNAME,
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {
                "destination": "/dev",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]
            },
            {
                "destination": "/dev/pts",
                "type": "devpts",
                "source": "devpts",
                "options": devpts_opts
            },
            {
                "destination": "/dev/shm",
                "type": "tmpfs",
                "source": "shm",
                "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]
            },
            {
                "destination": "/dev/mqueue",
                "type": "mqueue",
                "source": "mqueue",
                "options": ["nosuid", "noexec", "nodev"]
            },
            sys_mount,
            {
                "destination": "/sys/fs/cgroup",
                "type": "cgroup",
                "source": "cgroup",
                "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]
            }
        ],
        "linux": linux
    })
}

/// Serializes a JSON object with the top-level keys in the conventional
/// `config.json` order (`ociVersion` first); nested objects keep
/// `serde_json`'s sorted key order.
struct OrderedTop<'a>(&'a Value);

/// Top-level keys in the order they are written; others follow, sorted.
const TOP_ORDER: &[&str] = &[
    "ociVersion",
    "process",
    "root",
    "hostname",
    "mounts",
    "hooks",
    "annotations",
    "linux",
];

impl serde::Serialize for OrderedTop<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let Value::Object(obj) = self.0 else {
            return self.0.serialize(serializer);
        };
        let mut map = serializer.serialize_map(Some(obj.len()))?;
        for key in TOP_ORDER {
            if let Some(v) = obj.get(*key) {
                map.serialize_entry(key, v)?;
            }
        }
        for (k, v) in obj {
            if !TOP_ORDER.contains(&k.as_str()) {
                map.serialize_entry(k, v)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxNamespaceType, Spec};

    fn ns_types(spec: &Spec) -> Vec<LinuxNamespaceType> {
        spec.linux()
            .as_ref()
            .and_then(|l| l.namespaces().clone())
            .unwrap_or_default()
            .iter()
            .map(|n| n.typ())
            .collect()
    }

    fn mount<'a>(spec: &'a Spec, dest: &str) -> &'a oci_spec::runtime::Mount {
        spec.mounts()
            .as_ref()
            .and_then(|m| m.iter().find(|m| m.destination() == Path::new(dest)))
            .unwrap_or_else(|| panic!("no mount at {dest}"))
    }

    #[test]
    fn default_spec_round_trips_and_has_key_fields() {
        let spec = default_spec(false).expect("default spec");
        let text = serde_json::to_string(&spec).expect("serialize");
        let again: Spec = serde_json::from_str(&text).expect("deserialize");
        assert_eq!(spec, again);

        assert_eq!(spec.version(), OCI_VERSION);
        assert_eq!(spec.hostname().as_deref(), Some(DEFAULT_HOSTNAME));
        let root = spec.root().as_ref().expect("root");
        assert_eq!(root.path(), Path::new("rootfs"));
        assert_eq!(root.readonly(), Some(true));

        let process = spec.process().as_ref().expect("process");
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(process.args().as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(process.cwd(), Path::new("/"));
        assert_eq!(process.no_new_privileges(), Some(true));
        let env = process.env().clone().unwrap_or_default();
        assert!(env.iter().any(|e| e.starts_with("PATH=")));
        assert!(env.iter().any(|e| e == "TERM=xterm"));
        let caps = process.capabilities().as_ref().expect("caps");
        assert_eq!(caps.bounding().as_ref().map(|c| c.len()), Some(3));
        assert_eq!(caps.bounding(), caps.effective());
        assert_eq!(caps.bounding(), caps.permitted());
        let rlimits = process.rlimits().clone().unwrap_or_default();
        assert_eq!(rlimits.len(), 1);
        assert_eq!(rlimits[0].hard(), 1024);
        assert_eq!(rlimits[0].soft(), 1024);

        assert_eq!(
            ns_types(&spec),
            vec![
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Network,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Mount,
            ]
        );
        let linux = spec.linux().as_ref().expect("linux");
        let devices = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().clone())
            .unwrap_or_default();
        assert_eq!(devices.len(), 1);
        assert!(!devices[0].allow());
        assert_eq!(devices[0].access().as_deref(), Some("rwm"));
        assert!(linux.uid_mappings().is_none());
        assert_eq!(mount(&spec, "/sys").typ().as_deref(), Some("sysfs"));
        let pts = mount(&spec, "/dev/pts")
            .options()
            .clone()
            .unwrap_or_default();
        assert!(pts.iter().any(|o| o == "gid=5"));
        assert_eq!(spec.mounts().as_ref().map(Vec::len), Some(7));
    }

    #[test]
    fn rootless_spec_adapts_namespaces_mounts_and_resources() {
        let spec = default_spec(true).expect("rootless spec");
        assert_eq!(
            ns_types(&spec),
            vec![
                LinuxNamespaceType::Pid,
                LinuxNamespaceType::Ipc,
                LinuxNamespaceType::Uts,
                LinuxNamespaceType::Mount,
                LinuxNamespaceType::User,
            ]
        );
        let linux = spec.linux().as_ref().expect("linux");
        assert!(linux.resources().is_none());
        let uid_map = linux.uid_mappings().clone().unwrap_or_default();
        let gid_map = linux.gid_mappings().clone().unwrap_or_default();
        assert_eq!(uid_map.len(), 1);
        assert_eq!(uid_map[0].container_id(), 0);
        assert_eq!(uid_map[0].host_id(), nix::unistd::geteuid().as_raw());
        assert_eq!(uid_map[0].size(), 1);
        assert_eq!(gid_map.len(), 1);
        assert_eq!(gid_map[0].host_id(), nix::unistd::getegid().as_raw());

        let sys = mount(&spec, "/sys");
        assert_eq!(sys.typ().as_deref(), Some("none"));
        assert_eq!(sys.source().as_deref(), Some(Path::new("/sys")));
        assert!(sys
            .options()
            .as_ref()
            .is_some_and(|o| o.iter().any(|o| o == "rbind")));
        for m in spec.mounts().as_ref().expect("mounts") {
            for o in m.options().as_ref().into_iter().flatten() {
                assert!(!o.starts_with("gid="), "{o} on {:?}", m.destination());
            }
        }
    }

    #[test]
    fn rootless_maps_given_ids() {
        let v = build(Some((1000, 1001)));
        assert_eq!(v["linux"]["uidMappings"][0]["hostID"], 1000);
        assert_eq!(v["linux"]["gidMappings"][0]["hostID"], 1001);
    }

    #[test]
    fn write_refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_default_spec(dir.path(), false).expect("first write");
        assert_eq!(path, dir.path().join("config.json"));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.starts_with("{\n  \"ociVersion\""), "{text}");
        let spec: Spec = serde_json::from_str(&text).expect("parse written");
        assert_eq!(spec, default_spec(false).expect("spec"));

        std::fs::write(&path, "sentinel").expect("overwrite for test");
        let err = write_default_spec(dir.path(), true).expect_err("must refuse");
        assert!(matches!(err, SpecError::Exists(_)));
        assert_eq!(err.to_string(), "File config.json exists. Remove it first");
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "sentinel");
    }

    #[test]
    fn write_into_missing_dir_is_io_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = write_default_spec(&dir.path().join("nope"), false).expect_err("no dir");
        assert!(matches!(err, SpecError::Io { .. }), "{err}");
    }

    /// Normalizes a spec for comparison with runc: drops the hostname,
    /// truncates `ociVersion` to major.minor, and sorts capability sets.
    fn normalize(mut v: Value) -> Value {
        if let Some(obj) = v.as_object_mut() {
            obj.remove("hostname");
            if let Some(Value::String(ver)) = obj.get_mut("ociVersion") {
                *ver = ver.split('.').take(2).collect::<Vec<_>>().join(".");
            }
        }
        if let Some(Value::Object(caps)) = v.pointer_mut("/process/capabilities") {
            for set in caps.values_mut() {
                if let Value::Array(a) = set {
                    a.sort_by(|x, y| x.as_str().cmp(&y.as_str()));
                }
            }
        }
        v
    }

    fn compare_with_runc(rootless: bool) {
        let runc = Path::new("/usr/sbin/runc");
        if !runc.exists() {
            eprintln!("skipping: {} not installed", runc.display());
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = std::process::Command::new(runc);
        cmd.arg("spec").current_dir(dir.path());
        if rootless {
            cmd.arg("--rootless");
        }
        let out = cmd.output().expect("run runc spec");
        assert!(out.status.success(), "runc spec failed: {out:?}");
        let theirs: Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("config.json")).expect("read runc config"),
        )
        .expect("parse runc config");

        let ours_dir = tempfile::tempdir().expect("tempdir");
        let ours_path = write_default_spec(ours_dir.path(), rootless).expect("write ours");
        let ours: Value =
            serde_json::from_slice(&std::fs::read(ours_path).expect("read ours")).expect("parse");
        assert_eq!(normalize(ours), normalize(theirs));
    }

    #[test]
    fn matches_runc_spec() {
        compare_with_runc(false);
    }

    #[test]
    fn matches_runc_spec_rootless() {
        compare_with_runc(true);
    }
}
