//! cgroup v2 tests against a temp dir posing as a unified cgroupfs, plus
//! the pure conversion functions.

use std::path::{Path, PathBuf};

use super::convert;
use super::detect::{self, Layout};
use super::tests_common::{fake_cgroup, join, read, res, v1_line, v2_line, writes, writes_to};
use super::{from_state, manager_for_layout, CgroupManager, CgroupState, Error};

struct FakeV2 {
    _tmp: tempfile::TempDir,
    root: PathBuf,
}

const CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma";

impl FakeV2 {
    fn new() -> Self {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("cgroup");
        fake_cgroup(
            &root,
            &[
                ("cgroup.controllers", CONTROLLERS),
                ("cgroup.subtree_control", "memory"),
                ("cgroup.procs", ""),
            ],
        );
        Self { _tmp: tmp, root }
    }

    fn layout(&self) -> Layout {
        // A v1 name=systemd mount elsewhere must not turn this into v1.
        let info = format!(
            "{}\n{}",
            v2_line(30, &self.root),
            v1_line(31, Path::new("/elsewhere/systemd"), "name=systemd")
        );
        detect::detect(&info, "0::/user.slice/me\n", &self.root).expect("detect")
    }

    fn manager(&self, path: Option<&str>, id: &str) -> Box<dyn CgroupManager> {
        manager_for_layout(&self.layout(), path, id).expect("manager")
    }

    /// Manager for /berth/c1, created, with `files` in the leaf.
    fn created(&self, files: &[(&str, &str)]) -> (Box<dyn CgroupManager>, PathBuf) {
        let m = self.manager(Some("/berth/c1"), "c1");
        m.create().expect("create");
        let dir = dir_of(m.as_ref());
        fake_cgroup(&dir, files);
        writes();
        (m, dir)
    }
}

fn dir_of(m: &dyn CgroupManager) -> PathBuf {
    match m.state() {
        CgroupState::V2 { path } => path,
        other => panic!("expected v2 state, got {other:?}"),
    }
}

#[test]
fn detects_v2_when_cgroup2_is_at_root() {
    let fake = FakeV2::new();
    match fake.layout() {
        Layout::V2 { mount, own } => {
            assert_eq!(mount.mountpoint, fake.root);
            assert_eq!(own.as_deref(), Some("/user.slice/me"));
        }
        other => panic!("expected v2, got {other:?}"),
    }
}

#[test]
fn lone_cgroup2_elsewhere_is_v2() {
    let layout = detect::detect(
        &v2_line(30, Path::new("/mnt/cg2")),
        "0::/\n",
        Path::new("/sys/fs/cgroup"),
    )
    .expect("detect");
    assert!(matches!(layout, Layout::V2 { .. }), "{layout:?}");
}

#[test]
fn v2_paths_relative_absolute_and_id() {
    let fake = FakeV2::new();
    assert_eq!(
        dir_of(fake.manager(Some("/a/b"), "x").as_ref()),
        join(&fake.root, &["a", "b"])
    );
    assert_eq!(
        dir_of(fake.manager(Some("a/b"), "x").as_ref()),
        join(&fake.root, &["user.slice", "me", "a", "b"])
    );
    assert_eq!(
        dir_of(fake.manager(None, "ctr").as_ref()),
        join(&fake.root, &["user.slice", "me", "ctr"])
    );
    for bad in ["/a/../..", "..", "/"] {
        let r = manager_for_layout(&fake.layout(), Some(bad), "x");
        assert!(matches!(r, Err(Error::InvalidPath { .. })), "{bad}: {r:?}");
    }
}

#[test]
fn create_delegates_controllers_in_ancestors_not_leaf() {
    let fake = FakeV2::new();
    let m = fake.manager(Some("/berth/c1"), "c1");
    m.create().expect("create");
    let w = writes();
    assert_eq!(
        writes_to(&w, "cgroup.subtree_control"),
        ["+cpuset +cpu +io +hugetlb +pids +rdma"]
    );
    assert!(join(&fake.root, &["berth", "c1"]).is_dir());
    m.create().expect("idempotent");
}

#[test]
fn state_round_trip_and_clone_fd() {
    let fake = FakeV2::new();
    let (m, _) = fake.created(&[]);
    let json = serde_json::to_string(&m.state()).expect("serialize");
    let back: CgroupState = serde_json::from_str(&json).expect("deserialize");
    assert_eq!(back, m.state());
    let again = from_state(&back);
    assert_eq!(again.state(), m.state());
    assert!(again.clone_into_fd().is_some());
}

#[test]
fn destroy_v2_removes_tree() {
    let fake = FakeV2::new();
    let (m, dir) = fake.created(&[("cgroup.procs", "")]);
    fake_cgroup(&dir.join("nested"), &[("cgroup.procs", "5\n")]);
    fake_cgroup(&dir, &[("cgroup.procs", "4\n")]);
    assert_eq!(m.pids().expect("pids"), vec![4, 5]);
    m.destroy().expect("destroy");
    assert!(!dir.exists());
    assert!(dir.parent().expect("parent").exists());
    m.destroy().expect("destroy again");
    assert!(m.clone_into_fd().is_none());
}

