//! Tests for statistics and OOM notification: the pure parsers, both
//! readers against temp dirs posing as cgroupfs, the JSON shape, and the
//! v2 OOM watcher on a temp dir. Real-host tests are in
//! `tests_stats_host.rs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::oom::{oom_counters, FALLBACK_POLL};
use super::stats::{
    parse_blkio, parse_io_stat, parse_keyed, parse_list, parse_numbers, parse_psi, parse_usage_all,
    parse_value, ticks_to_ns, BlkioEntry, Stats,
};
use super::tests_common::{fake_cgroup, join};
use super::{oom_watcher, CgroupManager, CgroupState, Error, OomEvent, V1Manager, V2Manager};

fn entry(major: u64, minor: u64, op: &str, value: u64) -> BlkioEntry {
    BlkioEntry {
        major,
        minor,
        op: op.to_string(),
        value,
    }
}

#[test]
fn parse_value_handles_max_and_negative() {
    assert_eq!(parse_value("42\n"), Ok(42));
    assert_eq!(parse_value("max\n"), Ok(u64::MAX));
    assert_eq!(parse_value("-1"), Ok(0));
    assert!(parse_value("12abc").is_err());
    assert!(parse_value("").is_err());
}

#[test]
fn parse_cpuacct_stat_and_convert_ticks() {
    let pairs = parse_keyed("user 250\nsystem 75\n").expect("parse");
    assert_eq!(
        pairs,
        vec![("user".to_string(), 250), ("system".to_string(), 75)]
    );
    assert_eq!(ticks_to_ns(250, 100), 2_500_000_000);
    assert_eq!(ticks_to_ns(75, 250), 300_000_000);
    assert_eq!(ticks_to_ns(u64::MAX, 1), u64::MAX, "saturates");
}

#[test]
fn parse_keyed_rejects_malformed_lines() {
    assert!(parse_keyed("cache 1 2\n").is_err());
    assert!(parse_keyed("cache\n").is_err());
    assert!(parse_keyed("cache x\n").is_err());
    assert_eq!(parse_keyed("\n\n"), Ok(vec![]));
}

#[test]
fn parse_memory_stat() {
    let text = "cache 8192\nrss 4096\nmapped_file 0\nhierarchical_memory_limit 9223372036854771712\ntotal_cache 8192\n";
    let pairs: BTreeMap<String, u64> = parse_keyed(text).expect("parse").into_iter().collect();
    assert_eq!(pairs["cache"], 8192);
    assert_eq!(pairs["rss"], 4096);
    assert_eq!(
        pairs["hierarchical_memory_limit"],
        9_223_372_036_854_771_712
    );
    assert_eq!(pairs.len(), 5);
}

#[test]
fn parse_percpu_and_usage_all() {
    assert_eq!(parse_numbers("10 20 30 \n"), Ok(vec![10, 20, 30]));
    let (kernel, user) = parse_usage_all("cpu user system\n0 100 7\n1 200 9\n").expect("usage_all");
    assert_eq!(kernel, vec![7, 9]);
    assert_eq!(user, vec![100, 200]);
    assert!(parse_usage_all("0 1 2\n").is_err(), "header required");
    assert!(parse_usage_all("cpu user system\n0 1\n").is_err());
}

#[test]
fn parse_blkio_tables() {
    let text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Async 12288\n8:0 Discard 0\n8:0 Total 12288\n253:1 Read 1\nTotal 12289\n";
    let got = parse_blkio(text).expect("parse");
    assert_eq!(got.len(), 7);
    assert_eq!(got[0], entry(8, 0, "Read", 4096));
    assert_eq!(got[5], entry(8, 0, "Total", 12288));
    assert_eq!(got[6], entry(253, 1, "Read", 1));
    // Tables without an operation column (sectors, time).
    assert_eq!(parse_blkio("8:16 77\n"), Ok(vec![entry(8, 16, "", 77)]));
    assert_eq!(parse_blkio(""), Ok(vec![]));
    assert!(parse_blkio("8-0 Read 1\n").is_err());
    assert!(parse_blkio("8:0 Read x\n").is_err());
}

