//! Finds the runtime binary under test.

use std::path::{Path, PathBuf};

/// Environment variable naming the runtime binary to test (e.g. `/usr/sbin/runc`).
pub const RUNTIME_ENV: &str = "BERTH_RUNTIME";

/// The workspace root, derived from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest.to_path_buf())
}

/// Candidate locations of the `berth` binary, in order of preference.
pub fn candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(t) = std::env::var_os("CARGO_TARGET_DIR") {
        let t = PathBuf::from(t);
        let t = if t.is_absolute() {
            t
        } else {
            workspace_root().join(t)
        };
        dirs.push(t);
    }
    dirs.push(workspace_root().join("target"));
    let mut out = Vec::new();
    for d in dirs {
        out.push(d.join("debug").join("berth"));
        out.push(d.join("release").join("berth"));
    }
    out
}

/// The runtime binary: `$BERTH_RUNTIME` if set, else the workspace's
/// `target/debug/berth` or `target/release/berth`. Panics with a clear
/// message if none exists.
pub fn runtime_binary() -> PathBuf {
    if let Some(p) = std::env::var_os(RUNTIME_ENV).filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{RUNTIME_ENV}={} does not name an existing file",
            p.display()
        );
        return p;
    }
    let cands = candidates();
    for c in &cands {
        if c.is_file() {
            return c.clone();
        }
    }
    panic!(
        "runtime binary not found: looked for {}. Build it with `cargo build -p berth-runtime`, \
         or set {RUNTIME_ENV}=/usr/sbin/runc to test another runtime",
        cands
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// Short name of the runtime under test (`berth`, `runc`, ...), for messages.
pub fn runtime_name() -> String {
    runtime_binary()
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
