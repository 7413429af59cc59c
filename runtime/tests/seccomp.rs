//! Enforcement tests of `berth_runtime::seccomp`: compile a profile, fork,
//! install the filter in the child, make a syscall there and report the
//! outcome through the exit status.
//!
//! The crate itself forbids `unsafe` outside `sys`; this test crate needs
//! it for `fork(2)`, raw syscalls and `int 0x80`.

#![allow(clippy::unwrap_used)]

use std::ffi::CString;

use berth_runtime::seccomp::{self, Filter};
use oci_spec::runtime::LinuxSeccomp;
use serde_json::{json, Value};

/// How the child ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Exit(i32),
    Signal(i32),
}

const FILTER_FAILED: i32 = 200;

fn compile(v: Value) -> Filter {
    let spec: LinuxSeccomp = serde_json::from_value(v).unwrap();
    seccomp::compile(&spec).unwrap()
}

/// Fork; in the child install `filter` (unless `None`), run `body` and
/// exit with its result. Only async-signal-safe work may happen in `body`
/// (the test harness is multi-threaded): raw syscalls, no allocation.
fn in_child(filter: Option<&Filter>, body: impl FnOnce() -> i32) -> End {
    // SAFETY: fork(2) in a multi-threaded process; the child only calls
    // async-signal-safe functions (prctl, seccomp, raw syscalls, _exit)
    // on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code = match filter.map(Filter::install) {
            Some(Err(_)) => FILTER_FAILED,
            _ => body(),
        };
        // SAFETY: _exit never returns and runs no destructors or atexit
        // handlers of the parent's copy of the process.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waitpid writes the status into a live local.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFEXITED(status) {
        End::Exit(libc::WEXITSTATUS(status))
    } else {
        assert!(libc::WIFSIGNALED(status), "status {status:#x}");
        End::Signal(libc::WTERMSIG(status))
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// A raw syscall; the errno on failure, else 0.
fn sys(nr: libc::c_long, args: [u64; 3]) -> i32 {
    // SAFETY: only used with syscalls whose arguments are integers (or
    // null/invalid pointers the kernel checks), see the callers.
    let r = unsafe { libc::syscall(nr, args[0], args[1], args[2]) };
    if r < 0 {
        errno()
    } else {
        0
    }
}

fn allow_but(rules: Value) -> Filter {
    compile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}))
}

#[test]
fn seccomp_errno_with_errno_ret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d");
    let cpath = CString::new(path.to_str().unwrap()).unwrap();
    let f = allow_but(
        json!([{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]),
    );
    let end = in_child(Some(&f), || {
        // SAFETY: mkdir reads a NUL-terminated path that outlives the call.
        if unsafe { libc::mkdir(cpath.as_ptr(), 0o755) } == 0 {
            0
        } else {
            errno()
        }
    });
    assert_eq!(end, End::Exit(libc::ENOSYS));
    assert!(!path.exists());
    // Without the filter the same works.
    assert_eq!(
        in_child(None, || {
            // SAFETY: as above.
            unsafe { libc::mkdir(cpath.as_ptr(), 0o755) }
        }),
        End::Exit(0)
    );
    assert!(path.is_dir());
}

#[test]
fn seccomp_errno_defaults_to_eperm() {
    let f = allow_but(json!([{"names": ["getppid"], "action": "SCMP_ACT_ERRNO"}]));
    let end = in_child(Some(&f), || sys(libc::SYS_getppid, [0; 3]));
    assert_eq!(end, End::Exit(libc::EPERM));
}

#[test]
fn seccomp_allowlist_with_default_errno_and_enosys_stub() {
    let f = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 99,
        "syscalls": [{"names": ["exit_group", "exit", "getpid"], "action": "SCMP_ACT_ALLOW"}]
    }));
    let end = in_child(Some(&f), || {
        if sys(libc::SYS_getpid, [0; 3]) != 0 {
            return 1;
        }
        if sys(libc::SYS_getppid, [0; 3]) != 99 {
            return 2;
        }
        // getrandom (318) is above exit_group (231), the highest syscall
        // the profile names: ENOSYS, not the default errno.
        if sys(libc::SYS_getrandom, [0, 0, 0]) != libc::ENOSYS {
            return 3;
        }
        0
    });
    assert_eq!(end, End::Exit(0));
}

#[test]
fn seccomp_kill_actions_and_trap_end_with_sigsys() {
    for action in [
        "SCMP_ACT_KILL_PROCESS",
        "SCMP_ACT_KILL_THREAD",
        "SCMP_ACT_KILL",
        "SCMP_ACT_TRAP",
    ] {
        let f = allow_but(json!([{"names": ["getppid"], "action": action}]));
        let end = in_child(Some(&f), || {
            sys(libc::SYS_getppid, [0; 3]);
            0
        });
        assert_eq!(end, End::Signal(libc::SIGSYS), "{action}");
        // Other syscalls are not affected.
        let end = in_child(Some(&f), || sys(libc::SYS_getpid, [0; 3]));
        assert_eq!(end, End::Exit(0), "{action}");
    }
    // As the default action.
    let f = compile(json!({"defaultAction": "SCMP_ACT_KILL_PROCESS",
        "syscalls": [{"names": ["exit_group"], "action": "SCMP_ACT_ALLOW"}]}));
    let end = in_child(Some(&f), || sys(libc::SYS_getppid, [0; 3]));
    assert_eq!(end, End::Signal(libc::SIGSYS));
    let end = in_child(Some(&f), || 7);
    assert_eq!(end, End::Exit(7));
}

