//! `exec`: run another process inside a created or running container: in
//! all of its namespaces and its cgroup, with the container's settings
//! unless the process description says otherwise.

use std::fs::File;
use std::os::fd::{AsFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::run::Forwarder;
use crate::cgroups;
use crate::channel::{FromChild, FromParent, InitFailure};
use crate::error::{Context, Error, Result};
use crate::process::{self, ExecPlan};
use crate::seccomp::notify::Agent;
use crate::state::{ContainerState, StateStore, Status};
use crate::{namespaces, spawn, sys, terminal};

/// What `exec` is asked to run.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The complete process (from `--process`, or built from the
    /// container's process and the command-line overrides).
    pub process: Process,
    pub console_socket: Option<PathBuf>,
    pub pid_file: Option<PathBuf>,
    pub detach: bool,
    pub preserve_fds: u32,
    /// Exec into a paused container too (the process starts frozen).
    pub ignore_paused: bool,
    /// Sub-cgroups of the container's to put the process in, each
    /// `[CONTROLLER[,CONTROLLER...]:]PATH` (`--cgroup`, as runc takes it).
    pub cgroups: Vec<String>,
}

/// The order namespaces are joined in: the mount namespace last, since it
/// changes our root and with it what the others' paths would mean.
const JOIN_ORDER: &[LinuxNamespaceType] = &[
    // The user namespace first: it owns the others and gives the
    // capabilities needed to join them.
    LinuxNamespaceType::User,
    LinuxNamespaceType::Time,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Mount,
];

/// Run `opts.process` in container `id`; returns its exit status (0 when
/// detached, once it has been exec'd).
pub fn exec(store: &StateStore, id: &str, opts: &ExecOptions) -> Result<i32> {
    let c = super::load(store, id)?;
    check_status(id, c.status, opts.ignore_paused)?;
    if opts.preserve_fds > super::create::MAX_PRESERVED_FDS {
        return Err(Error::invalid(format!(
            "--preserve-fds {}: at most {}",
            opts.preserve_fds,
            super::create::MAX_PRESERVED_FDS
        )));
    }
    let state = c.state;
    let target_cgroup = sub_cgroup(&state.cgroup, &opts.cgroups)?;
    let seccomp = super::create::compile_seccomp(&state.spec)?;
    let oci_state = serde_json::to_string(&state.oci_state(c.status))
        .map_err(|e| Error::internal(format!("the container's state: {e}")))?;
    // Let other commands in while this one runs.
    drop(c.dir);
    let terminal = opts.process.terminal().unwrap_or(false);
    if terminal && opts.detach && opts.console_socket.is_none() {
        return Err(Error::invalid(
            "--tty with --detach needs a --console-socket to hand the terminal to",
        ));
    }

    let join = open_namespaces(id, &state)?;
    let pid_for_children = match join.iter().find(|(t, _)| *t == LinuxNamespaceType::Pid) {
        Some((_, pidns)) => Some(namespaces::ChildrenInPidNamespace::enter(pidns)?),
        None => None,
    };

    let signals = if opts.detach {
        None
    } else {
        Some(Forwarder::new()?)
    };
    let (console, console_peer) = terminal::connect(opts.console_socket.as_deref(), terminal)?;
    // Before the clone: the child inherits the connection (see seccomp::notify).
    let agent = Agent::connect(seccomp.as_ref())?;
    let notify = agent.is_some();
    let cgroup = cgroups::from_state(&target_cgroup);
    let into_cgroup = cgroup.clone_into_fd();
    // The child joins before it enters any of the container's namespaces,
    // still root in ours.
    let join_v1_self = cgroups::child_joins_v1(&target_cgroup, false);
    // Not dumpable from the fork on: the container's processes share its
    // pid namespace and must not reach the host binary through /proc.
    let child = spawn::spawn(
        spawn::CloneArgs {
            role: spawn::Role::Exec,
            flags: 0,
            cgroup: into_cgroup.as_ref().map(|f| f.as_fd()),
            non_dumpable: true,
        },
        |end| {
            let failure = tenant(
                &end,
                (&target_cgroup, join_v1_self),
                &join,
                console,
                opts,
                seccomp.as_ref(),
                agent.map(|a| (a, oci_state)),
            );
            let _ = end.channel.send(&FromChild::Failed(failure));
            sys::exit_now(127);
        },
    )?;
    drop(pid_for_children);
    drop(into_cgroup);
    process::set_oom_score_adj(child.pid(), &opts.process)?;
    child.join_cgroup(cgroup.as_ref(), join_v1_self)?;
    if notify {
        let _ = child.channel().send(&FromParent::HostPid {
            pid: child.pid().as_raw(),
        });
    }
    let console_master = match &console_peer {
        // If the child failed before sending its terminal, its report on
        // the channel says why.
        Some(peer) => match terminal::recv_fd(peer) {
            Ok(fd) => Some(fd),
            Err(e) => {
                wait_for_exec(&child)?;
                return Err(Error::internal(format!("receiving the terminal: {e}")));
            }
        },
        None => None,
    };
    wait_for_exec(&child)?;
    let (pid, _) = child.disarm();
    if let Some(pid_file) = &opts.pid_file {
        crate::state::write_pid_file(pid_file, pid.as_raw())?;
    }
    match signals {
        None => Ok(0),
        Some(signals) => signals.supervise(pid, console_master.as_ref()),
    }
}