#[test]
fn parse_io_stat_maps_like_runc() {
    let text = "8:0 rbytes=1024 wbytes=2048 rios=3 wios=4 dbytes=0 dios=0\n253:2 rbytes=5 wbytes=0 rios=1 wios=0 dbytes=9 dios=1\n";
    let (bytes, ios) = parse_io_stat(text).expect("parse");
    assert_eq!(
        bytes,
        vec![
            entry(8, 0, "Read", 1024),
            entry(8, 0, "Write", 2048),
            entry(253, 2, "Read", 5),
            entry(253, 2, "Write", 0),
        ]
    );
    assert_eq!(
        ios,
        vec![
            entry(8, 0, "Read", 3),
            entry(8, 0, "Write", 4),
            entry(253, 2, "Read", 1),
            entry(253, 2, "Write", 0),
        ]
    );
    assert!(parse_io_stat("sda rbytes=1\n").is_err());
    assert!(parse_io_stat("8:0 rbytes=x\n").is_err());
}

#[test]
fn parse_cpu_lists_and_psi() {
    assert_eq!(parse_list("0-3,8,10-11\n"), Ok(vec![0, 1, 2, 3, 8, 10, 11]));
    assert_eq!(parse_list("\n"), Ok(vec![]));
    assert!(parse_list("3-1").is_err());
    assert!(parse_list("a").is_err());
    let psi = parse_psi(
        "some avg10=1.50 avg60=0.25 avg300=0.00 total=123\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=7\n",
    )
    .expect("psi");
    assert_eq!(psi.some.avg10, 1.5);
    assert_eq!(psi.some.total, 123);
    assert_eq!(psi.full.total, 7);
}

#[test]
fn memory_events_counters() {
    let text = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
    assert_eq!(oom_counters(text), Ok((2, 1)));
    assert_eq!(oom_counters("low 0\n"), Ok((0, 0)));
}

/// A v1 layout in a temp dir: one dir per controller key.
fn fake_v1(tmp: &tempfile::TempDir, keys: &[&str]) -> (V1Manager, BTreeMap<String, PathBuf>) {
    let mut paths = BTreeMap::new();
    for k in keys {
        let dir = join(tmp.path(), &[k, "berth", "c1"]);
        std::fs::create_dir_all(&dir).expect("mkdir");
        paths.insert((*k).to_string(), dir);
    }
    (V1Manager::new(paths.clone()), paths)
}

