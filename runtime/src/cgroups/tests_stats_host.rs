//! Statistics and OOM notification against the host's real cgroup v1
//! hierarchies (root and a v1 memory hierarchy needed; otherwise the tests
//! print a note and return). Cgroups are named `berth-test-<random>` and
//! removed again, also on panic.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::oom::watch_v2;
use super::tests_common::res;
use super::{new_manager, oom_watcher, CgroupManager, CgroupState, OomEvent, OomWatcher};

fn host_has_v1() -> bool {
    let ok = Path::new("/sys/fs/cgroup/memory/cgroup.event_control").exists()
        && nix::unistd::geteuid().is_root();
    if !ok {
        println!("note: no cgroup v1 memory hierarchy or not root; host stats test skipped");
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
        "berth-test-stats-{}-{nanos:x}-{}",
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

/// Kills the children and every process left in the cgroup, then destroys
/// it, when dropped.
struct Guard {
    m: Box<dyn CgroupManager>,
    children: Vec<Child>,
}

impl Guard {
    fn new(m: Box<dyn CgroupManager>) -> Self {
        Self {
            m,
            children: Vec::new(),
        }
    }

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

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill_all();
        let _ = self.m.destroy();
    }
}

/// Start `sh -c script` blocked on stdin, move it into the cgroup, then
/// let it go.
fn spawn_in(guard: &mut Guard, script: &str) {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(format!("read x; {script}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh");
    let pid = i32::try_from(child.id()).expect("pid fits");
    guard.m.add_task(pid).expect("add_task");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("release child");
    guard.children.push(child);
}

/// Poll the watcher's fd (as a caller would, next to its own fds).
fn readable_within(w: &OomWatcher, limit: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let start = Instant::now();
    while start.elapsed() < limit {
        let mut fds = [PollFd::new(w.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(500u16)) {
            Ok(n) if n > 0 => return true,
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
    }
    false
}

#[test]
fn host_v1_stats_of_a_busy_child() {
    if !host_has_v1() {
        return;
    }
    let m = new_manager(None, &unique_name()).expect("new_manager");
    let paths = v1_paths(m.as_ref());
    let mut guard = Guard::new(m);
    guard.m.create().expect("create");
    guard
        .m
        .apply(&res(
            r#"{"pids":{"limit":32},"memory":{"limit":268435456}}"#,
        ))
        .expect("apply");
    spawn_in(
        &mut guard,
        "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done; echo busy > /dev/null; sleep 30",
    );
    // The loop runs for a while; poll until its CPU time shows.
    let deadline = Instant::now() + Duration::from_secs(30);
    let stats = loop {
        let s = guard.m.stats().expect("stats");
        let ticked = s.cpu.usage.user + s.cpu.usage.kernel > 0;
        if (s.cpu.usage.total > 0 && ticked) || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    println!(
        "v1 stats: {}",
        serde_json::to_string(&stats).expect("serialize")
    );
    assert!(stats.pids.current >= 1, "{:?}", stats.pids);
    assert_eq!(stats.pids.limit, 32);
    assert!(stats.memory.usage.usage > 0, "{:?}", stats.memory.usage);
    assert_eq!(stats.memory.usage.limit, 268_435_456);
    assert!(
        stats.memory.raw.contains_key("rss"),
        "{:?}",
        stats.memory.raw
    );
    assert!(stats.cpu.usage.total > 0, "{:?}", stats.cpu.usage);
    assert!(!stats.cpu.usage.percpu.is_empty());
    // Read a moment apart from the total, while the loop may still run.
    let sum: u64 = stats.cpu.usage.percpu.iter().sum();
    assert!(
        sum.abs_diff(stats.cpu.usage.total) < 50_000_000,
        "percpu sum {sum} vs total {}",
        stats.cpu.usage.total
    );
    assert!(
        stats.cpu.usage.user + stats.cpu.usage.kernel > 0,
        "{:?}",
        stats.cpu.usage
    );
    assert!(!stats.cpuset.cpus.is_empty() && !stats.cpuset.mems.is_empty());
    let json = serde_json::to_value(&stats).expect("json");
    for key in ["cpu", "cpuset", "memory", "pids", "blkio", "hugetlb"] {
        assert!(json.get(key).is_some(), "{key} missing");
    }

    guard.kill_all();
    guard.m.destroy().expect("destroy");
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}

#[test]
fn host_v1_oom_is_reported_and_removal_too() {
    if !host_has_v1() {
        return;
    }
    let m = new_manager(None, &unique_name()).expect("new_manager");
    let paths = v1_paths(m.as_ref());
    let mut guard = Guard::new(m);
    guard.m.create().expect("create");
    // 8 MiB of memory and no swap. Recent kernels charge memsw before
    // memory and don't count memsw failures in failcnt, so memsw is only
    // limited (== limit, i.e. no swap) if the host has swap at all;
    // without swap devices the memory limit alone can't be evaded.
    let host_swap = std::fs::read_to_string("/proc/swaps")
        .map(|s| s.lines().count() > 1)
        .unwrap_or(true);
    let limits = if host_swap {
        r#"{"memory":{"limit":8388608,"swap":8388608}}"#
    } else {
        r#"{"memory":{"limit":8388608}}"#
    };
    guard.m.apply(&res(limits)).expect("apply");
    let mut w = oom_watcher(&guard.m.state()).expect("oom_watcher");
    assert_eq!(
        w.wait(Some(Duration::ZERO)).expect("wait"),
        OomEvent::Timeout
    );
    // dd fills a 64 MiB buffer in one read: far over the limit.
    spawn_in(
        &mut guard,
        "exec dd if=/dev/zero of=/dev/null bs=64M count=1",
    );

    // The watcher's fd becomes readable (as a caller polling it with
    // other fds would see), and then wait() reports the OOM at once.
    let limit = Duration::from_secs(20);
    assert!(w.is_notified());
    assert!(
        readable_within(&w, limit),
        "no OOM signalled within {limit:?}"
    );
    assert_eq!(w.wait(Some(Duration::ZERO)).expect("wait"), OomEvent::Oom);
    let stats = guard.m.stats().expect("stats");
    if host_swap {
        println!("note: host has swap; memsw limited, failcnt may stay 0");
    } else {
        assert!(
            stats.memory.usage.failcnt > 0,
            "failcnt 0 after OOM: {:?}",
            stats.memory.usage
        );
    }
    assert_eq!(stats.memory.usage.limit, 8_388_608);
    // The OOM killer took dd.
    let child = guard.children.pop().expect("child");
    let out = child.wait_with_output().expect("wait child");
    {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(out.status.signal(), Some(9), "{:?}", out.status);
    }

    guard.kill_all();
    guard.m.destroy().expect("destroy");
    for p in &paths {
        assert!(!p.exists(), "{} left behind", p.display());
    }
    // The removal is reported too (possibly after further OOMs).
    let start = Instant::now();
    loop {
        match w.wait(Some(Duration::from_millis(500))).expect("wait") {
            OomEvent::CgroupGone => break,
            OomEvent::Oom | OomEvent::Timeout => {
                assert!(start.elapsed() < limit, "removal not reported in {limit:?}");
            }
        }
    }
    assert_eq!(
        w.wait(Some(Duration::ZERO)).expect("wait"),
        OomEvent::CgroupGone
    );
}

/// The v2 path relies on the kernel waking epoll (EPOLLPRI) when a cgroup2
/// `*.events` file changes. This host's cgroup2 mount has no memory
/// controller, so check the mechanism on `cgroup.events` (`populated`
/// flips when a process joins) of the same hierarchy.
#[test]
fn host_cgroup2_events_file_wakes_the_watcher_fd() {
    if !host_has_v1() {
        return;
    }
    let m = new_manager(None, &unique_name()).expect("new_manager");
    let CgroupState::V1 { paths } = m.state() else {
        panic!("host should be hybrid");
    };
    let Some(unified) = paths.get("unified").cloned() else {
        println!("note: no cgroup2 mount on this host; skipped");
        return;
    };
    let all = v1_paths(m.as_ref());
    let mut guard = Guard::new(m);
    guard.m.create().expect("create");
    let w = watch_v2(&unified, "cgroup.events").expect("watch cgroup.events");
    assert!(w.is_notified(), "kernfs file should be pollable");
    assert!(
        !readable_within(&w, Duration::from_millis(200)),
        "no change yet"
    );
    spawn_in(&mut guard, "sleep 30");
    assert!(
        readable_within(&w, Duration::from_secs(10)),
        "populated change not signalled"
    );
    guard.kill_all();
    guard.m.destroy().expect("destroy");
    for p in &all {
        assert!(!p.exists(), "{} left behind", p.display());
    }
}
