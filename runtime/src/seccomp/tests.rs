//! Unit tests: compile profiles and run the resulting BPF in
//! [`bpf::run`], an interpreter that mirrors the kernel's.

#![allow(clippy::unwrap_used)]

use std::str::FromStr;

use serde_json::{json, Value};

use super::*;

const ALLOW: u32 = 0x7fff_0000;
const KILL_THREAD: u32 = 0;
const KILL_PROCESS: u32 = 0x8000_0000;
const TRAP: u32 = 0x0003_0000;
const LOG: u32 = 0x7ffc_0000;
const fn errno(e: u32) -> u32 {
    0x0005_0000 | e
}
const fn trace(v: u32) -> u32 {
    0x7ff0_0000 | v
}
const EPERM: u32 = libc::EPERM as u32;
const ENOSYS: u32 = libc::ENOSYS as u32;

fn spec(v: Value) -> LinuxSeccomp {
    serde_json::from_value(v).unwrap()
}

fn build_for(v: Value, target: &Target) -> Filter {
    let f = compile_for(&spec(v), target).unwrap();
    bpf::check(f.program()).unwrap();
    f
}

fn build(v: Value) -> Filter {
    build_for(v, &X86_64_TARGET)
}

fn error(v: Value) -> String {
    compile_for(&spec(v), &X86_64_TARGET)
        .unwrap_err()
        .to_string()
}

fn nr(abi: &Abi, name: &str) -> u32 {
    abi.lookup(name).unwrap()
}

/// Run `name` with `args` as an x86_64 syscall.
fn call(f: &Filter, name: &str, args: &[u64]) -> u32 {
    let mut a = [0u64; 6];
    a[..args.len()].copy_from_slice(args);
    bpf::run(
        f.program(),
        nr(&X86_64_TARGET.native, name),
        AUDIT_ARCH_X86_64,
        a,
    )
}

fn one_rule(default: &str, rule: Value) -> Filter {
    build(json!({"defaultAction": default, "syscalls": [rule]}))
}

