//! Resolving `linux.cgroupsPath` to a directory inside one hierarchy.
//!
//! Absolute paths are relative to the hierarchy root (the mountpoint),
//! relative ones to the calling process's own cgroup in that hierarchy.
//! `..` is refused outright, and so is anything that resolves to the
//! hierarchy root or to our own cgroup (destroying those would be fatal).

use std::path::{Path, PathBuf};

use super::detect::Mount;
use super::error::{Error, Result};

fn invalid(path: &str, reason: impl Into<String>) -> Error {
    Error::InvalidPath {
        path: path.to_string(),
        reason: reason.into(),
    }
}

/// Split a cgroup path into normal components, refusing `..`.
/// Empty components and `.` are dropped.
pub(crate) fn components<'a>(original: &str, path: &'a str) -> Result<Vec<&'a str>> {
    let mut out = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(invalid(original, "\"..\" components are not allowed")),
            c if c.contains('\0') => return Err(invalid(original, "contains a NUL byte")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// The path requested for a container: the given `cgroupsPath`, or the
/// container id (relative) when none is given.
pub(crate) fn requested<'a>(cgroups_path: Option<&'a str>, id: &'a str) -> Result<&'a str> {
    match cgroups_path {
        Some(p) if !p.trim().is_empty() => Ok(p),
        _ if id.is_empty() || id.contains('/') => Err(invalid(
            id,
            "no cgroupsPath given and the container id is not a usable cgroup name",
        )),
        _ => Ok(id),
    }
}

/// Our own cgroup within `mount`, as a path relative to the mountpoint:
/// `own` (from /proc/self/cgroup) with the mount's root stripped.
pub(crate) fn own_relative<'a>(mount: &Mount, own: &'a str) -> &'a str {
    let root = mount.root.trim_end_matches('/');
    if root.is_empty() {
        return own;
    }
    match own.strip_prefix(root) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => own,
    }
}

/// Resolve `requested` inside `mount`. `own` is this process's cgroup in
/// that hierarchy (needed for relative paths; treated as `/` if unknown).
pub(crate) fn resolve(mount: &Mount, own: Option<&str>, requested: &str) -> Result<PathBuf> {
    let wanted = components(requested, requested)?;
    if wanted.is_empty() {
        return Err(invalid(
            requested,
            "resolves to the hierarchy root or to our own cgroup",
        ));
    }
    let mut dir: PathBuf = mount.mountpoint.clone();
    if !requested.starts_with('/') {
        let own = own.map(|o| own_relative(mount, o)).unwrap_or("/");
        for c in components(requested, own)? {
            dir.push(c);
        }
    }
    for c in wanted {
        dir.push(c);
    }
    ensure_inside(&mount.mountpoint, &dir, requested)?;
    Ok(dir)
}

/// Defence in depth: the result must be strictly below the mountpoint.
fn ensure_inside(mountpoint: &Path, dir: &Path, requested: &str) -> Result<()> {
    if dir.starts_with(mountpoint) && dir != mountpoint {
        Ok(())
    } else {
        Err(invalid(requested, "resolves outside the cgroup hierarchy"))
    }
}