#[test]
fn v1_stats_from_fake_cgroupfs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (m, p) = fake_v1(
        &tmp,
        &[
            "cpu", "cpuacct", "cpuset", "memory", "pids", "blkio", "hugetlb",
        ],
    );
    fake_cgroup(
        &p["cpuacct"],
        &[
            ("cpuacct.usage", "5000\n"),
            ("cpuacct.usage_percpu", "3000 2000 \n"),
            ("cpuacct.usage_percpu_sys", "1000 500 \n"),
            ("cpuacct.usage_percpu_user", "2000 1500 \n"),
            ("cpuacct.stat", "user 3\nsystem 1\n"),
        ],
    );
    fake_cgroup(
        &p["cpu"],
        &[(
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 777\nnr_bursts 0\nburst_time 0\n",
        )],
    );
    fake_cgroup(
        &p["cpuset"],
        &[
            ("cpuset.cpus", "0-1\n"),
            ("cpuset.mems", "0\n"),
            ("cpuset.sched_load_balance", "1\n"),
            ("cpuset.sched_relax_domain_level", "-1\n"),
        ],
    );
    fake_cgroup(
        &p["memory"],
        &[
            ("memory.stat", "cache 4096\nrss 8192\n"),
            ("memory.usage_in_bytes", "12288\n"),
            ("memory.max_usage_in_bytes", "16384\n"),
            ("memory.failcnt", "3\n"),
            ("memory.limit_in_bytes", "8388608\n"),
            ("memory.memsw.usage_in_bytes", "12288\n"),
            ("memory.memsw.max_usage_in_bytes", "16384\n"),
            ("memory.memsw.failcnt", "1\n"),
            ("memory.memsw.limit_in_bytes", "8388608\n"),
            ("memory.kmem.usage_in_bytes", "100\n"),
            ("memory.kmem.limit_in_bytes", "9223372036854771712\n"),
            // kmem.tcp absent: left at zero.
        ],
    );
    fake_cgroup(
        &p["pids"],
        &[("pids.current", "3\n"), ("pids.max", "max\n")],
    );
    fake_cgroup(
        &p["blkio"],
        &[
            (
                "blkio.throttle.io_service_bytes_recursive",
                "8:0 Read 10\n8:0 Write 20\nTotal 30\n",
            ),
            (
                "blkio.throttle.io_serviced_recursive",
                "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
            ),
            // Present but empty BFQ table: ignored.
            ("blkio.bfq.io_service_bytes_recursive", "Total 0\n"),
            ("blkio.bfq.sectors_recursive", "8:0 5\n"),
        ],
    );
    fake_cgroup(
        &p["hugetlb"],
        &[
            ("hugetlb.2MB.usage_in_bytes", "2097152\n"),
            ("hugetlb.2MB.max_usage_in_bytes", "4194304\n"),
            ("hugetlb.2MB.failcnt", "1\n"),
            ("hugetlb.2MB.limit_in_bytes", "4194304\n"),
            ("hugetlb.2MB.rsvd.usage_in_bytes", "0\n"),
        ],
    );
    let s = m.stats().expect("stats");
    let hz = super::stats::clock_ticks();
    assert_eq!(s.cpu.usage.total, 5000);
    assert_eq!(s.cpu.usage.percpu, vec![3000, 2000]);
    assert_eq!(s.cpu.usage.percpu_kernel, vec![1000, 500]);
    assert_eq!(s.cpu.usage.percpu_user, vec![2000, 1500]);
    assert_eq!(s.cpu.usage.user, ticks_to_ns(3, hz));
    assert_eq!(s.cpu.usage.kernel, ticks_to_ns(1, hz));
    assert_eq!(s.cpu.throttling.periods, 10);
    assert_eq!(s.cpu.throttling.throttled_periods, 2);
    assert_eq!(s.cpu.throttling.throttled_time, 777);
    assert_eq!(s.cpuset.cpus, vec![0, 1]);
    assert_eq!(s.cpuset.mems, vec![0]);
    assert_eq!(s.cpuset.sched_load_balance, 1);
    assert_eq!(s.cpuset.sched_relax_domain_level, -1);
    assert_eq!(s.memory.cache, 4096);
    assert_eq!(s.memory.raw["rss"], 8192);
    assert_eq!(s.memory.usage.usage, 12288);
    assert_eq!(s.memory.usage.max, 16384);
    assert_eq!(s.memory.usage.failcnt, 3);
    assert_eq!(s.memory.usage.limit, 8_388_608);
    assert_eq!(s.memory.swap.failcnt, 1);
    assert_eq!(s.memory.kernel.usage, 100);
    assert_eq!(s.memory.kernel.limit, 9_223_372_036_854_771_712);
    assert_eq!(s.memory.kernel_tcp, Default::default());
    assert_eq!(s.pids.current, 3);
    assert_eq!(s.pids.limit, 0, "max is reported as 0 like runc");
    assert_eq!(
        s.blkio.io_service_bytes_recursive,
        vec![entry(8, 0, "Read", 10), entry(8, 0, "Write", 20)]
    );
    assert_eq!(s.blkio.io_serviced_recursive.len(), 2);
    assert_eq!(s.blkio.sectors_recursive, vec![entry(8, 0, "", 5)]);
    assert_eq!(s.hugetlb.len(), 1, "{:?}", s.hugetlb);
    let h = &s.hugetlb["2MB"];
    assert_eq!((h.usage, h.max, h.failcnt), (2_097_152, 4_194_304, 1));
}

#[test]
fn v1_stats_skip_missing_controllers_and_files() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // Only memory mounted, and only one file in it.
    let (m, p) = fake_v1(&tmp, &["memory"]);
    fake_cgroup(&p["memory"], &[("memory.usage_in_bytes", "1\n")]);
    let s = m.stats().expect("stats");
    assert_eq!(s.memory.usage.usage, 1);
    assert_eq!(s.cpu, Default::default());
    assert_eq!(s.pids, Default::default());
    // A cgroup dir that doesn't exist at all is empty, not an error.
    let gone = V1Manager::new(BTreeMap::from([(
        "memory".to_string(),
        tmp.path().join("nope"),
    )]));
    assert_eq!(gone.stats().expect("stats"), Stats::default());
}

