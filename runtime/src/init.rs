//! The container's init process: what the cloned child does, in its new
//! namespaces, from the clone until it execs the user's program.
//!
//! The sequence (see `channel` for the messages exchanged):
//! 1. (new user namespace) wait for the id mappings, become root inside;
//!    join namespaces given by path; unshare the time namespace; new
//!    session keyring;
//! 2. mounts and devices under the rootfs, while the parent moves us into
//!    our cgroup; if there are hooks: wait for the cgroup, the parent runs
//!    prestart/createRuntime hooks, we run createContainer hooks; pivot_root;
//! 3. hostname, sysctls, read-only and masked paths, read-only root;
//!    terminal; rlimits; cwd; look up the program; wait for the cgroup,
//!    unshare the cgroup namespace; report `Ready`;
//! 4. wait for start (the exec fifo, or a `Start` message for `run`); drop
//!    privileges (bounding set, uid/gid, capabilities, no_new_privs,
//!    seccomp); startContainer hooks; confirm the start; reset signals; exec.

use std::fs::File;
use std::io::Write;
use std::os::fd::{OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{umask, Mode};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroups::CgroupState;
use crate::channel::{Channel, FromChild, FromParent, InitFailure};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind};
use crate::process::{self, ExecPlan};
use crate::rootfs::{self, mounts::MountContext};
use crate::spawn::{failed_at as at, wait_for, wait_for_cgroup};
use crate::spec::Bundle;
use crate::{namespaces, sys};

/// How init learns it may exec the user's program.
#[derive(Debug)]
pub enum StartSignal {
    /// `create`: block opening the exec fifo (an O_PATH fd to it) for
    /// writing until `start` opens it for reading.
    Fifo(OwnedFd),
    /// `run`: a `Start` message on the sync channel.
    Channel,
}

/// Everything init needs, prepared by the parent before the clone.
#[derive(Debug)]
pub struct InitArgs<'a> {
    pub id: &'a str,
    pub bundle: &'a Bundle,
    pub channel: Channel,
    pub start: StartSignal,
    /// The connected console socket, when the process has a terminal.
    pub console: Option<UnixStream>,
    pub cgroup: CgroupState,
    /// Whether we are in our cgroup from the start (born there with
    /// CLONE_INTO_CGROUP, and on v1 or hybrid hosts joined by ourselves);
    /// otherwise the parent says `CgroupJoined`.
    pub born_in_cgroup: bool,
    /// Join the v1 hierarchies ourselves, first thing (see
    /// [`crate::cgroups::join_v1_self`]).
    pub join_v1_self: bool,
    /// Namespaces to join, opened by the parent (pid is already joined).
    pub join: Vec<(LinuxNamespaceType, File)>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    /// Descriptors 3..3+N are passed to the container (`--preserve-fds`).
    pub preserve_fds: RawFd,
    /// Bind mount sources opened by the parent (new user namespace only).
    pub mount_sources: Vec<Option<OwnedFd>>,
    /// The compiled `linux.seccomp` filter, if any.
    pub seccomp: Option<crate::seccomp::Filter>,
    /// The connection to the seccomp agent, when the filter notifies.
    pub agent: Option<crate::seccomp::notify::Agent>,
    /// Stay dumpable until the id mappings are written (unprivileged
    /// parent: it could not write a non-dumpable child's uid_map).
    pub dumpable_until_mapped: bool,
    /// Descriptors of the parent's that the child must close right away.
    pub close: Vec<RawFd>,
}

