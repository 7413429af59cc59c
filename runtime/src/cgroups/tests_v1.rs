//! cgroup v1 tests against a temp dir posing as a hybrid cgroupfs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::detect::{self, Layout};
use super::tests_common::{fake_cgroup, join, read, res, v1_line, v2_line, writes, writes_to};
use super::{from_state, manager_for_layout, CgroupManager, CgroupState, Error};

/// A fake hybrid host: separate cpu/cpuacct, co-mounted net_cls,net_prio,
/// name=systemd, a controller-less cgroup2 at `unified`, no hugetlb/rdma.
/// Our own memory cgroup is /process_api/abc, everything else is /.
struct FakeV1 {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

const HIERARCHIES: &[(&str, &str)] = &[
    ("cpu", "cpu"),
    ("cpuacct", "cpuacct"),
    ("cpuset", "cpuset"),
    ("memory", "memory"),
    ("devices", "devices"),
    ("freezer", "freezer"),
    ("blkio", "blkio"),
    ("pids", "pids"),
    ("net_cls,net_prio", "net_cls,net_prio"),
    ("systemd", "name=systemd"),
];

const PROC_CGROUP: &str = "10:net_cls,net_prio:/\n9:name=systemd:/\n8:pids:/\n7:blkio:/\n\
6:freezer:/\n5:devices:/\n4:memory:/process_api/abc\n3:cpuset:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";

impl FakeV1 {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("cgroup");
        for (dir, _) in HIERARCHIES {
            fake_cgroup(&root.join(dir), &[("cgroup.procs", "")]);
        }
        fake_cgroup(
            &root.join("cpuset"),
            &[("cpuset.cpus", "0-3"), ("cpuset.mems", "0")],
        );
        fake_cgroup(&join(&root, &["memory", "process_api", "abc"]), &[]);
        fake_cgroup(&root.join("unified"), &[("cgroup.procs", "")]);
        Self { _tmp: tmp, root }
    }

    fn mountinfo(&self) -> String {
        let mut lines = vec![format!(
            "31 23 0:28 / {} rw,relatime - tmpfs tmpfs rw,mode=755",
            self.root.display()
        )];
        for (i, (dir, opts)) in HIERARCHIES.iter().enumerate() {
            lines.push(v1_line(40 + i as u32, &self.root.join(dir), opts));
        }
        lines.push(v2_line(60, &self.root.join("unified")));
        lines.join("\n")
    }

    fn layout(&self) -> Layout {
        detect::detect(&self.mountinfo(), PROC_CGROUP, &self.root).expect("detect")
    }

    fn manager(&self, path: Option<&str>, id: &str) -> Box<dyn CgroupManager> {
        manager_for_layout(&self.layout(), path, id).expect("manager")
    }
}

fn paths(m: &dyn CgroupManager) -> BTreeMap<String, PathBuf> {
    match m.state() {
        CgroupState::V1 { paths } => paths,
        other => panic!("expected v1 state, got {other:?}"),
    }
}

/// Manager for /berth/c1, created, with `files` in the leaf of `key`.
fn created(fake: &FakeV1, key: &str, files: &[(&str, &str)]) -> (Box<dyn CgroupManager>, PathBuf) {
    let m = fake.manager(Some("/berth/c1"), "c1");
    fake_cgroup(
        &join(&fake.root, &["cpuset", "berth"]),
        &[("cpuset.cpus", ""), ("cpuset.mems", "")],
    );
    fake_cgroup(
        &join(&fake.root, &["cpuset", "berth", "c1"]),
        &[("cpuset.cpus", ""), ("cpuset.mems", "")],
    );
    m.create().expect("create");
    let dir = paths(m.as_ref())[key].clone();
    fake_cgroup(&dir, files);
    writes();
    (m, dir)
}

