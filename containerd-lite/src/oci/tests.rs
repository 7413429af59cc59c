use oci_spec::runtime::{Capability, LinuxNamespaceType, LinuxSeccompAction, Spec};
use serde_json::{json, Value};

use super::*;
use crate::ErrorKind;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
                      daemon:x:1:1::/:/bin/false\n\
                      app:x:1000:1001:App:/home/app:/bin/sh\n\
                      broken line\n";
const GROUP: &str = "root:x:0:\n\
                     wheel:x:10:root,app\n\
                     app:x:1001:app\n\
                     staff:x:50:app\n\
                     audio:x:63:\n";

fn users() -> UserDb {
    UserDb::parse(PASSWD, GROUP)
}

fn x86(kernel: (u32, u32)) -> Target {
    Target {
        arch: TargetArch::X86_64,
        kernel,
    }
}

fn json_of(spec: &Spec) -> Value {
    serde_json::from_slice(&to_json(spec).unwrap()).unwrap()
}

fn image(config: Value) -> oci_spec::image::Config {
    serde_json::from_value(config).unwrap()
}

#[test]
fn users_resolve_like_containerd() {
    let db = users();
    let root = db.resolve("").unwrap();
    assert_eq!((root.uid, root.gid), (0, 0));
    assert_eq!(root.additional_gids, vec![0, 10], "primary, then wheel");
    let app = db.resolve("app").unwrap();
    assert_eq!((app.uid, app.gid), (1000, 1001));
    // Its own group (named like it) is the primary one, not listed twice.
    assert_eq!(app.additional_gids, vec![1001, 10, 50]);
    let by_uid = db.resolve("1000").unwrap();
    assert_eq!((by_uid.uid, by_uid.gid), (1000, 1001));
    let group_named = db.resolve("app:audio").unwrap();
    assert_eq!((group_named.uid, group_named.gid), (1000, 63));
    let numeric = db.resolve("4242:4343").unwrap();
    assert_eq!((numeric.uid, numeric.gid), (4242, 4343));
    assert_eq!(numeric.additional_gids, vec![4343]);
    // A uid passwd does not know gets group 0.
    assert_eq!(db.resolve("4242").unwrap().gid, 0);
    for (user, kind, named) in [
        ("nobody", ErrorKind::NotFound, "nobody"),
        ("app:nogroup", ErrorKind::NotFound, "nogroup"),
        (":10", ErrorKind::InvalidArgument, ":10"),
        ("app:", ErrorKind::InvalidArgument, "app:"),
    ] {
        let err = db.resolve(user).unwrap_err();
        assert_eq!(err.kind, kind, "{user}: {err}");
        assert!(err.message.contains(named), "{user}: {err}");
    }
    // No databases at all: root, and numeric ids.
    let empty = UserDb::default();
    assert_eq!(empty.resolve("").unwrap().additional_gids, vec![0]);
    assert_eq!(empty.resolve("7:8").unwrap().gid, 8);
}

#[test]
fn user_databases_are_read_inside_the_rootfs() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/passwd"), PASSWD).unwrap();
    // A symlink pointing at the host's group file resolves inside the rootfs.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("group"), "evil:x:99:root\n").unwrap();
    std::os::unix::fs::symlink(outside.path().join("group"), root.path().join("etc/group"))
        .unwrap();
    let db = UserDb::from_rootfs(root.path()).unwrap();
    assert_eq!(db.users.len(), 3);
    assert!(db.groups.is_empty(), "read outside the rootfs: {db:?}");
    // Nothing at all: empty databases.
    let bare = tempfile::tempdir().unwrap();
    assert_eq!(UserDb::from_rootfs(bare.path()).unwrap(), UserDb::default());
    // A fifo where /etc/passwd should be is refused, not waited on.
    let fifo = tempfile::tempdir().unwrap();
    std::fs::create_dir(fifo.path().join("etc")).unwrap();
    nix::unistd::mkfifo(
        &fifo.path().join("etc/passwd"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let err = UserDb::from_rootfs(fifo.path()).unwrap_err();
    assert!(err.message.contains("not a regular file"), "{err}");
}

#[test]
fn env_merges_replace_append_and_remove() {
    let mut env = vec!["PATH=/bin".to_string(), "A=1".to_string()];
    merge_env(
        &mut env,
        &["A=2".into(), "B=x=y".into(), "PATH".into(), "C=".into()],
    );
    assert_eq!(env, vec!["A=2", "B=x=y", "C="]);

    let spec = SpecBuilder::new("ns", "c1")
        .unwrap()
        .image_config(
            &image(json!({"Env": ["PATH=/opt/bin", "LANG=C"], "Cmd": ["sh"]})),
            &users(),
        )
        .unwrap()
        .env(&["LANG=fr".into(), "EXTRA=1".into()])
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(
        json_of(&spec)["process"]["env"],
        json!(["PATH=/opt/bin", "LANG=fr", "EXTRA=1"])
    );
    for bad in ["NOEQUALS", "=value", ""] {
        let err = SpecBuilder::new("ns", "c1")
            .unwrap()
            .env(&[bad.to_string()])
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad}");
        assert!(err.message.contains("KEY=VALUE"), "{err}");
    }
}

