//! Thin wrappers over the system calls that `nix` does not cover.
//!
//! This is the only module of the crate allowed to use `unsafe`; every block
//! states why it is sound. Everything else goes through these safe functions.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// Where a fork-like clone left us.
#[derive(Debug)]
pub enum CloneResult {
    /// In the parent: the child's pid.
    Parent(Pid),
    /// In the child.
    Child,
}

/// `struct clone_args` of clone3(2), laid out as the kernel expects (v2, 88 bytes).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// Fork the calling process into new namespaces (`flags` are `CLONE_NEW*`),
/// the way fork(2) does: the child continues on a copy of the caller's stack.
///
/// With `cgroup` set (cgroup v2), the child is born inside that cgroup
/// (`CLONE_INTO_CGROUP`); older kernels without clone3 fall back to clone(2),
/// and the caller must then move the child into its cgroup itself, which the
/// returned flag tells (`true` when the child was born in the cgroup).
///
/// The caller must be single-threaded: the child gets only the calling thread.
pub fn clone_fork(
    flags: libc::c_int,
    cgroup: Option<BorrowedFd<'_>>,
) -> nix::Result<(CloneResult, bool)> {
    let mut args = CloneArgs {
        flags: flags as u32 as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: clone3 with a null stack behaves like fork(2): the child resumes
    // here with a copy of the address space. `args` is a valid, fully
    // initialised clone_args of the size we pass. The process is
    // single-threaded (berth never starts threads), so no lock can be held by
    // a thread that does not exist in the child.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match Errno::result(ret) {
        Ok(0) => return Ok((CloneResult::Child, cgroup.is_some())),
        Ok(pid) => {
            return Ok((
                CloneResult::Parent(Pid::from_raw(pid as i32)),
                cgroup.is_some(),
            ))
        }
        Err(Errno::ENOSYS) | Err(Errno::E2BIG) => {}
        // CLONE_INTO_CGROUP unsupported by this kernel: retry without it.
        Err(Errno::EINVAL) if cgroup.is_some() => {}
        Err(e) => return Err(e),
    }
    // SAFETY: the raw clone(2) syscall with a null stack and no
    // CLONE_VM/CLONE_SETTLS is fork(2) with extra namespace flags; the
    // pointer arguments are null, which the kernel accepts for these flags.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_int>(),
            std::ptr::null_mut::<libc::c_int>(),
            0 as libc::c_ulong,
        )
    };
    match Errno::result(ret)? {
        0 => Ok((CloneResult::Child, false)),
        pid => Ok((CloneResult::Parent(Pid::from_raw(pid as i32)), false)),
    }
}

/// Leave the process immediately, without running exit handlers or
/// flushing stdio buffers inherited from the parent (for forked children).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit(2) takes no pointers and never returns.
    unsafe { libc::_exit(code) }
}

/// pidfd_open(2): a file descriptor that refers to `pid` and cannot be
/// confused with a later process reusing the number.
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags, no pointers.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    let fd = Errno::result(ret)? as RawFd;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// pidfd_send_signal(2).
pub fn pidfd_send_signal(pidfd: BorrowedFd<'_>, signal: i32) -> nix::Result<()> {
    // SAFETY: the info pointer may be null (the kernel fills a default
    // siginfo); the fd is borrowed for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            signal,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    Errno::result(ret).map(drop)
}

/// Mark every descriptor from `first` upwards close-on-exec, so nothing of
/// the runtime leaks into the container (CVE-2024-21626). Uses close_range(2)
/// where the kernel has it, otherwise walks /proc/self/fd.
pub fn cloexec_from(first: RawFd) -> nix::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range takes two integers and flags; with CLOEXEC it
    // closes nothing, it only sets a flag on descriptors.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if ret == 0 {
        return Ok(());
    }
    let entries = std::fs::read_dir("/proc/self/fd").map_err(|_| Errno::EBADF)?;
    let fds: Vec<RawFd> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd >= first)
        .collect();
    for fd in fds {
        // SAFETY: fcntl on a descriptor number only changes its flags; an
        // already-closed number (the read_dir fd itself) fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Make the tty open on `fd` the controlling terminal of this session.
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: don't steal).
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) };
    Errno::result(ret).map(drop)
}