#[test]
fn detects_hybrid_layout_and_own_paths() {
    let fake = FakeV1::new();
    let Layout::V1 { mounts, own } = fake.layout() else {
        panic!("expected v1");
    };
    let keys: Vec<&str> = mounts.keys().map(String::as_str).collect();
    for k in [
        "cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    for k in ["net_cls", "net_prio", "name=systemd", "unified"] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    assert_eq!(mounts["net_cls"], mounts["net_prio"]);
    assert_eq!(mounts["unified"].mountpoint, fake.root.join("unified"));
    assert_eq!(own["memory"], "/process_api/abc");
    assert_eq!(own["unified"], "/");
}

#[test]
fn mountinfo_escapes_and_unknown_options() {
    let info = "40 31 0:40 / /sys/fs/cgroup/my\\040dir rw - cgroup cgroup rw,memory,nosuid\n\
                41 31 0:41 / /sys/fs/cgroup/x rw - cgroup cgroup rw,name=other";
    let layout = detect::detect(info, "", Path::new("/sys/fs/cgroup")).expect("detect");
    let Layout::V1 { mounts, .. } = layout else {
        panic!("expected v1");
    };
    assert_eq!(
        mounts["memory"].mountpoint,
        PathBuf::from("/sys/fs/cgroup/my dir")
    );
    assert_eq!(mounts.len(), 1, "{mounts:?}");
}

/// This host's table as a private view of it shows it: a tmpfs stacked on
/// /sys/fs/cgroup (parent: the tmpfs it covers) with the v1 hierarchies
/// bound back, the unified cgroup2 not. The host's mounts stay listed, hidden;
/// the layout is pure v1, without `unified` (runc's statfs sees the same).
#[test]
fn mounts_hidden_by_a_private_view_are_not_used() {
    let info = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                23 27 0:21 / /sys rw - sysfs sysfs rw\n\
                31 23 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro\n\
                35 31 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                36 31 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n\
                41 31 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                90 31 0:60 / /sys/fs/cgroup rw - tmpfs cgroup-v1-view rw\n\
                91 90 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                92 90 0:32 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids";
    let layout = detect::detect(
        info,
        "0::/\n4:memory:/\n3:pids:/\n",
        Path::new("/sys/fs/cgroup"),
    )
    .expect("detect");
    let Layout::V1 { mounts, .. } = layout else {
        panic!("expected v1");
    };
    let keys: Vec<&str> = mounts.keys().map(String::as_str).collect();
    assert_eq!(keys, ["memory", "pids"]);

    // A sibling over a directory above the mountpoint hides it too.
    let info = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                35 27 0:31 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                41 27 0:37 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
                90 27 0:60 / /sys/fs rw - tmpfs tmpfs rw";
    let err = detect::detect(info, "", Path::new("/sys/fs/cgroup"));
    assert!(matches!(err, Err(Error::Detect { .. })), "{err:?}");
}

#[test]
fn no_cgroup_mounts_is_an_error() {
    let err = detect::detect(
        "1 0 0:1 / / rw - ext4 /dev/sda rw",
        "",
        Path::new("/sys/fs/cgroup"),
    );
    assert!(matches!(err, Err(Error::Detect { .. })), "{err:?}");
}

#[test]
fn relative_path_is_below_own_cgroup_per_hierarchy() {
    let fake = FakeV1::new();
    let m = fake.manager(Some("sub/c1"), "c1");
    let p = paths(m.as_ref());
    assert_eq!(
        p["memory"],
        join(&fake.root, &["memory", "process_api", "abc", "sub", "c1"])
    );
    assert_eq!(p["cpu"], join(&fake.root, &["cpu", "sub", "c1"]));
    assert_eq!(
        p["name=systemd"],
        join(&fake.root, &["systemd", "sub", "c1"])
    );
    assert_eq!(p["unified"], join(&fake.root, &["unified", "sub", "c1"]));
}

#[test]
fn absolute_path_is_below_hierarchy_root() {
    let fake = FakeV1::new();
    let m = fake.manager(Some("/berth/c1"), "ignored");
    let p = paths(m.as_ref());
    assert_eq!(p["memory"], join(&fake.root, &["memory", "berth", "c1"]));
    assert_eq!(p["net_cls"], p["net_prio"]);
}

#[test]
fn no_path_uses_the_id_relative() {
    let fake = FakeV1::new();
    let m = fake.manager(None, "ctr-1");
    let p = paths(m.as_ref());
    assert_eq!(
        p["memory"],
        join(&fake.root, &["memory", "process_api", "abc", "ctr-1"])
    );
    assert_eq!(p["pids"], join(&fake.root, &["pids", "ctr-1"]));
}

#[test]
fn dotdot_and_root_paths_are_refused() {
    let fake = FakeV1::new();
    for bad in ["../escape", "/a/../../b", "a/..", "/", "", "."] {
        let r = manager_for_layout(
            &fake.layout(),
            Some(bad),
            if bad.is_empty() { "" } else { "x" },
        );
        match r {
            Err(Error::InvalidPath { .. }) => {}
            other => panic!("{bad:?} should be refused, got {other:?}"),
        }
    }
    let r = manager_for_layout(&fake.layout(), None, "a/b");
    assert!(matches!(r, Err(Error::InvalidPath { .. })));
}

#[test]
fn mount_root_is_stripped_from_own_cgroup() {
    let info = "40 31 0:40 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
    let layout = detect::detect(
        info,
        "4:memory:/docker/abc/inner\n",
        Path::new("/sys/fs/cgroup"),
    )
    .expect("detect");
    let m = manager_for_layout(&layout, Some("c"), "c").expect("manager");
    assert_eq!(
        paths(m.as_ref())["memory"],
        PathBuf::from("/sys/fs/cgroup/memory/inner/c")
    );
}

#[test]
fn create_is_idempotent_and_inherits_cpuset() {
    let fake = FakeV1::new();
    let (m, cpuset) = created(&fake, "cpuset", &[]);
    for dir in paths(m.as_ref()).values() {
        assert!(dir.is_dir(), "{} not created", dir.display());
    }
    assert_eq!(read(&cpuset, "cpuset.cpus"), "0-3");
    assert_eq!(read(&cpuset, "cpuset.mems"), "0");
    assert_eq!(read(cpuset.parent().expect("parent"), "cpuset.cpus"), "0-3");
    m.create().expect("second create");
}

#[test]
fn state_round_trips_through_json() {
    let fake = FakeV1::new();
    let m = fake.manager(Some("/berth/c1"), "c1");
    let json = serde_json::to_string(&m.state()).expect("serialize");
    let back: CgroupState = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, m.state());
    assert_eq!(from_state(&back).state(), m.state());
    assert!(from_state(&back).clone_into_fd().is_none());
}