#[test]
fn image_config_gives_args_cwd_and_user() {
    let config = image(json!({
        "Entrypoint": ["/entry", "-v"], "Cmd": ["serve"],
        "WorkingDir": "/srv", "User": "app"
    }));
    let spec = SpecBuilder::new("ns", "c1")
        .unwrap()
        .image_config(&config, &users())
        .unwrap()
        .build()
        .unwrap();
    let value = json_of(&spec);
    assert_eq!(value["process"]["args"], json!(["/entry", "-v", "serve"]));
    assert_eq!(value["process"]["cwd"], "/srv");
    assert_eq!(
        value["process"]["user"],
        json!({"uid": 1000, "gid": 1001, "additionalGids": [1001, 10, 50]})
    );
    // Arguments replace entrypoint and command alike, as with ctr.
    let spec = SpecBuilder::new("ns", "c1")
        .unwrap()
        .image_config(&config, &users())
        .unwrap()
        .args(vec!["echo".into(), "hi".into()])
        .build()
        .unwrap();
    assert_eq!(json_of(&spec)["process"]["args"], json!(["echo", "hi"]));
    // Nothing to run is refused.
    let err = SpecBuilder::new("ns", "c1")
        .unwrap()
        .image_config(&image(json!({})), &users())
        .unwrap()
        .build()
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
    // An unknown user is refused with its name.
    let err = SpecBuilder::new("ns", "c1")
        .unwrap()
        .image_config(&image(json!({"User": "ghost", "Cmd": ["sh"]})), &users())
        .unwrap_err();
    assert!(err.message.contains("ghost"), "{err}");
}