#[test]
fn every_action_as_rule() {
    let cases: &[(&str, Option<u32>, u32)] = &[
        ("SCMP_ACT_ERRNO", None, errno(EPERM)),
        ("SCMP_ACT_ERRNO", Some(38), errno(38)),
        ("SCMP_ACT_ERRNO", Some(0), errno(0)),
        ("SCMP_ACT_KILL", None, KILL_THREAD),
        ("SCMP_ACT_KILL_THREAD", None, KILL_THREAD),
        ("SCMP_ACT_KILL_PROCESS", None, KILL_PROCESS),
        ("SCMP_ACT_TRAP", None, TRAP),
        ("SCMP_ACT_LOG", None, LOG),
        ("SCMP_ACT_TRACE", None, trace(EPERM)),
        ("SCMP_ACT_TRACE", Some(1234), trace(1234)),
    ];
    for (act, errno_ret, want) in cases {
        let mut rule = json!({"names": ["getpid"], "action": act});
        if let Some(e) = errno_ret {
            rule["errnoRet"] = json!(e);
        }
        let f = one_rule("SCMP_ACT_ALLOW", rule);
        assert_eq!(call(&f, "getpid", &[]), *want, "{act} {errno_ret:?}");
        assert_eq!(call(&f, "getppid", &[]), ALLOW, "{act}");
    }
    let f = one_rule(
        "SCMP_ACT_KILL_PROCESS",
        json!({"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}),
    );
    assert_eq!(call(&f, "getpid", &[]), ALLOW);
    assert_eq!(call(&f, "read", &[]), KILL_PROCESS);
    // Above getpid (39), the highest syscall named: the ENOSYS stub.
    assert_eq!(call(&f, "getppid", &[]), errno(ENOSYS));
}

#[test]
fn every_default_action() {
    let cases: &[(&str, Option<u32>, u32)] = &[
        ("SCMP_ACT_ALLOW", None, ALLOW),
        ("SCMP_ACT_ERRNO", None, errno(EPERM)),
        ("SCMP_ACT_ERRNO", Some(99), errno(99)),
        ("SCMP_ACT_KILL", None, KILL_THREAD),
        ("SCMP_ACT_KILL_THREAD", None, KILL_THREAD),
        ("SCMP_ACT_KILL_PROCESS", None, KILL_PROCESS),
        ("SCMP_ACT_TRAP", None, TRAP),
        ("SCMP_ACT_LOG", None, LOG),
        ("SCMP_ACT_TRACE", None, trace(EPERM)),
        ("SCMP_ACT_TRACE", Some(7), trace(7)),
    ];
    for (act, errno_ret, want) in cases {
        let mut v = json!({"defaultAction": act});
        if let Some(e) = errno_ret {
            v["defaultErrnoRet"] = json!(e);
        }
        let f = build(v.clone());
        assert_eq!(call(&f, "getpid", &[]), *want, "{v}");
        // With a rule (and so a syscall table in the filter).
        v["syscalls"] =
            json!([{"names": ["exit_group", "getppid"], "action": "SCMP_ACT_KILL_PROCESS"}]);
        let f = build(v.clone());
        assert_eq!(call(&f, "getpid", &[]), *want, "{v}");
        assert_eq!(call(&f, "getppid", &[]), KILL_PROCESS, "{v}");
    }
}

#[test]
fn supported_lists_match_the_implementation() {
    let all_actions = [
        "SCMP_ACT_ALLOW",
        "SCMP_ACT_ERRNO",
        "SCMP_ACT_KILL",
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_LOG",
        "SCMP_ACT_NOTIFY",
        "SCMP_ACT_TRACE",
        "SCMP_ACT_TRAP",
    ];
    for name in all_actions {
        let parsed = LinuxSeccompAction::from_str(name).unwrap();
        let ok = compile_for(
            &spec(
                json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/agent.sock",
                "syscalls": [{"names": ["getpid"], "action": name}]}),
            ),
            &X86_64_TARGET,
        )
        .is_ok();
        assert_eq!(ok, supported_actions().contains(&name), "{name} {parsed:?}");
    }
    for name in supported_operators() {
        let parsed = LinuxSeccompOperator::from_str(name).unwrap();
        let f = compile_for(
            &spec(
                json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["getpid"],
                "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": name}]}]}),
            ),
            &X86_64_TARGET,
        );
        assert!(f.is_ok(), "{name} {parsed:?}");
    }
    assert_eq!(supported_operators().len(), 7);
    let all_flags = [
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
    ];
    for name in all_flags {
        let ok = compile_for(
            &spec(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": [name]})),
            &X86_64_TARGET,
        )
        .is_ok();
        assert_eq!(ok, supported_flags().contains(&name), "{name}");
    }
    for list in [supported_actions(), supported_operators()] {
        assert!(list.windows(2).all(|w| w[0] < w[1]), "sorted: {list:?}");
    }
    for name in supported_archs() {
        Arch::from_str(name).unwrap();
    }
    assert_eq!(supported_archs()[0], NATIVE.native.name);
}

#[test]
fn notify_returns_user_notif_with_a_listener() {
    const USER_NOTIF: u32 = 0x7fc0_0000;
    let f = build(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock", "listenerMetadata": "bar",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"},
                     {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"}]}));
    assert_eq!(call(&f, "mkdir", &[]), USER_NOTIF);
    assert_eq!(call(&f, "getpid", &[]), errno(EPERM));
    assert_eq!(call(&f, "read", &[]), ALLOW);
    assert!(f.needs_listener());
    let l = f.listener().unwrap();
    assert_eq!(l.path, std::path::Path::new("/run/agent.sock"));
    assert_eq!(l.metadata, "bar");
    // With conditions too.
    let f = build(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "listenerPath": "/a",
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_NOTIFY",
                      "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]}]}),
    );
    assert_eq!(call(&f, "kill", &[1, 9]), USER_NOTIF);
    assert_eq!(call(&f, "kill", &[1, 15]), errno(EPERM));
    assert_eq!(f.listener().unwrap().metadata, "");
}

#[test]
fn no_listener_without_notify() {
    // listenerPath alone (runc's "empty listener path" case) is fine.
    let f = build(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock", "listenerMetadata": "bar",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}]}));
    assert!(!f.needs_listener());
    assert!(f.listener().is_none());
    assert!(!build(json!({"defaultAction": "SCMP_ACT_ALLOW"})).needs_listener());
}

#[test]
fn notify_needs_a_listener_path() {
    for v in [
        json!({"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}]}),
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "",
            "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_NOTIFY"}]}),
    ] {
        let e = error(v.clone());
        assert!(e.starts_with("linux.seccomp.listenerPath: "), "{e}");
        let err = compile_for(&spec(v), &X86_64_TARGET).unwrap_err();
        assert_eq!(
            crate::Error::from(err).kind(),
            crate::ErrorKind::InvalidArgument
        );
    }
}

