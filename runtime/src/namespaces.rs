//! Linux namespaces: which ones a container gets new, which it joins by path.

use std::fs::File;

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

use crate::error::{Context, Result};

/// The clone flag of a namespace type.
pub fn flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The namespaces to create fresh at clone time. Left out: the cgroup
/// namespace, unshared by the child once it sits in its cgroup (so its root
/// is the container's cgroup), and the time namespace, unshared by the child
/// so it can set the clock offsets before its exec enters it.
pub fn clone_flags(namespaces: &[LinuxNamespace]) -> CloneFlags {
    namespaces
        .iter()
        .filter(|ns| {
            ns.path().is_none()
                && !matches!(
                    ns.typ(),
                    LinuxNamespaceType::Cgroup | LinuxNamespaceType::Time
                )
        })
        .fold(CloneFlags::empty(), |acc, ns| acc | flag(ns.typ()))
}

/// Create the time namespace init's program will run in, with the clock
/// offsets of `linux.timeOffsets` ("monotonic", "boottime"). The calling
/// process stays in its own; its next exec moves into the new one.
pub fn new_time_namespace(
    offsets: Option<&std::collections::HashMap<String, oci_spec::runtime::LinuxTimeOffset>>,
) -> Result<()> {
    nix::sched::unshare(flag(LinuxNamespaceType::Time)).context("creating the time namespace")?;
    let mut lines = String::new();
    for (clock, offset) in offsets.into_iter().flatten() {
        lines.push_str(&format!(
            "{clock} {} {}\n",
            offset.secs().unwrap_or(0),
            offset.nanosecs().unwrap_or(0)
        ));
    }
    if !lines.is_empty() {
        std::fs::write("/proc/self/timens_offsets", &lines)
            .with_context(|| format!("linux.timeOffsets: writing {lines:?}"))?;
    }
    Ok(())
}

/// Whether a new (not joined) namespace of `typ` is requested.
pub fn is_new(namespaces: &[LinuxNamespace], typ: LinuxNamespaceType) -> bool {
    namespaces
        .iter()
        .any(|ns| ns.typ() == typ && ns.path().is_none())
}

/// Open the namespace files to join, before anything changes our view of
/// the filesystem (joining a mount namespace would hide the others' paths).
pub fn open_paths(namespaces: &[LinuxNamespace]) -> Result<Vec<(LinuxNamespaceType, File)>> {
    namespaces
        .iter()
        .filter_map(|ns| ns.path().as_ref().map(|p| (ns.typ(), p)))
        .map(|(typ, path)| {
            let file = File::open(path)
                .with_context(|| format!("opening {typ} namespace {}", path.display()))?;
            Ok((typ, file))
        })
        .collect()
}

/// Join the opened namespaces of the given types, in the order given.
pub fn join(opened: &[(LinuxNamespaceType, File)], types: &[LinuxNamespaceType]) -> Result<()> {
    for typ in types {
        for (t, file) in opened.iter().filter(|(t, _)| t == typ) {
            setns(file, flag(*t)).with_context(|| format!("joining {t} namespace"))?;
        }
    }
    Ok(())
}

/// The name of a namespace type under /proc/PID/ns/.
pub fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Time => "time",
    }
}

/// While alive, our next children are born in the pid namespace `target`;
/// dropping it puts our own back, so hooks and helpers we start later are
/// not born inside the container.
#[derive(Debug)]
pub struct ChildrenInPidNamespace {
    own: File,
}

impl ChildrenInPidNamespace {
    pub fn enter(target: &File) -> Result<Self> {
        let own = File::open("/proc/self/ns/pid").context("opening our pid namespace")?;
        setns(target, CloneFlags::CLONE_NEWPID).context("joining the pid namespace")?;
        Ok(Self { own })
    }
}

impl Drop for ChildrenInPidNamespace {
    fn drop(&mut self) {
        if let Err(e) = setns(&self.own, CloneFlags::CLONE_NEWPID) {
            tracing::warn!("returning to our own pid namespace: {e}");
        }
    }
}
