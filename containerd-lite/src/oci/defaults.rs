//! The spec every container starts from: containerd's defaults for Linux.

use oci_spec::runtime::{
    Capabilities, Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec,
    SpecBuilder as OciSpecBuilder, UserBuilder,
};

use crate::{Error, Result};

/// The OCI runtime-spec version written into specs.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The capabilities a container gets by default (bounding, permitted and
/// effective sets), as with containerd and Docker.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Paths of `/proc` and `/sys` hidden from the container (an empty file or
/// directory is mounted over them).
pub const MASKED_PATHS: [&str; 11] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    // Energy counters readable there leak what other tenants compute
    // (docker masks it since 20.10).
    "/sys/devices/virtual/powercap",
];

/// Paths of `/proc` the container sees read-only.
pub const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// The open-files limit (soft and hard).
pub const NOFILE_LIMIT: u64 = 1024;

/// The cgroup of a container: `/<namespace>/<id>`, as containerd names it.
pub fn cgroups_path(namespace: &str, id: &str) -> String {
    format!("/{namespace}/{id}")
}

fn mount(destination: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount> {
    MountBuilder::default()
        .destination(destination)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|o| (*o).to_owned()).collect::<Vec<_>>())
        .build()
        .map_err(|e| Error::internal(format!("default mount {destination}: {e}")))
}

/// The filesystems every container gets.
pub fn default_mounts() -> Result<Vec<Mount>> {
    let tmpfs_dev = ["nosuid", "strictatime", "mode=755", "size=65536k"];
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount("/dev", "tmpfs", "tmpfs", &tmpfs_dev)?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", "ro"],
        )?,
        mount("/run", "tmpfs", "tmpfs", &tmpfs_dev)?,
    ])
}

/// containerd's default spec for container `id` in `namespace`: root in
/// `/`, the default capabilities, `RLIMIT_NOFILE` 1024, no new privileges,
/// fresh pid/ipc/uts/mount/network namespaces, the default mounts, masked
/// and read-only paths, no device access, cgroup `/<namespace>/<id>`.
/// No arguments yet, and no seccomp profile (the builder adds it last,
/// once the capabilities are final).
pub fn default_spec(namespace: &str, id: &str) -> Result<Spec> {
    let built = |what: &str, e: oci_spec::OciSpecError| {
        Error::internal(format!("default spec: {what}: {e}"))
    };
    let caps: Capabilities = DEFAULT_CAPABILITIES.into_iter().collect();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .permitted(caps.clone())
        .effective(caps)
        .build()
        .map_err(|e| built("capabilities", e))?;
    // The builder starts from oci-spec's defaults, which fill these two.
    capabilities.set_inheritable(None).set_ambient(None);
    let process = ProcessBuilder::default()
        .cwd("/")
        .no_new_privileges(true)
        .user(
            UserBuilder::default()
                .build()
                .map_err(|e| built("user", e))?,
        )
        .env(vec![DEFAULT_PATH.to_owned()])
        .args(Vec::<String>::new())
        .capabilities(capabilities)
        .rlimits(vec![PosixRlimitBuilder::default()
            .typ(PosixRlimitType::RlimitNofile)
            .soft(NOFILE_LIMIT)
            .hard(NOFILE_LIMIT)
            .build()
            .map_err(|e| built("rlimits", e))?])
        .build()
        .map_err(|e| built("process", e))?;
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|typ| LinuxNamespaceBuilder::default().typ(typ).build())
    .collect::<std::result::Result<Vec<_>, _>>()
    .map_err(|e| built("namespaces", e))?;
    let deny_devices = LinuxDeviceCgroupBuilder::default()
        .allow(false)
        .access("rwm")
        .build()
        .map_err(|e| built("devices", e))?;
    let linux = LinuxBuilder::default()
        .masked_paths(MASKED_PATHS.map(str::to_owned).to_vec())
        .readonly_paths(READONLY_PATHS.map(str::to_owned).to_vec())
        .cgroups_path(cgroups_path(namespace, id))
        .resources(
            LinuxResourcesBuilder::default()
                .devices(vec![deny_devices])
                .build()
                .map_err(|e| built("resources", e))?,
        )
        .namespaces(namespaces)
        .build()
        .map_err(|e| built("linux", e))?;
    let mut spec = OciSpecBuilder::default()
        .version(OCI_VERSION)
        .root(
            RootBuilder::default()
                .path("rootfs")
                .build()
                .map_err(|e| built("root", e))?,
        )
        .process(process)
        .mounts(default_mounts()?)
        .linux(linux)
        .build()
        .map_err(|e| built("spec", e))?;
    // The builder starts from oci-spec's defaults, which name a hostname
    // and annotations; containerd's spec has neither.
    spec.set_hostname(None).set_annotations(None);
    Ok(spec)
}
