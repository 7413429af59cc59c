//! OCI bundles built from busybox-static, with a `config.json` generated here.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

/// Host path of the static busybox used for every rootfs.
pub const BUSYBOX: &str = "/bin/busybox";

/// Parent cgroup (relative to each hierarchy root) of all test containers.
pub const CGROUP_PARENT: &str = "berth-integ";

fn applets() -> &'static [String] {
    static APPLETS: OnceLock<Vec<String>> = OnceLock::new();
    APPLETS.get_or_init(|| {
        let out = std::process::Command::new(BUSYBOX)
            .arg("--list")
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {BUSYBOX} --list (install busybox-static): {e}")
            });
        assert!(out.status.success(), "{BUSYBOX} --list failed");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|a| !a.is_empty() && *a != "busybox" && !a.contains('/'))
            .map(String::from)
            .collect()
    })
}

/// Populates `rootfs` with busybox, its applet links and a minimal /etc.
pub fn make_rootfs(rootfs: &Path) -> std::io::Result<()> {
    for d in [
        "bin", "etc", "proc", "sys", "dev", "tmp", "root", "home", "var", "run", "mnt",
    ] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    std::fs::set_permissions(rootfs.join("tmp"), std::fs::Permissions::from_mode(0o1777))?;
    let bb = rootfs.join("bin/busybox");
    std::fs::copy(BUSYBOX, &bb)?;
    std::fs::set_permissions(&bb, std::fs::Permissions::from_mode(0o755))?;
    for a in applets() {
        let l = rootfs.join("bin").join(a);
        if !l.exists() {
            symlink("busybox", l)?;
        }
    }
    std::fs::write(
        rootfs.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:1000:1000:nobody:/home:/bin/sh\n",
    )?;
    std::fs::write(
        rootfs.join("etc/group"),
        "root:x:0:\nwheel:x:10:\ntty:x:5:\nusers:x:100:\nnobody:x:1000:\n",
    )?;
    std::fs::write(rootfs.join("etc/hostname"), "berth\n")?;
    Ok(())
}

/// A spec close to `runc spec`'s default, but with `terminal: false`, a
/// writable rootfs and an explicit `cgroupsPath` of `/berth-integ/<id>`.
pub fn default_spec(id: &str) -> Value {
    let caps = json!(["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": false,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh", "-c", "true"],
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": true
        },
        "root": {"path": "rootfs", "readonly": false},
        "hostname": "berth-test",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            {"destination": "/sys", "type": "sysfs", "source": "sysfs",
             "options": ["nosuid", "noexec", "nodev", "ro"]},
            {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
             "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]}
        ],
        "linux": {
            "cgroupsPath": format!("/{CGROUP_PARENT}/{id}"),
            "resources": {"devices": [{"allow": false, "access": "rwm"}]},
            "namespaces": [
                {"type": "pid"}, {"type": "network"}, {"type": "ipc"},
                {"type": "uts"}, {"type": "mount"}
            ],
            "maskedPaths": [
                "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys",
                "/proc/latency_stats", "/proc/timer_list", "/proc/timer_stats",
                "/proc/sched_debug", "/sys/firmware", "/proc/scsi"
            ],
            "readonlyPaths": [
                "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"
            ]
        }
    })
}

/// Sets `value` at the JSON pointer `ptr` (e.g. `/linux/resources/pids/limit`),
/// creating intermediate objects as needed.
pub fn set_pointer(root: &mut Value, ptr: &str, value: Value) {
    let mut cur = root;
    let parts: Vec<&str> = ptr.trim_start_matches('/').split('/').collect();
    let (last, init) = parts.split_last().expect("empty pointer");
    for p in init {
        if !cur.is_object() && !cur.is_array() {
            *cur = json!({});
        }
        cur = match cur {
            Value::Array(a) => {
                let i: usize = p.parse().expect("array index in pointer");
                &mut a[i]
            }
            Value::Object(m) => m.entry(p.to_string()).or_insert_with(|| json!({})),
            _ => unreachable!(),
        };
    }
    match cur {
        Value::Array(a) => {
            let i: usize = last.parse().expect("array index in pointer");
            a[i] = value;
        }
        Value::Object(m) => {
            m.insert(last.to_string(), value);
        }
        other => {
            *other = json!({ last.to_string(): value });
        }
    }
}

/// An OCI bundle in a temp dir: `rootfs/` plus a spec written on [`Bundle::write`].
#[derive(Debug)]
pub struct Bundle {
    /// The container id this bundle is meant for (unique per test run).
    pub id: String,
    dir: Arc<tempfile::TempDir>,
    path: PathBuf,
    /// The spec that [`Bundle::write`] serializes to `config.json`.
    pub spec: Value,
}