#[test]
fn notify_is_refused_where_runc_refuses_it() {
    let e = error(json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/a"}));
    assert_eq!(
        e,
        "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be used as default action"
    );
    let e = error(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO"},
                     {"names": ["mkdir", "write"], "action": "SCMP_ACT_NOTIFY"}]}),
    );
    assert!(
        e.starts_with(
            "linux.seccomp.syscalls[1].names[1]: SCMP_ACT_NOTIFY cannot be used for the write syscall"
        ),
        "{e}"
    );
    let e = error(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a",
        "syscalls": [{"names": ["sendmsg"], "action": "SCMP_ACT_NOTIFY"}]}),
    );
    assert!(e.contains("cannot be used for the sendmsg syscall"), "{e}");
    // Other actions on write are fine.
    build(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["write"], "action": "SCMP_ACT_ERRNO"}]}));
    let e = error(
        json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/a",
        "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY", "errnoRet": 1}]}),
    );
    assert!(e.starts_with("linux.seccomp.syscalls[0].errnoRet: "), "{e}");
}

#[test]
fn errno_ret_only_where_it_applies() {
    let e = error(json!({"defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                     {"names": ["getpid"], "action": "SCMP_ACT_ALLOW", "errnoRet": 5}]}));
    assert!(e.starts_with("linux.seccomp.syscalls[1].errnoRet: "), "{e}");
    assert!(e.contains("SCMP_ACT_ALLOW"), "{e}");
    let e = error(json!({"defaultAction": "SCMP_ACT_KILL", "defaultErrnoRet": 1}));
    assert!(e.starts_with("linux.seccomp.defaultErrnoRet: "), "{e}");
    let e = error(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 4096}));
    assert!(e.starts_with("linux.seccomp.defaultErrnoRet: 4096"), "{e}");
    let e = error(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_TRACE", "errnoRet": 65536}]}));
    assert!(e.starts_with("linux.seccomp.syscalls[0].errnoRet: "), "{e}");
    let err = compile_for(
        &spec(json!({"defaultAction": "SCMP_ACT_KILL", "defaultErrnoRet": 1})),
        &X86_64_TARGET,
    )
    .unwrap_err();
    assert_eq!(
        crate::Error::from(err).kind(),
        crate::ErrorKind::InvalidArgument
    );
}

#[test]
fn bad_names_and_args_name_the_field() {
    let e = error(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": [], "action": "SCMP_ACT_ERRNO"}]}));
    assert!(e.starts_with("linux.seccomp.syscalls[0].names: "), "{e}");
    let e = error(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ERRNO"},
                     {"names": ["getpid", ""], "action": "SCMP_ACT_ERRNO"}]}));
    assert!(e.starts_with("linux.seccomp.syscalls[1].names[1]: "), "{e}");
    let e = error(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getpid"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                     {"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}));
    assert!(
        e.starts_with("linux.seccomp.syscalls[0].args[1].index: 6 "),
        "{e}"
    );
    // Even when no name of the entry exists here, its contents are checked.
    let e = error(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["no_such_syscall"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 99, "value": 1, "op": "SCMP_CMP_EQ"}]}]}));
    assert!(e.contains("args[0].index"), "{e}");
}