/// Run init in the freshly cloned child. Never returns: it execs the user's
/// program or exits, reporting failures to the parent over the channel.
pub fn run(args: InitArgs<'_>) -> ! {
    // Until exec, this process is the host's berth binary: not dumpable, so
    // nothing in the container can open it through /proc/PID/exe or ptrace
    // it. exec of the user's program resets the flag.
    if !args.dumpable_until_mapped {
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    // Nothing inherited from the caller reaches a hook either (our own
    // descriptors are close-on-exec already; the preserved ones stay).
    let _ = sys::cloexec_from(3 + args.preserve_fds);
    for fd in &args.close {
        let _ = nix::unistd::close(*fd);
    }
    let channel = &args.channel;
    if args.join_v1_self {
        if let Err(e) = crate::cgroups::join_v1_self(&args.cgroup) {
            let _ = channel.send(&FromChild::Failed(at("joining the cgroup")(e.into())));
            sys::exit_now(1)
        }
    }
    match prepare(&args) {
        Ok(ready) => {
            let _ = channel.send(&FromChild::Ready);
            if let Err(e) = launch(args, ready) {
                // Unless the starter has it, the container's stderr is the
                // only place left to say why.
                if !e.reported {
                    let _ = writeln!(std::io::stderr(), "berth init: {}", e.error);
                }
                sys::exit_now(127);
            }
            sys::exit_now(127)
        }
        Err(failure) => {
            let _ = channel.send(&FromChild::Failed(failure));
            sys::exit_now(1)
        }
    }
}

/// What `prepare` found out for `launch`.
struct Ready {
    plan: ExecPlan,
    state: String,
    setgroups_allowed: bool,
}

/// The state JSON the parent sent, with status "running" (empty stays
/// empty: no hooks or agent need it).
fn running_state(creating: &str) -> String {
    match serde_json::from_str::<crate::state::OciState>(creating) {
        Ok(mut state) => {
            state.status = crate::state::Status::Running;
            serde_json::to_string(&state).unwrap_or_default()
        }
        Err(_) => String::new(),
    }
}

/// Take uid and gid 0 of the new user namespace (when mapped), so files
/// created during setup belong to the container's root.
fn become_root() -> Result<()> {
    let root = nix::unistd::Gid::from_raw(0);
    match nix::unistd::setresgid(root, root, root) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(Error::internal(format!("setresgid 0: {e}"))),
    }
    let root = nix::unistd::Uid::from_raw(0);
    match nix::unistd::setresuid(root, root, root) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(e) => Err(Error::internal(format!("setresuid 0: {e}"))),
    }
}

fn unshare_cgroupns() -> std::result::Result<(), InitFailure> {
    unshare(CloneFlags::CLONE_NEWCGROUP)
        .context("unshare")
        .map_err(at("creating the cgroup namespace"))
}

/// Where init stands with its cgroup. The parent moves it there (v1, or
/// v2 without CLONE_INTO_CGROUP) while init sets up its rootfs: moving a
/// process costs the kernel an RCU grace period. Init only waits for it
/// where it matters: before hooks, before `Ready`, and before it unshares
/// its cgroup namespace (whose root is the cgroup it is in).
struct CgroupGate<'a> {
    channel: &'a Channel,
    joined: bool,
    /// A new cgroup namespace, to unshare once in the cgroup.
    cgroupns: bool,
    unshared: bool,
}

impl<'a> CgroupGate<'a> {
    /// On v2 without CLONE_INTO_CGROUP, a fresh cgroup2 mount would show
    /// the namespace: enter it before the mounts, as when born in place.
    fn new(args: &'a InitArgs<'_>, cgroupns: bool) -> std::result::Result<Self, InitFailure> {
        let mut gate = CgroupGate {
            channel: &args.channel,
            joined: args.born_in_cgroup,
            cgroupns,
            unshared: false,
        };
        if cgroupns && (gate.joined || matches!(args.cgroup, CgroupState::V2 { .. })) {
            gate.enter()?;
        }
        Ok(gate)
    }

    /// Be in the cgroup (and the new cgroup namespace) from here on.
    fn enter(&mut self) -> std::result::Result<(), InitFailure> {
        if !self.joined {
            wait_for_cgroup(self.channel)?;
            self.joined = true;
        }
        if self.cgroupns && !self.unshared {
            unshare_cgroupns()?;
            self.unshared = true;
        }
        Ok(())
    }
}

