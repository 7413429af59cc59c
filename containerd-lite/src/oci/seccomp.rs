//! The default seccomp profile: an allow-list of system calls, refusing
//! everything else with `EPERM`, equivalent to the profile containerd and
//! Docker give every container.
//!
//! The profile is data ([`RULES`]): each rule allows (or fails with a chosen
//! errno) a group of syscalls, optionally only for some argument values, and
//! only when its [`Condition`]s hold for the [`Target`] (architecture, kernel
//! version) and the container's bounding capabilities. The OCI format has no
//! conditions, so they are evaluated when the profile is built: a container
//! granted `CAP_SYS_ADMIN` gets `mount` and `unshare`, one without it gets
//! `clone` only without namespace flags. Names a given architecture does not
//! have (`_llseek` on x86_64) are listed anyway: runtimes skip them.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompArgBuilder, LinuxSeccompOperator, LinuxSyscall,
};

/// The errno of a refused syscall (`EPERM`).
pub const DENIED_ERRNO: u32 = 1;

/// `ENOSYS`: what `clone3` answers without `CAP_SYS_ADMIN`, so that libcs
/// fall back to `clone`, whose flags the profile can inspect.
const ENOSYS: u32 = 38;

/// The namespace flags of `clone` (`CLONE_NEWNS | CLONE_NEWCGROUP |
/// CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID |
/// CLONE_NEWNET`): without `CAP_SYS_ADMIN` none of them may be set.
pub const CLONE_NAMESPACE_FLAGS: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

/// The CPU architectures the profile knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetArch {
    X86_64,
    Aarch64,
}

impl TargetArch {
    /// The seccomp architectures a process on this CPU may use: the native
    /// one and the compat modes the kernel can run.
    fn seccomp_arches(self) -> Vec<Arch> {
        match self {
            TargetArch::X86_64 => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
            TargetArch::Aarch64 => vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64],
        }
    }
}

/// What the profile is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub arch: TargetArch,
    /// Kernel version, (major, minor).
    pub kernel: (u32, u32),
}

impl Target {
    /// The machine berthd runs on. Kernel versions that cannot be read
    /// count as (0, 0): rules that need a newer kernel are left out.
    pub fn host() -> Target {
        let arch = if cfg!(target_arch = "aarch64") {
            TargetArch::Aarch64
        } else {
            TargetArch::X86_64
        };
        let kernel = nix::sys::utsname::uname()
            .ok()
            .and_then(|uts| parse_kernel_release(&uts.release().to_string_lossy()))
            .unwrap_or((0, 0));
        Target { arch, kernel }
    }
}

/// `6.1.0-13-amd64` -> (6, 1).
pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// When a rule applies. A rule applies when all its conditions hold.
#[derive(Debug, Clone, Copy)]
enum Condition {
    /// The CPU is this one.
    Arch(TargetArch),
    /// The container's bounding set has this capability.
    Cap(Capability),
    /// The container's bounding set lacks this capability.
    NoCap(Capability),
    /// The container has this capability or the kernel is at least this
    /// version (e.g. `ptrace` is safe to allow from 4.8 on).
    CapOrKernel(Capability, (u32, u32)),
}

/// What a rule does with the syscalls it names.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    Allow,
    Errno(u32),
}

/// One argument check: `args[index] OP value` (`value_two` for masked
/// comparisons).
#[derive(Debug, Clone, Copy)]
struct ArgCheck {
    index: usize,
    value: u64,
    value_two: Option<u64>,
    op: LinuxSeccompOperator,
}

const fn arg_eq(index: usize, value: u64) -> ArgCheck {
    ArgCheck {
        index,
        value,
        value_two: None,
        op: LinuxSeccompOperator::ScmpCmpEq,
    }
}

/// One group of syscalls with the same verdict, argument checks and
/// conditions.
#[derive(Debug)]
struct Rule {
    names: &'static [&'static str],
    verdict: Verdict,
    args: &'static [ArgCheck],
    when: &'static [Condition],
}

const fn allow(names: &'static [&'static str]) -> Rule {
    Rule {
        names,
        verdict: Verdict::Allow,
        args: &[],
        when: &[],
    }
}

