//! Putting a device filter in force with bpf(2): load the program, attach
//! it to the cgroup directory, detach the one it replaces.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use nix::sys::statfs::{fstatfs, CGROUP2_SUPER_MAGIC};

use super::super::error::{Error, Result};
use super::{DeviceFilter, DeviceFilterInstaller};
use crate::sys;

/// The name berth loads its device filters under: how it tells its own
/// programs from others attached to the same cgroup.
pub const PROGRAM_NAME: &str = "berth_devices";

/// `BPF_PROG_TYPE_CGROUP_DEVICE`.
const PROG_TYPE_CGROUP_DEVICE: u32 = 15;
/// `BPF_CGROUP_DEVICE`, the attach type.
const ATTACH_CGROUP_DEVICE: u32 = 6;
/// `BPF_F_ALLOW_MULTI`: programs of descendants run too (all must allow),
/// and several programs can be attached to one cgroup.
const F_ALLOW_MULTI: u32 = 2;
/// The program calls no helper at all, so none of the GPL-only ones: its
/// license is the project's.
const LICENSE: &CStr = c"Apache-2.0";
/// Room for the verifier's log when a load fails (the kernel wants >= 128).
const VERIFIER_LOG_SIZE: usize = 64 * 1024;

/// Installs device filters in the kernel: `BPF_PROG_LOAD`, then
/// `BPF_PROG_ATTACH` with `BPF_F_ALLOW_MULTI` to the cgroup directory, then
/// `BPF_PROG_DETACH` of the filter berth attached there before (after the
/// new one is in force, so there is no moment without a filter). A filter
/// that allows everything is not attached at all.
///
/// Without the privilege to use bpf(2) (berth not root of the initial user
/// namespace, as in rootless mode) a refusal is logged and skipped, as runc
/// and crun do: such a container cannot mknod devices, and can only open
/// the device nodes mounted into it, under their file permissions.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelInstaller;

impl DeviceFilterInstaller for KernelInstaller {
    fn install(&self, cgroup: &Path, filter: &DeviceFilter) -> Result<()> {
        let dir = open_cgroup2(cgroup)?;
        match replace(dir.as_fd(), filter) {
            Ok(()) => Ok(()),
            Err(failure) if failure.os.raw_os_error() == Some(libc::EPERM) && !is_host_root() => {
                tracing::warn!(
                    cgroup = %cgroup.display(),
                    "device rules not enforced: {} refused without privilege: {}",
                    failure.step,
                    failure.os
                );
                Ok(())
            }
            Err(failure) => Err(Error::DeviceFilter {
                path: cgroup.to_path_buf(),
                step: failure.step.to_string(),
                os: failure.os,
                verifier_log: failure.verifier_log,
            }),
        }
    }
}

/// A bpf(2) step that failed.
struct Failure {
    step: &'static str,
    os: io::Error,
    verifier_log: Option<String>,
}

impl Failure {
    fn at(step: &'static str) -> impl FnOnce(Errno) -> Failure {
        move |errno| Failure {
            step,
            os: errno.into(),
            verifier_log: None,
        }
    }
}

/// Attach `filter` to the cgroup `dir`, then detach berth's earlier ones.
fn replace(dir: BorrowedFd<'_>, filter: &DeviceFilter) -> std::result::Result<(), Failure> {
    let earlier = our_programs(dir)?;
    if !filter.allows_everything() {
        let program = load(filter)?;
        sys::bpf_prog_attach(dir, program.as_fd(), ATTACH_CGROUP_DEVICE, F_ALLOW_MULTI)
            .map_err(Failure::at("attaching the device filter (BPF_PROG_ATTACH)"))?;
        // The attachment holds the program: our descriptor closes here.
    }
    for old in earlier {
        match sys::bpf_prog_detach(dir, old.as_fd(), ATTACH_CGROUP_DEVICE) {
            // Detached meanwhile (a concurrent update): the goal is reached.
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(Failure::at(
                    "detaching the replaced device filter (BPF_PROG_DETACH)",
                )(e))
            }
        }
    }
    Ok(())
}