#[test]
fn destroy_removes_leaf_and_children_only() {
    let fake = FakeV1::new();
    let (m, mem) = created(&fake, "memory", &[("memory.limit_in_bytes", "1")]);
    fake_cgroup(&mem.join("child"), &[("cgroup.procs", "")]);
    m.destroy().expect("destroy");
    for dir in paths(m.as_ref()).values() {
        assert!(!dir.exists(), "{} left behind", dir.display());
        assert!(dir.parent().expect("parent").is_dir(), "parent removed");
    }
    m.destroy().expect("destroy of missing dirs is fine");
}

#[test]
fn pids_are_collected_from_all_hierarchies_and_children() {
    let fake = FakeV1::new();
    let (m, mem) = created(&fake, "memory", &[("cgroup.procs", "10\n11\n")]);
    fake_cgroup(&mem.join("child"), &[("cgroup.procs", "12\n")]);
    let pids_dir = paths(m.as_ref())["pids"].clone();
    fake_cgroup(&pids_dir, &[("cgroup.procs", "11\n13\n")]);
    assert_eq!(m.pids().expect("pids"), vec![10, 11, 12, 13]);
}

#[test]
fn add_task_writes_every_distinct_hierarchy_once() {
    let fake = FakeV1::new();
    let (m, _) = created(&fake, "memory", &[]);
    for dir in paths(m.as_ref()).values() {
        fake_cgroup(dir, &[("cgroup.procs", "")]);
    }
    m.add_task(42).expect("add_task");
    let w = writes_to(&writes(), "cgroup.procs");
    // 11 hierarchies (net_cls,net_prio share one).
    assert_eq!(w.len(), 11, "{w:?}");
    assert!(w.iter().all(|v| v == "42"));
}

