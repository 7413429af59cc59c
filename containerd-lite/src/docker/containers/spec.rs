//! A docker container's OCI spec, built at each start from its record
//! (config merged with the image's, host config, mounts) and what the
//! start prepared (network namespace, name files, the user resolved in
//! the rootfs). It starts from containerd's defaults (`oci::SpecBuilder`)
//! and changes what dockerd does differently: no `noNewPrivileges` unless
//! asked, no rlimits unless asked, the short ID as hostname.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use bollard_stubs::models::HostConfig;
use oci_spec::runtime::{
    Capability, LinuxCpu, LinuxDeviceCgroupBuilder, LinuxMemory, LinuxNamespaceType, LinuxPids,
    LinuxResources, Mount, MountBuilder, PosixRlimitBuilder, PosixRlimitType, Spec,
};

use super::record::{MountKind, MountPoint, Record};
use crate::oci::{ResolvedUser, SpecBuilder};
use crate::{Error, Result};

/// docker's init (tini), bound into containers run with `--init`.
pub const INIT_BINARY: &str = "/usr/bin/docker-init";
/// Where `--init` puts it in the container.
const INIT_IN_CONTAINER: &str = "/sbin/docker-init";

/// The network namespace a container gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Netns {
    /// A namespace berthd made (or another container's) at this path.
    Join(PathBuf),
    /// The host's.
    Host,
}

/// What a start prepared for the spec.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub netns: Netns,
    /// `/etc/hosts`, `/etc/resolv.conf`, `/etc/hostname` for the container.
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname_file: PathBuf,
    pub hostname: String,
    pub user: ResolvedUser,
}

/// The hostname a container gets: its config's, or the short ID.
pub fn hostname_of(record: &Record) -> String {
    record
        .config
        .hostname
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| record.id.chars().take(12).collect())
}

/// A cgroup parent as `--cgroup-parent` names it, made absolute without a
/// trailing slash (`a/b/` is `/a/b`; `/` is the root, ""). It may not
/// climb with `..`, nor hold `.` or control characters.
pub fn cgroup_parent(parent: &str) -> Result<String> {
    let invalid = |why: &str| Error::invalid(format!("invalid cgroup parent {parent:?}: {why}"));
    if parent.chars().any(char::is_control) {
        return Err(invalid("control characters are not allowed"));
    }
    let mut path = String::with_capacity(parent.len() + 1);
    for part in parent.split('/').filter(|part| !part.is_empty()) {
        if part == "." || part == ".." {
            return Err(invalid("\".\" and \"..\" are not allowed"));
        }
        path.push('/');
        path.push_str(part);
    }
    Ok(path)
}

/// The cgroup of `record`: `<parent>/<id>`, the parent being the
/// container's `CgroupParent` or else `default_parent` (berthd's).
pub fn cgroups_path(record: &Record, default_parent: &str) -> Result<String> {
    let parent = match record.host_config.cgroup_parent.as_deref() {
        Some(parent) if !parent.is_empty() => cgroup_parent(parent)?,
        _ => default_parent.to_owned(),
    };
    Ok(format!("{parent}/{}", record.id))
}

