//! Detecting the host's cgroup layout from the text of
//! `/proc/self/mountinfo` and `/proc/self/cgroup`.
//!
//! Pure functions over strings so tests can inject any mount table.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{Error, Result};

/// v1 controllers we manage (created and joined). `name=systemd` and, on
/// hybrid hosts, `unified` are added separately.
pub(crate) const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "net_prio",
    "blkio",
    "perf_event",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// Key used for the systemd named hierarchy.
pub(crate) const SYSTEMD_KEY: &str = "name=systemd";
/// Key used for the cgroup2 hierarchy on hybrid hosts.
pub(crate) const UNIFIED_KEY: &str = "unified";

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Where it is mounted (e.g. `/sys/fs/cgroup/memory`).
    pub mountpoint: PathBuf,
    /// The cgroup path that appears at the mountpoint (usually `/`; differs
    /// for bind mounts of a sub-cgroup).
    pub root: String,
}

/// The host's cgroup layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Pure cgroup v2 (unified).
    V2 {
        /// The cgroup2 mount.
        mount: Mount,
        /// Our own cgroup path (from the `0::` line).
        own: Option<String>,
    },
    /// cgroup v1 (legacy), possibly with a controller-less cgroup2 mount
    /// (hybrid).
    V1 {
        /// Keyed by controller name, `name=systemd` or `unified`.
        mounts: BTreeMap<String, Mount>,
        /// Our own cgroup path per key.
        own: BTreeMap<String, String>,
    },
}

/// Decode the octal escapes (`\040` etc.) mountinfo uses in paths.
fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let text = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(v)) => {
                out.push(v);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One parsed mountinfo line (only the fields we need).
struct MountLine {
    id: u64,
    parent: u64,
    root: String,
    mountpoint: PathBuf,
    fstype: String,
    super_opts: String,
}

fn parse_mountinfo_line(line: &str) -> Option<MountLine> {
    let (left, right) = line.split_once(" - ")?;
    let left: Vec<&str> = left.split_whitespace().collect();
    let right: Vec<&str> = right.split_whitespace().collect();
    if left.len() < 6 || right.is_empty() {
        return None;
    }
    Some(MountLine {
        id: left[0].parse().ok()?,
        parent: left[1].parse().ok()?,
        root: unescape(left[3]),
        mountpoint: PathBuf::from(unescape(left[4])),
        fstype: right[0].to_string(),
        super_opts: right.get(2).copied().unwrap_or("").to_string(),
    })
}

/// Which mounts of a mountinfo table no path reaches any more: one that
/// another covers, mounted on top of it at the same place (its parent is
/// the mount it covers) or by a sibling over a directory above its
/// mountpoint, or whose parent is hidden. A private view of /sys/fs/cgroup
/// (a tmpfs over it, some hierarchies bound back) leaves the host's mounts
/// listed in mountinfo, hidden: a hybrid host's `unified` cgroup2, say.
struct Visibility<'a> {
    by_id: BTreeMap<u64, &'a MountLine>,
    children: BTreeMap<u64, Vec<&'a MountLine>>,
}

impl<'a> Visibility<'a> {
    fn new(lines: &'a [MountLine]) -> Self {
        let mut children: BTreeMap<u64, Vec<&MountLine>> = BTreeMap::new();
        for l in lines {
            children.entry(l.parent).or_default().push(l);
        }
        Visibility {
            by_id: lines.iter().map(|l| (l.id, l)).collect(),
            children,
        }
    }

    /// Whether another mount than `m` and `above` (the one we came from,
    /// which may be stacked on `m`) covers `m`.
    fn covered(&self, m: &MountLine, above: Option<u64>) -> bool {
        let others = |parent| {
            self.children
                .get(&parent)
                .into_iter()
                .flatten()
                .filter(move |n: &&&MountLine| n.id != m.id && Some(n.id) != above)
        };
        others(m.id).any(|n| n.mountpoint == m.mountpoint)
            || others(m.parent)
                .any(|n| n.mountpoint != m.mountpoint && m.mountpoint.starts_with(&n.mountpoint))
    }

