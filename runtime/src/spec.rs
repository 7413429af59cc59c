//! Loading and validating a bundle's `config.json`, before any side effect.
//!
//! Every error names the file and the JSON field that is wrong, e.g.
//! `/b/config.json: linux.namespaces[2].type: unknown variant "foo"`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, Spec};

use crate::error::{Error, Result};

/// A validated bundle: the parsed spec with absolute paths resolved.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub dir: PathBuf,
    /// Absolute, canonical path of the root filesystem.
    pub rootfs: PathBuf,
    pub spec: Spec,
}

/// The file name of a bundle's configuration.
pub const CONFIG_FILE: &str = "config.json";

impl Bundle {
    /// Read `<dir>/config.json`, parse it and validate what berth relies on.
    pub fn load(dir: &Path) -> Result<Bundle> {
        let dir = std::path::absolute(dir)
            .map_err(|e| Error::invalid(format!("bundle {}: {e}", dir.display())))?;
        let config = dir.join(CONFIG_FILE);
        let text = std::fs::read(&config)
            .map_err(|e| Error::invalid(format!("reading {}: {e}", config.display())))?;
        let spec =
            parse(&text).map_err(|msg| Error::invalid(format!("{}: {msg}", config.display())))?;
        let rootfs = resolve_rootfs(&dir, &spec).map_err(|e| e.context(config.display()))?;
        validate(&spec).map_err(|e| e.context(config.display()))?;
        Ok(Bundle { dir, rootfs, spec })
    }

    /// The namespaces the spec asks for (empty when there is no `linux`).
    pub fn namespaces(&self) -> &[LinuxNamespace] {
        namespaces(&self.spec)
    }
}

/// Parse config.json text; the error names the JSON path of the bad field.
/// Unknown capability names are dropped with a warning, as runc drops them.
pub fn parse(text: &[u8]) -> std::result::Result<Spec, String> {
    let mut value: serde_json::Value =
        serde_json::from_slice(text).map_err(|e| format!("invalid JSON: {e}"))?;
    if let Some(caps) = value.pointer_mut("/process/capabilities") {
        crate::capabilities::drop_unknown_names(caps);
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." || path == "?" {
            format!("invalid config: {inner}")
        } else {
            format!("{path}: {inner}")
        }
    })
}

/// The namespaces of a spec (empty when there is no `linux` section).
pub fn namespaces(spec: &Spec) -> &[LinuxNamespace] {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or(&[])
}

/// The entry for namespace `typ`, if the spec lists it.
pub fn namespace(spec: &Spec, typ: LinuxNamespaceType) -> Option<&LinuxNamespace> {
    namespaces(spec).iter().find(|ns| ns.typ() == typ)
}

fn resolve_rootfs(dir: &Path, spec: &Spec) -> Result<PathBuf> {
    let root = spec.root().as_ref().ok_or_else(|| {
        Error::invalid("root: missing (the bundle must name its root filesystem)")
    })?;
    let path = dir.join(root.path());
    let canonical = path
        .canonicalize()
        .map_err(|e| Error::invalid(format!("root.path {}: {e}", path.display())))?;
    if !canonical.is_dir() {
        return Err(Error::invalid(format!(
            "root.path {}: not a directory",
            path.display()
        )));
    }
    Ok(canonical)
}