#[test]
fn malformed_stats_file_error_names_path() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (m, p) = fake_v1(&tmp, &["memory"]);
    fake_cgroup(&p["memory"], &[("memory.stat", "cache lots\n")]);
    let err = m.stats().expect_err("malformed");
    assert!(matches!(err, Error::Parse { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("memory.stat") && msg.contains("cache lots"),
        "{msg}"
    );
}

fn fake_v2_dir(tmp: &tempfile::TempDir, files: &[(&str, &str)]) -> PathBuf {
    let dir = join(tmp.path(), &["berth", "c1"]);
    fake_cgroup(&dir, files);
    dir
}

#[test]
fn v2_stats_from_fake_cgroupfs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = fake_v2_dir(
        &tmp,
        &[
            ("cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 30\n"),
            ("cpu.pressure", "some avg10=0.00 avg60=0.00 avg300=0.00 total=5\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=2\n"),
            ("cpuset.cpus.effective", "0-3\n"),
            ("cpuset.mems.effective", "0\n"),
            ("memory.stat", "anon 4096\nfile 8192\n"),
            ("memory.current", "12288\n"),
            ("memory.max", "max\n"),
            ("memory.peak", "20000\n"),
            ("memory.events", "low 0\nhigh 0\nmax 6\noom 1\noom_kill 1\n"),
            ("memory.swap.current", "100\n"),
            ("memory.swap.max", "1000\n"),
            ("pids.current", "2\n"),
            ("pids.max", "64\n"),
            ("io.stat", "8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n"),
            ("hugetlb.1GB.current", "0\n"),
            ("hugetlb.1GB.max", "max\n"),
            ("hugetlb.1GB.events", "max 2\n"),
        ],
    );
    let s = V2Manager::new(dir).stats().expect("stats");
    assert_eq!(s.cpu.usage.total, 1_500_000);
    assert_eq!(s.cpu.usage.user, 1_000_000);
    assert_eq!(s.cpu.usage.kernel, 500_000);
    assert!(s.cpu.usage.percpu.is_empty());
    assert_eq!(s.cpu.throttling.periods, 4);
    assert_eq!(s.cpu.throttling.throttled_periods, 1);
    assert_eq!(s.cpu.throttling.throttled_time, 30_000);
    assert_eq!(s.cpu.psi.as_ref().map(|p| p.some.total), Some(5));
    assert_eq!(s.cpuset.cpus, vec![0, 1, 2, 3]);
    assert_eq!(s.memory.cache, 8192);
    assert_eq!(s.memory.raw["anon"], 4096);
    assert_eq!(s.memory.usage.usage, 12288);
    assert_eq!(s.memory.usage.limit, u64::MAX);
    assert_eq!(s.memory.usage.max, 20000);
    assert_eq!(s.memory.usage.failcnt, 6);
    // Swap is reported as memory + swap, like v1 memsw (and runc).
    assert_eq!(s.memory.swap.usage, 12388);
    assert_eq!(s.memory.swap.limit, u64::MAX, "1000 + max saturates");
    assert!(s.memory.psi.is_none());
    assert_eq!((s.pids.current, s.pids.limit), (2, 64));
    assert_eq!(
        s.blkio.io_service_bytes_recursive,
        vec![entry(8, 0, "Read", 10), entry(8, 0, "Write", 20)]
    );
    assert_eq!(
        s.blkio.io_serviced_recursive,
        vec![entry(8, 0, "Read", 1), entry(8, 0, "Write", 2)]
    );
    let h = &s.hugetlb["1GB"];
    assert_eq!((h.usage, h.max, h.failcnt), (0, 0, 2));
}

#[test]
fn v2_swap_limit_adds_memory_limit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = fake_v2_dir(
        &tmp,
        &[
            ("memory.current", "10\n"),
            ("memory.max", "1000\n"),
            ("memory.swap.current", "5\n"),
            ("memory.swap.max", "500\n"),
        ],
    );
    let s = V2Manager::new(dir).stats().expect("stats");
    assert_eq!((s.memory.swap.usage, s.memory.swap.limit), (15, 1500));
}