#[test]
fn memory_raise_writes_memsw_first() {
    let fake = FakeV1::new();
    let files = [
        ("memory.limit_in_bytes", "100"),
        ("memory.memsw.limit_in_bytes", "100"),
        ("memory.soft_limit_in_bytes", ""),
        ("memory.swappiness", ""),
        ("memory.oom_control", ""),
    ];
    let (m, dir) = created(&fake, "memory", &files);
    m.apply(&res(r#"{"memory":{"limit":200,"swap":300,"reservation":150,"swappiness":10,"disableOOMKiller":true,"kernel":5}}"#))
        .expect("apply");
    let w = writes();
    let order: Vec<&str> = w.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        order,
        [
            "memory.memsw.limit_in_bytes",
            "memory.limit_in_bytes",
            "memory.soft_limit_in_bytes",
            "memory.swappiness",
            "memory.oom_control"
        ]
    );
    assert_eq!(read(&dir, "memory.memsw.limit_in_bytes"), "300");
    assert_eq!(read(&dir, "memory.limit_in_bytes"), "200");
    assert_eq!(read(&dir, "memory.soft_limit_in_bytes"), "150");
    assert_eq!(read(&dir, "memory.swappiness"), "10");
    assert_eq!(read(&dir, "memory.oom_control"), "1");
}

#[test]
fn memory_lower_writes_limit_first() {
    let fake = FakeV1::new();
    let files = [
        ("memory.limit_in_bytes", "1000"),
        ("memory.memsw.limit_in_bytes", "2000"),
    ];
    let (m, _) = created(&fake, "memory", &files);
    m.apply(&res(r#"{"memory":{"limit":200,"swap":300}}"#))
        .expect("apply");
    let w = writes();
    assert_eq!(w[0], ("memory.limit_in_bytes".into(), "200".into()));
    assert_eq!(w[1], ("memory.memsw.limit_in_bytes".into(), "300".into()));
}

#[test]
fn memory_unlimited_also_unlimits_swap() {
    let fake = FakeV1::new();
    let files = [
        ("memory.limit_in_bytes", "1000"),
        ("memory.memsw.limit_in_bytes", "9223372036854771712"),
    ];
    let (m, _) = created(&fake, "memory", &files);
    m.apply(&res(r#"{"memory":{"limit":-1}}"#)).expect("apply");
    let w = writes();
    assert_eq!(w[0], ("memory.memsw.limit_in_bytes".into(), "-1".into()));
    assert_eq!(w[1], ("memory.limit_in_bytes".into(), "-1".into()));
}

#[test]
fn memory_swap_without_memsw() {
    let fake = FakeV1::new();
    let (m, dir) = created(&fake, "memory", &[("memory.limit_in_bytes", "1")]);
    m.apply(&res(r#"{"memory":{"limit":200,"swap":200}}"#))
        .expect("swap == limit is fine");
    assert_eq!(read(&dir, "memory.limit_in_bytes"), "200");
    m.apply(&res(r#"{"memory":{"limit":200,"swap":-1}}"#))
        .expect("unlimited swap is fine");
    let err = m.apply(&res(r#"{"memory":{"limit":200,"swap":400}}"#));
    match err {
        Err(e @ Error::Unsupported { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("linux.resources.memory.swap"), "{msg}");
            assert!(msg.contains("memory.memsw.limit_in_bytes"), "{msg}");
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn memory_swap_below_limit_is_invalid() {
    let fake = FakeV1::new();
    let files = [
        ("memory.limit_in_bytes", "1"),
        ("memory.memsw.limit_in_bytes", "1"),
    ];
    let (m, _) = created(&fake, "memory", &files);
    let err = m.apply(&res(r#"{"memory":{"limit":300,"swap":200}}"#));
    assert!(matches!(err, Err(Error::InvalidValue { .. })), "{err:?}");
    let err = m.apply(&res(r#"{"memory":{"swappiness":101}}"#));
    assert!(matches!(err, Err(Error::InvalidValue { .. })), "{err:?}");
}

#[test]
fn cpu_values_and_period_before_quota() {
    let fake = FakeV1::new();
    let files = [
        ("cpu.shares", ""),
        ("cpu.cfs_quota_us", ""),
        ("cpu.cfs_period_us", ""),
        ("cpu.idle", ""),
        ("cpu.rt_period_us", ""),
        ("cpu.rt_runtime_us", ""),
    ];
    let (m, dir) = created(&fake, "cpu", &files);
    let r = res(
        r#"{"cpu":{"shares":512,"quota":50000,"period":20000,"realtimePeriod":1000000,"realtimeRuntime":950000,"idle":1}}"#,
    );
    m.apply(&r).expect("apply");
    let w = writes();
    let order: Vec<&str> = w.iter().map(|(f, _)| f.as_str()).collect();
    assert_eq!(
        order,
        [
            "cpu.shares",
            "cpu.cfs_period_us",
            "cpu.cfs_quota_us",
            "cpu.rt_period_us",
            "cpu.rt_runtime_us",
            "cpu.idle"
        ]
    );
    assert_eq!(read(&dir, "cpu.shares"), "512");
    assert_eq!(read(&dir, "cpu.cfs_quota_us"), "50000");
    assert_eq!(read(&dir, "cpu.cfs_period_us"), "20000");
    assert_eq!(read(&dir, "cpu.rt_runtime_us"), "950000");
    m.apply(&res(r#"{"cpu":{"quota":-1}}"#)).expect("apply");
    assert_eq!(read(&dir, "cpu.cfs_quota_us"), "-1");
}

#[test]
fn cpu_realtime_skipped_without_files() {
    let fake = FakeV1::new();
    let (m, _) = created(&fake, "cpu", &[("cpu.shares", "")]);
    m.apply(&res(
        r#"{"cpu":{"shares":2,"realtimeRuntime":1,"realtimePeriod":2}}"#,
    ))
    .expect("apply");
    assert_eq!(writes(), vec![("cpu.shares".to_string(), "2".to_string())]);
}

#[test]
fn cpuset_values() {
    let fake = FakeV1::new();
    let (m, dir) = created(&fake, "cpuset", &[]);
    m.apply(&res(r#"{"cpu":{"cpus":"1-2","mems":"0"}}"#))
        .expect("apply");
    assert_eq!(read(&dir, "cpuset.cpus"), "1-2");
    assert_eq!(read(&dir, "cpuset.mems"), "0");
}

#[test]
fn pids_limit_values() {
    let fake = FakeV1::new();
    let (m, dir) = created(&fake, "pids", &[("pids.max", "")]);
    m.apply(&res(r#"{"pids":{"limit":5}}"#)).expect("apply");
    assert_eq!(read(&dir, "pids.max"), "5");
    m.apply(&res(r#"{"pids":{"limit":0}}"#)).expect("apply");
    assert_eq!(read(&dir, "pids.max"), "max");
    m.apply(&res(r#"{"pids":{"limit":-1}}"#)).expect("apply");
    assert_eq!(read(&dir, "pids.max"), "max");
}

#[test]
fn blkio_values() {
    let fake = FakeV1::new();
    let files = [
        ("blkio.weight", ""),
        ("blkio.leaf_weight", ""),
        ("blkio.weight_device", ""),
        ("blkio.leaf_weight_device", ""),
        ("blkio.throttle.read_bps_device", ""),
        ("blkio.throttle.write_bps_device", ""),
        ("blkio.throttle.read_iops_device", ""),
        ("blkio.throttle.write_iops_device", ""),
    ];
    let (m, _) = created(&fake, "blkio", &files);
    let r = res(r#"{"blockIO":{"weight":500,"leafWeight":300,
        "weightDevice":[{"major":8,"minor":0,"weight":600,"leafWeight":200}],
        "throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1000},{"major":8,"minor":16,"rate":2000}],
        "throttleWriteBpsDevice":[{"major":8,"minor":0,"rate":3000}],
        "throttleReadIOPSDevice":[{"major":8,"minor":0,"rate":10}],
        "throttleWriteIOPSDevice":[{"major":8,"minor":0,"rate":20}]}}"#);
    m.apply(&r).expect("apply");
    let w = writes();
    assert_eq!(writes_to(&w, "blkio.weight"), ["500"]);
    assert_eq!(writes_to(&w, "blkio.leaf_weight"), ["300"]);
    assert_eq!(writes_to(&w, "blkio.weight_device"), ["8:0 600"]);
    assert_eq!(writes_to(&w, "blkio.leaf_weight_device"), ["8:0 200"]);
    assert_eq!(
        writes_to(&w, "blkio.throttle.read_bps_device"),
        ["8:0 1000", "8:16 2000"]
    );
    assert_eq!(
        writes_to(&w, "blkio.throttle.write_bps_device"),
        ["8:0 3000"]
    );
    assert_eq!(writes_to(&w, "blkio.throttle.read_iops_device"), ["8:0 10"]);
    assert_eq!(
        writes_to(&w, "blkio.throttle.write_iops_device"),
        ["8:0 20"]
    );
}

/// What dockerd sends for a container without limits: zeros runc reads as
/// "not set". None is written, so a host without blkio weights (no BFQ)
/// runs it, and no limit of 0 is imposed.
#[test]
fn zero_values_are_not_set() {
    let fake = FakeV1::new();
    let (m, _) = created(&fake, "blkio", &[("blkio.throttle.read_bps_device", "")]);
    m.apply(&res(
        r#"{"memory":{"limit":0,"reservation":0,"swap":0,"kernel":0,"kernelTCP":0},
        "cpu":{"shares":0,"quota":0,"period":0,"realtimePeriod":0,"realtimeRuntime":0,
               "cpus":"","mems":""},
        "blockIO":{"weight":0,"leafWeight":0,
                   "weightDevice":[{"major":8,"minor":0,"weight":0,"leafWeight":0}]},
        "network":{"classID":0}}"#,
    ))
    .expect("zeros are not set, so nothing is missing");
    let w = writes();
    assert!(w.is_empty(), "nothing written: {w:?}");
}

#[test]
fn blkio_bfq_fallback_and_missing_leaf_weight() {
    let fake = FakeV1::new();
    let files = [("blkio.bfq.weight", ""), ("blkio.bfq.weight_device", "")];
    let (m, dir) = created(&fake, "blkio", &files);
    m.apply(&res(
        r#"{"blockIO":{"weight":100,"weightDevice":[{"major":8,"minor":0,"weight":50}]}}"#,
    ))
    .expect("apply");
    assert_eq!(read(&dir, "blkio.bfq.weight"), "100");
    assert_eq!(read(&dir, "blkio.bfq.weight_device"), "8:0 50");
    let err = m.apply(&res(r#"{"blockIO":{"leafWeight":100}}"#));
    match err {
        Err(e @ Error::Unsupported { .. }) => {
            assert!(
                e.to_string().contains("linux.resources.blockIO.leafWeight"),
                "{e}"
            )
        }
        other => panic!("expected Unsupported, got {other:?}"),
    }
}

#[test]
fn hugetlb_missing_controller_errors_only_when_set() {
    let fake = FakeV1::new();
    let (m, _) = created(&fake, "memory", &[]);
    m.apply(&res(r#"{"hugepageLimits":[]}"#))
        .expect("empty list is fine");
    let err = m.apply(&res(
        r#"{"hugepageLimits":[{"pageSize":"2MB","limit":1024}]}"#,
    ));
    match err {
        Err(Error::MissingController { controller, field }) => {
            assert_eq!(controller, "hugetlb");
            assert_eq!(field, "linux.resources.hugepageLimits");
        }
        other => panic!("expected MissingController, got {other:?}"),
    }
}

#[test]
fn hugetlb_values_when_mounted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    let info = v1_line(40, &root.join("hugetlb"), "hugetlb");
    let layout = detect::detect(&info, "", &root).expect("detect");
    let m = manager_for_layout(&layout, Some("/c"), "c").expect("manager");
    let dir = join(&root, &["hugetlb", "c"]);
    fake_cgroup(
        &dir,
        &[
            ("hugetlb.2MB.limit_in_bytes", ""),
            ("hugetlb.2MB.rsvd.limit_in_bytes", ""),
        ],
    );
    m.apply(&res(
        r#"{"hugepageLimits":[{"pageSize":"2MB","limit":4194304}]}"#,
    ))
    .expect("apply");
    assert_eq!(read(&dir, "hugetlb.2MB.limit_in_bytes"), "4194304");
    assert_eq!(read(&dir, "hugetlb.2MB.rsvd.limit_in_bytes"), "4194304");
    let err = m.apply(&res(
        r#"{"hugepageLimits":[{"pageSize":"../x","limit":1}]}"#,
    ));
    assert!(matches!(err, Err(Error::InvalidValue { .. })), "{err:?}");
}

#[test]
fn devices_deny_all_then_spec_then_defaults() {
    let fake = FakeV1::new();
    let (m, _) = created(
        &fake,
        "devices",
        &[("devices.allow", ""), ("devices.deny", "")],
    );
    let r = res(r#"{"devices":[
        {"allow":false,"access":"rwm"},
        {"allow":true,"type":"c","major":10,"minor":229,"access":"rw"},
        {"allow":false,"type":"b","major":8,"access":"w"}]}"#);
    m.apply(&r).expect("apply");
    let w = writes();
    let expected: Vec<(String, String)> = [
        ("devices.deny", "a"),
        ("devices.deny", "a *:* rwm"),
        ("devices.allow", "c 10:229 rw"),
        ("devices.deny", "b 8:* w"),
        ("devices.allow", "c *:* m"),
        ("devices.allow", "b *:* m"),
        ("devices.allow", "c 1:3 rwm"),
        ("devices.allow", "c 1:8 rwm"),
        ("devices.allow", "c 1:7 rwm"),
        ("devices.allow", "c 5:0 rwm"),
        ("devices.allow", "c 1:5 rwm"),
        ("devices.allow", "c 1:9 rwm"),
        ("devices.allow", "c 136:* rwm"),
        ("devices.allow", "c 5:2 rwm"),
        ("devices.allow", "c 10:200 rwm"),
    ]
    .iter()
    .map(|(f, v)| (f.to_string(), v.to_string()))
    .collect();
    assert_eq!(w, expected);
    // Letters the kernel does not know are dropped (as runc does)...
    m.apply(&res(
        r#"{"devices":[{"allow":true,"type":"c","major":1,"minor":11,"access":"rwa"}]}"#,
    ))
    .unwrap();
    // ...but an access with none it knows is refused.
    let err = m.apply(&res(r#"{"devices":[{"allow":true,"access":"xyz"}]}"#));
    assert!(matches!(err, Err(Error::InvalidValue { .. })), "{err:?}");
}

#[test]
fn network_written_when_mounted() {
    let fake = FakeV1::new();
    let (m, dir) = created(
        &fake,
        "net_cls",
        &[("net_cls.classid", ""), ("net_prio.ifpriomap", "")],
    );
    let r = res(r#"{"network":{"classID":1048577,"priorities":[{"name":"eth0","priority":5}]}}"#);
    m.apply(&r).expect("apply");
    assert_eq!(read(&dir, "net_cls.classid"), "1048577");
    assert_eq!(read(&dir, "net_prio.ifpriomap"), "eth0 5");
}

#[test]
fn network_ignored_when_not_mounted() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    let layout =
        detect::detect(&v1_line(40, &root.join("memory"), "memory"), "", &root).expect("detect");
    let m = manager_for_layout(&layout, Some("/c"), "c").expect("manager");
    m.apply(&res(r#"{"network":{"classID":1}}"#))
        .expect("ignored");
    assert!(writes().is_empty());
}

#[test]
fn unified_on_v1_is_an_error_unless_empty() {
    let fake = FakeV1::new();
    let (m, _) = created(&fake, "memory", &[]);
    m.apply(&res(r#"{"unified":{}}"#))
        .expect("empty map is fine");
    let err = m.apply(&res(r#"{"unified":{"memory.high":"1000"}}"#));
    assert!(matches!(err, Err(Error::Unsupported { .. })), "{err:?}");
}

#[test]
fn missing_controller_names_field() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().to_path_buf();
    let layout =
        detect::detect(&v1_line(40, &root.join("memory"), "memory"), "", &root).expect("detect");
    let m = manager_for_layout(&layout, Some("/c"), "c").expect("manager");
    let err = m
        .apply(&res(r#"{"pids":{"limit":5}}"#))
        .expect_err("no pids controller");
    let msg = err.to_string();
    assert!(
        msg.contains("linux.resources.pids.limit") && msg.contains("pids"),
        "{msg}"
    );
}

#[test]
fn write_error_names_path_value_field_and_os_error() {
    let fake = FakeV1::new();
    let (m, dir) = created(&fake, "pids", &[]);
    let err = m
        .apply(&res(r#"{"pids":{"limit":7}}"#))
        .expect_err("no pids.max file");
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.join("pids.max").display().to_string()),
        "{msg}"
    );
    assert!(msg.contains("\"7\""), "{msg}");
    assert!(msg.contains("linux.resources.pids.limit"), "{msg}");
    assert!(err.io_error().is_some(), "{msg}");
}

#[test]
fn freezer_on_fake_fs() {
    let fake = FakeV1::new();
    let (m, dir) = created(&fake, "freezer", &[("freezer.state", "THAWED")]);
    assert!(!m.is_frozen().expect("is_frozen"));
    m.freeze(true).expect("freeze");
    assert_eq!(read(&dir, "freezer.state"), "FROZEN");
    assert!(m.is_frozen().expect("is_frozen"));
    m.freeze(false).expect("thaw");
    assert!(!m.is_frozen().expect("is_frozen"));
}

/// The distinct leaf dirs of `m`, each given `tasks` and `cgroup.procs`;
/// returns them and the unified (cgroup2) one, marked as cgroup2.
fn joinable(fake: &FakeV1, m: &dyn CgroupManager) -> (Vec<PathBuf>, PathBuf) {
    let mut dirs: Vec<PathBuf> = paths(m).into_values().collect();
    dirs.sort();
    dirs.dedup();
    for dir in &dirs {
        fake_cgroup(dir, &[("tasks", ""), ("cgroup.procs", "")]);
    }
    let unified = dirs
        .iter()
        .find(|d| d.starts_with(fake.root.join("unified")))
        .expect("a unified dir")
        .clone();
    fake_cgroup(&unified, &[("cgroup.controllers", "")]);
    dirs.retain(|d| *d != unified);
    writes();
    (dirs, unified)
}

#[test]
fn a_new_process_joins_the_v1_hierarchies_itself_and_is_born_in_the_unified_one() {
    let fake = FakeV1::new();
    let (m, _) = created(&fake, "memory", &[]);
    let (v1_dirs, unified) = joinable(&fake, m.as_ref());
    let state = m.state();
    assert!(
        m.clone_into_fd().is_some(),
        "clone goes into {}",
        unified.display()
    );

    // The child: `0` into every v1 hierarchy's tasks, nothing in cgroup2.
    super::join_v1_self(&state).expect("join");
    let w = writes();
    assert_eq!(writes_to(&w, "tasks"), vec!["0".to_owned(); v1_dirs.len()]);
    assert!(writes_to(&w, "cgroup.procs").is_empty(), "{w:?}");

    // Born in the unified one and joined by itself: the parent does nothing.
    assert!(super::complete_at_birth(&state, true, true));
    m.add_task_after_clone(42, true, true).expect("add");
    assert!(writes().is_empty());

    // clone could not go into the cgroup: the parent writes only cgroup2.
    assert!(!super::complete_at_birth(&state, false, true));
    m.add_task_after_clone(42, false, true).expect("add");
    let w = writes();
    assert_eq!(writes_to(&w, "cgroup.procs"), vec!["42"]);
    assert_eq!(w.len(), 1);

    // A child that cannot join (a new user namespace): the parent writes
    // every v1 hierarchy.
    assert!(!super::complete_at_birth(&state, true, false));
    m.add_task_after_clone(42, true, false).expect("add");
    let w = writes();
    assert_eq!(
        writes_to(&w, "cgroup.procs"),
        vec!["42".to_owned(); v1_dirs.len()]
    );
    assert!(
        !super::child_joins_v1(&state, true),
        "never with a new user namespace"
    );
}

#[test]
fn pure_v2_is_complete_only_when_born_there() {
    let state = CgroupState::V2 {
        path: PathBuf::from("/sys/fs/cgroup/x"),
    };
    assert!(super::complete_at_birth(&state, true, false));
    assert!(!super::complete_at_birth(&state, false, true));
    assert!(!super::child_joins_v1(&state, false));
    super::join_v1_self(&state).expect("nothing to do on v2");
}
