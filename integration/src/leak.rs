//! Detection (and last-resort cleanup) of what a container may leave behind.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::runtime::Runtime;

/// How long to wait for the kernel/runtime to finish tearing things down.
pub const SETTLE: Duration = Duration::from_secs(10);

/// Mount points in `/proc/self/mountinfo` whose line mentions `needle`.
pub fn mounts_mentioning(needle: &str) -> Vec<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter(|l| l.contains(needle))
        .map(|l| l.split_whitespace().nth(4).unwrap_or(l).to_string())
        .collect()
}

/// Directories named `name` in any hierarchy under `/sys/fs/cgroup`.
pub fn cgroup_dirs_named(name: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, name: &str, depth: usize, out: &mut Vec<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !ft.is_dir() {
                continue;
            }
            let p = e.path();
            if e.file_name().to_string_lossy() == name {
                out.push(p.clone());
            }
            if depth > 0 {
                walk(&p, name, depth - 1, out);
            }
        }
    }
    let mut out = Vec::new();
    walk(Path::new("/sys/fs/cgroup"), name, 5, &mut out);
    out
}

/// Processes whose cgroup path has a component equal to `id`, or whose
/// command line mentions `bundle`. Returns `(pid, description)`.
pub fn processes_of(id: &str, bundle: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = e.path();
        let cg = std::fs::read_to_string(base.join("cgroup")).unwrap_or_default();
        let in_cg = cg.lines().any(|l| {
            l.splitn(3, ':')
                .nth(2)
                .is_some_and(|p| p.split('/').any(|c| c == id))
        });
        let cmd = std::fs::read(base.join("cmdline"))
            .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
            .unwrap_or_default();
        let in_cmd = !bundle.is_empty() && cmd.contains(bundle);
        if in_cg || in_cmd {
            out.push((pid, format!("pid {pid}: {}", cmd.trim())));
        }
    }
    out
}

/// pids of processes whose command line contains both `program` and `needle`.
pub fn processes_with_cmdline(program: &str, needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let cmd = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
                .unwrap_or_default();
            cmd.contains(program) && cmd.contains(needle)
        })
        .collect()
}

/// One pass of all checks for container `id` of `bundle` under runtime `rt`.
pub fn leaks_once(rt: &Runtime, id: &str, bundle: &Path) -> Vec<String> {
    let b = bundle.to_string_lossy();
    let mut v = Vec::new();
    for m in mounts_mentioning(&b) {
        v.push(format!("mount left behind: {m}"));
    }
    for d in cgroup_dirs_named(id) {
        v.push(format!("cgroup left behind: {}", d.display()));
    }
    for (_, p) in processes_of(id, &b) {
        v.push(format!("process left behind: {p}"));
    }
    let sd = rt.state_dir(id);
    if sd.exists() {
        v.push(format!("state dir left behind: {}", sd.display()));
    }
    v
}

/// Checks repeatedly for up to [`SETTLE`] until nothing is left behind;
/// returns what remains.
pub fn leaks(rt: &Runtime, id: &str, bundle: &Path) -> Vec<String> {
    let deadline = Instant::now() + SETTLE;
    loop {
        let v = leaks_once(rt, id, bundle);
        if v.is_empty() || Instant::now() >= deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Best-effort removal of everything a container may have left.
pub fn cleanup(rt: &Runtime, id: &str, bundle: &Path) {
    let _ = rt.cmd_timeout(["delete", "--force", id], Duration::from_secs(10));
    let b = bundle.to_string_lossy().into_owned();
    // Frozen tasks cannot die: thaw any freezer cgroup of the container first.
    for d in cgroup_dirs_named(id) {
        let f = d.join("freezer.state");
        if f.exists() {
            let _ = std::fs::write(&f, "THAWED");
        }
    }
    for (pid, _) in processes_of(id, &b) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    // Unmount deepest first.
    let mut ms = mounts_mentioning(&b);
    ms.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in ms {
        let _ = nix::mount::umount2(m.as_str(), nix::mount::MntFlags::MNT_DETACH);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut ds = cgroup_dirs_named(id);
        if ds.is_empty() || Instant::now() >= deadline {
            break;
        }
        ds.sort_by_key(|d| std::cmp::Reverse(d.as_os_str().len()));
        for d in ds {
            let _ = std::fs::remove_dir(d);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = std::fs::remove_dir_all(rt.state_dir(id));
}