fn validate(spec: &Spec) -> Result<()> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::invalid("process: missing"))?;
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err(Error::invalid("process.args: must name the program to run")),
    }
    if !process.cwd().is_absolute() {
        return Err(Error::invalid(format!(
            "process.cwd {:?}: must be an absolute path",
            process.cwd()
        )));
    }
    let mut seen = HashSet::new();
    for (i, ns) in namespaces(spec).iter().enumerate() {
        let typ = ns.typ();
        if !seen.insert(typ as u32) {
            return Err(Error::invalid(format!(
                "linux.namespaces[{i}]: namespace {typ} listed twice"
            )));
        }
        if let Some(path) = ns.path() {
            if let Err(e) = std::fs::metadata(path) {
                return Err(Error::invalid(format!(
                    "linux.namespaces[{i}].path {}: {e}",
                    path.display()
                )));
            }
        }
    }
    crate::userns::validate(spec)?;
    crate::userns::validate_mounts(spec)?;
    if let Some(offsets) = spec
        .linux()
        .as_ref()
        .and_then(|l| l.time_offsets().as_ref())
    {
        if !namespace(spec, LinuxNamespaceType::Time).is_some_and(|ns| ns.path().is_none()) {
            return Err(Error::invalid(
                "linux.timeOffsets: set, but linux.namespaces has no new time namespace",
            ));
        }
        for clock in offsets.keys() {
            if clock != "monotonic" && clock != "boottime" {
                return Err(Error::invalid(format!(
                    "linux.timeOffsets: unknown clock {clock:?} (monotonic or boottime)"
                )));
            }
        }
    }
    let private = |typ| namespace(spec, typ).is_some_and(|ns| ns.path().is_none());
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        && !private(LinuxNamespaceType::Uts)
    {
        return Err(Error::invalid(
            "hostname: setting it needs a new uts namespace (linux.namespaces)",
        ));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty())
        && !private(LinuxNamespaceType::Uts)
    {
        return Err(Error::invalid(
            "domainname: setting it needs a new uts namespace (linux.namespaces)",
        ));
    }
    if let Some(sysctl) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) {
        for key in sysctl.keys() {
            if key.is_empty() || key.split(['.', '/']).any(|c| c.is_empty() || c == "..") {
                return Err(Error::invalid(format!("linux.sysctl: invalid key {key:?}")));
            }
            check_sysctl_namespaced(spec, &sysctl_dotted(key))?;
        }
    }
    for (i, m) in spec.mounts().as_deref().unwrap_or(&[]).iter().enumerate() {
        if !m.destination().is_absolute() {
            return Err(Error::invalid(format!(
                "mounts[{i}].destination {:?}: must be an absolute path",
                m.destination()
            )));
        }
    }
    Ok(())
}

/// A sysctl key in its dotted form (`net.ipv4.conf.eth0/100.forwarding`):
/// a key whose first separator is `/` is in path form, where a `.` is part
/// of a name, and has its separators swapped, as sysctl(8) and runc read it.
pub fn sysctl_dotted(key: &str) -> String {
    match key.find(['.', '/']) {
        Some(i) if key.as_bytes()[i] == b'/' => swap_separators(key),
        _ => key.to_string(),
    }
}

/// The file under /proc/sys of a sysctl key in either form.
pub fn sysctl_path(key: &str) -> PathBuf {
    Path::new("/proc/sys").join(swap_separators(&sysctl_dotted(key)))
}

fn swap_separators(key: &str) -> String {
    key.chars()
        .map(|c| match c {
            '.' => '/',
            '/' => '.',
            c => c,
        })
        .collect()
}

/// A sysctl is written by root: only those that belong to a namespace the
/// container has of its own are allowed, or the write would change the
/// host (as runc decides). A namespace joined by path counts only when it
/// is not the runtime's own, the host's.
fn check_sysctl_namespaced(spec: &Spec, key: &str) -> Result<()> {
    const IPC: &[&str] = &[
        "kernel.msgmax",
        "kernel.msgmnb",
        "kernel.msgmni",
        "kernel.sem",
        "kernel.shmall",
        "kernel.shmmax",
        "kernel.shmmni",
        "kernel.shm_rmid_forced",
    ];
    let needs = if key.starts_with("net.") {
        LinuxNamespaceType::Network
    } else if IPC.contains(&key) || key.starts_with("fs.mqueue.") {
        LinuxNamespaceType::Ipc
    } else if key == "kernel.domainname" {
        LinuxNamespaceType::Uts
    } else if key == "kernel.hostname" {
        return Err(Error::invalid(format!(
            "linux.sysctl: {key} is not allowed: the container's hostname is the hostname field"
        )));
    } else {
        return Err(Error::invalid(format!(
            "linux.sysctl: {key} is not namespaced: setting it would change the host"
        )));
    };
    let Some(ns) = namespace(spec, needs) else {
        return Err(Error::invalid(format!(
            "linux.sysctl: {key} needs a {needs} namespace of the container's (linux.namespaces)"
        )));
    };
    if let Some(path) = ns.path() {
        if is_own_namespace(needs, path)? {
            return Err(Error::invalid(format!(
                "linux.sysctl: {key}: the {needs} namespace {} is the runtime's own: \
                 setting it would change the host",
                path.display()
            )));
        }
    }
    Ok(())
}