/// Everything up to `Ready`: the steps, in order.
fn prepare(args: &InitArgs<'_>) -> std::result::Result<Ready, InitFailure> {
    let spec = &args.bundle.spec;
    let proc = spec
        .process()
        .as_ref()
        .ok_or_else(|| at("reading the spec")(Error::invalid("process: missing")))?;
    let namespaces = args.bundle.namespaces();

    let idmapped_rootfs = if namespaces::is_new(namespaces, LinuxNamespaceType::User) {
        wait_for_mappings(args)?
    } else {
        None
    };
    join_namespaces(args)?;
    let setgroups_allowed = process::setgroups_allowed();
    if namespaces::is_new(namespaces, LinuxNamespaceType::Time) {
        let offsets = spec
            .linux()
            .as_ref()
            .and_then(|l| l.time_offsets().as_ref());
        namespaces::new_time_namespace(offsets).map_err(at("creating the time namespace"))?;
    }
    let cgroupns = namespaces::is_new(namespaces, LinuxNamespaceType::Cgroup);
    let mut cgroup = CgroupGate::new(args, cgroupns)?;
    if !args.no_new_keyring {
        join_session_keyring(args.id)?;
    }
    umask(Mode::empty());

    let ctx = MountContext {
        rootfs: &args.bundle.rootfs,
        bundle: &args.bundle.dir,
        cgroup: &args.cgroup,
        cgroupns,
        sources: &args.mount_sources,
    };
    // (create refuses a joined mount namespace: this one is ours.)
    rootfs::prepare(&ctx, spec, idmapped_rootfs).map_err(at("preparing the rootfs"))?;
    let state = hooks_round_trip(args, &mut cgroup)?;
    rootfs::create_cwd(&args.bundle.rootfs, proc.cwd()).map_err(at("preparing the rootfs"))?;
    rootfs::pivot(&args.bundle.rootfs, args.no_pivot).map_err(at("switching to the rootfs"))?;
    set_names(spec, namespaces).map_err(at("setting hostname"))?;
    rootfs::finish(spec).map_err(at("finishing the rootfs"))?;

    match &args.console {
        Some(socket) => {
            process::setup_terminal(socket, proc, true).map_err(at("setting up the terminal"))?
        }
        None => {
            nix::unistd::setsid()
                .context("setsid")
                .map_err(at("starting a session"))?;
        }
    }
    process::set_rlimits(proc).map_err(at("setting process.rlimits"))?;
    process::enter_cwd(proc).map_err(at("entering process.cwd"))?;
    let plan = ExecPlan::new(proc).map_err(at("looking up process.args[0]"))?;
    // Init may only be started once it is in its cgroup.
    cgroup.enter()?;
    Ok(Ready {
        plan,
        state,
        setgroups_allowed,
    })
}

/// In a new user namespace nothing works until the parent has written our
/// id mappings; then we take root in it and turn non-dumpable. Returns the
/// id-mapped rootfs tree the parent may have sent along.
fn wait_for_mappings(args: &InitArgs<'_>) -> std::result::Result<Option<OwnedFd>, InitFailure> {
    let idmapped_rootfs = match args.channel.recv_with_fd::<FromParent>() {
        Ok(Some((FromParent::UsersMapped { .. }, fd))) => fd,
        _ => {
            return Err(at("waiting for the id mappings")(Error::internal(
                "the runtime went away",
            )))
        }
    };
    become_root().map_err(at("becoming root in the user namespace"))?;
    let _ = nix::sys::prctl::set_dumpable(false);
    Ok(idmapped_rootfs)
}

fn join_namespaces(args: &InitArgs<'_>) -> std::result::Result<(), InitFailure> {
    namespaces::join(
        &args.join,
        &[
            // A joined user namespace first: it owns the others.
            LinuxNamespaceType::User,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Time,
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Mount,
        ],
    )
    .map_err(at("joining namespaces"))
}

fn join_session_keyring(id: &str) -> std::result::Result<(), InitFailure> {
    match sys::join_session_keyring(&format!("_ses.{id}")) {
        Ok(()) | Err(Errno::ENOSYS) | Err(Errno::EACCES) | Err(Errno::EPERM) => Ok(()),
        Err(e) => Err(at("joining a new session keyring")(Error::internal(
            e.to_string(),
        ))),
    }
}

/// The hook round trip: prestart and createRuntime hooks in the parent,
/// then our createContainer hooks; returns the state JSON hooks (and a
/// seccomp agent) read. Skipped when there is nothing to run: then
/// everything up to `Ready` overlaps with the parent's cgroup move.
fn hooks_round_trip(
    args: &InitArgs<'_>,
    cgroup: &mut CgroupGate<'_>,
) -> std::result::Result<String, InitFailure> {
    let all_hooks = args.bundle.spec.hooks().as_ref();
    let needs_state = [
        HookKind::Prestart,
        HookKind::CreateRuntime,
        HookKind::CreateContainer,
        HookKind::StartContainer,
    ]
    .iter()
    .any(|k| !hooks::hooks_of(all_hooks, *k).is_empty())
        || args.seccomp.as_ref().is_some_and(|f| f.needs_listener());
    if !needs_state {
        return Ok(String::new());
    }
    // Hooks see the container in its cgroup.
    cgroup.enter()?;
    args.channel
        .send(&FromChild::RunCreateRuntimeHooks)
        .map_err(|e| at("syncing for hooks")(Error::internal(e.to_string())))?;
    let state = wait_for(
        &args.channel,
        "waiting for createRuntime hooks",
        |m| match m {
            FromParent::HooksDone { state } => Ok(state),
            other => Err(other),
        },
    )?;
    // createContainer hooks run in the container's mount namespace with
    // the rootfs as their working directory.
    nix::unistd::chdir(&args.bundle.rootfs)
        .context("entering the rootfs")
        .map_err(at("running createContainer hooks"))?;
    hooks::run_hooks_with_env(
        HookKind::CreateContainer,
        hooks::hooks_of(all_hooks, HookKind::CreateContainer),
        state.as_bytes(),
        process_env(&args.bundle.spec),
    )
    .map_err(|e| at("running createContainer hooks")(e.into()))?;
    Ok(state)
}