/// Set the terminal window size of `fd`.
pub fn set_winsize(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> nix::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct that lives across the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
    Errno::result(ret).map(drop)
}

/// Read the terminal window size of `fd`.
pub fn get_winsize(fd: BorrowedFd<'_>) -> nix::Result<(u16, u16)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes a winsize struct that lives across the call.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
    Errno::result(ret).map(|_| (ws.ws_row, ws.ws_col))
}

/// setdomainname(2).
pub fn set_domainname(name: &str) -> nix::Result<()> {
    // SAFETY: the pointer and length describe the bytes of `name`, valid
    // for the duration of the call; the kernel copies them.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    Errno::result(ret).map(drop)
}

/// Join a new, named session keyring so the container does not share the
/// caller's keys (what runc does unless `--no-new-keyring`).
pub fn join_session_keyring(name: &str) -> nix::Result<()> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_int = 1;
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: keyctl(JOIN_SESSION_KEYRING, name) reads a NUL-terminated
    // string that outlives the call.
    let ret =
        unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr()) };
    Errno::result(ret).map(drop)
}

/// Take ownership of descriptor `fd`, which our caller passed us and named
/// on the command line (`checkpoint --status-fd`). Fails when it is not
/// open; it is made close-on-exec.
pub fn take_inherited_fd(fd: RawFd) -> nix::Result<OwnedFd> {
    if fd < 3 {
        return Err(Errno::EBADF);
    }
    // SAFETY: F_SETFD with an integer argument has no memory effects; it
    // fails with EBADF when `fd` is not open.
    Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) })?;
    // SAFETY: the descriptor is open (checked above) and was handed to this
    // process by its caller for this purpose: nothing else here owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The effective uid of the caller.
pub fn geteuid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Receive one descriptor passed with SCM_RIGHTS on a unix socket (the
/// payload is read and discarded). New descriptors are close-on-exec.
pub fn recv_fd(sock: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    let mut buf = [0u8; 4096];
    recv_with_fd(sock, &mut buf)?.1.ok_or(Errno::EBADMSG)
}

/// open_tree(2) with OPEN_TREE_CLONE: a detached copy of the mount at
/// `path` (with everything mounted below it when `recursive`), not
/// attached anywhere yet, and attachable in another mount namespace.
pub fn open_tree_clone(path: &std::path::Path, recursive: bool) -> nix::Result<OwnedFd> {
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    let path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: the path is a NUL-terminated string that outlives the call;
    // the other arguments are integers.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE
                | libc::O_CLOEXEC as libc::c_uint
                | if recursive {
                    libc::AT_RECURSIVE as libc::c_uint
                } else {
                    0
                },
        )
    };
    let fd = Errno::result(ret)? as RawFd;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Make the detached tree `tree` an id-mapped mount through the user
/// namespace `userns` (mount_setattr(2) with MOUNT_ATTR_IDMAP): its top
/// mount only, or with `recursive` every mount in it.
pub fn idmap_tree(
    tree: BorrowedFd<'_>,
    userns: BorrowedFd<'_>,
    recursive: bool,
) -> nix::Result<()> {
    const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: the empty path is a static NUL-terminated string; `attr` is a
    // valid mount_attr whose size we pass; the descriptors are borrowed for
    // the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            (libc::AT_EMPTY_PATH | if recursive { libc::AT_RECURSIVE } else { 0 }) as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(ret).map(drop)
}

/// Attach the detached mount `tree` on the directory or file `target` is
/// an (O_PATH) descriptor of (move_mount(2) between two descriptors).
pub fn move_mount_onto(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> nix::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: both paths are static empty NUL-terminated strings; the
    // descriptors are borrowed for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    Errno::result(ret).map(drop)
}

/// Attach the detached mount `tree` at `target` (move_mount(2)).
pub fn move_mount_to(tree: BorrowedFd<'_>, target: &std::path::Path) -> nix::Result<()> {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    let target = CString::new(target.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: both paths are NUL-terminated strings that outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    Errno::result(ret).map(drop)
}

