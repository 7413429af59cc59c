//! Device filters in the real kernel: attached to a cgroup made for the
//! test in the host's cgroup2 hierarchy (the unified one of a hybrid host
//! will do: device programs attach to any cgroup2 directory). They need
//! root and a cgroup2 mount; otherwise they print a note and return.
//! Whether the filters really stop processes is the integration test's
//! job (integration/tests/devices_v2.rs).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::detect::{self, Layout};
use super::super::Error;
use super::insn::{Insn, Reg};
use super::*;
use crate::sys;

/// A cgroup made for one test, removed on drop.
struct TestCgroup(PathBuf);

impl TestCgroup {
    /// A new cgroup in the host's cgroup2 hierarchy, or None (with a note)
    /// where there is none or we are not root.
    fn new(name: &str) -> Option<TestCgroup> {
        if !nix::unistd::geteuid().is_root() {
            println!("note: not root; device filter kernel test skipped");
            return None;
        }
        let Some(mount) = cgroup2_mount() else {
            println!("note: no cgroup2 mount; device filter kernel test skipped");
            return None;
        };
        let dir = mount.join(format!("berth-test-devbpf-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir).expect("create test cgroup");
        Some(TestCgroup(dir))
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir(&self.0) {
            eprintln!("removing {}: {e}", self.0.display());
        }
    }
}

fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    match detect::detect(&mountinfo, &proc_cgroup, Path::new("/sys/fs/cgroup")).ok()? {
        Layout::V2 { mount, .. } => Some(mount.mountpoint),
        Layout::V1 { mounts, .. } => mounts
            .get(detect::UNIFIED_KEY)
            .map(|m| m.mountpoint.clone()),
    }
}

fn docker_like() -> DeviceFilter {
    let spec =
        serde_json::from_str::<Vec<_>>(r#"[{"allow":false,"access":"rwm"}]"#).expect("rules");
    DeviceFilter::for_container(&spec).expect("filter")
}

fn names(cgroup: &Path) -> Vec<String> {
    attached_programs(cgroup)
        .expect("query")
        .into_iter()
        .map(|p| p.name)
        .collect()
}

/// Whether program `id` is freed within a while (the kernel frees it
/// asynchronously once the last reference is gone).
fn freed(id: u32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if !is_program_loaded(id).expect("look up program") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn install_replaces_berths_filter_and_leaves_others() {
    let Some(cg) = TestCgroup::new("replace") else {
        return;
    };
    let installer = KernelInstaller;
    installer.install(&cg.0, &docker_like()).expect("install");
    let first = attached_programs(&cg.0).expect("query");
    assert_eq!(first.len(), 1, "{first:?}");
    assert_eq!(first[0].name, PROGRAM_NAME);

    // Someone else's device program on the same cgroup.
    let foreign_insns = [
        Insn::mov_imm(Reg::R0, 1).to_bytes(),
        Insn::exit().to_bytes(),
    ];
    let mut name = [0u8; 16];
    name[..13].copy_from_slice(b"other_devices");
    let foreign = sys::bpf_prog_load(
        &sys::BpfProgram {
            prog_type: 15,
            insns: &foreign_insns,
            license: c"Apache-2.0",
            name,
            expected_attach_type: 6,
        },
        None,
    )
    .expect("load foreign program");
    let dir = std::fs::File::open(&cg.0).expect("open cgroup");
    sys::bpf_prog_attach(dir.as_fd(), foreign.as_fd(), 6, 2).expect("attach foreign");

    // An update: berth's program is replaced, the other one stays.
    installer.install(&cg.0, &docker_like()).expect("update");
    let second = attached_programs(&cg.0).expect("query");
    assert_eq!(second.len(), 2, "{second:?}");
    assert!(
        second.iter().any(|p| p.name == "other_devices"),
        "{second:?}"
    );
    let ours: Vec<_> = second.iter().filter(|p| p.name == PROGRAM_NAME).collect();
    assert_eq!(ours.len(), 1, "{second:?}");
    assert_ne!(ours[0].id, first[0].id, "a new program");
    assert!(freed(first[0].id), "the replaced program is freed");

    // Everything allowed: no program of berth's at all.
    let allow_all = DeviceFilter::compile(&[DeviceRule {
        allow: true,
        ..DeviceRule::DENY_ALL
    }])
    .expect("filter");
    installer.install(&cg.0, &allow_all).expect("allow all");
    assert_eq!(names(&cg.0), ["other_devices"]);
    assert!(freed(ours[0].id));

    sys::bpf_prog_detach(dir.as_fd(), foreign.as_fd(), 6).expect("detach foreign");
    assert!(names(&cg.0).is_empty());
}

#[test]
fn a_refused_program_reports_the_verifier_log() {
    let Some(cg) = TestCgroup::new("refused") else {
        return;
    };
    // Returns without setting r0: the verifier refuses that.
    let broken = DeviceFilter::from_instructions(vec![Insn::exit()]);
    let err = KernelInstaller
        .install(&cg.0, &broken)
        .expect_err("verifier refuses");
    match &err {
        Error::DeviceFilter {
            step, verifier_log, ..
        } => {
            assert!(step.contains("BPF_PROG_LOAD"), "{step}");
            let log = verifier_log
                .as_deref()
                .unwrap_or_else(|| panic!("no verifier log in {err}"));
            assert!(log.contains("R0"), "{log}");
        }
        other => panic!("expected a device filter error, got {other:?}"),
    }
    let text = err.to_string();
    assert!(
        text.contains("verifier log") && text.contains(&cg.0.display().to_string()),
        "{text}"
    );
    assert!(names(&cg.0).is_empty(), "nothing attached");
}
