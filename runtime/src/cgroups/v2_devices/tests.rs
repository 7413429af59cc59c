//! Device rules and their programs, without the kernel: the translation
//! from OCI rules, and the compiled programs run in an eBPF interpreter
//! (rbpf) against a direct reading of the rules.

use std::path::Path;
use std::sync::{Arc, Mutex};

use oci_spec::runtime::LinuxDeviceCgroup;

use super::super::convert::DEFAULT_DEVICE_RULES;
use super::super::tests_common::{fake_cgroup, res, writes};
use super::super::{CgroupManager, Error, V2Manager};
use super::*;

fn oci(json: &str) -> Vec<LinuxDeviceCgroup> {
    serde_json::from_str(json).expect("test device rules JSON")
}

fn rule(
    allow: bool,
    kind: DeviceKind,
    major: Option<u32>,
    minor: Option<u32>,
    access: &str,
) -> DeviceRule {
    let access = access.chars().fold(Access::default(), |a, c| {
        a.union(match c {
            'r' => Access::READ,
            'w' => Access::WRITE,
            'm' => Access::MKNOD,
            other => panic!("access letter {other}"),
        })
    });
    DeviceRule {
        allow,
        kind,
        major,
        minor,
        access,
    }
}

/// A device access as the kernel asks the program about it.
#[derive(Clone, Copy, Debug)]
struct Request {
    block: bool,
    major: u32,
    minor: u32,
    access: Access,
}

fn chr(major: u32, minor: u32, access: Access) -> Request {
    Request {
        block: false,
        major,
        minor,
        access,
    }
}

fn blk(major: u32, minor: u32, access: Access) -> Request {
    Request {
        block: true,
        ..chr(major, minor, access)
    }
}

fn rw() -> Access {
    Access::READ.union(Access::WRITE)
}

/// Run `filter` in the interpreter on `req`: true when it allows.
fn run(filter: &DeviceFilter, req: Request) -> bool {
    let code: Vec<u8> = filter.bytecode().concat();
    let vm = rbpf::EbpfVmRaw::new(Some(&code)).expect("rbpf accepts the program");
    // struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }
    let kind: u32 = if req.block { 1 } else { 2 };
    let access_type = (u32::from(req.access.bits()) << 16) | kind;
    let mut ctx = [0u8; 12];
    ctx[0..4].copy_from_slice(&access_type.to_ne_bytes());
    ctx[4..8].copy_from_slice(&req.major.to_ne_bytes());
    ctx[8..12].copy_from_slice(&req.minor.to_ne_bytes());
    match vm.execute_program(&mut ctx).expect("program runs") {
        0 => false,
        1 => true,
        other => panic!("program returned {other}"),
    }
}

/// The rules read directly: each access asked for is decided by the last
/// rule that matches the device and names it; unnamed accesses are denied.
fn model(rules: &[DeviceRule], req: Request) -> bool {
    [Access::MKNOD, Access::READ, Access::WRITE]
        .into_iter()
        .filter(|bit| req.access.contains(*bit))
        .all(|bit| {
            rules
                .iter()
                .rev()
                .find(|r| {
                    let kind = match r.kind {
                        DeviceKind::All => true,
                        DeviceKind::Block => req.block,
                        DeviceKind::Char => !req.block,
                    };
                    kind && r.major.is_none_or(|m| m == req.major)
                        && r.minor.is_none_or(|m| m == req.minor)
                        && r.access.contains(bit)
                })
                .is_some_and(|r| r.allow)
        })
}

/// Every combination of interesting device numbers and accesses.
fn requests() -> Vec<Request> {
    let numbers = [0, 1, 3, 5, 8, 136, 4095, 0x7fff_ffff, 0x8000_0000, u32::MAX];
    let mut out = Vec::new();
    for block in [false, true] {
        for major in numbers {
            for minor in numbers {
                for bits in 1..=7u8 {
                    let access = [Access::MKNOD, Access::READ, Access::WRITE]
                        .into_iter()
                        .filter(|a| bits & a.bits() != 0)
                        .fold(Access::default(), Access::union);
                    out.push(Request {
                        block,
                        major,
                        minor,
                        access,
                    });
                }
            }
        }
    }
    out
}

fn assert_matches_model(rules: &[DeviceRule]) {
    let filter = DeviceFilter::compile(rules).expect("compile");
    for req in requests() {
        assert_eq!(
            run(&filter, req),
            model(rules, req),
            "{req:?} under {rules:?}"
        );
    }
}