/// Whether a container in `status` can take a new process.
fn check_status(id: &str, status: Status, ignore_paused: bool) -> Result<()> {
    match status {
        Status::Created | Status::Running => {}
        Status::Paused if ignore_paused => {}
        Status::Paused => {
            return Err(Error::precondition(format!(
                "cannot exec in a paused container ({id:?}); resume it or use --ignore-paused"
            )))
        }
        status => {
            return Err(Error::precondition(format!(
                "cannot exec in container {id:?}: it is {status}"
            )))
        }
    }
    Ok(())
}

/// Every namespace of the container's init, opened before anything
/// changes, and checked to be its: init (pinned by a pidfd) is still the
/// container's once they are open.
fn open_namespaces(id: &str, state: &ContainerState) -> Result<Vec<(LinuxNamespaceType, File)>> {
    let mut join = Vec::new();
    for ns in crate::spec::namespaces(&state.spec) {
        // Until init execs, its time namespace is the one its program
        // will get, which /proc shows as time_for_children.
        let name = match ns.typ() {
            LinuxNamespaceType::Time => "time_for_children",
            other => namespaces::proc_name(other),
        };
        let path = format!("/proc/{}/ns/{name}", state.pid);
        let file = File::open(&path).with_context(|| format!("opening {path}"))?;
        join.push((ns.typ(), file));
    }
    let _pin = sys::pidfd_open(Pid::from_raw(state.pid)).ok();
    if state.init_process().is_none() {
        return Err(Error::precondition(format!(
            "cannot exec in container {id:?}: it stopped"
        )));
    }
    Ok(join)
}

/// `Ready` then end-of-file (the channel is close-on-exec) means the
/// program was exec'd; `Failed` says why not.
fn wait_for_exec(child: &spawn::Spawned) -> Result<()> {
    let mut ready = false;
    loop {
        match child.next()? {
            Some(FromChild::Ready) => ready = true,
            Some(other) => {
                return Err(Error::internal(format!(
                    "exec: unexpected message {other:?}"
                )))
            }
            None if ready => return Ok(()),
            None => return Err(child.died()),
        }
    }
}

