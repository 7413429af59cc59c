//! `berth features`: what this runtime supports, in the JSON shape of the
//! OCI runtime-spec "features" document (the one `runc features` prints).
//!
//! Callers such as containerd use this document to decide what they may put
//! into `config.json`. Everything here describes what berth is *built* to
//! handle, not what the host currently offers (the one exception is
//! `seccomp.supportedFlags`, which by definition depends on the kernel).

use std::collections::BTreeMap;

use serde_json::{json, Value};

/// Oldest OCI runtime-spec version accepted in `config.json`.
pub const OCI_VERSION_MIN: &str = "1.0.0";

/// Newest OCI runtime-spec version understood (the one `berth spec` writes).
pub const OCI_VERSION_MAX: &str = crate::default_spec::OCI_VERSION;

/// Prefix of the implementation-specific annotations.
pub const ANNOTATION_PREFIX: &str = "io.berth.";

/// Hook kinds the runtime runs, in lifecycle order.
pub const HOOKS: &[&str] = &[
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// Mount options (generic `mount(2)` flags and propagation/bind keywords)
/// recognised in `config.json` mounts, sorted. Filesystem-specific data
/// options such as `mode=755` are passed through and are not listed.
pub const MOUNT_OPTIONS: &[&str] = &[
    "acl",
    "async",
    "atime",
    "bind",
    "defaults",
    "dev",
    "diratime",
    "dirsync",
    "exec",
    "idmap",
    "iversion",
    "lazytime",
    "loud",
    "mand",
    "noacl",
    "noatime",
    "nodev",
    "nodiratime",
    "noexec",
    "noiversion",
    "nolazytime",
    "nomand",
    "norelatime",
    "nostrictatime",
    "nosuid",
    "nosymfollow",
    "private",
    "ratime",
    "rbind",
    "rdev",
    "rdiratime",
    "relatime",
    "remount",
    "rexec",
    "ridmap",
    "rnoatime",
    "rnodev",
    "rnodiratime",
    "rnoexec",
    "rnorelatime",
    "rnostrictatime",
    "rnosuid",
    "rnosymfollow",
    "ro",
    "rprivate",
    "rrelatime",
    "rro",
    "rrw",
    "rshared",
    "rslave",
    "rstrictatime",
    "rsuid",
    "rsymfollow",
    "runbindable",
    "rw",
    "shared",
    "silent",
    "slave",
    "strictatime",
    "suid",
    "symfollow",
    "sync",
    "tmpcopyup",
    "unbindable",
];

/// Namespace types that can be created or joined, sorted.
pub const NAMESPACES: &[&str] = &[
    "cgroup", "ipc", "mount", "network", "pid", "time", "user", "uts",
];

/// Seccomp filter flags recognised in `linux.seccomp.flags`, with the
/// kernel version (major, minor) that introduced each.
const SECCOMP_FLAGS: &[(&str, (u32, u32))] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", (3, 17)),
    ("SECCOMP_FILTER_FLAG_LOG", (4, 14)),
    ("SECCOMP_FILTER_FLAG_SPEC_ALLOW", (4, 17)),
];

/// All capability names known to the runtime (`CAP_...`), ordered by
/// capability number like `runc features`.
pub fn capabilities() -> Vec<String> {
    let mut all: Vec<caps::Capability> = caps::all().into_iter().collect();
    all.sort_by_key(|c| c.index());
    all.iter().map(ToString::to_string).collect()
}

/// Implementation-specific annotations: version, commit and whether
/// checkpoint/restore is available.
pub fn annotations() -> BTreeMap<String, String> {
    let commit = option_env!("BERTH_GIT_COMMIT").unwrap_or("unknown");
    [
        ("version", env!("CARGO_PKG_VERSION")),
        ("commit", commit),
        ("checkpoint.enabled", "false"),
    ]
    .into_iter()
    .map(|(k, v)| (format!("{ANNOTATION_PREFIX}{k}"), v.to_string()))
    .collect()
}

/// Parses `major.minor` from a kernel release string like `6.18.0-1-amd64`.
fn parse_kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor_digits: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor_digits.parse().ok()?))
}