/// Load the program, with the verifier's log in the failure if the kernel
/// refuses it (asked for only then: a load without a log is faster).
fn load(filter: &DeviceFilter) -> std::result::Result<OwnedFd, Failure> {
    let step = "loading the device filter (BPF_PROG_LOAD)";
    let insns = filter.bytecode();
    let mut name = [0u8; 16];
    name[..PROGRAM_NAME.len()].copy_from_slice(PROGRAM_NAME.as_bytes());
    let program = sys::BpfProgram {
        prog_type: PROG_TYPE_CGROUP_DEVICE,
        insns: &insns,
        license: LICENSE,
        name,
        expected_attach_type: ATTACH_CGROUP_DEVICE,
    };
    let first = match sys::bpf_prog_load(&program, None) {
        Ok(fd) => return Ok(fd),
        Err(e) => e,
    };
    // EPERM: not allowed to load at all (the verifier says EACCES or
    // EINVAL about a program it refuses).
    if first == Errno::EPERM {
        return Err(Failure::at(step)(first));
    }
    let mut log = vec![0u8; VERIFIER_LOG_SIZE];
    let again = sys::bpf_prog_load(&program, Some(&mut log));
    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
    let text = String::from_utf8_lossy(&log[..end]).trim().to_string();
    match again {
        // Refused once, accepted now: take it.
        Ok(fd) => Ok(fd),
        // The first error is the one to report: the second attempt fails
        // with ENOSPC when the log does not fit.
        Err(_) => Err(Failure {
            step,
            os: first.into(),
            verifier_log: Some(text).filter(|t| !t.is_empty()),
        }),
    }
}

/// Descriptors of the device filters berth attached to `dir` before.
fn our_programs(dir: BorrowedFd<'_>) -> std::result::Result<Vec<OwnedFd>, Failure> {
    let mut ours = Vec::new();
    for (fd, info) in attached(dir)? {
        if info.name == PROGRAM_NAME {
            ours.push(fd);
        }
    }
    Ok(ours)
}

/// Every device program attached directly to `dir`: a descriptor and what
/// the kernel says about it. Programs that go away meanwhile are left out.
fn attached(dir: BorrowedFd<'_>) -> std::result::Result<Vec<(OwnedFd, sys::BpfProgInfo)>, Failure> {
    let ids = sys::bpf_prog_query(dir, ATTACH_CGROUP_DEVICE).map_err(Failure::at(
        "listing the attached device filters (BPF_PROG_QUERY)",
    ))?;
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let fd = match sys::bpf_prog_get_fd_by_id(id) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => continue,
            Err(e) => {
                return Err(Failure::at(
                    "opening an attached program (BPF_PROG_GET_FD_BY_ID)",
                )(e))
            }
        };
        let info = sys::bpf_prog_info(fd.as_fd()).map_err(Failure::at(
            "reading an attached program's name (BPF_OBJ_GET_INFO_BY_FD)",
        ))?;
        out.push((fd, info));
    }
    Ok(out)
}

/// Open `cgroup`, checking it is a cgroup2 directory (device filters
/// attach nowhere else).
fn open_cgroup2(cgroup: &Path) -> Result<OwnedFd> {
    let field = "linux.resources.devices";
    let dir = nix::fcntl::open(
        cgroup,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::Read {
        path: cgroup.to_path_buf(),
        field: field.into(),
        os: e.into(),
    })?;
    let fs = fstatfs(&dir).map_err(|e| Error::Read {
        path: cgroup.to_path_buf(),
        field: field.into(),
        os: e.into(),
    })?;
    if fs.filesystem_type() != CGROUP2_SUPER_MAGIC {
        return Err(Error::Unsupported {
            field: field.into(),
            reason: format!(
                "{} is not a cgroup2 directory: device rules on cgroup v2 are an eBPF program attached to one",
                cgroup.display()
            ),
        });
    }
    Ok(dir)
}

/// A device program attached to a cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedProgram {
    /// The kernel's id of the program.
    pub id: u32,
    /// The name it was loaded with ([`PROGRAM_NAME`] for berth's).
    pub name: String,
}

/// The device programs attached directly to the cgroup directory `cgroup`
/// (not those inherited from its ancestors), in the order they run.
pub fn attached_programs(cgroup: &Path) -> Result<Vec<AttachedProgram>> {
    let dir = open_cgroup2(cgroup)?;
    let programs = attached(dir.as_fd()).map_err(|f| Error::DeviceFilter {
        path: cgroup.to_path_buf(),
        step: f.step.to_string(),
        os: f.os,
        verifier_log: None,
    })?;
    Ok(programs
        .into_iter()
        .map(|(_, info)| AttachedProgram {
            id: info.id,
            name: info.name,
        })
        .collect())
}

/// Whether a BPF program with id `id` is still loaded (the kernel frees a
/// device filter once no cgroup holds it).
pub fn is_program_loaded(id: u32) -> io::Result<bool> {
    match sys::bpf_prog_get_fd_by_id(id) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Whether berth runs as root of the initial user namespace (where bpf(2)
/// is expected to work): uid 0, and a uid map that maps every id to itself.
fn is_host_root() -> bool {
    if sys::geteuid() != 0 {
        return false;
    }
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => map.split_whitespace().eq(["0", "0", "4294967295"]),
        // No /proc to tell: assume root, and report errors.
        Err(_) => true,
    }
}