#[test]
fn defaults_are_containerds() {
    let spec = SpecBuilder::new("default", "web")
        .unwrap()
        .args(vec!["sh".into()])
        .build()
        .unwrap();
    let value = json_of(&spec);
    assert_eq!(value["linux"]["cgroupsPath"], "/default/web");
    assert_eq!(value["root"]["path"], "rootfs");
    assert_eq!(value["process"]["cwd"], "/");
    assert_eq!(value["process"]["noNewPrivileges"], true);
    assert_eq!(
        value["process"]["rlimits"],
        json!([{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}])
    );
    let caps = spec
        .process()
        .as_ref()
        .unwrap()
        .capabilities()
        .clone()
        .unwrap();
    let want: oci_spec::runtime::Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    assert_eq!(caps.bounding().as_ref(), Some(&want));
    assert_eq!(caps.permitted().as_ref(), Some(&want));
    assert_eq!(caps.effective().as_ref(), Some(&want));
    assert!(caps.inheritable().is_none() && caps.ambient().is_none());
    let namespaces: Vec<&str> = value["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|ns| ns["type"].as_str().unwrap())
        .collect();
    assert_eq!(namespaces, ["pid", "ipc", "uts", "mount", "network"]);
    let destinations: Vec<&str> = value["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    assert_eq!(
        destinations,
        [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/run"
        ]
    );
    assert!(value["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&json!("/proc/kcore")));
    assert!(value["linux"]["readonlyPaths"]
        .as_array()
        .unwrap()
        .contains(&json!("/proc/sys")));
    assert_eq!(
        value["linux"]["resources"]["devices"],
        json!([{"allow": false, "access": "rwm"}])
    );
    assert_eq!(value["process"]["env"], json!([defaults::DEFAULT_PATH]));
    // Nothing else: the builders start from oci-spec's own defaults.
    let keys = |v: &Value| {
        let mut keys: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        keys
    };
    assert_eq!(
        keys(&value),
        ["linux", "mounts", "ociVersion", "process", "root"]
    );
    assert_eq!(
        keys(&value["process"]),
        [
            "args",
            "capabilities",
            "cwd",
            "env",
            "noNewPrivileges",
            "rlimits",
            "terminal",
            "user"
        ]
    );
    assert_eq!(
        keys(&value["linux"]),
        [
            "cgroupsPath",
            "maskedPaths",
            "namespaces",
            "readonlyPaths",
            "resources",
            "seccomp"
        ]
    );
    assert_eq!(keys(&value["linux"]["resources"]), ["devices"]);
}

#[test]
fn mounts_parse_ctr_syntax() {
    let mount = parse_mount("type=bind,src=/a,dst=/b,options=rbind:ro").unwrap();
    let value = serde_json::to_value(&mount).unwrap();
    assert_eq!(
        value,
        json!({"destination": "/b", "type": "bind", "source": "/a", "options": ["rbind", "ro"]})
    );
    let tmpfs = parse_mount("type=tmpfs,source=tmpfs,destination=/t").unwrap();
    assert_eq!(tmpfs.typ().as_deref(), Some("tmpfs"));
    for (bad, says) in [
        ("type=bind,src=/a", "no destination"),
        ("type=bind,src=/a,dst=rel", "not absolute"),
        ("type=bind,dst=/b", "absolute source"),
        ("type=bind,src=rel,dst=/b", "absolute source"),
        ("type=bind,src=/a,dst=/b,colour=red", "unknown key"),
        ("bind,/a,/b", "not key=value"),
        (
            "type=bind,src=/a,dst=/b,options=ro::rbind",
            "empty mount option",
        ),
    ] {
        let err = parse_mount(bad).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument, "{bad}");
        assert!(err.message.contains(says), "{bad}: {err}");
        assert!(err.message.contains(bad), "names the input: {err}");
    }
    let spec = SpecBuilder::new("ns", "c")
        .unwrap()
        .mount(mount)
        .args(vec!["true".into()])
        .build()
        .unwrap();
    assert_eq!(
        json_of(&spec)["mounts"].as_array().unwrap().last().unwrap()["destination"],
        "/b"
    );
}

#[test]
fn cpus_become_a_cfs_quota() {
    assert_eq!(cfs_quota(1.0).unwrap(), (100_000, 100_000));
    assert_eq!(cfs_quota(0.5).unwrap(), (50_000, 100_000));
    assert_eq!(cfs_quota(2.25).unwrap(), (225_000, 100_000));
    assert_eq!(cfs_quota(0.01).unwrap(), (1_000, 100_000));
    for bad in [0.0, -1.0, 0.001, f64::NAN, f64::INFINITY] {
        assert_eq!(cfs_quota(bad).unwrap_err().kind, ErrorKind::InvalidArgument);
    }
    let spec = SpecBuilder::new("ns", "c")
        .unwrap()
        .cpus(1.5)
        .unwrap()
        .memory_limit(64 << 20)
        .unwrap()
        .args(vec!["true".into()])
        .build()
        .unwrap();
    let resources = &json_of(&spec)["linux"]["resources"];
    assert_eq!(
        resources["cpu"],
        json!({"quota": 150_000, "period": 100_000})
    );
    assert_eq!(resources["memory"], json!({"limit": 64 << 20}));
    assert_eq!(
        resources["devices"],
        json!([{"allow": false, "access": "rwm"}])
    );
    let err = SpecBuilder::new("ns", "c")
        .unwrap()
        .memory_limit(u64::MAX)
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::InvalidArgument);
}

#[test]
fn host_network_and_terminal() {
    let spec = SpecBuilder::new("ns", "c")
        .unwrap()
        .host_network("box1")
        .unwrap()
        .terminal(true)
        .args(vec!["sh".into()])
        .build()
        .unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert!(!linux
        .namespaces()
        .as_ref()
        .unwrap()
        .iter()
        .any(|ns| ns.typ() == LinuxNamespaceType::Network));
    let value = json_of(&spec);
    for file in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
        assert!(
            value["mounts"].as_array().unwrap().contains(
                &json!({"destination": file, "type": "bind", "source": file, "options": ["rbind", "ro"]})
            ),
            "{file}"
        );
    }
    assert_eq!(value["process"]["terminal"], true);
    let env = value["process"]["env"].as_array().unwrap();
    assert!(env.contains(&json!("HOSTNAME=box1")) && env.contains(&json!("TERM=xterm")));
}