/// Send `data` with one descriptor over a connected unix socket.
pub fn send_with_fd(sock: BorrowedFd<'_>, data: &[u8], fd: BorrowedFd<'_>) -> nix::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let iov = [std::io::IoSlice::new(data)];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None).map(drop)
}

/// Receive one message and the descriptor sent with it, if any.
pub fn recv_with_fd(sock: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<(usize, Option<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let n = msg.bytes;
    let mut received: Vec<OwnedFd> = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // SAFETY: SCM_RIGHTS has just installed this descriptor in
                // our table; nothing else refers to it yet.
                received.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    Ok((n, received.into_iter().next()))
}

/// Restore every signal to its default action and unblock them all, so
/// the container's program starts with a clean signal state.
pub fn reset_signals() -> nix::Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let default = SigAction::new(SigHandler::SigDfl, SaFlags::empty(), SigSet::empty());
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: installing SIG_DFL involves no handler code, so no
        // async-signal-safety requirement applies.
        unsafe { sigaction(sig, &default) }?;
    }
    SigSet::all().thread_unblock()
}

/// Load a seccomp BPF program with seccomp(2) (SECCOMP_SET_MODE_FILTER)
/// and `flags` (SECCOMP_FILTER_FLAG_*). Unlike prctl-based loaders this
/// does not set no_new_privs: the caller either has CAP_SYS_ADMIN or has
/// set no_new_privs itself.
///
/// With SECCOMP_FILTER_FLAG_NEW_LISTENER in `flags`, returns the filter's
/// user-notification listener (close-on-exec, as the kernel creates it).
pub fn seccomp_set_filter(
    program: &[seccompiler::sock_filter],
    flags: u32,
) -> nix::Result<Option<OwnedFd>> {
    const SECCOMP_SET_MODE_FILTER: libc::c_uint = 1;
    const SECCOMP_FILTER_FLAG_NEW_LISTENER: u32 = 1 << 3;
    let len = u16::try_from(program.len()).map_err(|_| Errno::E2BIG)?;
    let prog = libc::sock_fprog {
        len,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: seccompiler's sock_filter has the kernel's layout (as does
    // libc's); `prog` points at `program`, which outlives the call; the
    // kernel copies the instructions and never writes through the pointer.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags as libc::c_uint,
            &prog as *const libc::sock_fprog,
        )
    };
    let ret = Errno::result(ret)?;
    if flags & SECCOMP_FILTER_FLAG_NEW_LISTENER == 0 {
        return Ok(None);
    }
    // SAFETY: with NEW_LISTENER, seccomp(2) returns a new descriptor (the
    // listener) that nothing else owns.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as RawFd) }))
}

/// Set and clear mount attributes (MOUNT_ATTR_*) on the mount at `path`
/// and every mount below it (mount_setattr(2) with AT_RECURSIVE).
pub fn mount_setattr_recursive(path: &std::path::Path, set: u64, clear: u64) -> nix::Result<()> {
    let path = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| Errno::EINVAL)?;
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: the path is a NUL-terminated string and `attr` a valid
    // mount_attr, both outliving the call; we pass the struct's size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    Errno::result(ret).map(drop)
}

/// bpf(2) commands berth uses.
const BPF_PROG_LOAD: libc::c_int = 5;
const BPF_PROG_ATTACH: libc::c_int = 8;
const BPF_PROG_DETACH: libc::c_int = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_int = 13;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_int = 15;
const BPF_PROG_QUERY: libc::c_int = 16;

/// The kernel's `union bpf_attr` is a union of per-command structs that
/// grows with each release, and some commands write results back into it.
/// Each command's fields go first, followed by zeros well past the size of
/// today's union: the kernel accepts a larger attr whose excess is zero,
/// and anything it writes back lands in memory we own.
#[repr(C)]
struct BpfAttr<T> {
    fields: T,
    zero_tail: [u64; 48],
}