#[test]
fn oci_rules_translate_with_wildcards_and_default_access() {
    let rules = oci(r#"[{"allow":false,"access":"rwm"},
            {"allow":true,"type":"c","major":1,"minor":3,"access":"rw"},
            {"allow":true,"type":"b","major":-1,"minor":7},
            {"allow":false,"type":"a","major":8,"access":""},
            {"allow":true,"type":"c","major":4294967295,"minor":0,"access":"mxr"}]"#);
    let got: Vec<DeviceRule> = rules
        .iter()
        .enumerate()
        .map(|(i, r)| DeviceRule::from_oci(i, r).expect("valid rule"))
        .collect();
    assert_eq!(
        got,
        [
            DeviceRule::DENY_ALL,
            rule(true, DeviceKind::Char, Some(1), Some(3), "rw"),
            rule(true, DeviceKind::Block, None, Some(7), "rwm"),
            rule(false, DeviceKind::All, Some(8), None, "rwm"),
            rule(true, DeviceKind::Char, Some(u32::MAX), Some(0), "rm"),
        ]
    );
}

#[test]
fn bad_rules_are_refused_naming_their_index() {
    let cases = [
        (
            r#"{"allow":true,"type":"p","major":1,"minor":3}"#,
            "linux.resources.devices[1].type",
        ),
        (
            r#"{"allow":true,"type":"u","major":1,"minor":3}"#,
            "linux.resources.devices[1].type",
        ),
        (
            r#"{"allow":true,"type":"c","major":-2,"minor":3}"#,
            "linux.resources.devices[1].major",
        ),
        (
            r#"{"allow":true,"type":"c","major":1,"minor":4294967296}"#,
            "linux.resources.devices[1].minor",
        ),
        (
            r#"{"allow":true,"type":"c","major":1,"minor":3,"access":"xyz"}"#,
            "linux.resources.devices[1].access",
        ),
    ];
    for (bad, field) in cases {
        let rules = oci(&format!(r#"[{{"allow":false}}, {bad}]"#));
        let err = DeviceFilter::for_container(&rules).expect_err(bad);
        assert!(matches!(err, Error::InvalidValue { .. }), "{err:?}");
        assert!(err.to_string().contains(field), "{bad}: {err}");
    }
}

#[test]
fn container_rules_are_deny_all_then_spec_then_defaults() {
    let spec = oci(r#"[{"allow":true,"type":"c","major":10,"minor":229,"access":"rwm"}]"#);
    let rules = container_rules(&spec).expect("rules");
    let defaults = default_rules().expect("defaults");
    assert_eq!(defaults.len(), DEFAULT_DEVICE_RULES.len());
    assert_eq!(rules[0], DeviceRule::DENY_ALL);
    assert_eq!(
        rules[1],
        rule(true, DeviceKind::Char, Some(10), Some(229), "rwm")
    );
    assert_eq!(rules[2..], defaults[..]);
    assert!(defaults.contains(&rule(true, DeviceKind::Char, Some(1), Some(3), "rwm")));
    assert!(defaults.contains(&rule(true, DeviceKind::Block, None, None, "m")));
    assert!(defaults.contains(&rule(true, DeviceKind::Char, Some(136), None, "rwm")));
}

#[test]
fn default_container_filter_allows_the_standard_devices_only() {
    // What docker sends: deny everything, then its own list.
    let spec = oci(r#"[{"allow":false,"access":"rwm"}]"#);
    let f = DeviceFilter::for_container(&spec).expect("filter");
    assert!(!f.allows_everything());
    assert!(run(&f, chr(1, 3, rw())), "/dev/null");
    assert!(run(&f, chr(1, 5, Access::READ)), "/dev/zero");
    assert!(run(&f, chr(136, 4, rw())), "a pty");
    assert!(run(&f, chr(5, 2, rw())), "/dev/ptmx");
    // mknod of anything is allowed (as runc does), opening it is not.
    assert!(run(&f, blk(8, 0, Access::MKNOD)));
    assert!(!run(&f, blk(8, 0, Access::READ)), "the host disk");
    assert!(!run(&f, blk(8, 0, rw())));
    assert!(!run(&f, chr(1, 1, Access::READ)), "/dev/mem");
    assert!(run(&f, chr(1, 3, Access::ALL)), "/dev/null, mknod too");
}

#[test]
fn later_rules_win_access_by_access() {
    let null = |allow, access| rule(allow, DeviceKind::Char, Some(1), Some(3), access);
    // A later deny of w overrides an earlier allow of rw for w only.
    let f = DeviceFilter::compile(&[null(true, "rw"), null(false, "w")]).expect("compile");
    assert!(run(&f, chr(1, 3, Access::READ)));
    assert!(!run(&f, chr(1, 3, Access::WRITE)));
    assert!(!run(&f, chr(1, 3, rw())));
    // The other way round the allow wins.
    let f = DeviceFilter::compile(&[null(false, "w"), null(true, "rw")]).expect("compile");
    assert!(run(&f, chr(1, 3, rw())));
    // Accesses allowed by separate rules add up.
    let f = DeviceFilter::compile(&[null(true, "r"), null(true, "w")]).expect("compile");
    assert!(run(&f, chr(1, 3, rw())));
    assert!(!run(&f, chr(1, 3, Access::MKNOD)));
}

#[test]
fn wildcards_and_type_a() {
    let f = DeviceFilter::compile(&[
        rule(true, DeviceKind::All, Some(7), None, "r"),
        rule(true, DeviceKind::Char, None, Some(9), "w"),
    ])
    .expect("compile");
    assert!(run(&f, blk(7, 12, Access::READ)), "a covers block");
    assert!(run(&f, chr(7, 0, Access::READ)), "a covers char");
    assert!(!run(&f, blk(8, 12, Access::READ)));
    assert!(run(&f, chr(77, 9, Access::WRITE)), "any major");
    assert!(!run(&f, blk(77, 9, Access::WRITE)), "char only");
    assert!(!run(&f, chr(7, 9, rw().union(Access::MKNOD))));
}

#[test]
fn programs_agree_with_the_rules_read_directly() {
    let c = DeviceKind::Char;
    let b = DeviceKind::Block;
    let a = DeviceKind::All;
    let sets: Vec<Vec<DeviceRule>> = vec![
        vec![],
        vec![DeviceRule::DENY_ALL],
        container_rules(&oci(r#"[{"allow":false,"access":"rwm"}]"#)).expect("rules"),
        container_rules(&oci(r#"[{"allow":true,"access":"rwm"}]"#)).expect("rules"),
        vec![
            rule(true, a, None, None, "rw"),
            rule(false, b, Some(8), None, "w"),
            rule(true, c, Some(u32::MAX), Some(0x8000_0000), "rwm"),
            rule(false, c, None, None, "m"),
        ],
        vec![
            rule(false, a, None, None, "rwm"),
            rule(true, c, Some(1), None, "r"),
            rule(false, c, Some(1), Some(3), "r"),
            rule(true, c, Some(1), Some(3), "w"),
            rule(true, b, None, Some(0x7fff_ffff), "m"),
        ],
    ];
    for rules in &sets {
        assert_matches_model(rules);
    }
    // And rule sets drawn from a fixed pseudo-random sequence.
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    let numbers = [0, 1, 3, 8, 136, u32::MAX];
    for _ in 0..40 {
        let count = next(8) as usize;
        let rules: Vec<DeviceRule> = (0..count)
            .map(|_| {
                let pick = |k: u64| (k < numbers.len() as u64).then(|| numbers[k as usize]);
                DeviceRule {
                    allow: next(2) == 1,
                    kind: [a, b, c][next(3) as usize],
                    major: pick(next(9)),
                    minor: pick(next(9)),
                    access: {
                        let bits = 1 + next(7) as u8;
                        [Access::MKNOD, Access::READ, Access::WRITE]
                            .into_iter()
                            .filter(|x| bits & x.bits() != 0)
                            .fold(Access::default(), Access::union)
                    },
                }
            })
            .collect();
        assert_matches_model(&rules);
    }
}

#[test]
fn rules_before_a_total_rule_are_not_emitted() {
    let tail = [rule(true, DeviceKind::Char, Some(1), Some(3), "rw")];
    let alone =
        DeviceFilter::compile(&[&[DeviceRule::DENY_ALL][..], &tail].concat()).expect("compile");
    let shadowed = [
        rule(true, DeviceKind::Block, Some(8), None, "rwm"),
        DeviceRule::DENY_ALL,
        tail[0],
    ];
    let with_dead = DeviceFilter::compile(&shadowed).expect("compile");
    assert_eq!(alone, with_dead);
    assert!(!run(&with_dead, blk(8, 0, Access::READ)));
}

#[test]
fn constant_filters() {
    let allow_all = rule(true, DeviceKind::All, None, None, "rwm");
    // Privileged containers: everything allowed, no program needed.
    let spec = oci(r#"[{"allow":false,"access":"rwm"},{"allow":true,"access":"rwm"}]"#);
    let f = DeviceFilter::for_container(&spec).expect("filter");
    assert!(f.allows_everything());
    assert_eq!(f.instructions().len(), 2);
    assert!(run(&f, blk(8, 0, rw())));
    let f = DeviceFilter::compile(&[allow_all, rule(true, DeviceKind::Char, Some(1), None, "r")])
        .expect("compile");
    assert!(f.allows_everything());
    // Only denials: a constant no.
    let f = DeviceFilter::compile(&[rule(false, DeviceKind::Char, Some(1), None, "r")])
        .expect("compile");
    assert!(!f.allows_everything());
    assert_eq!(f.instructions().len(), 2);
    assert!(!run(&f, chr(1, 3, Access::WRITE)));
}

#[test]
fn program_reads_back_as_written() {
    let f = DeviceFilter::compile(&[
        DeviceRule::DENY_ALL,
        rule(true, DeviceKind::Char, Some(1), Some(3), "rw"),
        rule(false, DeviceKind::All, Some(136), None, "w"),
    ])
    .expect("compile");
    let code: Vec<u8> = f.bytecode().concat();
    let listing: Vec<String> = rbpf::disassembler::to_insn_vec(&code)
        .into_iter()
        .map(|i| i.desc)
        .collect();
    let expected = [
        "ldxw r2, [r1+0x0]", // access_type
        "mov64 r3, r2",
        "and64 r3, 0xffff",  // device type
        "rsh64 r2, 0x10",    // accesses asked for
        "ldxw r4, [r1+0x4]", // major
        "ldxw r5, [r1+0x8]", // minor
        // last rule first: a 136:* w => deny
        "jne32 r4, 0x88, +0x1",
        "jset r2, 0x4, +0x5",
        // c 1:3 rw => allow once nothing is left
        "jne r3, 0x2, +0x4",
        "jne32 r4, 0x1, +0x3",
        "jne32 r5, 0x3, +0x2",
        "and64 r2, 0xfffffff9", // clear r and w
        "jeq r2, 0x0, +0x2",
        // fallback: deny
        "mov64 r0, 0x0",
        "exit",
        "mov64 r0, 0x1",
        "exit",
    ];
    assert_eq!(listing, expected);
}

#[test]
fn too_many_rules_for_one_program_is_an_error() {
    let rules: Vec<DeviceRule> = (0..8000)
        .map(|i| rule(i % 2 == 0, DeviceKind::Char, Some(1), Some(i), "rw"))
        .collect();
    let err = DeviceFilter::compile(&rules).expect_err("jump too far");
    assert!(err.to_string().contains("too many rules"), "{err}");
}

/// Records what it is asked to install.
#[derive(Debug, Default)]
struct Recorder {
    installed: Mutex<Vec<(std::path::PathBuf, DeviceFilter)>>,
}

impl DeviceFilterInstaller for Recorder {
    fn install(&self, cgroup: &Path, filter: &DeviceFilter) -> super::super::Result<()> {
        let mut installed = self.installed.lock().expect("lock");
        installed.push((cgroup.to_path_buf(), filter.clone()));
        Ok(())
    }
}

#[test]
fn v2_manager_installs_the_container_filter() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("c1");
    fake_cgroup(&dir, &[("memory.max", "")]);
    let recorder = Arc::new(Recorder::default());
    let m = V2Manager::with_device_installer(dir.clone(), recorder.clone());
    writes();

    let spec = r#"[{"allow":false,"access":"rwm"},{"allow":true,"type":"c","major":10,"minor":200,"access":"rwm"}]"#;
    m.apply(&res(&format!(
        r#"{{"devices":{spec},"memory":{{"limit":100}}}}"#
    )))
    .expect("apply");
    let expected = DeviceFilter::for_container(&oci(spec)).expect("filter");
    assert_eq!(
        recorder.installed.lock().expect("lock").as_slice(),
        [(dir.clone(), expected)]
    );

    // No device rules: the filter in force stays.
    m.apply(&res(r#"{"memory":{"limit":200}}"#)).expect("apply");
    assert_eq!(recorder.installed.lock().expect("lock").len(), 1);

    // A bad rule: refused before anything is written or installed.
    writes();
    let err = m
        .apply(&res(
            r#"{"memory":{"limit":300},"devices":[{"allow":true,"type":"p"}]}"#,
        ))
        .expect_err("bad rule");
    assert!(
        err.to_string().contains("linux.resources.devices[0].type"),
        "{err}"
    );
    assert!(writes().is_empty());
    assert_eq!(recorder.installed.lock().expect("lock").len(), 1);
}

#[test]
fn kernel_installer_refuses_a_directory_that_is_not_cgroup2() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let m = V2Manager::new(tmp.path().to_path_buf());
    let err = m
        .apply(&res(r#"{"devices":[]}"#))
        .expect_err("not a cgroup");
    assert!(matches!(err, Error::Unsupported { .. }), "{err:?}");
    assert!(err.to_string().contains("not a cgroup2 directory"), "{err}");
}
