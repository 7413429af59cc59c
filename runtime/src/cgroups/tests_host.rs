//! Tests against the real cgroup v1 hierarchies of the host. They need
//! root and a v1 memory hierarchy at /sys/fs/cgroup/memory; otherwise they
//! print a note and return. Every cgroup is named `berth-test-<random>`
//! and removed again (also on panic, via [`Cleanup`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::tests_common::res;
use super::{new_manager, CgroupManager, CgroupState};

fn host_has_v1() -> bool {
    let ok = Path::new("/sys/fs/cgroup/memory").is_dir() && nix::unistd::geteuid().is_root();
    if !ok {
        println!("note: no cgroup v1 memory hierarchy or not root; host cgroup test skipped");
    }
    ok
}

fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "berth-test-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn v1_paths(m: &dyn CgroupManager) -> Vec<PathBuf> {
    match m.state() {
        CgroupState::V1 { paths } => paths.into_values().collect(),
        other => panic!("host should be v1/hybrid, got {other:?}"),
    }
}

fn path_of(m: &dyn CgroupManager, key: &str) -> PathBuf {
    match m.state() {
        CgroupState::V1 { paths } => paths
            .get(key)
            .cloned()
            .unwrap_or_else(|| panic!("{key} not in {paths:?}")),
        other => panic!("host should be v1/hybrid, got {other:?}"),
    }
}

fn read(dir: &Path, file: &str) -> String {
    std::fs::read_to_string(dir.join(file))
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.join(file).display()))
        .trim()
        .to_string()
}

/// Kills its children and destroys its cgroup when dropped.
struct Cleanup {
    m: Box<dyn CgroupManager>,
    children: Vec<Child>,
}