/// The container process's environment: what hooks run in the container
/// inherit when they have no `env` of their own.
fn process_env(spec: &Spec) -> &[String] {
    spec.process()
        .as_ref()
        .and_then(|p| p.env().as_deref())
        .unwrap_or_default()
}

/// What init writes to the exec fifo once `start` opened it: this byte
/// when it is about to exec the process, or [`EXEC_FIFO_FAILED`] and
/// why (at most [`EXEC_FIFO_MAX_ERROR`] bytes of text) when it cannot.
pub(crate) const EXEC_FIFO_STARTED: u8 = b'0';
pub(crate) const EXEC_FIFO_FAILED: u8 = b'1';
pub(crate) const EXEC_FIFO_MAX_ERROR: usize = 4000;

/// Why [`launch`] did not exec, and whether the starter (`start` through
/// the exec fifo, `run` over the channel) was told.
struct LaunchError {
    error: Error,
    reported: bool,
}

impl From<Error> for LaunchError {
    fn from(error: Error) -> Self {
        LaunchError {
            error,
            reported: false,
        }
    }
}

/// From `Ready` to exec: wait to be started, then become the user's
/// process; what fails once started goes to the starter.
fn launch(mut args: InitArgs<'_>, ready: Ready) -> std::result::Result<(), LaunchError> {
    let spec = &args.bundle.spec;
    let Some(proc) = spec.process().as_ref() else {
        return Err(Error::invalid("process: missing").into());
    };
    // Wait to be started, then become the process for good; its
    // startContainer hooks run confined like it, before we confirm the
    // start, so they are done by the time `start` returns.
    let state = running_state(&ready.state);
    let start_hooks = hooks::hooks_of(spec.hooks().as_ref(), HookKind::StartContainer);
    let agent = match args.agent.take() {
        Some(agent) => Some(agent.prepare(None, &state)?),
        None => None,
    };
    let confined = || -> Result<()> {
        process::drop_privileges(
            proc,
            args.preserve_fds,
            ready.setgroups_allowed,
            args.seccomp.as_ref(),
            agent,
        )?;
        hooks::run_hooks_with_env(
            HookKind::StartContainer,
            start_hooks,
            state.as_bytes(),
            process_env(spec),
        )?;
        Ok(())
    };
    match &args.start {
        StartSignal::Fifo(path_fd) => {
            use std::os::fd::AsRawFd;
            let mut fifo = File::options()
                .write(true)
                .open(format!("/proc/self/fd/{}", path_fd.as_raw_fd()))
                .context("opening the exec fifo")?;
            if let Err(error) = confined() {
                // `start` reports why, in place of the start byte (one
                // write below PIPE_BUF: it arrives whole).
                let mut why = vec![EXEC_FIFO_FAILED];
                why.extend(error.to_string().bytes().take(EXEC_FIFO_MAX_ERROR));
                let reported = fifo.write_all(&why).is_ok();
                return Err(LaunchError { error, reported });
            }
            fifo.write_all(&[EXEC_FIFO_STARTED])
                .context("writing the exec fifo")?;
        }
        StartSignal::Channel => {
            match args.channel.recv::<FromParent>() {
                Ok(Some(FromParent::Start)) => {}
                _ => return Err(Error::internal("the runtime did not start the container").into()),
            }
            if let Err(error) = confined() {
                let failure = InitFailure {
                    stage: "starting the container".to_string(),
                    errno: None,
                    message: error.to_string(),
                };
                let reported = args.channel.send(&FromChild::Failed(failure)).is_ok();
                return Err(LaunchError { error, reported });
            }
            args.channel
                .send(&FromChild::Started)
                .context("confirming the start")?;
        }
    }
    drop(args.channel);
    Ok(process::exec(&ready.plan)?)
}

fn set_names(spec: &Spec, namespaces: &[oci_spec::runtime::LinuxNamespace]) -> Result<()> {
    if !namespaces::is_new(namespaces, LinuxNamespaceType::Uts) {
        return Ok(());
    }
    if let Some(name) = spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        nix::unistd::sethostname(name).with_context(|| format!("hostname {name:?}"))?;
    }
    if let Some(name) = spec.domainname().as_deref().filter(|h| !h.is_empty()) {
        sys::set_domainname(name).with_context(|| format!("domainname {name:?}"))?;
    }
    Ok(())
}
