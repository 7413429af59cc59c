//! Per-test harness: root gate, unique ids, private runtime root, leak checks.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::bundle::Bundle;
use crate::leak;
use crate::runtime::Runtime;

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// `name` in lowercase letters, digits and `-`, as ids and image names
/// accept it.
pub fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect()
}

/// A container id unique to this process: `berth-it-<name>-<pid>-<n>`.
pub fn unique_id(name: &str) -> String {
    let clean: String = slug(name).chars().take(24).collect();
    format!(
        "berth-it-{}-{}-{}",
        clean.trim_matches('-'),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    )
}

struct Tracked {
    id: String,
    path: PathBuf,
    _dir: Arc<tempfile::TempDir>,
}

/// Owns everything a test creates; on drop checks for leaks, cleans up, and
/// fails the test if something was left behind.
pub struct Harness {
    pub name: String,
    pub rt: Runtime,
    tracked: RefCell<Vec<Tracked>>,
    temps: RefCell<Vec<tempfile::TempDir>>,
}

impl Harness {
    /// Returns `None` (after printing a skip message) when not running as root.
    pub fn new(name: &str) -> Option<Self> {
        if !crate::is_root() {
            eprintln!("SKIP {name}: the integration tests need root");
            return None;
        }
        Some(Harness {
            name: name.to_string(),
            rt: Runtime::new(),
            tracked: RefCell::new(Vec::new()),
            temps: RefCell::new(Vec::new()),
        })
    }

    /// A new bundle with a fresh unique id, tracked for leak checks.
    pub fn bundle(&self) -> Bundle {
        let b = Bundle::new(&unique_id(&self.name));
        self.track(&b.id, b.path(), b.dir_handle());
        b
    }

    /// Tracks an extra container id using an existing bundle directory.
    pub fn track_id(&self, id: &str, bundle: &Bundle) {
        self.track(id, bundle.path(), bundle.dir_handle());
    }

    fn track(&self, id: &str, path: &Path, dir: Arc<tempfile::TempDir>) {
        self.tracked.borrow_mut().push(Tracked {
            id: id.to_string(),
            path: path.to_path_buf(),
            _dir: dir,
        });
    }

    /// A scratch directory on the host that lives as long as the harness.
    pub fn tempdir(&self) -> PathBuf {
        let d = tempfile::Builder::new()
            .prefix("berth-it-tmp-")
            .tempdir()
            .expect("tempdir");
        let p = d.path().canonicalize().expect("canonicalize");
        self.temps.borrow_mut().push(d);
        p
    }

    /// Everything currently left behind by any tracked container.
    pub fn leaks(&self) -> Vec<String> {
        self.tracked
            .borrow()
            .iter()
            .flat_map(|t| {
                leak::leaks(&self.rt, &t.id, &t.path)
                    .into_iter()
                    .map(move |l| format!("[{}] {l}", t.id))
            })
            .collect()
    }

    /// Fails the test if any tracked container left anything behind.
    #[track_caller]
    pub fn assert_no_leaks(&self) {
        let l = self.leaks();
        assert!(l.is_empty(), "leaks after {}:\n{}", self.name, l.join("\n"));
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        let found = if panicking { Vec::new() } else { self.leaks() };
        for t in self.tracked.borrow().iter() {
            leak::cleanup(&self.rt, &t.id, &t.path);
        }
        if !found.is_empty() {
            panic!(
                "test {} left things behind (cleaned up now):\n{}",
                self.name,
                found.join("\n")
            );
        }
    }
}

/// A tmpfs mounted on the host for the guard's lifetime.
pub struct MountGuard {
    pub path: PathBuf,
}

impl MountGuard {
    pub fn tmpfs(path: &Path) -> Self {
        std::fs::create_dir_all(path).expect("mkdir mountpoint");
        nix::mount::mount(
            Some("tmpfs"),
            path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("size=1m"),
        )
        .expect("mount tmpfs on host");
        MountGuard {
            path: path.to_path_buf(),
        }
    }
}

impl MountGuard {
    /// Bind-mounts `path` onto itself and makes it a shared mount.
    pub fn bind_shared(path: &Path) -> Self {
        use nix::mount::{mount, MsFlags};
        mount(
            Some(path),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .expect("bind mount on host");
        let g = MountGuard {
            path: path.to_path_buf(),
        };
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_SHARED,
            None::<&str>,
        )
        .expect("make mount shared");
        g
    }
}

impl Drop for MountGuard {
    fn drop(&mut self) {
        let _ = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct NetnsGuard {
    pub name: String,
}

impl NetnsGuard {
    pub fn new(name: &str) -> Self {
        crate::host_sh(&format!("ip netns add {name}"));
        NetnsGuard {
            name: name.to_string(),
        }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/var/run/netns").join(&self.name)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}