#[test]
fn json_shape_matches_runc() {
    let mut s = Stats::default();
    s.cpu.usage.total = 10;
    s.cpu.usage.percpu = vec![10];
    s.memory.usage.limit = 5;
    s.memory.raw.insert("cache".into(), 0);
    s.pids.current = 1;
    s.blkio.io_service_bytes_recursive = vec![entry(8, 0, "Read", 0)];
    s.hugetlb.insert("2MB".into(), Default::default());
    let v = serde_json::to_value(&s).expect("json");
    let want = serde_json::json!({
        "cpu": {
            "usage": {"total": 10, "percpu": [10], "kernel": 0, "user": 0},
            "throttling": {}
        },
        "cpuset": {
            "cpu_exclusive": 0, "mem_hardwall": 0, "mem_exclusive": 0,
            "memory_migrate": 0, "memory_spread_page": 0, "memory_spread_slab": 0,
            "memory_pressure": 0, "sched_load_balance": 0, "sched_relax_domain_level": 0
        },
        "memory": {
            "usage": {"limit": 5, "failcnt": 0},
            "swap": {"limit": 0, "failcnt": 0},
            "kernel": {"limit": 0, "failcnt": 0},
            "kernelTCP": {"limit": 0, "failcnt": 0},
            "raw": {"cache": 0}
        },
        "pids": {"current": 1},
        "blkio": {"ioServiceBytesRecursive": [{"major": 8, "op": "Read"}]},
        "hugetlb": {"2MB": {"failcnt": 0}},
        "intel_rdt": {},
        "network_interfaces": null
    });
    assert_eq!(
        v,
        want,
        "{}",
        serde_json::to_string_pretty(&v).unwrap_or_default()
    );
    // Throttling keys are camelCase like runc's types.
    s.cpu.throttling.throttled_periods = 1;
    s.cpu.throttling.throttled_time = 2;
    let v = serde_json::to_value(&s).expect("json");
    assert_eq!(
        v["cpu"]["throttling"],
        serde_json::json!({"throttledPeriods": 1, "throttledTime": 2})
    );
    // And it reads back.
    let back: Stats = serde_json::from_value(v).expect("deserialize");
    assert_eq!(back, s);
}

fn wait_for(w: &mut super::OomWatcher, want: OomEvent, limit: Duration) {
    let start = Instant::now();
    loop {
        let got = w.wait(Some(Duration::from_millis(200))).expect("wait");
        if got == want {
            return;
        }
        assert_eq!(got, OomEvent::Timeout, "wanted {want:?}");
        assert!(start.elapsed() < limit, "no {want:?} within {limit:?}");
    }
}

#[test]
fn v2_oom_watcher_on_fake_cgroupfs() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let events = "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n";
    let dir = fake_v2_dir(&tmp, &[("memory.events", events)]);
    let state = CgroupState::V2 { path: dir.clone() };
    let mut w = oom_watcher(&state).expect("watcher");
    assert!(format!("{w:?}").contains("v2"));
    assert!(
        !w.is_notified(),
        "a plain file can't be polled: timer fallback"
    );
    // Nothing yet: times out (promptly, also with a zero timeout).
    assert_eq!(
        w.wait(Some(Duration::ZERO)).expect("wait"),
        OomEvent::Timeout
    );
    assert_eq!(
        w.wait(Some(FALLBACK_POLL * 2)).expect("wait"),
        OomEvent::Timeout
    );
    // Other counters changing is not an OOM.
    std::fs::write(dir.join("memory.events"), events.replace("max 0", "max 3")).expect("write");
    assert_eq!(
        w.wait(Some(FALLBACK_POLL * 3)).expect("wait"),
        OomEvent::Timeout
    );
    // An OOM kill.
    let after = events
        .replace("oom 0", "oom 1")
        .replace("oom_kill 0", "oom_kill 1");
    std::fs::write(dir.join("memory.events"), &after).expect("write");
    wait_for(&mut w, OomEvent::Oom, Duration::from_secs(10));
    // Reported once.
    assert_eq!(
        w.wait(Some(FALLBACK_POLL * 3)).expect("wait"),
        OomEvent::Timeout
    );
    // Written from another thread while we block.
    let path = dir.join("memory.events");
    let again = after.replace("oom_kill 1", "oom_kill 2");
    let writer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(150));
        std::fs::write(path, again).expect("write");
    });
    wait_for(&mut w, OomEvent::Oom, Duration::from_secs(10));
    writer.join().expect("writer");
    // The cgroup goes away.
    std::fs::remove_file(dir.join("memory.events")).expect("rm");
    std::fs::remove_dir(&dir).expect("rmdir");
    wait_for(&mut w, OomEvent::CgroupGone, Duration::from_secs(10));
    assert_eq!(w.wait(None).expect("wait"), OomEvent::CgroupGone, "sticky");
}

#[test]
fn oom_watcher_errors() {
    let tmp = tempfile::tempdir().expect("tempdir");
    // v2 without memory.events (memory controller not enabled).
    let err = oom_watcher(&CgroupState::V2 {
        path: tmp.path().to_path_buf(),
    })
    .expect_err("no memory.events");
    assert!(err.to_string().contains("memory.events"), "{err}");
    // v1 without a memory hierarchy.
    let err = oom_watcher(&CgroupState::V1 {
        paths: BTreeMap::new(),
    })
    .expect_err("no memory");
    assert!(matches!(err, Error::MissingController { .. }), "{err:?}");
}