#[test]
fn unknown_strings_fail_when_parsing() {
    // oci-spec rejects unknown enum strings while parsing config.json, so
    // they never reach compile(); the spec loader names the field.
    for bad in [
        json!({"defaultAction": "SCMP_ACT_BOGUS"}),
        json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_BOGUS"]}),
        json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_BOGUS"]}),
        json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
            "action": "SCMP_ACT_ERRNO", "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_BOGUS"}]}]}),
    ] {
        assert!(
            serde_json::from_value::<LinuxSeccomp>(bad.clone()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn unknown_syscalls_are_skipped() {
    let with = build(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["getpid", "no_such_syscall", "socketcall"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["also_unknown"], "action": "SCMP_ACT_KILL"}]}));
    let without = build(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}));
    assert_eq!(with.program(), without.program());
    assert_eq!(call(&with, "getpid", &[]), ALLOW);
}

#[test]
fn rules_with_the_default_action_are_dropped() {
    let with = build(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38,
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]},
        {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]}),
    );
    let without = build(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38, "syscalls": [
        {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]}),
    );
    // The dropped names still count for the ENOSYS stub; 38 is ENOSYS,
    // so there is no stub and the programs are identical.
    assert_eq!(with.program(), without.program());
    // A different errno is a different action and is kept.
    let f = build(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["write"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5}]}));
    assert_eq!(call(&f, "write", &[]), errno(5));
    // KILL and KILL_THREAD are the same action.
    let f = build(json!({"defaultAction": "SCMP_ACT_KILL", "syscalls": [
        {"names": ["write"], "action": "SCMP_ACT_KILL_THREAD"}]}));
    let g = build(json!({"defaultAction": "SCMP_ACT_KILL", "syscalls": [
        {"names": ["write"], "action": "SCMP_ACT_KILL_PROCESS",
            "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_EQ"}]}]}));
    // f has no syscall dispatch at all, only the ENOSYS stub above write.
    assert!(!f
        .program()
        .iter()
        .any(|i| i.code == bpf::BPF_JMP_JEQ_K && i.k == 1));
    assert!(g
        .program()
        .iter()
        .any(|i| i.code == bpf::BPF_JMP_JEQ_K && i.k == 1));
    assert_eq!(call(&f, "write", &[1]), KILL_THREAD);
    assert_eq!(call(&g, "write", &[1]), KILL_PROCESS);
}