/// Known flags supported by a kernel of the given version.
fn supported_seccomp_flags(kernel: (u32, u32)) -> Vec<&'static str> {
    SECCOMP_FLAGS
        .iter()
        .filter(|(_, since)| kernel >= *since)
        .map(|(name, _)| *name)
        .collect()
}

/// The running kernel's `(major, minor)` version, if it can be determined.
fn kernel_version() -> Option<(u32, u32)> {
    let uts = nix::sys::utsname::uname().ok()?;
    parse_kernel_version(uts.release().to_str()?)
}

/// The features document printed by `berth features`.
///
/// Keys follow the runtime-spec `features.md` schema (camelCase, as
/// `runc features` prints them). `seccomp.supportedFlags` is omitted when
/// the kernel version cannot be determined ("unknown" in the schema).
pub fn features() -> Value {
    let known_flags: Vec<&str> = SECCOMP_FLAGS.iter().map(|(name, _)| *name).collect();
    let mut seccomp = json!({
        "enabled": true,
        "actions": crate::seccomp::supported_actions(),
        "operators": crate::seccomp::supported_operators(),
        "archs": crate::seccomp::supported_archs(),
        "knownFlags": known_flags,
    });
    if let (Some(kernel), Some(obj)) = (kernel_version(), seccomp.as_object_mut()) {
        obj.insert(
            "supportedFlags".into(),
            json!(supported_seccomp_flags(kernel)),
        );
    }

    json!({
        "ociVersionMin": OCI_VERSION_MIN,
        "ociVersionMax": OCI_VERSION_MAX,
        "hooks": HOOKS,
        "mountOptions": MOUNT_OPTIONS,
        "linux": {
            "namespaces": NAMESPACES,
            "capabilities": capabilities(),
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false
            },
            "seccomp": seccomp,
            "mountExtensions": {"idmap": {"enabled": true}},
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": annotations()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_sorted(list: &[&str]) -> bool {
        list.windows(2).all(|w| w[0] < w[1])
    }

    #[test]
    fn serializes_with_runc_keys() {
        let f = features();
        let text = serde_json::to_string_pretty(&f).expect("serialize");
        let back: Value = serde_json::from_str(&text).expect("parse");
        assert_eq!(back, f);

        for key in [
            "ociVersionMin",
            "ociVersionMax",
            "hooks",
            "mountOptions",
            "linux",
            "annotations",
        ] {
            assert!(f.get(key).is_some(), "missing {key}");
        }
        for key in [
            "namespaces",
            "capabilities",
            "cgroup",
            "seccomp",
            "apparmor",
            "selinux",
        ] {
            assert!(f["linux"].get(key).is_some(), "missing linux.{key}");
        }
        for key in ["v1", "v2", "systemd", "systemdUser"] {
            assert!(f["linux"]["cgroup"][key].is_boolean(), "cgroup.{key}");
        }
        for key in ["enabled", "actions", "operators", "archs", "knownFlags"] {
            assert!(f["linux"]["seccomp"].get(key).is_some(), "seccomp.{key}");
        }
        assert_eq!(f["linux"]["mountExtensions"]["idmap"]["enabled"], true);
        assert_eq!(f["linux"]["apparmor"]["enabled"], false);
        assert_eq!(f["linux"]["selinux"]["enabled"], false);
        assert_eq!(
            f["annotations"]["io.berth.version"],
            env!("CARGO_PKG_VERSION")
        );
        assert!(f["annotations"]["io.berth.commit"].is_string());
    }

    #[test]
    fn matches_oci_spec_features_model() {
        let parsed: oci_spec::runtime::Features =
            serde_json::from_value(features()).expect("features must fit the oci-spec model");
        assert_eq!(parsed.oci_version_min(), OCI_VERSION_MIN);
        let linux = parsed.linux().as_ref().expect("linux");
        assert_eq!(
            linux.namespaces().as_ref().map(Vec::len),
            Some(NAMESPACES.len())
        );
        let seccomp = linux.seccomp().as_ref().expect("seccomp");
        assert_eq!(
            seccomp.actions().as_ref().map(Vec::len),
            Some(crate::seccomp::supported_actions().len())
        );
        assert_eq!(
            seccomp.archs().as_ref().map(Vec::len),
            Some(crate::seccomp::supported_archs().len())
        );
    }

    #[test]
    fn lists_are_sorted_and_complete() {
        assert!(is_sorted(MOUNT_OPTIONS));
        assert!(is_sorted(NAMESPACES));
        assert!(is_sorted(crate::seccomp::supported_actions()));
        assert!(is_sorted(crate::seccomp::supported_operators()));
        let caps = capabilities();
        assert_eq!(caps.first().map(String::as_str), Some("CAP_CHOWN"));
        assert!(caps.iter().all(|c| c.starts_with("CAP_")));
        assert!(caps.iter().any(|c| c == "CAP_SYS_ADMIN"));
        assert_eq!(caps.len(), caps::all().len());
    }

    #[test]
    fn kernel_version_parsing_and_flags() {
        assert_eq!(parse_kernel_version("6.18.0-1-amd64"), Some((6, 18)));
        assert_eq!(parse_kernel_version("4.9.337"), Some((4, 9)));
        assert_eq!(parse_kernel_version("5.15rc1"), Some((5, 15)));
        assert_eq!(parse_kernel_version("garbage"), None);
        assert_eq!(parse_kernel_version(""), None);
        assert_eq!(supported_seccomp_flags((3, 10)), Vec::<&str>::new());
        assert_eq!(
            supported_seccomp_flags((4, 14)),
            vec!["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_LOG"]
        );
        assert_eq!(supported_seccomp_flags((6, 1)).len(), SECCOMP_FLAGS.len());
    }

    /// Every key and every list entry runc prints (for the parts berth
    /// claims to support) is present in berth's output too.
    #[test]
    fn covers_runc_features() {
        let runc = std::path::Path::new("/usr/sbin/runc");
        if !runc.exists() {
            eprintln!("skipping: {} not installed", runc.display());
            return;
        }
        let out = std::process::Command::new(runc)
            .arg("features")
            .output()
            .expect("run runc features");
        assert!(out.status.success(), "{out:?}");
        let theirs: Value = serde_json::from_slice(&out.stdout).expect("parse runc features");
        let ours = features();

        fn keys(v: &Value) -> Vec<&String> {
            v.as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default()
        }
        for key in keys(&theirs) {
            assert!(ours.get(key).is_some(), "missing top-level {key}");
        }
        for key in keys(&theirs["linux"]) {
            assert!(ours["linux"].get(key).is_some(), "missing linux.{key}");
        }
        for key in keys(&theirs["linux"]["cgroup"]) {
            assert!(ours["linux"]["cgroup"].get(key).is_some(), "cgroup.{key}");
        }
        assert_eq!(ours.pointer("/hooks"), theirs.pointer("/hooks"));
        // runc's mount options, plus the id-mapped mounts of spec 1.1
        // (runc 1.1 has none; 1.2 lists them too).
        let options = |v: &Value| -> Vec<String> {
            v["mountOptions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        };
        let mut expected = options(&theirs);
        for o in ["idmap", "ridmap"] {
            if !expected.iter().any(|e| e == o) {
                expected.push(o.to_string());
            }
        }
        expected.sort();
        assert_eq!(options(&ours), expected);
        // Every namespace runc supports, plus time (runc 1.1 has none).
        let names = |v: &Value| -> Vec<String> {
            v.pointer("/linux/namespaces")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str().map(str::to_string))
                .collect()
        };
        let mut expected = names(&theirs);
        expected.push("time".to_string());
        expected.sort();
        assert_eq!(names(&ours), expected);
        let ours_caps = &ours["linux"]["capabilities"];
        for cap in theirs["linux"]["capabilities"]
            .as_array()
            .into_iter()
            .flatten()
        {
            assert!(
                ours_caps.as_array().is_some_and(|a| a.contains(cap)),
                "missing capability {cap}"
            );
        }
    }
}