fn rule_names(profile: &Value, action: &str) -> Vec<String> {
    profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["action"] == action && rule.get("args").is_none())
        .flat_map(|rule| rule["names"].as_array().unwrap().clone())
        .map(|name| name.as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn seccomp_profile_has_the_oci_shape() {
    let caps = DEFAULT_CAPABILITIES.into_iter().collect();
    let profile = serde_json::to_value(default_profile(&caps, &x86((6, 1)))).unwrap();
    assert_eq!(profile["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(profile["defaultErrnoRet"], 1);
    assert_eq!(
        profile["architectures"],
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
    for rule in profile["syscalls"].as_array().unwrap() {
        assert!(!rule["names"].as_array().unwrap().is_empty(), "{rule}");
        let action = rule["action"].as_str().unwrap();
        assert!(
            action == "SCMP_ACT_ALLOW" || action == "SCMP_ACT_ERRNO",
            "{rule}"
        );
    }
    let allowed = rule_names(&profile, "SCMP_ACT_ALLOW");
    for name in [
        "read",
        "execve",
        "arch_prctl",
        "chroot",
        "ptrace",
        "openat2",
    ] {
        assert!(allowed.iter().any(|n| n == name), "{name} not allowed");
    }
    for name in [
        "mount", "unshare", "setns", "keyctl", "add_key", "reboot", "bpf", "syslog",
    ] {
        assert!(
            !allowed.iter().any(|n| n == name),
            "{name} allowed by default"
        );
    }
    // clone only without namespace flags; clone3 says ENOSYS.
    let clone = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .find(|rule| rule["names"] == json!(["clone"]))
        .unwrap();
    assert_eq!(
        clone["args"],
        json!([{"index": 0, "value": seccomp::CLONE_NAMESPACE_FLAGS, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}])
    );
    assert_eq!(seccomp::CLONE_NAMESPACE_FLAGS, 0x7e02_0000);
    assert_eq!(
        rule_names(&profile, "SCMP_ACT_ERRNO"),
        ["clone3"],
        "{profile}"
    );
    let personality: Vec<u64> = profile["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|rule| rule["names"] == json!(["personality"]))
        .map(|rule| rule["args"][0]["value"].as_u64().unwrap())
        .collect();
    assert_eq!(personality, [0, 8, 0x20000, 0x20008, 0xffff_ffff]);
    // The profile parses back as what the runtime reads.
    let spec = SpecBuilder::new("ns", "c")
        .unwrap()
        .args(vec!["sh".into()])
        .build()
        .unwrap();
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.seccomp().as_ref().unwrap().default_action(),
        LinuxSeccompAction::ScmpActErrno
    );
}

#[test]
fn seccomp_conditions_follow_caps_arch_and_kernel() {
    let mut caps: oci_spec::runtime::Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    caps.insert(Capability::SysAdmin);
    caps.remove(&Capability::SysChroot);
    let admin = serde_json::to_value(default_profile(&caps, &x86((6, 1)))).unwrap();
    let allowed = rule_names(&admin, "SCMP_ACT_ALLOW");
    for name in ["mount", "unshare", "setns", "clone", "clone3"] {
        assert!(
            allowed.iter().any(|n| n == name),
            "{name} with CAP_SYS_ADMIN"
        );
    }
    assert!(
        !allowed.iter().any(|n| n == "chroot"),
        "chroot without CAP_SYS_CHROOT"
    );
    assert!(
        rule_names(&admin, "SCMP_ACT_ERRNO").is_empty(),
        "clone3 allowed"
    );

    let default: oci_spec::runtime::Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let old = serde_json::to_value(default_profile(&default, &x86((4, 4)))).unwrap();
    assert!(!rule_names(&old, "SCMP_ACT_ALLOW")
        .iter()
        .any(|n| n == "ptrace"));
    // Reaching into other processes needs CAP_SYS_PTRACE on any kernel;
    // tracing one's own from 4.8 on does not.
    let new = rule_names(
        &serde_json::to_value(default_profile(&default, &x86((6, 1)))).unwrap(),
        "SCMP_ACT_ALLOW",
    );
    let mut tracer = default.clone();
    tracer.insert(Capability::SysPtrace);
    let traced = rule_names(
        &serde_json::to_value(default_profile(&tracer, &x86((6, 1)))).unwrap(),
        "SCMP_ACT_ALLOW",
    );
    for name in ["kcmp", "pidfd_getfd", "process_madvise"] {
        assert!(
            !new.iter().any(|n| n == name),
            "{name} without CAP_SYS_PTRACE"
        );
        assert!(
            traced.iter().any(|n| n == name),
            "{name} with CAP_SYS_PTRACE"
        );
    }
    for name in ["ptrace", "process_vm_readv", "process_vm_writev"] {
        assert!(new.iter().any(|n| n == name), "{name} on kernel 6.1");
    }

    let arm = serde_json::to_value(default_profile(
        &default,
        &Target {
            arch: TargetArch::Aarch64,
            kernel: (6, 1),
        },
    ))
    .unwrap();
    assert_eq!(
        arm["architectures"],
        json!(["SCMP_ARCH_ARM", "SCMP_ARCH_AARCH64"])
    );
    let allowed = rule_names(&arm, "SCMP_ACT_ALLOW");
    assert!(allowed.iter().any(|n| n == "set_tls"));
    assert!(!allowed.iter().any(|n| n == "arch_prctl"));
    assert_eq!(
        seccomp::parse_kernel_release("6.18.44-fc-v657"),
        Some((6, 18))
    );
    assert_eq!(seccomp::parse_kernel_release("garbage"), None);

    // Off when asked.
    let spec = SpecBuilder::new("ns", "c")
        .unwrap()
        .seccomp(false, Target::host())
        .args(vec!["sh".into()])
        .build()
        .unwrap();
    assert!(spec.linux().as_ref().unwrap().seccomp().is_none());
}