fn cond_filter(args: Value) -> Filter {
    one_rule(
        "SCMP_ACT_ALLOW",
        json!({"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77, "args": args}),
    )
}

fn matches(f: &Filter, args: &[u64]) -> bool {
    match call(f, "getpgid", args) {
        v if v == errno(77) => true,
        ALLOW => false,
        v => panic!("unexpected {v:#x}"),
    }
}

#[test]
fn operators_compare_64_bits() {
    let big = 0x1_0000_0005u64;
    let op = |op: &str, value: u64| cond_filter(json!([{"index": 0, "value": value, "op": op}]));
    let probes = [0, 4, 5, 6, big - 1, big, big + 1, u64::MAX];
    let check = |f: &Filter, pred: &dyn Fn(u64, u64) -> bool, value: u64, name: &str| {
        for p in probes {
            assert_eq!(
                matches(f, &[p]),
                pred(p, value),
                "{name} {value:#x} arg {p:#x}"
            );
        }
    };
    for value in [5, big] {
        check(&op("SCMP_CMP_EQ", value), &|a, v| a == v, value, "EQ");
        check(&op("SCMP_CMP_NE", value), &|a, v| a != v, value, "NE");
        check(&op("SCMP_CMP_LT", value), &|a, v| a < v, value, "LT");
        check(&op("SCMP_CMP_LE", value), &|a, v| a <= v, value, "LE");
        check(&op("SCMP_CMP_GT", value), &|a, v| a > v, value, "GT");
        check(&op("SCMP_CMP_GE", value), &|a, v| a >= v, value, "GE");
    }
    // MASKED_EQ: (arg & value) == valueTwo.
    let f = cond_filter(json!([{"index": 2, "value": 0xff00_0000_ff00u64,
        "valueTwo": 0x1200_0000_3400u64, "op": "SCMP_CMP_MASKED_EQ"}]));
    assert!(matches(&f, &[0, 0, 0x1200_0000_3456]));
    assert!(matches(&f, &[0, 0, 0x12ab_0000_34cd]));
    assert!(!matches(&f, &[0, 0, 0x1200_0000_3556]));
    assert!(!matches(&f, &[0, 0, 0x1300_0000_3400]));
    assert!(!matches(&f, &[0x1200_0000_3400, 0, 0]));
    // valueTwo defaults to 0.
    let f = cond_filter(json!([{"index": 1, "value": 0x8, "op": "SCMP_CMP_MASKED_EQ"}]));
    assert!(matches(&f, &[0, 0x7]));
    assert!(!matches(&f, &[0, 0xf]));
}

#[test]
fn masked_eq_outside_the_mask_never_matches() {
    let f = cond_filter(json!([{"index": 0, "value": 0xff, "valueTwo": 0x1ff,
        "op": "SCMP_CMP_MASKED_EQ"}]));
    for p in [0xff, 0x1ff, 0, u64::MAX] {
        assert!(!matches(&f, &[p]));
    }
}

#[test]
fn args_on_different_indexes_are_anded() {
    let f = cond_filter(json!([
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
        {"index": 1, "value": 10, "op": "SCMP_CMP_GT"}]));
    assert!(matches(&f, &[1, 11]));
    assert!(!matches(&f, &[1, 10]));
    assert!(!matches(&f, &[2, 11]));
}

#[test]
fn args_on_the_same_index_are_ored() {
    // runc: when two conditions name the same argument, each becomes its
    // own rule.
    let f = cond_filter(json!([
        {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
        {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
        {"index": 1, "value": 7, "op": "SCMP_CMP_EQ"}]));
    assert!(matches(&f, &[1, 0]));
    assert!(matches(&f, &[2, 0]));
    assert!(matches(&f, &[3, 7]));
    assert!(!matches(&f, &[3, 0]));
}

#[test]
fn conditional_rules_come_before_unconditional_ones() {
    let f = build(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["socket"], "action": "SCMP_ACT_ALLOW"},
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 97,
            "args": [{"index": 0, "value": 40, "op": "SCMP_CMP_EQ"}]},
        {"names": ["socket"], "action": "SCMP_ACT_KILL"}]}));
    assert_eq!(call(&f, "socket", &[40]), errno(97));
    assert_eq!(call(&f, "socket", &[2]), ALLOW);
    // Several conditional entries: in order.
    let f = build(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
            "args": [{"index": 0, "value": 10, "op": "SCMP_CMP_GT"}]},
        {"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": 2,
            "args": [{"index": 0, "value": 20, "op": "SCMP_CMP_GT"}]}]}));
    assert_eq!(call(&f, "socket", &[30]), errno(1));
    assert_eq!(call(&f, "socket", &[5]), ALLOW);
}

#[test]
fn architectures() {
    let x86 = &X86_64_TARGET.compat[0].1;
    let x32 = &X86_64_TARGET.x32.as_ref().unwrap().1;
    let rules = json!([{"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 9}]);
    let only_native = build(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_PPC64LE"]}));
    let all = build(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules,
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]}));
    let none_listed = build(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}));
    assert_eq!(only_native.program(), none_listed.program());

    for f in [&only_native, &all] {
        assert_eq!(call(f, "getpid", &[]), errno(9));
        assert_eq!(call(f, "getppid", &[]), ALLOW);
        // Another architecture entirely.
        assert_eq!(
            bpf::run(f.program(), 172, AUDIT_ARCH_AARCH64, [0; 6]),
            KILL_PROCESS
        );
    }
    // i386 syscalls (int 0x80 on x86_64).
    let i386 =
        |f: &Filter, name: &str| bpf::run(f.program(), nr(x86, name), AUDIT_ARCH_I386, [0; 6]);
    assert_eq!(i386(&only_native, "getpid"), KILL_PROCESS);
    assert_eq!(i386(&all, "getpid"), errno(9));
    assert_eq!(i386(&all, "getppid"), ALLOW);
    // getpid is 20 on i386, which is writev on x86_64: not confused.
    assert_eq!(nr(x86, "getpid"), 20);
    assert_eq!(call(&all, "writev", &[]), ALLOW);
    // x32 syscalls: the x86_64 audit value with bit 30 in the number.
    let x32call =
        |f: &Filter, name: &str| bpf::run(f.program(), nr(x32, name), AUDIT_ARCH_X86_64, [0; 6]);
    assert_eq!(nr(x32, "getpid"), 39 | X32_SYSCALL_BIT);
    assert_eq!(x32call(&only_native, "getpid"), KILL_PROCESS);
    assert_eq!(x32call(&only_native, "getppid"), KILL_PROCESS);
    assert_eq!(x32call(&all, "getpid"), errno(9));
    assert_eq!(x32call(&all, "getppid"), ALLOW);
}

