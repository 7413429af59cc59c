//! The container's process, from its last setup steps to exec: shared by
//! a container's init and by processes `exec`'d into a running container.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::sys::stat::{umask, Mode};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::Process;

use crate::error::{Context, Error, Result};
use crate::seccomp::notify::Handoff;
use crate::{capabilities, rootfs, sys, terminal};

/// The program to exec, resolved inside the container.
#[derive(Debug)]
pub struct ExecPlan {
    pub program: CString,
    pub argv: Vec<CString>,
    pub env: Vec<CString>,
}

impl ExecPlan {
    /// Resolve `process.args[0]` with the container's PATH and complete the
    /// environment (HOME from the container's /etc/passwd when unset).
    /// Must run with the container's root as `/`.
    pub fn new(process: &Process) -> Result<ExecPlan> {
        let mut env = process.env().clone().unwrap_or_default();
        if !env.iter().any(|e| e.starts_with("HOME=")) {
            env.push(format!("HOME={}", home_of(process.user().uid())));
        }
        let argv = process.args().clone().unwrap_or_default();
        let first = argv
            .first()
            .ok_or_else(|| Error::invalid("process.args: must name the program to run"))?;
        let program = find_program(first, &env)?;
        let cstrings = |v: &[String]| {
            v.iter()
                .map(|s| CString::new(s.as_str()))
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(|_| Error::invalid("NUL byte in process.args or process.env"))
        };
        Ok(ExecPlan {
            program: CString::new(program.into_os_string().into_encoded_bytes())
                .map_err(|_| Error::invalid("NUL byte in the program path"))?,
            argv: cstrings(&argv)?,
            env: cstrings(&env)?,
        })
    }
}