impl Cleanup {
    fn kill_all(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
        let deadline = Instant::now() + Duration::from_secs(5);
        while let Ok(pids) = self.m.pids() {
            if pids.is_empty() || Instant::now() > deadline {
                break;
            }
            for p in pids {
                let _ = kill(Pid::from_raw(p), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = self.m.freeze(false);
        self.kill_all();
        let _ = self.m.destroy();
    }
}

/// A child blocked on stdin (so it can be placed before it does anything).
fn spawn_sh(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh")
}

#[test]
fn host_v1_limits_read_back_and_destroy_leaves_nothing() {
    if !host_has_v1() {
        return;
    }
    let name = unique_name();
    let m = new_manager(None, &name).expect("new_manager");
    assert!(m.clone_into_fd().is_none());
    let paths = v1_paths(m.as_ref());
    let mut guard = Cleanup {
        m,
        children: Vec::new(),
    };
    let m = guard.m.as_ref();
    m.create().expect("create");
    m.create().expect("create is idempotent");
    for p in &paths {
        assert!(p.is_dir(), "{} missing", p.display());
        assert!(p.ends_with(&name));
    }
    let cpuset = path_of(m, "cpuset");
    assert!(!read(&cpuset, "cpuset.cpus").is_empty());
    assert!(!read(&cpuset, "cpuset.mems").is_empty());

    let r = res(
        r#"{"memory":{"limit":67108864,"swap":134217728,"reservation":33554432},
        "cpu":{"shares":512,"quota":50000,"period":100000},
        "pids":{"limit":16},
        "devices":[{"allow":false,"access":"rwm"}]}"#,
    );
    m.apply(&r).expect("apply");
    let mem = path_of(m, "memory");
    assert_eq!(read(&mem, "memory.limit_in_bytes"), "67108864");
    assert_eq!(read(&mem, "memory.memsw.limit_in_bytes"), "134217728");
    assert_eq!(read(&mem, "memory.soft_limit_in_bytes"), "33554432");
    let cpu = path_of(m, "cpu");
    assert_eq!(read(&cpu, "cpu.shares"), "512");
    assert_eq!(read(&cpu, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&cpu, "cpu.cfs_period_us"), "100000");
    assert_eq!(read(&path_of(m, "pids"), "pids.max"), "16");
    // A weight needs an I/O scheduler that has one (CFQ or BFQ); without
    // it the request is refused by name, as runc refuses it.
    let blkio = path_of(m, "blkio");
    let weight = res(r#"{"blockIO":{"weight":500}}"#);
    match ["blkio.weight", "blkio.bfq.weight"]
        .into_iter()
        .find(|f| blkio.join(f).exists())
    {
        Some(weight_file) => {
            m.apply(&weight).expect("apply blockIO.weight");
            assert!(read(&blkio, weight_file).contains("500"));
        }
        None => {
            let err = m.apply(&weight).expect_err("no weight file, yet applied");
            assert!(format!("{err:?}").contains("blockIO.weight"), "{err:?}");
        }
    }
    let devices = read(&path_of(m, "devices"), "devices.list");
    assert!(devices.contains("c 1:3 rwm"), "{devices}");
    assert!(!devices.contains("a *:* rwm"), "{devices}");

    // Raising above the current memsw must write memsw first.
    let r = res(r#"{"memory":{"limit":268435456,"swap":536870912}}"#);
    m.apply(&r).expect("raise");
    assert_eq!(read(&mem, "memory.limit_in_bytes"), "268435456");
    assert_eq!(read(&mem, "memory.memsw.limit_in_bytes"), "536870912");
    // And lowering must write the limit first.
    let r = res(r#"{"memory":{"limit":16777216,"swap":33554432}}"#);
    m.apply(&r).expect("lower");
    assert_eq!(read(&mem, "memory.limit_in_bytes"), "16777216");
    assert_eq!(read(&mem, "memory.memsw.limit_in_bytes"), "33554432");

    m.destroy().expect("destroy");
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    guard.children.clear();
}

#[test]
fn host_v1_pids_limit_stops_forks_of_a_real_child() {
    if !host_has_v1() {
        return;
    }
    let m = new_manager(Some(&format!("/{}", unique_name())), "x").expect("new_manager");
    let paths = v1_paths(m.as_ref());
    let mut guard = Cleanup {
        m,
        children: Vec::new(),
    };
    guard.m.create().expect("create");
    guard
        .m
        .apply(&res(r#"{"pids":{"limit":4},"devices":[]}"#))
        .expect("apply");
    let script = "read x; for i in 1 2 3 4 5 6 7 8; do sleep 5 </dev/null >/dev/null 2>&1 & done; echo spawned";
    let mut child = spawn_sh(script);
    let pid = i32::try_from(child.id()).expect("pid fits");
    guard.m.add_task(pid).expect("add_task");
    assert_eq!(guard.m.pids().expect("pids"), vec![pid]);
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release child");
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let in_cgroup = guard.m.pids().expect("pids");
    assert!(in_cgroup.len() <= 4, "pids.max exceeded: {in_cgroup:?}");
    let events = read(&path_of(guard.m.as_ref(), "pids"), "pids.events");
    let refused: u64 = events
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(
        refused > 0,
        "no fork refused; events={events:?} stderr={stderr:?}"
    );
    assert!(stderr.to_lowercase().contains("fork"), "stderr={stderr:?}");

    guard.kill_all();
    guard.m.destroy().expect("destroy");
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[test]
fn host_v1_freeze_thaw_and_nested_absolute_path() {
    if !host_has_v1() {
        return;
    }
    let top = unique_name();
    let leaf = new_manager(Some(&format!("/{top}/a/b")), "x").expect("new_manager");
    let top_m = new_manager(Some(&format!("/{top}")), "x").expect("new_manager");
    let top_paths = v1_paths(top_m.as_ref());
    // Cleanup destroys the top dir, which removes the nested ones too.
    let mut guard = Cleanup {
        m: top_m,
        children: Vec::new(),
    };
    leaf.create().expect("create nested");
    let cpuset = path_of(leaf.as_ref(), "cpuset");
    for dir in [&cpuset, &cpuset.join(".."), &cpuset.join("../..")] {
        assert!(
            !read(dir, "cpuset.cpus").is_empty(),
            "{} empty",
            dir.display()
        );
    }
    let mut child = spawn_sh("read x; sleep 30");
    let pid = i32::try_from(child.id()).expect("pid fits");
    leaf.add_task(pid).expect("add_task");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("go");
    guard.children.push(child);
    // Wait for the sleep to start so both processes are in the cgroup.
    let deadline = Instant::now() + Duration::from_secs(5);
    while leaf.pids().expect("pids").len() < 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(guard.m.pids().expect("pids from top").len(), 2);

    assert!(!leaf.is_frozen().expect("is_frozen"));
    leaf.freeze(true).expect("freeze");
    assert!(leaf.is_frozen().expect("is_frozen"));
    assert_eq!(
        read(&path_of(leaf.as_ref(), "freezer"), "freezer.state"),
        "FROZEN"
    );
    leaf.freeze(false).expect("thaw");
    assert!(!leaf.is_frozen().expect("is_frozen"));

    guard.kill_all();
    guard.m.destroy().expect("destroy top");
    for p in &top_paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}