impl Bundle {
    /// Makes a bundle for `id` in a fresh temp dir.
    pub fn new(id: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("berth-it-bundle-")
            .tempdir()
            .expect("create bundle dir");
        let path = dir.path().canonicalize().expect("canonicalize bundle dir");
        make_rootfs(&path.join("rootfs")).expect("populate rootfs");
        Bundle {
            id: id.to_string(),
            dir: Arc::new(dir),
            path,
            spec: default_spec(id),
        }
    }

    /// Shared handle on the temp dir, so a harness can keep it alive.
    pub fn dir_handle(&self) -> Arc<tempfile::TempDir> {
        self.dir.clone()
    }

    /// The bundle directory (canonical).
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
    }

    pub fn config_path(&self) -> PathBuf {
        self.path.join("config.json")
    }

    /// Sets `process.args`.
    pub fn args(&mut self, args: &[&str]) -> &mut Self {
        self.spec["process"]["args"] = json!(args);
        self
    }

    /// Sets `process.args` to `sh -c SCRIPT`.
    pub fn sh(&mut self, script: &str) -> &mut Self {
        self.args(&["sh", "-c", script])
    }

    /// Appends `K=V` to `process.env`.
    pub fn env(&mut self, k: &str, v: &str) -> &mut Self {
        self.spec["process"]["env"]
            .as_array_mut()
            .expect("process.env array")
            .push(json!(format!("{k}={v}")));
        self
    }

    /// Sets a value at a JSON pointer, e.g. `set("/process/cwd", json!("/tmp"))`.
    pub fn set(&mut self, ptr: &str, value: Value) -> &mut Self {
        set_pointer(&mut self.spec, ptr, value);
        self
    }

    /// Arbitrary edit of the spec.
    pub fn with(&mut self, f: impl FnOnce(&mut Value)) -> &mut Self {
        f(&mut self.spec);
        self
    }

    /// Appends a mount.
    pub fn mount(&mut self, m: Value) -> &mut Self {
        self.spec["mounts"]
            .as_array_mut()
            .expect("mounts array")
            .push(m);
        self
    }

    /// Adds (or replaces) a namespace entry; `path` joins an existing one.
    pub fn namespace(&mut self, kind: &str, path: Option<&str>) -> &mut Self {
        let ns = self.spec["linux"]["namespaces"]
            .as_array_mut()
            .expect("namespaces array");
        ns.retain(|n| n["type"] != kind);
        let mut e = json!({"type": kind});
        if let Some(p) = path {
            e["path"] = json!(p);
        }
        ns.push(e);
        self
    }

    /// Removes a namespace entry.
    pub fn without_namespace(&mut self, kind: &str) -> &mut Self {
        if let Some(ns) = self.spec["linux"]["namespaces"].as_array_mut() {
            ns.retain(|n| n["type"] != kind);
        }
        self
    }

    /// Appends a hook of `kind` (`prestart`, `createRuntime`, ...).
    pub fn hook(&mut self, kind: &str, hook: Value) -> &mut Self {
        let hooks = &mut self.spec["hooks"];
        if !hooks.is_object() {
            *hooks = json!({});
        }
        let list = hooks
            .as_object_mut()
            .expect("hooks object")
            .entry(kind.to_string())
            .or_insert_with(|| json!([]));
        list.as_array_mut().expect("hook list").push(hook);
        self
    }

    /// Writes a file inside the rootfs (creating parents) with `mode`.
    pub fn rootfs_file(&self, rel: &str, contents: &str, mode: u32) -> PathBuf {
        let p = self.rootfs().join(rel.trim_start_matches('/'));
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).expect("mkdir in rootfs");
        }
        std::fs::write(&p, contents).expect("write rootfs file");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
        p
    }

    /// Creates a directory inside the rootfs.
    pub fn rootfs_dir(&self, rel: &str) -> PathBuf {
        let p = self.rootfs().join(rel.trim_start_matches('/'));
        std::fs::create_dir_all(&p).expect("mkdir in rootfs");
        p
    }

    /// Creates a directory in the bundle (outside the rootfs), e.g. for bind mounts.
    pub fn host_dir(&self, rel: &str) -> PathBuf {
        let p = self.path.join(rel);
        std::fs::create_dir_all(&p).expect("mkdir in bundle");
        p
    }

    /// Serializes the spec to `config.json`.
    pub fn write(&self) -> &Self {
        let text = serde_json::to_string_pretty(&self.spec).expect("serialize spec");
        std::fs::write(self.config_path(), text).expect("write config.json");
        self
    }
}