    fn hidden(&self, m: &MountLine) -> bool {
        let (mut at, mut above) = (Some(m), None);
        // Bounded: ids could loop in an odd table.
        for _ in 0..=self.by_id.len() {
            let Some(mount) = at else {
                return false;
            };
            if self.covered(mount, above) {
                return true;
            }
            above = Some(mount.id);
            at = self
                .by_id
                .get(&mount.parent)
                .copied()
                .filter(|p| p.id != mount.id);
        }
        false
    }
}

/// Parse `/proc/self/cgroup`: map of key => path. v1 lines give one entry
/// per controller (`cpu,cpuacct` => two keys; `name=systemd` kept as is),
/// the v2 line (`0::/path`) is keyed `""`.
pub fn parse_proc_cgroup(text: &str) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_id), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = path.trim_end_matches(" (deleted)").to_string();
        if ctrls.is_empty() {
            map.insert(String::new(), path);
        } else {
            for c in ctrls.split(',') {
                map.insert(c.to_string(), path.clone());
            }
        }
    }
    map
}

/// Prefer a mount under `root` over one elsewhere (bind mounts in odd
/// places); otherwise the first one seen wins.
fn better(existing: &Mount, candidate: &Mount, root: &Path) -> bool {
    !existing.mountpoint.starts_with(root) && candidate.mountpoint.starts_with(root)
}

/// Work out the layout. `cgroup_root` is where cgroups are normally mounted
/// (`/sys/fs/cgroup`): if a cgroup2 filesystem is mounted exactly there the
/// host is pure v2; otherwise v1 controllers come from `cgroup` mounts
/// (controller names from the super options) and a cgroup2 mount, if any,
/// becomes the hybrid `unified` hierarchy. With no v1 mounts at all but a
/// cgroup2 mount elsewhere, that mount is used as pure v2.
pub fn detect(mountinfo: &str, proc_cgroup: &str, cgroup_root: &Path) -> Result<Layout> {
    let own = parse_proc_cgroup(proc_cgroup);
    let mut v2: Option<Mount> = None;
    let mut v2_at_root = false;
    let mut v1: BTreeMap<String, Mount> = BTreeMap::new();
    let lines: Vec<MountLine> = mountinfo.lines().filter_map(parse_mountinfo_line).collect();
    let visibility = Visibility::new(&lines);
    let cgroup_fs = |l: &&MountLine| l.fstype == "cgroup" || l.fstype == "cgroup2";
    for line in lines
        .iter()
        .filter(cgroup_fs)
        .filter(|l| !visibility.hidden(l))
    {
        let mount = Mount {
            mountpoint: line.mountpoint.clone(),
            root: line.root.clone(),
        };
        match line.fstype.as_str() {
            "cgroup2" => {
                if line.mountpoint == cgroup_root {
                    v2_at_root = true;
                    v2 = Some(mount);
                } else if !v2_at_root && v2.as_ref().is_none_or(|m| better(m, &mount, cgroup_root))
                {
                    v2 = Some(mount);
                }
            }
            "cgroup" => {
                for opt in line.super_opts.split(',') {
                    let known = V1_CONTROLLERS.contains(&opt) || opt == SYSTEMD_KEY;
                    if !known {
                        continue;
                    }
                    let replace = v1.get(opt).is_none_or(|m| better(m, &mount, cgroup_root));
                    if replace {
                        v1.insert(opt.to_string(), mount.clone());
                    }
                }
            }
            _ => {}
        }
    }
    if v2_at_root || (v1.is_empty() && v2.is_some()) {
        let Some(mount) = v2 else {
            return Err(Error::Detect {
                reason: "cgroup2 mount vanished".into(),
            });
        };
        return Ok(Layout::V2 {
            mount,
            own: own.get("").cloned(),
        });
    }
    if v1.is_empty() {
        return Err(Error::Detect {
            reason: format!(
                "no cgroup or cgroup2 filesystem found (expected one at {})",
                cgroup_root.display()
            ),
        });
    }
    let mut own_v1 = BTreeMap::new();
    for key in v1.keys() {
        if let Some(p) = own.get(key) {
            own_v1.insert(key.clone(), p.clone());
        }
    }
    if let Some(mount) = v2 {
        if let Some(p) = own.get("") {
            own_v1.insert(UNIFIED_KEY.to_string(), p.clone());
        }
        v1.insert(UNIFIED_KEY.to_string(), mount);
    }
    Ok(Layout::V1 {
        mounts: v1,
        own: own_v1,
    })
}
