//! Helpers for the cgroup tests: temp dirs posing as cgroupfs, resource
//! builders and access to the write log.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use super::fsutil::test_log;

/// Build `LinuxResources` from its OCI JSON form.
pub(crate) fn res(json: &str) -> LinuxResources {
    serde_json::from_str(json).expect("test resources JSON")
}

/// Create `dir` (and parents) holding the given control files.
pub(crate) fn fake_cgroup(dir: &Path, files: &[(&str, &str)]) {
    fs::create_dir_all(dir).expect("create fake cgroup dir");
    for (name, content) in files {
        fs::write(dir.join(name), content).expect("write fake control file");
    }
}

/// Content of `dir/file`, trimmed.
pub(crate) fn read(dir: &Path, file: &str) -> String {
    fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

/// This thread's writes since the last call, as (file name, value).
pub(crate) fn writes() -> Vec<(String, String)> {
    test_log::take()
        .into_iter()
        .map(|(p, v)| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (name, v)
        })
        .collect()
}

/// Writes to one file name, in order.
pub(crate) fn writes_to(all: &[(String, String)], file: &str) -> Vec<String> {
    all.iter()
        .filter(|(f, _)| f == file)
        .map(|(_, v)| v.clone())
        .collect()
}

/// A mountinfo line for a v1 hierarchy with the given super options.
pub(crate) fn v1_line(id: u32, mountpoint: &Path, opts: &str) -> String {
    format!(
        "{id} 31 0:{id} / {} rw,relatime - cgroup cgroup rw,{opts}",
        mountpoint.display()
    )
}

/// A mountinfo line for a cgroup2 mount.
pub(crate) fn v2_line(id: u32, mountpoint: &Path) -> String {
    format!(
        "{id} 31 0:{id} / {} rw,relatime - cgroup2 cgroup2 rw",
        mountpoint.display()
    )
}

/// Path `root/a/b/...`.
pub(crate) fn join(root: &Path, parts: &[&str]) -> PathBuf {
    let mut p = root.to_path_buf();
    for part in parts {
        p.push(part);
    }
    p
}