/// Allocate the process's terminal inside the container, send its master
/// end over `socket`, and make it our controlling terminal and stdio.
/// With `console`, the pty is also bind-mounted on /dev/console.
pub fn setup_terminal(socket: &UnixStream, process: &Process, console: bool) -> Result<()> {
    let pty = terminal::open_pty()?;
    // The terminal belongs to the process's user (its group stays the one
    // devpts gives, e.g. tty via gid=5).
    nix::unistd::fchown(&pty.slave, Some(Uid::from_raw(process.user().uid())), None)
        .context("chown of the terminal")?;
    let console_path = Path::new("/dev/console");
    // Never mount through a link the image put there.
    let is_link = std::fs::symlink_metadata(console_path).is_ok_and(|m| m.file_type().is_symlink());
    if console && is_link {
        return Err(Error::invalid("/dev/console in the container is a symlink"));
    }
    if console && rootfs::mounts::ensure_file(console_path).is_ok() {
        nix::mount::mount(
            Some(&pty.slave_path),
            console_path,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {} on /dev/console", pty.slave_path.display()))?;
    }
    if let Some(size) = process.console_size() {
        let rows = u16::try_from(size.height()).unwrap_or(u16::MAX);
        let cols = u16::try_from(size.width()).unwrap_or(u16::MAX);
        terminal::set_size(pty.master.as_fd(), rows, cols)?;
    }
    terminal::send_fd(
        socket.as_fd(),
        pty.master.as_fd(),
        &pty.slave_path.to_string_lossy(),
    )
    .context("sending the pty master to the console socket")?;
    terminal::become_tty_session(&pty.slave)
}

/// Enter `process.cwd` (which must exist: the container's is created by
/// [`crate::rootfs::create_cwd`], an exec's is not, as under runc) and
/// make sure it is inside the container: a path through a descriptor
/// leaked from the host (`/proc/self/fd/N`, CVE-2024-21626) must not put
/// the process in a host directory.
pub fn enter_cwd(process: &Process) -> Result<()> {
    let cwd = process.cwd();
    nix::unistd::chdir(cwd).with_context(|| format!("process.cwd {}", cwd.display()))?;
    // getcwd fails with ENOENT, or returns "(unreachable)...", for a
    // directory outside our root.
    match nix::unistd::getcwd() {
        Ok(real) if real.is_absolute() => Ok(()),
        _ => Err(Error::invalid(format!(
            "process.cwd {}: resolves outside the container",
            cwd.display()
        ))),
    }
}

/// Become the process's user for good: every fd from `3 + preserve_fds`
/// up close-on-exec, then the bounding set, uid/gid/groups,
/// capability sets, no_new_privs, umask and the seccomp filter. What runs
/// after this (startContainer hooks, exec) runs confined.
///
/// The filter goes in where runc puts it: with no_new_privs, last; without,
/// first, while CAP_SYS_ADMIN is still held (the profile must then allow
/// the credential changes that follow, as Docker's default profile does).
///
/// A filter with `SCMP_ACT_NOTIFY` rules yields a listener, sent to the
/// seccomp agent with `agent` right after seccomp(2), then closed.
/// `setgroups_allowed` comes from [`setgroups_allowed`], read while the
/// host's /proc was still ours.
pub fn drop_privileges(
    process: &Process,
    preserve_fds: i32,
    setgroups_allowed: bool,
    seccomp: Option<&crate::seccomp::Filter>,
    agent: Option<Handoff>,
) -> Result<()> {
    sys::cloexec_from(3 + preserve_fds).context("closing inherited descriptors")?;
    let nnp = process.no_new_privileges().unwrap_or(false);
    let mut agent = agent;
    let mut install = |f: &crate::seccomp::Filter| -> Result<()> {
        let listener = f
            .install()
            .map_err(|e| Error::internal(format!("linux.seccomp: {e}")))?;
        match (listener, agent.take()) {
            (None, _) => Ok(()),
            (Some(fd), Some(agent)) => agent.send(fd),
            (Some(_), None) => Err(Error::internal(
                "linux.seccomp: a listener but no connection to the seccomp agent",
            )),
        }
    };
    if let Some(filter) = seccomp.filter(|_| !nnp) {
        install(filter)?;
    }
    let caps = process.capabilities().as_ref();
    capabilities::narrow_bounding(caps)?;
    set_user(process, setgroups_allowed)?;
    capabilities::apply_sets(caps)?;
    if nnp {
        nix::sys::prctl::set_no_new_privs().context("setting no_new_privs")?;
    }
    let mask = process.user().umask().unwrap_or(0o022);
    umask(Mode::from_bits_truncate(mask));
    if let Some(filter) = seccomp.filter(|_| nnp) {
        install(filter)?;
    }
    Ok(())
}

/// Exec the planned program. Returns only on failure.
pub fn exec(plan: &ExecPlan) -> Result<()> {
    // The runtime's signal mask and ignored signals (SIGPIPE) would
    // otherwise survive exec. Reset only now: until here a hook or agent
    // that hangs up on us must be an error, not a silent SIGPIPE death.
    sys::reset_signals().context("resetting signal handling")?;
    let err = match nix::unistd::execve(&plan.program, &plan.argv, &plan.env) {
        Err(e) => e,
        Ok(never) => match never {},
    };
    Err(Error::internal(format!(
        "exec {:?}: {err}",
        plan.argv
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default()
    )))
}

/// Apply `process.oomScoreAdj` to `pid` (from the parent: it works even
/// where the process itself may not lower its score, e.g. in a user
/// namespace).
pub fn set_oom_score_adj(pid: nix::unistd::Pid, process: &Process) -> Result<()> {
    match process.oom_score_adj() {
        Some(adj) => std::fs::write(format!("/proc/{pid}/oom_score_adj"), adj.to_string())
            .context("process.oomScoreAdj"),
        None => Ok(()),
    }
}

/// Whether setgroups(2) is allowed in our user namespace. Read from the
/// host's /proc, before the container's root hides it (an image could
/// plant a /proc/self/setgroups of its own).
pub fn setgroups_allowed() -> bool {
    std::fs::read_to_string("/proc/self/setgroups").map_or(true, |s| s.trim() != "deny")
}

pub fn set_rlimits(process: &Process) -> Result<()> {
    for limit in process.rlimits().as_deref().unwrap_or(&[]) {
        let name = serde_json::to_value(limit.typ())
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let resource = rlimit_resource(&name)
            .ok_or_else(|| Error::invalid(format!("unknown rlimit {name:?}")))?;
        nix::sys::resource::setrlimit(resource, limit.soft(), limit.hard())
            .with_context(|| format!("{name} soft {} hard {}", limit.soft(), limit.hard()))?;
    }
    Ok(())
}

fn rlimit_resource(name: &str) -> Option<nix::sys::resource::Resource> {
    use nix::sys::resource::Resource as R;
    Some(match name {
        "RLIMIT_CPU" => R::RLIMIT_CPU,
        "RLIMIT_FSIZE" => R::RLIMIT_FSIZE,
        "RLIMIT_DATA" => R::RLIMIT_DATA,
        "RLIMIT_STACK" => R::RLIMIT_STACK,
        "RLIMIT_CORE" => R::RLIMIT_CORE,
        "RLIMIT_RSS" => R::RLIMIT_RSS,
        "RLIMIT_NPROC" => R::RLIMIT_NPROC,
        "RLIMIT_NOFILE" => R::RLIMIT_NOFILE,
        "RLIMIT_MEMLOCK" => R::RLIMIT_MEMLOCK,
        "RLIMIT_AS" => R::RLIMIT_AS,
        "RLIMIT_LOCKS" => R::RLIMIT_LOCKS,
        "RLIMIT_SIGPENDING" => R::RLIMIT_SIGPENDING,
        "RLIMIT_MSGQUEUE" => R::RLIMIT_MSGQUEUE,
        "RLIMIT_NICE" => R::RLIMIT_NICE,
        "RLIMIT_RTPRIO" => R::RLIMIT_RTPRIO,
        "RLIMIT_RTTIME" => R::RLIMIT_RTTIME,
        _ => return None,
    })
}

/// Switch to the process's uid, gid and supplementary groups, keeping the
/// permitted capabilities across the uid change so they can be set after.
fn set_user(process: &Process, setgroups_allowed: bool) -> Result<()> {
    let user = process.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::sys::prctl::set_keepcaps(true).context("keeping capabilities across setuid")?;
    // In a user namespace set up without privileges, setgroups(2) is
    // denied for good: fine as long as no groups were asked for.
    if setgroups_allowed {
        nix::unistd::setgroups(&groups).context("process.user.additionalGids")?;
    } else if !groups.is_empty() {
        return Err(Error::invalid(
            "process.user.additionalGids: setgroups is denied in this user namespace (rootless)",
        ));
    }
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).with_context(|| format!("process.user.gid {gid}"))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).with_context(|| format!("process.user.uid {uid}"))?;
    nix::sys::prctl::set_keepcaps(false).context("resetting keep-caps")
}

/// The home directory of `uid` from the container's /etc/passwd, or "/".
fn home_of(uid: u32) -> String {
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|text| {
            text.lines().find_map(|line| {
                let f: Vec<&str> = line.split(':').collect();
                (f.len() >= 6 && f[2].parse::<u32>().ok() == Some(uid)).then(|| f[5].to_string())
            })
        })
        .unwrap_or_else(|| "/".to_string())
}

/// Find the program as execvp would, with the container's PATH.
fn find_program(name: &str, env: &[String]) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        // The words runc uses: clients (docker's CLI) map them to exit codes
        // 127 (not there) and 126 (not runnable).
        return match std::fs::metadata(&p) {
            Ok(_) if executable(&p) => Ok(p),
            Ok(_) => Err(Error::invalid(format!("exec {name:?}: permission denied"))),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Err(Error::invalid(format!(
                "exec {name:?}: stat {name}: no such file or directory"
            ))),
            Err(err) => Err(Error::invalid(format!("exec {name:?}: stat {name}: {err}"))),
        };
    }
    let path = env
        .iter()
        .rev()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or("/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(name))
        .find(|p| executable(p))
        .ok_or_else(|| Error::invalid(format!("exec {name:?}: executable file not found in $PATH")))
}