#[test]
fn memory_values() {
    let fake = FakeV2::new();
    let files = [
        ("memory.max", ""),
        ("memory.low", ""),
        ("memory.swap.max", ""),
    ];
    let (m, dir) = fake.created(&files);
    m.apply(&res(
        r#"{"memory":{"limit":1000,"swap":3000,"reservation":500,"swappiness":5}}"#,
    ))
    .expect("apply");
    assert_eq!(read(&dir, "memory.max"), "1000");
    assert_eq!(read(&dir, "memory.swap.max"), "2000");
    assert_eq!(read(&dir, "memory.low"), "500");
    m.apply(&res(r#"{"memory":{"limit":1000,"swap":-1}}"#))
        .expect("apply");
    assert_eq!(read(&dir, "memory.swap.max"), "max");
    m.apply(&res(r#"{"memory":{"limit":-1}}"#)).expect("apply");
    assert_eq!(read(&dir, "memory.max"), "max");
    assert_eq!(read(&dir, "memory.swap.max"), "max");
    let err = m.apply(&res(r#"{"memory":{"swap":3000}}"#));
    assert!(matches!(err, Err(Error::InvalidValue { .. })), "{err:?}");
    let err = m.apply(&res(r#"{"memory":{"limit":3000,"swap":1000}}"#));
    assert!(matches!(err, Err(Error::InvalidValue { .. })), "{err:?}");
}

#[test]
fn memory_without_swap_accounting() {
    let fake = FakeV2::new();
    let (m, dir) = fake.created(&[("memory.max", "")]);
    m.apply(&res(r#"{"memory":{"limit":1000,"swap":1000}}"#))
        .expect("swap == limit");
    assert_eq!(read(&dir, "memory.max"), "1000");
    let err = m.apply(&res(r#"{"memory":{"limit":1000,"swap":2000}}"#));
    assert!(matches!(err, Err(Error::Unsupported { .. })), "{err:?}");
}

#[test]
fn cpu_values() {
    let fake = FakeV2::new();
    let files = [
        ("cpu.weight", ""),
        ("cpu.max", ""),
        ("cpu.max.burst", ""),
        ("cpu.idle", ""),
        ("cpuset.cpus", ""),
        ("cpuset.mems", ""),
    ];
    let (m, dir) = fake.created(&files);
    let r = res(
        r#"{"cpu":{"shares":1024,"quota":50000,"period":200000,"burst":1000,"idle":1,"cpus":"0-1","mems":"0","realtimeRuntime":5}}"#,
    );
    m.apply(&r).expect("apply");
    assert_eq!(read(&dir, "cpu.weight"), "39");
    assert_eq!(read(&dir, "cpu.max"), "50000 200000");
    assert_eq!(read(&dir, "cpu.max.burst"), "1000");
    assert_eq!(read(&dir, "cpu.idle"), "1");
    assert_eq!(read(&dir, "cpuset.cpus"), "0-1");
    assert_eq!(read(&dir, "cpuset.mems"), "0");
    m.apply(&res(r#"{"cpu":{"quota":25000}}"#)).expect("apply");
    assert_eq!(read(&dir, "cpu.max"), "25000 100000");
    m.apply(&res(r#"{"cpu":{"quota":-1,"period":50000}}"#))
        .expect("apply");
    assert_eq!(read(&dir, "cpu.max"), "max 50000");
    m.apply(&res(r#"{"cpu":{"period":50000}}"#)).expect("apply");
    assert_eq!(read(&dir, "cpu.max"), "max 50000");
}

#[test]
fn io_values_plain_and_bfq() {
    let fake = FakeV2::new();
    let (m, _) = fake.created(&[("io.weight", ""), ("io.max", "")]);
    let r = res(r#"{"blockIO":{"weight":500,"leafWeight":10,
        "weightDevice":[{"major":8,"minor":0,"weight":1000}],
        "throttleReadBpsDevice":[{"major":8,"minor":0,"rate":1000}],
        "throttleWriteBpsDevice":[{"major":8,"minor":0,"rate":2000},{"major":8,"minor":16,"rate":0}],
        "throttleReadIOPSDevice":[{"major":8,"minor":0,"rate":10}],
        "throttleWriteIOPSDevice":[{"major":8,"minor":0,"rate":20}]}}"#);
    m.apply(&r).expect("apply");
    let w = writes();
    assert_eq!(writes_to(&w, "io.weight"), ["4950", "8:0 10000"]);
    assert_eq!(
        writes_to(&w, "io.max"),
        ["8:0 rbps=1000 wbps=2000 riops=10 wiops=20", "8:16 wbps=max"]
    );

    let (m, dir) = fake.created(&[("io.bfq.weight", "")]);
    m.apply(&res(r#"{"blockIO":{"weight":500}}"#))
        .expect("apply");
    assert_eq!(read(&dir, "io.bfq.weight"), "500");
}

#[test]
fn pids_hugetlb_rdma_values() {
    let fake = FakeV2::new();
    let files = [("pids.max", ""), ("hugetlb.2MB.max", ""), ("rdma.max", "")];
    let (m, dir) = fake.created(&files);
    let r = res(
        r#"{"pids":{"limit":0},"hugepageLimits":[{"pageSize":"2MB","limit":-1}],
        "rdma":{"mlx5_0":{"hcaHandles":3,"hcaObjects":100}}}"#,
    );
    m.apply(&r).expect("apply");
    assert_eq!(read(&dir, "pids.max"), "max");
    assert_eq!(read(&dir, "hugetlb.2MB.max"), "max");
    assert_eq!(read(&dir, "rdma.max"), "mlx5_0 hca_handle=3 hca_object=100");
    m.apply(&res(r#"{"pids":{"limit":12}}"#)).expect("apply");
    assert_eq!(read(&dir, "pids.max"), "12");
}

#[test]
fn missing_controller_file_names_field() {
    let fake = FakeV2::new();
    let (m, _) = fake.created(&[]);
    let err = m
        .apply(&res(r#"{"pids":{"limit":12}}"#))
        .expect_err("no pids.max");
    let msg = err.to_string();
    assert!(
        msg.contains("linux.resources.pids.limit") && msg.contains("pids.max"),
        "{msg}"
    );
    let err = m.apply(&res(r#"{"hugepageLimits":[{"pageSize":"1GB","limit":1}]}"#));
    assert!(
        matches!(err, Err(Error::MissingController { .. })),
        "{err:?}"
    );
}

#[test]
fn unified_written_as_is_and_last() {
    let fake = FakeV2::new();
    let (m, dir) = fake.created(&[("memory.high", ""), ("memory.max", "")]);
    // (Device rules, an eBPF program on v2, are tested in v2_devices.)
    let r = res(r#"{"network":{"classID":1},
        "memory":{"limit":100},"unified":{"memory.high":"50","memory.max":"max"}}"#);
    m.apply(&r).expect("apply");
    assert_eq!(read(&dir, "memory.high"), "50");
    // unified is written last and wins over memory.limit
    assert_eq!(read(&dir, "memory.max"), "max");
    let err = m.apply(&res(r#"{"unified":{"../escape":"1"}}"#));
    assert!(matches!(err, Err(Error::InvalidValue { .. })), "{err:?}");
    let err = m
        .apply(&res(r#"{"unified":{"nosuch.file":"1"}}"#))
        .expect_err("missing file");
    assert!(
        err.to_string()
            .contains("linux.resources.unified.nosuch.file"),
        "{err}"
    );
}

#[test]
fn freeze_waits_for_events() {
    let fake = FakeV2::new();
    let (m, dir) = fake.created(&[
        ("cgroup.freeze", "0"),
        ("cgroup.events", "populated 1\nfrozen 1\n"),
    ]);
    m.freeze(true).expect("freeze");
    assert_eq!(read(&dir, "cgroup.freeze"), "1");
    assert!(m.is_frozen().expect("is_frozen"));
    fake_cgroup(&dir, &[("cgroup.events", "populated 1\nfrozen 0\n")]);
    m.freeze(false).expect("thaw");
    assert!(!m.is_frozen().expect("is_frozen"));
}

#[test]
fn conversions() {
    assert_eq!(convert::shares_to_weight(2), 1);
    assert_eq!(convert::shares_to_weight(262_144), 10_000);
    assert_eq!(convert::shares_to_weight(1024), 39);
    assert_eq!(convert::shares_to_weight(0), 1);
    assert_eq!(convert::blkio_weight_to_io_weight(10), 1);
    assert_eq!(convert::blkio_weight_to_io_weight(1000), 10_000);
    assert_eq!(convert::blkio_weight_to_io_weight(100), 910);
    assert_eq!(convert::cpu_max(None, None), "max 100000");
    assert_eq!(convert::cpu_max(Some(0), Some(5)), "max 5");
    assert_eq!(convert::pids_max(-5), "max");
    assert_eq!(convert::v2_limit(-1), "max");
    assert_eq!(convert::v1_limit(-7), "-1");
    assert_eq!(convert::v2_swap_max(None, None).ok(), Some(None));
    assert_eq!(convert::v2_swap_max(None, Some(5)).ok(), Some(None));
    assert_eq!(
        convert::v2_swap_max(Some(5), Some(5)).ok(),
        Some(Some("0".into()))
    );
    assert_eq!(
        convert::v2_swap_max(Some(10), Some(-1)).ok(),
        Some(Some("max".into()))
    );
}