/// Whether the namespace file `path` is the namespace of type `typ` this
/// process is in.
fn is_own_namespace(typ: LinuxNamespaceType, path: &Path) -> Result<bool> {
    use std::os::unix::fs::MetadataExt;
    let name = match typ {
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Uts => "uts",
        other => {
            return Err(Error::internal(format!(
                "no sysctl lives in a {other} namespace"
            )))
        }
    };
    let stat = |p: &Path| {
        std::fs::metadata(p).map_err(|e| {
            Error::invalid(format!("linux.namespaces: {typ} path {}: {e}", p.display()))
        })
    };
    let theirs = stat(path)?;
    let ours = stat(&Path::new("/proc/self/ns").join(name))?;
    Ok(theirs.dev() == ours.dev() && theirs.ino() == ours.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_error_names_the_field() {
        let text =
            br#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"pid"},{"type":"bogus"}]}}"#;
        let err = parse(text).unwrap_err();
        assert!(err.starts_with("linux.namespaces[1].type"), "{err}");
    }

    #[test]
    fn sysctl_keys_in_either_form() {
        assert_eq!(sysctl_dotted("net.ipv4.ip_forward"), "net.ipv4.ip_forward");
        assert_eq!(sysctl_dotted("net/ipv4/ip_forward"), "net.ipv4.ip_forward");
        assert_eq!(
            sysctl_dotted("net/ipv4/conf/eth0.100/forwarding"),
            "net.ipv4.conf.eth0/100.forwarding"
        );
        for key in [
            "net.ipv4.conf.eth0/100.forwarding",
            "net/ipv4/conf/eth0.100/forwarding",
        ] {
            assert_eq!(
                sysctl_path(key),
                Path::new("/proc/sys/net/ipv4/conf/eth0.100/forwarding")
            );
        }
    }

    fn spec_with(namespaces: serde_json::Value, sysctl: serde_json::Value) -> Spec {
        let text = serde_json::json!({"ociVersion": "1.0.2",
            "process": {"user": {"uid": 0, "gid": 0}, "args": ["sh"], "cwd": "/"},
            "linux": {"namespaces": namespaces, "sysctl": sysctl}});
        parse(text.to_string().as_bytes()).expect("spec")
    }

    #[test]
    fn sysctls_only_in_namespaces_of_the_containers() {
        let own = serde_json::json!([{"type": "network"}, {"type": "ipc"}, {"type": "uts"}]);
        let host = serde_json::json!([{"type": "network", "path": "/proc/self/ns/net"},
            {"type": "ipc", "path": "/proc/self/ns/ipc"}, {"type": "uts"}]);
        let allowed = |ns: &serde_json::Value, key: &str| {
            validate(&spec_with(ns.clone(), serde_json::json!({key: "1"})))
                .map_err(|e| e.to_string())
        };
        for key in [
            "net.ipv4.ip_forward",
            "net/ipv4/ip_forward",
            "kernel.shmmax",
            "fs.mqueue.msg_max",
            "kernel.domainname",
        ] {
            allowed(&own, key).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        for (ns, key, why) in [
            (&own, "kernel.hostname", "hostname field"),
            (&own, "vm.swappiness", "not namespaced"),
            (&host, "net.ipv4.ip_forward", "runtime's own"),
            (&host, "kernel.shmmax", "runtime's own"),
            (
                &serde_json::json!([]),
                "kernel.domainname",
                "needs a uts namespace",
            ),
        ] {
            let err = allowed(ns, key).expect_err(key);
            assert!(err.contains(key) && err.contains(why), "{key}: {err}");
        }
    }

    #[test]
    fn unknown_capabilities_are_dropped() {
        let text = br#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},
            "capabilities":{"bounding":["CAP_KILL","CAP_UNKNOWN","UNKNOWN_CAP"],
            "effective":["CAP_FUTURE_ONE"],"ambient":[]}}}"#;
        let spec = parse(text).expect("unknown names are not an error");
        let caps = spec
            .process()
            .as_ref()
            .and_then(|p| p.capabilities().clone());
        let caps = caps.expect("capabilities");
        assert_eq!(caps.bounding().as_ref().map(|s| s.len()), Some(1));
        assert_eq!(caps.effective().as_ref().map(|s| s.len()), Some(0));
        // A name of the wrong type is still an error, naming the field.
        let err = parse(
            br#"{"ociVersion":"1.0.2","process":{"cwd":"/","user":{"uid":0,"gid":0},
            "capabilities":{"bounding":[7]}}}"#,
        )
        .unwrap_err();
        assert!(err.starts_with("process.capabilities.bounding"), "{err}");
    }

    #[test]
    fn malformed_json_is_reported() {
        let err = parse(b"{ not json").unwrap_err();
        assert!(err.contains("invalid JSON"), "{err}");
    }

    fn bundle_with(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("rootfs")).unwrap();
        std::fs::write(dir.path().join(CONFIG_FILE), config).unwrap();
        dir
    }

    const MINIMAL: &str = r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"},
        "process":{"user":{"uid":0,"gid":0},"args":["sh"],"cwd":"/"},
        "linux":{"namespaces":[{"type":"pid"},{"type":"uts"}]},"hostname":"h"}"#;

    #[test]
    fn loads_a_minimal_bundle() {
        let dir = bundle_with(MINIMAL);
        let b = Bundle::load(dir.path()).unwrap();
        assert_eq!(b.rootfs, dir.path().join("rootfs").canonicalize().unwrap());
        assert_eq!(b.namespaces().len(), 2);
    }

    #[test]
    fn missing_rootfs_names_the_path() {
        let dir = bundle_with(&MINIMAL.replace("\"rootfs\"", "\"nope\""));
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(err.message().contains("root.path"), "{err}");
        assert!(err.message().contains("nope"), "{err}");
    }

    #[test]
    fn missing_config_names_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(err.message().contains("config.json"), "{err}");
    }

    #[test]
    fn hostname_needs_uts() {
        let dir = bundle_with(&MINIMAL.replace(r#",{"type":"uts"}"#, ""));
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(err.message().contains("hostname"), "{err}");
    }

    #[test]
    fn sysctls_must_be_namespaced() {
        let with = |sysctl: &str| {
            MINIMAL.replace(
            r#""linux":{"namespaces":[{"type":"pid"},{"type":"uts"}]}"#,
            &format!(r#""linux":{{"namespaces":[{{"type":"pid"}},{{"type":"uts"}}],"sysctl":{sysctl}}}"#),
        )
        };
        let err = Bundle::load(bundle_with(&with(r#"{"vm.swappiness":"10"}"#)).path()).unwrap_err();
        assert!(err.message().contains("not namespaced"), "{err}");
        let err =
            Bundle::load(bundle_with(&with(r#"{"net.ipv4.ip_forward":"1"}"#)).path()).unwrap_err();
        assert!(err.message().contains("net namespace"), "{err}");
        Bundle::load(bundle_with(&with(r#"{"kernel.domainname":"x"}"#)).path()).unwrap();
    }

    #[test]
    fn duplicate_namespace_refused() {
        let dir =
            bundle_with(&MINIMAL.replace(r#"{"type":"uts"}"#, r#"{"type":"uts"},{"type":"pid"}"#));
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(err.message().contains("listed twice"), "{err}");
    }
}