impl<T> BpfAttr<T> {
    fn new(fields: T) -> Self {
        Self {
            fields,
            zero_tail: [0; 48],
        }
    }
}

/// The `BPF_PROG_LOAD` part of `union bpf_attr`, up to `expected_attach_type`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `BPF_PROG_ATTACH` / `BPF_PROG_DETACH` part of `union bpf_attr`.
#[repr(C)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    relative_fd: u32,
}

/// The `BPF_PROG_QUERY` part of `union bpf_attr`, up to `prog_cnt`.
#[repr(C)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    padding: u32,
}

/// The `BPF_PROG_GET_FD_BY_ID` part of `union bpf_attr`.
#[repr(C)]
struct GetFdByIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
    padding: u32,
}

/// The `BPF_OBJ_GET_INFO_BY_FD` part of `union bpf_attr`.
#[repr(C)]
struct ObjInfoAttr {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}

/// `struct bpf_prog_info` up to `name`: the part berth reads.
#[repr(C)]
#[derive(Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}

/// Run bpf(2) command `cmd` on `attr`.
fn bpf<T>(cmd: libc::c_int, attr: &mut BpfAttr<T>) -> nix::Result<libc::c_long> {
    // SAFETY: every `T` passed here is one of the `repr(C)` command structs
    // above, laid out as the kernel's `union bpf_attr` member for `cmd` and
    // followed by zeros; any pointer fields in it point at buffers the
    // caller keeps alive across this call, with the lengths it states. The
    // kernel writes back only inside `attr`, which is big enough for that.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut BpfAttr<T>,
            std::mem::size_of::<BpfAttr<T>>(),
        )
    };
    Errno::result(ret)
}

/// The descriptor number of `fd` as the u32 `bpf_attr` fields take.
fn attr_fd(fd: BorrowedFd<'_>) -> u32 {
    // Descriptors are never negative.
    fd.as_raw_fd() as u32
}

/// What to load with [`bpf_prog_load`].
#[derive(Debug)]
pub struct BpfProgram<'a> {
    /// `BPF_PROG_TYPE_*`.
    pub prog_type: u32,
    /// The instructions, each as the 8 bytes of a `struct bpf_insn`.
    pub insns: &'a [[u8; 8]],
    /// The license the program is under (matters only for GPL-only helpers).
    pub license: &'a std::ffi::CStr,
    /// The program's name, NUL-padded (`[A-Za-z0-9_.]`, at most 15 bytes).
    pub name: [u8; 16],
    /// `BPF_*` attach type the program is meant for (0 for most types).
    pub expected_attach_type: u32,
}