#[test]
fn seccomp_log_allows() {
    let f = allow_but(json!([{"names": ["getppid"], "action": "SCMP_ACT_LOG"}]));
    let parent = std::process::id() as i32;
    // SAFETY: getppid has no arguments.
    let end = in_child(Some(&f), || i32::from(unsafe { libc::getppid() } == parent));
    assert_eq!(end, End::Exit(1));
}

#[test]
fn seccomp_trace_without_tracer_is_enosys() {
    let f = allow_but(json!([{"names": ["getppid"], "action": "SCMP_ACT_TRACE", "errnoRet": 5}]));
    let end = in_child(Some(&f), || sys(libc::SYS_getppid, [0; 3]));
    assert_eq!(end, End::Exit(libc::ENOSYS));
}

#[test]
fn seccomp_socket_family_condition() {
    let f = allow_but(
        json!([{"names": ["socket"], "action": "SCMP_ACT_ERRNO", "errnoRet": libc::EACCES,
        "args": [{"index": 0, "value": libc::AF_INET, "op": "SCMP_CMP_EQ"}]}]),
    );
    let end = in_child(Some(&f), || {
        // SAFETY: socket takes integers only.
        let inet = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
        if inet >= 0 || errno() != libc::EACCES {
            return 1;
        }
        // SAFETY: as above.
        let unix = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
        if unix < 0 {
            return 2;
        }
        0
    });
    assert_eq!(end, End::Exit(0));
}

#[test]
fn seccomp_personality_query_only() {
    // Docker's profile style: personality allowed for a few values only.
    let f = compile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["personality"], "action": "SCMP_ACT_ERRNO",
         "args": [{"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_NE"}]}]}));
    let end = in_child(Some(&f), || {
        if sys(libc::SYS_personality, [0xffff_ffff, 0, 0]) != 0 {
            return 1;
        }
        if sys(libc::SYS_personality, [0, 0, 0]) != libc::EPERM {
            return 2;
        }
        0
    });
    assert_eq!(end, End::Exit(0));
}

/// getpgid of a pid above pid_max: ESRCH unless the filter says 77.
const NO_PID: u64 = 0x7f00_0000;