/// Allows `names` when the container's bounding set has `cap`.
const fn allow_with_cap(cap: &'static [Condition], names: &'static [&'static str]) -> Rule {
    Rule {
        names,
        verdict: Verdict::Allow,
        args: &[],
        when: cap,
    }
}

/// The default profile, as data. Order does not matter to the kernel; it
/// is kept as: everyone, argument-restricted, per architecture, per
/// capability.
static RULES: &[Rule] = &[
    allow(&[
        "accept",
        "accept4",
        "access",
        "alarm",
        "bind",
        "brk",
        "capget",
        "capset",
        "chdir",
        "chmod",
        "chown",
        "chown32",
        "clock_getres",
        "clock_getres_time64",
        "clock_gettime",
        "clock_gettime64",
        "clock_nanosleep",
        "clock_nanosleep_time64",
        "close",
        "close_range",
        "connect",
        "copy_file_range",
        "creat",
        "dup",
        "dup2",
        "dup3",
        "epoll_create",
        "epoll_create1",
        "epoll_ctl",
        "epoll_ctl_old",
        "epoll_pwait",
        "epoll_pwait2",
        "epoll_wait",
        "epoll_wait_old",
        "eventfd",
        "eventfd2",
        "execve",
        "execveat",
        "exit",
        "exit_group",
        "faccessat",
        "faccessat2",
        "fadvise64",
        "fadvise64_64",
        "fallocate",
        "fanotify_mark",
        "fchdir",
        "fchmod",
        "fchmodat",
        "fchmodat2",
        "fchown",
        "fchown32",
        "fchownat",
        "fcntl",
        "fcntl64",
        "fdatasync",
        "fgetxattr",
        "flistxattr",
        "flock",
        "fork",
        "fremovexattr",
        "fsetxattr",
        "fstat",
        "fstat64",
        "fstatat64",
        "fstatfs",
        "fstatfs64",
        "fsync",
        "ftruncate",
        "ftruncate64",
        "futex",
        "futex_requeue",
        "futex_time64",
        "futex_wait",
        "futex_waitv",
        "futex_wake",
        "futimesat",
        "getcpu",
        "getcwd",
        "getdents",
        "getdents64",
        "getegid",
        "getegid32",
        "geteuid",
        "geteuid32",
        "getgid",
        "getgid32",
        "getgroups",
        "getgroups32",
        "getitimer",
        "getpeername",
        "getpgid",
        "getpgrp",
        "getpid",
        "getppid",
        "getpriority",
        "getrandom",
        "getresgid",
        "getresgid32",
        "getresuid",
        "getresuid32",
        "getrlimit",
        "get_robust_list",
        "getrusage",
        "getsid",
        "getsockname",
        "getsockopt",
        "get_thread_area",
        "gettid",
        "gettimeofday",
        "getuid",
        "getuid32",
        "getxattr",
        "inotify_add_watch",
        "inotify_init",
        "inotify_init1",
        "inotify_rm_watch",
        "io_cancel",
        "ioctl",
        "io_destroy",
        "io_getevents",
        "io_pgetevents",
        "io_pgetevents_time64",
        "ioprio_get",
        "ioprio_set",
        "io_setup",
        "io_submit",
        "ipc",
        "kill",
        "landlock_add_rule",
        "landlock_create_ruleset",
        "landlock_restrict_self",
        "lchown",
        "lchown32",
        "lgetxattr",
        "link",
        "linkat",
        "listen",
        "listxattr",
        "llistxattr",
        "_llseek",
        "lremovexattr",
        "lseek",
        "lsetxattr",
        "lstat",
        "lstat64",
        "madvise",
        "membarrier",
        "memfd_create",
        "mincore",
        "mkdir",
        "mkdirat",
        "mknod",
        "mknodat",
        "mlock",
        "mlock2",
        "mlockall",
        "mmap",
        "mmap2",
        "mprotect",
        "mq_getsetattr",
        "mq_notify",
        "mq_open",
        "mq_timedreceive",
        "mq_timedreceive_time64",
        "mq_timedsend",
        "mq_timedsend_time64",
        "mq_unlink",
        "mremap",
        "msgctl",
        "msgget",
        "msgrcv",
        "msgsnd",
        "msync",
        "munlock",
        "munlockall",
        "munmap",
        "name_to_handle_at",
        "nanosleep",
        "newfstatat",
        "_newselect",
        "open",
        "openat",
        "openat2",
        "pause",
        "pidfd_open",
        "pidfd_send_signal",
        "pipe",
        "pipe2",
        "pkey_alloc",
        "pkey_free",
        "pkey_mprotect",
        "poll",
        "ppoll",
        "ppoll_time64",
        "prctl",
        "pread64",
        "preadv",
        "preadv2",
        "prlimit64",
        "process_mrelease",
        "pselect6",
        "pselect6_time64",
        "pwrite64",
        "pwritev",
        "pwritev2",
        "read",
        "readahead",
        "readlink",
        "readlinkat",
        "readv",
        "recv",
        "recvfrom",
        "recvmmsg",
        "recvmmsg_time64",
        "recvmsg",
        "remap_file_pages",
        "removexattr",
        "rename",
        "renameat",
        "renameat2",
        "restart_syscall",
        "rmdir",
        "rseq",
        "rt_sigaction",
        "rt_sigpending",
        "rt_sigprocmask",
        "rt_sigqueueinfo",
        "rt_sigreturn",
        "rt_sigsuspend",
        "rt_sigtimedwait",
        "rt_sigtimedwait_time64",
        "rt_tgsigqueueinfo",
        "sched_getaffinity",
        "sched_getattr",
        "sched_getparam",
        "sched_get_priority_max",
        "sched_get_priority_min",
        "sched_getscheduler",
        "sched_rr_get_interval",
        "sched_rr_get_interval_time64",
        "sched_setaffinity",
        "sched_setattr",
        "sched_setparam",
        "sched_setscheduler",
        "sched_yield",
        "seccomp",
        "select",
        "semctl",
        "semget",
        "semop",
        "semtimedop",
        "semtimedop_time64",
        "send",
        "sendfile",
        "sendfile64",
        "sendmmsg",
        "sendmsg",
        "sendto",
        "setfsgid",
        "setfsgid32",
        "setfsuid",
        "setfsuid32",
        "setgid",
        "setgid32",
        "setgroups",
        "setgroups32",
        "setitimer",
        "setpgid",
        "setpriority",
        "setregid",
        "setregid32",
        "setresgid",
        "setresgid32",
        "setresuid",
        "setresuid32",
        "setreuid",
        "setreuid32",
        "setrlimit",
        "set_robust_list",
        "setsid",
        "setsockopt",
        "set_thread_area",
        "set_tid_address",
        "setuid",
        "setuid32",
        "setxattr",
        "shmat",
        "shmctl",
        "shmdt",
        "shmget",
        "shutdown",
        "sigaltstack",
        "signalfd",
        "signalfd4",
        "sigprocmask",
        "sigreturn",
        "socket",
        "socketcall",
        "socketpair",
        "splice",
        "stat",
        "stat64",
        "statfs",
        "statfs64",
        "statx",
        "symlink",
        "symlinkat",
        "sync",
        "sync_file_range",
        "syncfs",
        "sysinfo",
        "tee",
        "tgkill",
        "time",
        "timer_create",
        "timer_delete",
        "timer_getoverrun",
        "timer_gettime",
        "timer_gettime64",
        "timer_settime",
        "timer_settime64",
        "timerfd_create",
        "timerfd_gettime",
        "timerfd_gettime64",
        "timerfd_settime",
        "timerfd_settime64",
        "times",
        "tkill",
        "truncate",
        "truncate64",
        "ugetrlimit",
        "umask",
        "uname",
        "unlink",
        "unlinkat",
        "utime",
        "utimensat",
        "utimensat_time64",
        "utimes",
        "vfork",
        "vmsplice",
        "wait4",
        "waitid",
        "waitpid",
        "write",
        "writev",
    ]),
    // personality(2) only for the harmless personas: PER_LINUX, PER_LINUX32,
    // with UNAME26, and the query (0xffffffff).
    Rule {
        names: &["personality"],
        verdict: Verdict::Allow,
        args: &[arg_eq(0, 0x0)],
        when: &[],
    },
    Rule {
        names: &["personality"],
        verdict: Verdict::Allow,
        args: &[arg_eq(0, 0x0008)],
        when: &[],
    },
    Rule {
        names: &["personality"],
        verdict: Verdict::Allow,
        args: &[arg_eq(0, 0x2_0000)],
        when: &[],
    },
    Rule {
        names: &["personality"],
        verdict: Verdict::Allow,
        args: &[arg_eq(0, 0x2_0008)],
        when: &[],
    },
    Rule {
        names: &["personality"],
        verdict: Verdict::Allow,
        args: &[arg_eq(0, 0xffff_ffff)],
        when: &[],
    },
    // Without CAP_SYS_ADMIN: clone without namespace flags; clone3 (whose
    // flags live in memory, out of the filter's reach) answers ENOSYS.
    Rule {
        names: &["clone"],
        verdict: Verdict::Allow,
        args: &[ArgCheck {
            index: 0,
            value: CLONE_NAMESPACE_FLAGS,
            value_two: Some(0),
            op: LinuxSeccompOperator::ScmpCmpMaskedEq,
        }],
        when: &[Condition::NoCap(Capability::SysAdmin)],
    },
    Rule {
        names: &["clone3"],
        verdict: Verdict::Errno(ENOSYS),
        args: &[],
        when: &[Condition::NoCap(Capability::SysAdmin)],
    },
    Rule {
        names: &["arch_prctl", "modify_ldt"],
        verdict: Verdict::Allow,
        args: &[],
        when: &[Condition::Arch(TargetArch::X86_64)],
    },
    Rule {
        names: &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        verdict: Verdict::Allow,
        args: &[],
        when: &[Condition::Arch(TargetArch::Aarch64)],
    },
    // Tracing one's own processes: for everyone from kernel 4.8 on (ptrace
    // then honours seccomp); before that only with CAP_SYS_PTRACE.
    Rule {
        names: &["process_vm_readv", "process_vm_writev", "ptrace"],
        verdict: Verdict::Allow,
        args: &[],
        when: &[Condition::CapOrKernel(Capability::SysPtrace, (4, 8))],
    },
    // Reaching into other processes' files and memory: CAP_SYS_PTRACE only,
    // whatever the kernel.
    allow_with_cap(
        &[Condition::Cap(Capability::SysPtrace)],
        &["kcmp", "pidfd_getfd", "process_madvise"],
    ),
    allow_with_cap(
        &[Condition::Cap(Capability::DacReadSearch)],
        &["open_by_handle_at"],
    ),
    allow_with_cap(
        &[Condition::Cap(Capability::SysAdmin)],
        &[
            "bpf",
            "clone",
            "clone3",
            "fanotify_init",
            "fsconfig",
            "fsmount",
            "fsopen",
            "fspick",
            "lookup_dcookie",
            "mount",
            "mount_setattr",
            "move_mount",
            "open_tree",
            "perf_event_open",
            "quotactl",
            "quotactl_fd",
            "setdomainname",
            "sethostname",
            "setns",
            "syslog",
            "umount",
            "umount2",
            "unshare",
        ],
    ),
    allow_with_cap(&[Condition::Cap(Capability::SysBoot)], &["reboot"]),
    allow_with_cap(&[Condition::Cap(Capability::SysChroot)], &["chroot"]),
    allow_with_cap(
        &[Condition::Cap(Capability::SysModule)],
        &["delete_module", "init_module", "finit_module"],
    ),
    allow_with_cap(&[Condition::Cap(Capability::SysPacct)], &["acct"]),
    allow_with_cap(&[Condition::Cap(Capability::SysRawio)], &["iopl", "ioperm"]),
    allow_with_cap(
        &[Condition::Cap(Capability::SysTime)],
        &[
            "settimeofday",
            "stime",
            "clock_settime",
            "clock_settime64",
            "adjtimex",
            "clock_adjtime",
            "clock_adjtime64",
        ],
    ),
    allow_with_cap(&[Condition::Cap(Capability::SysTtyConfig)], &["vhangup"]),
    allow_with_cap(
        &[Condition::Cap(Capability::SysNice)],
        &[
            "get_mempolicy",
            "mbind",
            "set_mempolicy",
            "set_mempolicy_home_node",
        ],
    ),
    allow_with_cap(&[Condition::Cap(Capability::Syslog)], &["syslog"]),
    allow_with_cap(&[Condition::Cap(Capability::Bpf)], &["bpf"]),
    allow_with_cap(&[Condition::Cap(Capability::Perfmon)], &["perf_event_open"]),
];

impl Condition {
    fn holds(self, target: &Target, caps: &Capabilities) -> bool {
        match self {
            Condition::Arch(arch) => target.arch == arch,
            Condition::Cap(cap) => caps.contains(&cap),
            Condition::NoCap(cap) => !caps.contains(&cap),
            Condition::CapOrKernel(cap, version) => caps.contains(&cap) || target.kernel >= version,
        }
    }
}

/// The default profile for a container whose bounding set is `caps`,
/// running on `target`.
pub fn default_profile(caps: &Capabilities, target: &Target) -> LinuxSeccomp {
    let syscalls: Vec<LinuxSyscall> = RULES
        .iter()
        .filter(|rule| rule.when.iter().all(|c| c.holds(target, caps)))
        .map(|rule| {
            let mut syscall = LinuxSyscall::default();
            syscall.set_names(rule.names.iter().map(|n| (*n).to_owned()).collect());
            match rule.verdict {
                Verdict::Allow => {
                    syscall.set_action(LinuxSeccompAction::ScmpActAllow);
                }
                Verdict::Errno(errno) => {
                    syscall
                        .set_action(LinuxSeccompAction::ScmpActErrno)
                        .set_errno_ret(Some(errno));
                }
            }
            if !rule.args.is_empty() {
                syscall.set_args(Some(
                    rule.args.iter().copied().map(ArgCheck::to_oci).collect(),
                ));
            }
            syscall
        })
        .collect();
    let mut profile = LinuxSeccomp::default();
    profile
        .set_default_action(LinuxSeccompAction::ScmpActErrno)
        .set_default_errno_ret(Some(DENIED_ERRNO))
        .set_architectures(Some(target.arch.seccomp_arches()))
        .set_syscalls(Some(syscalls));
    profile
}

impl ArgCheck {
    fn to_oci(self) -> LinuxSeccompArg {
        let builder = LinuxSeccompArgBuilder::default()
            .index(self.index)
            .value(self.value)
            .op(self.op);
        let builder = match self.value_two {
            Some(two) => builder.value_two(two),
            None => builder,
        };
        // Every field is set (or optional): building cannot fail.
        builder.build().unwrap_or_default()
    }
}