#[test]
fn arguments_of_32_bit_abis_compare_32_bits() {
    let x86 = &X86_64_TARGET.compat[0].1;
    let f = build(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86"],
        "syscalls": [{"names": ["personality"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_EQ"}]}]}));
    let run = |arch, nr, a0| bpf::run(f.program(), nr, arch, [a0, 0, 0, 0, 0, 0]);
    let p64 = nr(&X86_64_TARGET.native, "personality");
    let p32 = nr(x86, "personality");
    assert_eq!(run(AUDIT_ARCH_X86_64, p64, 0xffff_ffff), errno(EPERM));
    assert_eq!(run(AUDIT_ARCH_X86_64, p64, u64::MAX), ALLOW);
    assert_eq!(run(AUDIT_ARCH_I386, p32, 0xffff_ffff), errno(EPERM));
    assert_eq!(run(AUDIT_ARCH_I386, p32, 0), ALLOW);
}

#[test]
fn enosys_above_the_profile() {
    let allow = |names: &[&str]| {
        json!({"defaultAction": "SCMP_ACT_ERRNO",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86"],
            "syscalls": [{"names": names, "action": "SCMP_ACT_ALLOW"}]})
    };
    let f = build(allow(&["read", "write", "exit_group"]));
    let x64 = |n: u32| bpf::run(f.program(), n, AUDIT_ARCH_X86_64, [0; 6]);
    assert_eq!(x64(0), ALLOW);
    assert_eq!(x64(231), ALLOW);
    assert_eq!(x64(100), errno(EPERM));
    assert_eq!(x64(232), errno(ENOSYS));
    assert_eq!(x64(435), errno(ENOSYS));
    // i386: exit_group is 252 there, and the stub follows.
    let x86 = |n: u32| bpf::run(f.program(), n, AUDIT_ARCH_I386, [0; 6]);
    assert_eq!(x86(252), ALLOW);
    assert_eq!(x86(251), errno(EPERM));
    assert_eq!(x86(253), errno(ENOSYS));
    // Names of entries dropped for having the default action still count.
    let mut v = allow(&["read"]);
    v["syscalls"]
        .as_array_mut()
        .unwrap()
        .push(json!({"names": ["clone3"], "action": "SCMP_ACT_ERRNO"}));
    let f = build(v);
    assert_eq!(
        bpf::run(f.program(), 435, AUDIT_ARCH_X86_64, [0; 6]),
        errno(EPERM)
    );
    assert_eq!(
        bpf::run(f.program(), 436, AUDIT_ARCH_X86_64, [0; 6]),
        errno(ENOSYS)
    );
    // No stub for permissive defaults or when the default is ENOSYS.
    for default in [
        json!({"defaultAction": "SCMP_ACT_ALLOW"}),
        json!({"defaultAction": "SCMP_ACT_LOG"}),
        json!({"defaultAction": "SCMP_ACT_TRACE"}),
    ] {
        let mut v = default.clone();
        v["syscalls"] = json!([{"names": ["read"], "action": "SCMP_ACT_KILL"}]);
        let f = build(v);
        let want = call(&build(default), "getpid", &[]);
        assert_eq!(bpf::run(f.program(), 435, AUDIT_ARCH_X86_64, [0; 6]), want);
    }
    let f = build(
        json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW"}]}),
    );
    assert!(!f
        .program()
        .iter()
        .any(|i| i.code == bpf::BPF_JMP_JGT_K && i.k == 0));
}

#[test]
fn flags() {
    let f =
        build(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_TSYNC"]}));
    assert_eq!(f.flags(), 1);
    assert_eq!(build(json!({"defaultAction": "SCMP_ACT_ALLOW"})).flags(), 0);
    let f = build(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"]}));
    assert_eq!(f.flags(), 2 | 4);
    let e = error(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}));
    assert!(
        e.starts_with("linux.seccomp.flags[1]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"),
        "{e}"
    );
}

#[test]
fn a_docker_sized_profile_fits() {
    // Every x86_64 syscall allowed, some with conditions, like Docker's
    // default profile (which lists ~370 names).
    let names: Vec<&str> = X86_64_TARGET.native.table.iter().map(|(n, _)| *n).collect();
    let f = build(json!({"defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 8, "op": "SCMP_CMP_EQ"}]},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                "args": [{"index": 0, "value": 0x7e02_0000u64, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]},
            {"names": names, "action": "SCMP_ACT_ALLOW"}]}));
    assert!(f.program().len() < bpf::MAX_INSNS, "{}", f.program().len());
    for (name, n) in X86_64_TARGET.native.table {
        assert_eq!(
            bpf::run(f.program(), *n, AUDIT_ARCH_X86_64, [0; 6]),
            ALLOW,
            "{name}"
        );
    }
    assert_eq!(
        bpf::run(f.program(), 335, AUDIT_ARCH_X86_64, [0; 6]),
        errno(EPERM)
    );
    assert_eq!(
        bpf::run(f.program(), 1000, AUDIT_ARCH_X86_64, [0; 6]),
        errno(ENOSYS)
    );
}

#[test]
fn too_large() {
    let syscalls: Vec<Value> = (0..700)
        .map(|i| {
            json!({"names": ["getpgid"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 0, "value": i, "op": "SCMP_CMP_EQ"}]})
        })
        .collect();
    let e = error(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": syscalls}));
    assert!(e.starts_with("linux.seccomp: the filter needs "), "{e}");
}

#[test]
fn aarch64() {
    let f = build_for(
        json!({"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
            "syscalls": [{"names": ["getpid", "open"], "action": "SCMP_ACT_ERRNO"}]}),
        &AARCH64_TARGET,
    );
    let run = |nr, arch| bpf::run(f.program(), nr, arch, [0; 6]);
    assert_eq!(run(172, AUDIT_ARCH_AARCH64), errno(EPERM));
    assert_eq!(run(173, AUDIT_ARCH_AARCH64), ALLOW);
    // No x32 split on aarch64: bit 30 is just a (nonexistent) number.
    assert_eq!(run(172 | X32_SYSCALL_BIT, AUDIT_ARCH_AARCH64), ALLOW);
    assert_eq!(run(39, AUDIT_ARCH_X86_64), KILL_PROCESS);
    // 32-bit ARM (AUDIT_ARCH_ARM) is not filtered: killed.
    assert_eq!(run(20, 0x4000_0028), KILL_PROCESS);
}

#[test]
fn tables_are_sorted_and_unique() {
    for table in [table::X86_64, table::X86, table::X32, table::AARCH64] {
        assert!(table.windows(2).all(|w| w[0].0 < w[1].0));
        let mut nrs: Vec<u32> = table.iter().map(|(_, n)| *n).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(nrs.len(), table.len());
    }
    assert_eq!(table::X86_64.len(), 382);
    let x64 = &X86_64_TARGET.native;
    assert_eq!(nr(x64, "read"), 0);
    assert_eq!(nr(x64, "clone3"), 435);
    assert_eq!(nr(x64, "mseal"), 462);
    assert_eq!(nr(x64, "getpgid"), libc::SYS_getpgid as u32);
    assert_eq!(nr(x64, "personality"), libc::SYS_personality as u32);
    assert!(x64.lookup("socketcall").is_none());
    assert_eq!(nr(&AARCH64_TARGET.native, "openat"), 56);
    assert!(AARCH64_TARGET.native.lookup("open").is_none());
}

#[test]
fn filter_debug_is_short() {
    let f =
        build(json!({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_TSYNC"]}));
    assert_eq!(
        format!("{f:?}"),
        format!(
            "Filter {{ instructions: {}, flags: 1, listener: None }}",
            f.program().len()
        )
    );
}