/// The spec for `record` as `prepared`, its cgroup under `cgroup_parent`
/// unless the record names its own.
pub fn build(record: &Record, prepared: &Prepared, cgroup_parent: &str) -> Result<Spec> {
    let host = &record.host_config;
    let tty = record.tty();
    let mut args = Vec::with_capacity(record.args.len() + 3);
    if host.init == Some(true) {
        if !Path::new(INIT_BINARY).exists() {
            return Err(Error::invalid(format!(
                "--init: {INIT_BINARY} is not installed"
            )));
        }
        args.push(INIT_IN_CONTAINER.to_owned());
        args.push("--".to_owned());
    }
    args.push(record.path.clone());
    args.extend(record.args.iter().cloned());

    let mut env: Vec<String> = record.config.env.clone().unwrap_or_default();
    env.push(format!("HOSTNAME={}", prepared.hostname));
    let mut builder = SpecBuilder::new(crate::docker::NAMESPACE, &record.id)?
        .cgroups_path(cgroups_path(record, cgroup_parent)?)
        .args(args)
        .env(&env)?
        .user(prepared.user.clone())
        .terminal(tty)
        .no_new_privileges(no_new_privileges(host)?);
    let seccomp = seccomp_wanted(host)?;
    builder = builder.seccomp(seccomp, crate::oci::Target::host());
    if host.init == Some(true) {
        builder = builder.mount(bind(INIT_BINARY, INIT_IN_CONTAINER, false, "rprivate")?);
    }
    for mount in &record.mounts {
        builder = builder.mount(mount_of(mount)?);
    }
    let name_files = [
        (&prepared.hosts, "/etc/hosts"),
        (&prepared.resolv_conf, "/etc/resolv.conf"),
        (&prepared.hostname_file, "/etc/hostname"),
    ];
    for (source, destination) in name_files {
        if record.mounts.iter().any(|m| m.destination == destination) {
            continue;
        }
        builder = builder.mount(bind(
            &source.to_string_lossy(),
            destination,
            host.readonly_rootfs == Some(true),
            "rprivate",
        )?);
    }
    let mut failure = None;
    builder = builder.edit(|spec| {
        if let Err(err) = apply_host_config(spec, record, prepared) {
            failure = Some(err);
        }
    });
    if let Some(err) = failure {
        return Err(err);
    }
    builder.build()
}

fn apply_host_config(spec: &mut Spec, record: &Record, prepared: &Prepared) -> Result<()> {
    let host = &record.host_config;
    spec.set_hostname(Some(prepared.hostname.clone()));
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(host.readonly_rootfs == Some(true)));
    }
    if let Some(process) = spec.process_mut() {
        let cwd = record
            .config
            .working_dir
            .clone()
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "/".to_owned());
        if !cwd.starts_with('/') {
            return Err(Error::invalid(format!(
                "the working directory '{cwd}' is invalid, it needs to be an absolute path"
            )));
        }
        process.set_cwd(cwd.into());
        process.set_rlimits(ulimits(host)?);
        if let Some(adj) = host.oom_score_adj {
            process.set_oom_score_adj(Some(adj as i32));
        }
        let caps = capabilities(host)?;
        if let Some(mut set) = process.capabilities().clone() {
            set.set_bounding(Some(caps.clone()))
                .set_effective(Some(caps.clone()))
                .set_permitted(Some(caps));
            process.set_capabilities(Some(set));
        }
    }
    // Shared memory: docker's default is 64 MiB; ShmSize overrides it.
    if let Some(size) = host.shm_size.filter(|s| *s > 0) {
        if let Some(mounts) = spec.mounts_mut() {
            for mount in mounts
                .iter_mut()
                .filter(|m| m.destination() == Path::new("/dev/shm"))
            {
                let options: Vec<String> = mount
                    .options()
                    .iter()
                    .flatten()
                    .filter(|o| !o.starts_with("size="))
                    .cloned()
                    .chain([format!("size={size}")])
                    .collect();
                mount.set_options(Some(options));
            }
        }
    }
    let privileged = host.privileged == Some(true);
    let linux = spec.linux_mut().get_or_insert_with(Default::default);
    if let Some(namespaces) = linux.namespaces_mut() {
        match &prepared.netns {
            Netns::Host => namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Network),
            Netns::Join(path) => {
                for ns in namespaces
                    .iter_mut()
                    .filter(|ns| ns.typ() == LinuxNamespaceType::Network)
                {
                    ns.set_path(Some(path.clone()));
                }
            }
        }
    }
    if let Some(sysctls) = &host.sysctls {
        linux.set_sysctl(Some(sysctls.clone().into_iter().collect()));
    }
    if privileged {
        linux.set_masked_paths(Some(Vec::new()));
        linux.set_readonly_paths(Some(Vec::new()));
    }
    let resources = linux.resources_mut().get_or_insert_with(Default::default);
    if privileged {
        let allow_all = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .map_err(|err| Error::internal(format!("device rule: {err}")))?;
        resources.set_devices(Some(vec![allow_all]));
    }
    apply_limits(resources, host)?;
    Ok(())
}