/// The child: enter the container and become `opts.process`.
fn tenant(
    end: &spawn::ChildEnd,
    (cgroup, join_v1_self): (&cgroups::CgroupState, bool),
    join: &[(LinuxNamespaceType, File)],
    console: Option<UnixStream>,
    opts: &ExecOptions,
    seccomp: Option<&crate::seccomp::Filter>,
    agent: Option<(Agent, String)>,
) -> InitFailure {
    let fail = |stage: &str, e: Error| spawn::failed_at(stage)(e);
    let channel = &end.channel;
    let _ = nix::sys::prctl::set_dumpable(false);
    let _ = sys::cloexec_from(3 + RawFd::try_from(opts.preserve_fds).unwrap_or(0));
    if join_v1_self {
        if let Err(e) = cgroups::join_v1_self(cgroup) {
            return fail("joining the container's cgroup", e.into());
        }
    }
    // The user namespace first, then, while the host's /proc is still
    // ours, what it allows; the mount namespace last.
    if let Err(e) = namespaces::join(join, &JOIN_ORDER[..1]) {
        return fail("joining the container's user namespace", e);
    }
    let setgroups_allowed = process::setgroups_allowed();
    if let Err(e) = namespaces::join(join, &JOIN_ORDER[1..]) {
        return fail("joining the container's namespaces", e);
    }
    let process = &opts.process;
    let steps = || -> Result<ExecPlan> {
        match &console {
            Some(socket) => process::setup_terminal(socket, process, false)?,
            None => {
                nix::unistd::setsid().context("setsid")?;
            }
        }
        process::set_rlimits(process)?;
        process::enter_cwd(process)?;
        ExecPlan::new(process)
    };
    let plan = match steps() {
        Ok(p) => p,
        Err(e) => return fail("preparing the process", e),
    };
    if !cgroups::complete_at_birth(cgroup, end.born_in_cgroup, join_v1_self) {
        if let Err(failure) = spawn::wait_for_cgroup(channel) {
            return failure;
        }
    }
    let agent = match agent {
        None => None,
        Some((agent, state)) => {
            let pid = spawn::wait_for(channel, "waiting for our pid", |m| match m {
                FromParent::HostPid { pid } => Ok(pid),
                other => Err(other),
            });
            let pid = match pid {
                Ok(pid) => pid,
                Err(failure) => return failure,
            };
            match agent.prepare(Some(pid), &state) {
                Ok(handoff) => Some(handoff),
                Err(e) => return fail("preparing the seccomp agent's message", e),
            }
        }
    };
    if let Err(e) = channel.send(&FromChild::Ready) {
        return fail("syncing", Error::internal(e.to_string()));
    }
    let preserve = RawFd::try_from(opts.preserve_fds).unwrap_or(0);
    if let Err(e) = process::drop_privileges(process, preserve, setgroups_allowed, seccomp, agent) {
        return fail("dropping privileges", e);
    }
    match process::exec(&plan) {
        Ok(()) => fail("exec", Error::internal("exec returned")),
        Err(e) => fail("exec", e),
    }
}

/// The container's cgroup with `--cgroup` choices applied: each
/// `[CONTROLLER[,CONTROLLER...]:]PATH` moves the named controllers (all of
/// them without a prefix) to PATH below the container's cgroup. PATH may not
/// leave it, and must exist.
fn sub_cgroup(base: &cgroups::CgroupState, choices: &[String]) -> Result<cgroups::CgroupState> {
    let mut state = base.clone();
    for choice in choices {
        let (controllers, path) = match choice.split_once(':') {
            Some((c, p)) => (Some(c), p),
            None => (None, choice.as_str()),
        };
        let sub = std::path::Path::new(path);
        if sub
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
        {
            return Err(Error::invalid(format!(
                "--cgroup {choice:?}: {path} is not a sub cgroup path"
            )));
        }
        let relative: PathBuf = sub
            .components()
            .filter(|c| matches!(c, std::path::Component::Normal(_)))
            .collect();
        match (&mut state, controllers) {
            (cgroups::CgroupState::V2 { path: dir }, None) => *dir = dir.join(&relative),
            (cgroups::CgroupState::V2 { .. }, Some(_)) => {
                return Err(Error::invalid(format!(
                    "--cgroup {choice:?}: cgroup v2 has one hierarchy; give the path alone"
                )))
            }
            (cgroups::CgroupState::V1 { paths }, None) => {
                for dir in paths.values_mut() {
                    *dir = dir.join(&relative);
                }
            }
            (cgroups::CgroupState::V1 { paths }, Some(list)) => {
                for name in list.split(',') {
                    let dir = paths.get_mut(name).ok_or_else(|| {
                        Error::invalid(format!("--cgroup {choice:?}: unknown controller {name:?}"))
                    })?;
                    *dir = dir.join(&relative);
                }
            }
        }
    }
    let dirs: Vec<PathBuf> = match &state {
        cgroups::CgroupState::V2 { path } => vec![path.clone()],
        cgroups::CgroupState::V1 { paths } => paths.values().cloned().collect(),
    };
    if let Some(missing) = dirs.iter().find(|d| !d.is_dir()) {
        return Err(Error::invalid(format!(
            "--cgroup: adding pid to {}/cgroup.procs: no such file or directory",
            missing.display()
        )));
    }
    Ok(state)
}