/// Load an eBPF program (bpf(2) `BPF_PROG_LOAD`). With `log`, the
/// verifier writes its log there (NUL-terminated; at least 128 bytes).
pub fn bpf_prog_load(program: &BpfProgram<'_>, log: Option<&mut [u8]>) -> nix::Result<OwnedFd> {
    let insn_cnt = u32::try_from(program.insns.len()).map_err(|_| Errno::E2BIG)?;
    let (log_level, log_size, log_buf) = match log {
        Some(buf) => (
            1,
            u32::try_from(buf.len()).map_err(|_| Errno::EINVAL)?,
            buf.as_mut_ptr() as u64,
        ),
        None => (0, 0, 0),
    };
    let mut attr = BpfAttr::new(ProgLoadAttr {
        prog_type: program.prog_type,
        insn_cnt,
        insns: program.insns.as_ptr() as u64,
        license: program.license.as_ptr() as u64,
        log_level,
        log_size,
        log_buf,
        kern_version: 0,
        prog_flags: 0,
        prog_name: program.name,
        prog_ifindex: 0,
        expected_attach_type: program.expected_attach_type,
    });
    let fd = bpf(BPF_PROG_LOAD, &mut attr)? as RawFd;
    // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Attach the program `prog` to `target` (a cgroup directory for cgroup
/// attach types) as `attach_type` with `BPF_F_*` `flags` (`BPF_PROG_ATTACH`).
pub fn bpf_prog_attach(
    target: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
    flags: u32,
) -> nix::Result<()> {
    let mut attr = BpfAttr::new(ProgAttachAttr {
        target_fd: attr_fd(target),
        attach_bpf_fd: attr_fd(prog),
        attach_type,
        attach_flags: flags,
        replace_bpf_fd: 0,
        relative_fd: 0,
    });
    bpf(BPF_PROG_ATTACH, &mut attr).map(drop)
}

/// Detach the program `prog` attached to `target` as `attach_type`
/// (`BPF_PROG_DETACH`).
pub fn bpf_prog_detach(
    target: BorrowedFd<'_>,
    prog: BorrowedFd<'_>,
    attach_type: u32,
) -> nix::Result<()> {
    let mut attr = BpfAttr::new(ProgAttachAttr {
        target_fd: attr_fd(target),
        attach_bpf_fd: attr_fd(prog),
        attach_type,
        attach_flags: 0,
        replace_bpf_fd: 0,
        relative_fd: 0,
    });
    bpf(BPF_PROG_DETACH, &mut attr).map(drop)
}

/// The ids of the programs attached directly to `target` as `attach_type`
/// (`BPF_PROG_QUERY`; programs inherited from ancestors are not listed).
pub fn bpf_prog_query(target: BorrowedFd<'_>, attach_type: u32) -> nix::Result<Vec<u32>> {
    let mut ids: Vec<u32> = vec![0; 16];
    loop {
        let capacity = u32::try_from(ids.len()).map_err(|_| Errno::E2BIG)?;
        let mut attr = BpfAttr::new(ProgQueryAttr {
            target_fd: attr_fd(target),
            attach_type,
            query_flags: 0,
            attach_flags: 0,
            prog_ids: ids.as_mut_ptr() as u64,
            prog_cnt: capacity,
            padding: 0,
        });
        let result = bpf(BPF_PROG_QUERY, &mut attr);
        let total = attr.fields.prog_cnt;
        // The kernel sets prog_cnt to how many there are, and fails with
        // ENOSPC when they did not all fit: ask again with room for all.
        match result {
            Ok(_) | Err(Errno::ENOSPC) if total > capacity => ids.resize(total as usize, 0),
            Ok(_) => {
                ids.truncate(total as usize);
                return Ok(ids);
            }
            Err(e) => return Err(e),
        }
    }
}

/// A new descriptor of the loaded program with id `id`
/// (`BPF_PROG_GET_FD_BY_ID`; `ENOENT` when no such program is loaded).
pub fn bpf_prog_get_fd_by_id(id: u32) -> nix::Result<OwnedFd> {
    let mut attr = BpfAttr::new(GetFdByIdAttr {
        prog_id: id,
        next_id: 0,
        open_flags: 0,
        padding: 0,
    });
    let fd = bpf(BPF_PROG_GET_FD_BY_ID, &mut attr)? as RawFd;
    // SAFETY: BPF_PROG_GET_FD_BY_ID returned a new descriptor that nothing
    // else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// What the kernel tells about a loaded program.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfProgInfo {
    /// `BPF_PROG_TYPE_*`.
    pub prog_type: u32,
    /// The program's id.
    pub id: u32,
    /// The name it was loaded with.
    pub name: String,
}

/// Type, id and name of the program `prog` (`BPF_OBJ_GET_INFO_BY_FD`).
pub fn bpf_prog_info(prog: BorrowedFd<'_>) -> nix::Result<BpfProgInfo> {
    let mut info = ProgInfo::default();
    let mut attr = BpfAttr::new(ObjInfoAttr {
        bpf_fd: attr_fd(prog),
        info_len: std::mem::size_of::<ProgInfo>() as u32,
        info: &mut info as *mut ProgInfo as u64,
    });
    bpf(BPF_OBJ_GET_INFO_BY_FD, &mut attr)?;
    let name_len = info.name.iter().position(|&b| b == 0).unwrap_or(16);
    Ok(BpfProgInfo {
        prog_type: info.prog_type,
        id: info.id,
        name: String::from_utf8_lossy(&info.name[..name_len]).into_owned(),
    })
}