/// The memory, CPU and pids limits of `host` set on `resources` (what
/// `docker update` may change on a running container too).
pub fn apply_limits(resources: &mut LinuxResources, host: &HostConfig) -> Result<()> {
    let mut memory = LinuxMemory::default();
    let mut memory_set = false;
    if let Some(limit) = host.memory.filter(|m| *m > 0) {
        memory.set_limit(Some(limit));
        // docker's default: as much swap as memory.
        let swap = match host.memory_swap {
            Some(-1) => -1,
            Some(s) if s > 0 => s,
            _ => limit * 2,
        };
        memory.set_swap(Some(swap));
        memory_set = true;
    }
    if let Some(reservation) = host.memory_reservation.filter(|m| *m > 0) {
        memory.set_reservation(Some(reservation));
        memory_set = true;
    }
    if host.oom_kill_disable == Some(true) {
        memory.set_disable_oom_killer(Some(true));
        memory_set = true;
    }
    if let Some(swappiness) = host.memory_swappiness.filter(|s| (0..=100).contains(s)) {
        memory.set_swappiness(Some(swappiness as u64));
        memory_set = true;
    }
    if memory_set {
        resources.set_memory(Some(memory));
    }
    let mut cpu = LinuxCpu::default();
    let mut cpu_set = false;
    if let Some(nano) = host.nano_cpus.filter(|n| *n > 0) {
        let (quota, period) = crate::oci::cfs_quota(nano as f64 / 1e9)?;
        cpu.set_quota(Some(quota)).set_period(Some(period));
        cpu_set = true;
    }
    if let Some(quota) = host.cpu_quota.filter(|q| *q > 0) {
        cpu.set_quota(Some(quota));
        cpu_set = true;
    }
    if let Some(period) = host.cpu_period.filter(|p| *p > 0) {
        cpu.set_period(Some(period as u64));
        cpu_set = true;
    }
    if let Some(shares) = host.cpu_shares.filter(|s| *s > 0) {
        cpu.set_shares(Some(shares as u64));
        cpu_set = true;
    }
    if let Some(cpus) = host.cpuset_cpus.clone().filter(|c| !c.is_empty()) {
        cpu.set_cpus(Some(cpus));
        cpu_set = true;
    }
    if let Some(mems) = host.cpuset_mems.clone().filter(|c| !c.is_empty()) {
        cpu.set_mems(Some(mems));
        cpu_set = true;
    }
    if cpu_set {
        resources.set_cpu(Some(cpu));
    }
    if let Some(limit) = host.pids_limit.filter(|l| *l != 0) {
        let mut pids = LinuxPids::default();
        pids.set_limit(if limit < 0 { -1 } else { limit });
        resources.set_pids(Some(pids));
    }
    Ok(())
}

/// The capability set: docker's default, `CapAdd` and `CapDrop` applied
/// (`ALL` meaning every one), or every one when privileged.
pub fn capabilities(host: &HostConfig) -> Result<std::collections::HashSet<Capability>> {
    let all =
        || -> std::collections::HashSet<Capability> { all_capabilities().into_iter().collect() };
    if host.privileged == Some(true) {
        return Ok(all());
    }
    let mut set: std::collections::HashSet<Capability> =
        crate::oci::DEFAULT_CAPABILITIES.into_iter().collect();
    let parse = |text: &str| -> Result<Option<Capability>> {
        let upper = text.to_ascii_uppercase();
        if upper == "ALL" {
            return Ok(None);
        }
        let name = if upper.starts_with("CAP_") {
            upper
        } else {
            format!("CAP_{upper}")
        };
        capability(&name)
            .map(Some)
            .ok_or_else(|| Error::invalid(format!("unknown capability: \"{name}\"")))
    };
    for drop in host.cap_drop.iter().flatten() {
        match parse(drop)? {
            None => set.clear(),
            Some(cap) => {
                set.remove(&cap);
            }
        }
    }
    for add in host.cap_add.iter().flatten() {
        match parse(add)? {
            None => set = all(),
            Some(cap) => {
                set.insert(cap);
            }
        }
    }
    Ok(set)
}

/// The capabilities by number, as the kernel numbers them.
const CAPABILITY_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The capability named `name` (`CAP_...`).
fn capability(name: &str) -> Option<Capability> {
    serde_json::from_value(serde_json::Value::String(name.to_owned())).ok()
}