#[test]
fn seccomp_argument_comparisons() {
    let errno77 = |args: Value| {
        allow_but(
            json!([{"names": ["getpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77, "args": args}]),
        )
    };
    let getpgid = |f: &Filter, arg: u64| in_child(Some(f), || sys(libc::SYS_getpgid, [arg, 0, 0]));
    let esrch = End::Exit(libc::ESRCH);
    let denied = End::Exit(77);

    // 64-bit comparison: the kernel truncates the pid to 32 bits, the
    // filter does not.
    let f = errno77(json!([{"index": 0, "value": (1u64 << 32) | NO_PID, "op": "SCMP_CMP_EQ"}]));
    assert_eq!(getpgid(&f, (1 << 32) | NO_PID), denied);
    assert_eq!(getpgid(&f, NO_PID), esrch);

    // Same index twice: ORed.
    let f = errno77(json!([
        {"index": 0, "value": NO_PID + 1, "op": "SCMP_CMP_EQ"},
        {"index": 0, "value": NO_PID + 2, "op": "SCMP_CMP_EQ"}]));
    assert_eq!(getpgid(&f, NO_PID + 1), denied);
    assert_eq!(getpgid(&f, NO_PID + 2), denied);
    assert_eq!(getpgid(&f, NO_PID + 3), esrch);

    // Masked: (arg & 0xff00) == 0x1200.
    let f = errno77(
        json!([{"index": 0, "value": 0xff00, "valueTwo": 0x1200, "op": "SCMP_CMP_MASKED_EQ"}]),
    );
    assert_eq!(getpgid(&f, NO_PID | 0x1234), denied);
    assert_eq!(getpgid(&f, NO_PID | 0x3434), esrch);

    // Ranges.
    let f = errno77(json!([{"index": 0, "value": NO_PID + 10, "op": "SCMP_CMP_GE"}]));
    assert_eq!(getpgid(&f, NO_PID + 10), denied);
    assert_eq!(getpgid(&f, NO_PID + 9), esrch);
}

#[test]
fn seccomp_args_on_different_indexes_are_anded() {
    // setpgid(pid, pgid) of a nonexistent pid: ESRCH unless denied.
    let f = allow_but(
        json!([{"names": ["setpgid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77, "args": [
        {"index": 0, "value": NO_PID, "op": "SCMP_CMP_EQ"},
        {"index": 1, "value": 5, "op": "SCMP_CMP_EQ"}]}]),
    );
    let setpgid = |a: u64, b: u64| in_child(Some(&f), || sys(libc::SYS_setpgid, [a, b, 0]));
    assert_eq!(setpgid(NO_PID, 5), End::Exit(77));
    assert_eq!(setpgid(NO_PID, 6), End::Exit(libc::ESRCH));
    assert_eq!(setpgid(NO_PID + 1, 5), End::Exit(libc::ESRCH));
}

#[test]
fn seccomp_tsync_flag() {
    let f = compile(json!({"defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC"],
        "syscalls": [{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 3}]}));
    assert_eq!(f.flags(), 1);
    let end = in_child(Some(&f), || sys(libc::SYS_getppid, [0; 3]));
    assert_eq!(end, End::Exit(3));
}

#[test]
fn seccomp_unknown_syscall_names_are_ignored() {
    let f = allow_but(
        json!([{"names": ["no_such_syscall", "socketcall", "getppid"],
        "action": "SCMP_ACT_ERRNO", "errnoRet": 4}]),
    );
    let end = in_child(Some(&f), || sys(libc::SYS_getppid, [0; 3]));
    assert_eq!(end, End::Exit(4));
}

/// i386 syscalls through `int 0x80` from a 64-bit process.
#[cfg(target_arch = "x86_64")]
mod i386 {
    use super::*;

    const I386_GETPID: i32 = 20;
    const I386_GETPPID: i32 = 64;

    fn int80(nr: i32) -> i32 {
        let ret: i32;
        // SAFETY: int 0x80 with only eax set runs an argument-less i386
        // syscall (getpid/getppid here); the kernel zeroes r8-r11 on
        // return, declared clobbered, and preserves everything else.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") nr => ret,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack),
            );
        }
        ret
    }

    /// Whether this kernel runs i386 syscalls (IA32 emulation).
    fn available() -> bool {
        in_child(None, || {
            // SAFETY: getpid has no arguments.
            i32::from(int80(I386_GETPID) == unsafe { libc::getpid() })
        }) == End::Exit(1)
    }

    #[test]
    fn seccomp_i386_syscalls() {
        if !available() {
            eprintln!("skipped: the kernel does not run i386 syscalls");
            return;
        }
        let rules = json!([{"names": ["getppid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 77}]);
        // SCMP_ARCH_X86 not listed: killed by the architecture check.
        let f = compile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}));
        let end = in_child(Some(&f), || int80(I386_GETPID));
        assert_eq!(end, End::Signal(libc::SIGSYS));
        // Listed: filtered with the i386 numbers.
        let f = compile(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules,
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]}));
        let end = in_child(Some(&f), || {
            if int80(I386_GETPPID) != -77 {
                return 1;
            }
            // SAFETY: getpid has no arguments.
            if int80(I386_GETPID) != unsafe { libc::getpid() } {
                return 2;
            }
            0
        });
        assert_eq!(end, End::Exit(0));
    }
}

/// A Docker-sized allowlist (every syscall of the installed uapi header
/// but mkdir/mkdirat, plus conditional rules), installed before exec'ing a
/// real program.
#[test]
fn seccomp_allowlist_profile_runs_a_real_program() {
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    let header = "/usr/include/x86_64-linux-gnu/asm/unistd_64.h";
    let (Ok(text), true) = (
        std::fs::read_to_string(header),
        std::path::Path::new("/bin/busybox").exists(),
    ) else {
        eprintln!("skipped: needs {header} and /bin/busybox");
        return;
    };
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("#define __NR_")?.split_whitespace().next())
        .filter(|n| !matches!(*n, "mkdir" | "mkdirat" | "personality"))
        .collect();
    assert!(names.len() > 300);
    let f = compile(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "syscalls": [
            {"names": names, "action": "SCMP_ACT_ALLOW"},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_EQ"}]},
            {"names": ["personality"], "action": "SCMP_ACT_ALLOW",
             "args": [{"index": 0, "value": 0xffff_ffffu64, "op": "SCMP_CMP_EQ"}]}
        ]
    }));
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("made");
    let script = format!("echo hello; mkdir {}", target.display());
    let filter = f.clone();
    let mut cmd = Command::new("/bin/busybox");
    cmd.args(["sh", "-c", &script]);
    // SAFETY: the hook runs in the forked child before exec and only
    // installs the already-compiled filter (prctl + seccomp, no allocation
    // on success).
    unsafe {
        cmd.pre_exec(move || filter.install().map(drop).map_err(std::io::Error::other));
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout, "hello\n", "stderr: {stderr}");
    assert!(!out.status.success());
    assert!(stderr.contains("Operation not permitted"), "{stderr}");
    assert!(!target.exists());
}