/// Every capability berthd itself may pass on (its bounding set: on a
/// host where root lacks one, asking for it would fail the start).
fn all_capabilities() -> Vec<Capability> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("CapBnd:")
                    .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
            })
        })
        .unwrap_or(u64::MAX);
    CAPABILITY_NAMES
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .filter_map(|(_, name)| capability(name))
        .collect()
}

/// `--security-opt no-new-privileges[=true|false]`.
fn no_new_privileges(host: &HostConfig) -> Result<bool> {
    let mut on = false;
    for opt in host.security_opt.iter().flatten() {
        let (key, value) = opt
            .split_once(['=', ':'])
            .map_or((opt.as_str(), "true"), |(k, v)| (k, v));
        if key == "no-new-privileges" {
            on = value
                .parse()
                .map_err(|_| Error::invalid(format!("invalid --security-opt: {opt:?}")))?;
        }
    }
    Ok(on)
}

/// Whether the default seccomp profile applies: not when privileged or
/// `seccomp=unconfined`; a custom profile is refused, not ignored.
fn seccomp_wanted(host: &HostConfig) -> Result<bool> {
    if host.privileged == Some(true) {
        return Ok(false);
    }
    let mut wanted = true;
    for opt in host.security_opt.iter().flatten() {
        let Some((key, value)) = opt.split_once(['=', ':']) else {
            if opt == "no-new-privileges" {
                continue;
            }
            return Err(Error::invalid(format!("invalid --security-opt: {opt:?}")));
        };
        match (key, value) {
            ("seccomp", "unconfined") => wanted = false,
            ("seccomp", _) => {
                return Err(Error::unimplemented(
                    "--security-opt seccomp=<profile>: custom seccomp profiles are not supported yet (use the default or unconfined)",
                ))
            }
            ("no-new-privileges", _) => {}
            ("apparmor" | "label", _) => {}
            _ => return Err(Error::invalid(format!("invalid --security-opt: {opt:?}"))),
        }
    }
    Ok(wanted)
}

/// `--ulimit`s as rlimits (none by default, as dockerd).
fn ulimits(host: &HostConfig) -> Result<Option<Vec<oci_spec::runtime::PosixRlimit>>> {
    let Some(limits) = &host.ulimits else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for limit in limits {
        let name = limit.name.clone().unwrap_or_default();
        let typ = PosixRlimitType::from_str(&format!("RLIMIT_{}", name.to_ascii_uppercase()))
            .map_err(|_| Error::invalid(format!("invalid ulimit type: {name}")))?;
        let soft = limit.soft.unwrap_or(0);
        let hard = limit.hard.unwrap_or(soft);
        if soft > hard {
            return Err(Error::invalid(format!(
                "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
            )));
        }
        out.push(
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(soft as u64)
                .hard(hard as u64)
                .build()
                .map_err(|err| Error::invalid(format!("ulimit {name}: {err}")))?,
        );
    }
    Ok(Some(out))
}

fn bind(source: &str, destination: &str, readonly: bool, propagation: &str) -> Result<Mount> {
    let mut options = vec![
        "rbind".to_owned(),
        if readonly { "ro" } else { "rw" }.to_owned(),
    ];
    if !propagation.is_empty() {
        options.push(propagation.to_owned());
    }
    MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .map_err(|err| Error::internal(format!("bind of {source}: {err}")))
}

fn mount_of(mount: &MountPoint) -> Result<Mount> {
    match mount.kind {
        MountKind::Bind | MountKind::Volume => {
            if mount.source.as_os_str().is_empty() {
                return Err(Error::internal(format!(
                    "mount at {}: no source",
                    mount.destination
                )));
            }
            bind(
                &mount.source.to_string_lossy(),
                &mount.destination,
                !mount.read_write,
                &mount.propagation,
            )
        }
        MountKind::Tmpfs => {
            let mut options = mount.options.clone();
            options.push(if mount.read_write { "rw" } else { "ro" }.to_owned());
            MountBuilder::default()
                .destination(mount.destination.as_str())
                .typ("tmpfs")
                .source("tmpfs")
                .options(options)
                .build()
                .map_err(|err| Error::internal(format!("tmpfs at {}: {err}", mount.destination)))
        }
    }
}
