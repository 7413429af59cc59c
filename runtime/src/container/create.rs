//! `create`: validate, reserve the id, build the cgroup, clone init into its
//! namespaces and drive it until it waits to be started.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use oci_spec::runtime::LinuxNamespaceType;

use crate::cgroups::{self, CgroupManager};
use crate::channel::{Channel, FromChild, FromParent};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind};
use crate::init::{self, InitArgs, StartSignal};
use crate::process_info::ProcessInfo;
use crate::seccomp::notify::Agent;
use crate::spec::Bundle;
use crate::state::{now_rfc3339, ContainerDir, ContainerState, StateStore, Status};
use crate::{namespaces, spawn, sys, terminal, userns};

/// What `create` and `run` are asked to do.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: u32,
    /// Descriptors from 3 up that systemd's socket activation handed the
    /// caller ([`socket_activation_fds`]): passed on first, before the
    /// `preserve_fds`, with `LISTEN_FDS` and `LISTEN_PID=1` set for the
    /// container's process, as runc does.
    pub listen_fds: u32,
}

/// How many descriptors systemd's socket activation passed to this
/// process: `LISTEN_FDS` when `LISTEN_PID` names us, else 0.
pub fn socket_activation_fds() -> u32 {
    let var = |name| std::env::var(name).ok().and_then(|v| v.parse::<u32>().ok());
    match (var("LISTEN_PID"), var("LISTEN_FDS")) {
        (Some(pid), Some(n)) if pid == std::process::id() => n,
        _ => 0,
    }
}

/// The most descriptors `--preserve-fds` may pass on.
pub(crate) const MAX_PRESERVED_FDS: u32 = 1 << 16;

/// How the new container will be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launch {
    /// By a later `start` (through the exec fifo).
    Later,
    /// By this same process, through the sync channel (`run`).
    Now,
}

/// A container whose init waits to be started.
#[derive(Debug)]
pub struct Created {
    pub dir: ContainerDir,
    pub state: ContainerState,
    /// The sync channel, still open for `Launch::Now`.
    pub channel: Option<Channel>,
    /// The console's master end, when this process allocated the terminal
    /// itself (`run` in the foreground without `--console-socket`).
    pub console_master: Option<OwnedFd>,
}

/// Create the container: on success init is waiting to be started, and its
/// state is saved as "created".
pub fn create(store: &StateStore, opts: &CreateOptions, launch: Launch) -> Result<Created> {
    // Everything that can be checked without side effects comes first.
    let bundle = Bundle::load(&opts.bundle)?;
    let spec = &bundle.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::invalid("process: missing"))?;
    let ns = bundle.namespaces();
    // The rootfs is set up in a mount namespace of the container's own; a
    // joined one (by path) would leave its mounts undone and let exec'd
    // processes land outside the rootfs.
    if !namespaces::is_new(ns, LinuxNamespaceType::Mount) {
        return Err(Error::invalid(format!(
            "{}: linux.namespaces: berth needs a new mount namespace (joining one by path is not supported)",
            bundle.dir.join("config.json").display()
        )));
    }
    if opts.preserve_fds.saturating_add(opts.listen_fds) > MAX_PRESERVED_FDS {
        return Err(Error::invalid(format!(
            "--preserve-fds {} (and LISTEN_FDS {}): at most {MAX_PRESERVED_FDS} in all",
            opts.preserve_fds, opts.listen_fds
        )));
    }
    let terminal = process.terminal().unwrap_or(false);
    if terminal && opts.console_socket.is_none() && launch == Launch::Later {
        return Err(Error::invalid(
            "process.terminal is set: a --console-socket is needed to receive the terminal",
        ));
    }

    let seccomp = compile_seccomp(spec)?;
    let dir = store.create(&opts.id)?;
    match create_in(&dir, &bundle, opts, launch, terminal, seccomp) {
        Ok((state, channel, console_master)) => Ok(Created {
            dir,
            state,
            channel,
            console_master,
        }),
        Err(e) => {
            let _ = dir.remove();
            Err(e)
        }
    }
}

type CreateParts = (ContainerState, Option<Channel>, Option<OwnedFd>);

fn create_in(
    dir: &ContainerDir,
    bundle: &Bundle,
    opts: &CreateOptions,
    launch: Launch,
    terminal: bool,
    seccomp: Option<crate::seccomp::Filter>,
) -> Result<CreateParts> {
    let spec = &bundle.spec;
    let ns = bundle.namespaces();

    let (console, console_peer) = terminal::connect(opts.console_socket.as_deref(), terminal)?;
    // Before the clone: init inherits the connection (see seccomp::notify).
    let agent = Agent::connect(seccomp.as_ref())?;
    let cgroup = container_cgroup(spec, &opts.id)?;
    // Declared before init: on failure, init is killed first, then this
    // removes the cgroup it was in.
    let mut remove_cgroup = RemoveCgroup {
        cgroup: cgroup.as_ref(),
        armed: true,
    };
    apply_resources(spec, cgroup.as_ref())?;

    let new_userns = namespaces::is_new(ns, LinuxNamespaceType::User);
    // In a new user namespace, init may not reach bind sources the caller
    // can: open them here and hand them over. (Before entering a joined
    // pid namespace: the helper processes cloned for id-mapped mounts must
    // not be born there.)
    let mount_sources = if new_userns {
        crate::rootfs::mounts::open_bind_sources(
            spec.mounts().as_deref().unwrap_or(&[]),
            &bundle.dir,
            userns::mappings(spec),
        )?
    } else {
        Vec::new()
    };
    let join = namespaces::open_paths(ns)?;
    // Init is born in a joined pid namespace; our hooks are not.
    let pid_for_children = match join.iter().find(|(t, _)| *t == LinuxNamespaceType::Pid) {
        Some((_, pidns)) => Some(namespaces::ChildrenInPidNamespace::enter(pidns)?),
        None => None,
    };
    let start = start_signal(dir, launch, fifo_owner(bundle, new_userns))?;
    // Init's process gets the socket-activation variables; the saved spec
    // (which exec'd processes start from) does not.
    let activated;
    let init_bundle = if opts.listen_fds > 0 {
        activated = with_listen_env(bundle, opts.listen_fds);
        &activated
    } else {
        bundle
    };
    let into_cgroup = cgroup.clone_into_fd();
    let mut close: Vec<RawFd> = vec![dir.lock_fd()];
    close.extend(into_cgroup.as_ref().map(|f| f.as_raw_fd()));
    // Unprivileged with a new user namespace, we must write init's uid_map,
    // which a non-dumpable init's /proc hands to root: init turns itself
    // non-dumpable once mapped.
    let rootless_userns = sys::geteuid() != 0 && new_userns;
    let cgroup_state = cgroup.state();
    let join_v1_self = cgroups::child_joins_v1(&cgroup_state, new_userns);
    let init = spawn::spawn(
        spawn::CloneArgs {
            role: spawn::Role::Init,
            flags: namespaces::clone_flags(ns).bits(),
            cgroup: into_cgroup.as_ref().map(|f| f.as_fd()),
            non_dumpable: !rootless_userns,
        },
        move |end| {
            init::run(InitArgs {
                id: &opts.id,
                bundle: init_bundle,
                channel: end.channel,
                start,
                console,
                born_in_cgroup: cgroups::complete_at_birth(
                    &cgroup_state,
                    end.born_in_cgroup,
                    join_v1_self,
                ),
                join_v1_self,
                cgroup: cgroup_state,
                join,
                no_pivot: opts.no_pivot,
                no_new_keyring: opts.no_new_keyring,
                preserve_fds: (opts.listen_fds + opts.preserve_fds) as RawFd,
                seccomp,
                agent,
                mount_sources,
                dumpable_until_mapped: rootless_userns,
                close,
            })
        },
    )?;
    drop(pid_for_children);
    drop(into_cgroup);

    if new_userns {
        map_users(&init, bundle)?;
    }
    if let Some(process) = spec.process().as_ref() {
        crate::process::set_oom_score_adj(init.pid(), process)?;
    }
    init.join_cgroup(cgroup.as_ref(), join_v1_self)?;
    let state = container_state(&opts.id, bundle, init.pid().as_raw(), cgroup.state())?;
    drive_init(&init, &state)?;
    let console_master = match console_peer {
        Some(peer) => Some(receive_console(&peer)?),
        None => None,
    };

    dir.save(&state)?;
    if let Some(pid_file) = &opts.pid_file {
        crate::state::write_pid_file(pid_file, state.pid)?;
    }
    let (_, channel) = init.disarm();
    remove_cgroup.armed = false;
    let channel = (launch == Launch::Now).then_some(channel);
    Ok((state, channel, console_master))
}

/// `bundle` with `LISTEN_FDS=n` and `LISTEN_PID=1` in its process's env
/// (replacing any there): the container's process is pid 1 of its own pid
/// namespace, or at least the one the descriptors are meant for.
fn with_listen_env(bundle: &Bundle, n: u32) -> Bundle {
    let mut bundle = bundle.clone();
    if let Some(process) = bundle.spec.process_mut() {
        let mut env = process.env().clone().unwrap_or_default();
        env.retain(|e| !e.starts_with("LISTEN_FDS=") && !e.starts_with("LISTEN_PID="));
        env.push(format!("LISTEN_FDS={n}"));
        env.push("LISTEN_PID=1".to_string());
        process.set_env(Some(env));
    }
    bundle
}

/// Removes the container's cgroup when a create fails half-way (the state
/// directory is removed by `create`, init is killed by its
/// [`spawn::Spawned`]). Disarmed once the container is complete.
pub(super) struct RemoveCgroup<'a> {
    pub(super) cgroup: &'a dyn CgroupManager,
    pub(super) armed: bool,
}

impl Drop for RemoveCgroup<'_> {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.cgroup.destroy() {
                tracing::warn!("cleaning up the cgroup: {e}");
            }
        }
    }
}

/// Apply the spec's resources to a cgroup of our own. Device rules are
/// always applied at create (deny all but the spec's and the default
/// devices), even without a resources section.
pub(super) fn apply_resources(
    spec: &oci_spec::runtime::Spec,
    cgroup: &dyn CgroupManager,
) -> Result<()> {
    let unified = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.unified().as_ref())
        .is_some_and(|u| !u.is_empty());
    if unified && matches!(cgroup.state(), cgroups::CgroupState::V1 { .. }) {
        return Err(Error::invalid(
            "invalid configuration: linux.resources.unified needs cgroup v2, and this host's cgroups are v1",
        ));
    }
    if is_unmanaged(&cgroup.state()) {
        return Ok(());
    }
    let present = cgroup.pids().map(|p| p.len()).unwrap_or(0);
    if present > 0 {
        tracing::warn!("container's cgroup is not empty: {present} process(es) already in it");
    }
    let mut resources = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().clone())
        .unwrap_or_default();
    if resources.devices().is_none() {
        resources.set_devices(Some(Vec::new()));
    }
    cgroup.apply(&resources)?;
    Ok(())
}

/// Who must open the exec fifo for writing: init, as the container's
/// root, which a new user namespace maps to another host id (`None`:
/// root, which may anyway).
fn fifo_owner(bundle: &Bundle, new_userns: bool) -> Option<(u32, u32)> {
    if !new_userns {
        return None;
    }
    let (uids, gids) = userns::mappings(&bundle.spec);
    Some((userns::host_id(uids, 0)?, userns::host_id(gids, 0)?))
}

/// How init will learn it may start: the exec fifo `start` opens
/// (`create`), or a message on the channel (`run`).
fn start_signal(
    dir: &ContainerDir,
    launch: Launch,
    owner: Option<(u32, u32)>,
) -> Result<StartSignal> {
    match launch {
        Launch::Later => {
            let fifo = dir.exec_fifo();
            nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622))
                .with_context(|| format!("creating {}", fifo.display()))?;
            // Owned by the container's root, as runc makes it: init opens
            // it as that user, whatever our umask left of the mode.
            if let Some((uid, gid)) = owner {
                std::os::unix::fs::chown(&fifo, Some(uid), Some(gid))
                    .with_context(|| format!("chown {} to {uid}:{gid}", fifo.display()))?;
            }
            let fd = nix::fcntl::open(&fifo, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .with_context(|| format!("opening {}", fifo.display()))?;
            Ok(StartSignal::Fifo(fd))
        }
        Launch::Now => Ok(StartSignal::Channel),
    }
}

/// Write the id mappings of init's new user namespace and tell it, sending
/// along an id-mapped rootfs tree when one is needed.
fn map_users(init: &spawn::Spawned, bundle: &Bundle) -> Result<()> {
    let (uids, gids) = userns::mappings(&bundle.spec);
    let pid = init.pid().as_raw();
    userns::write_mappings(pid, uids, gids)?;
    let message = |idmapped_rootfs| FromParent::UsersMapped { idmapped_rootfs };
    match userns::idmapped_rootfs(pid, &bundle.rootfs, uids)? {
        Some(tree) => init.channel().send_with_fd(&message(true), tree.as_fd()),
        None => init.channel().send(&message(false)),
    }
    .context("talking to the container's init")
}

/// The state to save once init (`pid`) is ready.
pub(super) fn container_state(
    id: &str,
    bundle: &Bundle,
    pid: i32,
    cgroup: cgroups::CgroupState,
) -> Result<ContainerState> {
    let start_time = ProcessInfo::read(pid)
        .map(|p| p.start_time)
        .ok_or_else(|| Error::internal("the container's init vanished"))?;
    Ok(ContainerState {
        id: id.to_string(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        pid,
        pid_start_time: start_time,
        created: now_rfc3339(),
        owner: String::new(),
        cgroup,
        spec: bundle.spec.clone(),
        own_pid_namespace: namespaces::is_new(bundle.namespaces(), LinuxNamespaceType::Pid),
    })
}

/// Follow init through its setup until it is `Ready`, running the hooks
/// that belong to us.
fn drive_init(init: &spawn::Spawned, state: &ContainerState) -> Result<()> {
    loop {
        match init.next()? {
            Some(FromChild::RunCreateRuntimeHooks) => {
                let oci = serde_json::to_string(&state.oci_state(Status::Creating))
                    .context("encoding the state")?;
                let all = state.spec.hooks().as_ref();
                for kind in [HookKind::Prestart, HookKind::CreateRuntime] {
                    hooks::run_hooks(kind, hooks::hooks_of(all, kind), oci.as_bytes())?;
                }
                init.send(&FromParent::HooksDone { state: oci })?;
            }
            Some(FromChild::Ready) => return Ok(()),
            Some(FromChild::Started | FromChild::Failed(_)) => {
                return Err(Error::internal(
                    "container init: out-of-order start confirmation",
                ))
            }
            None => return Err(init.died()),
        }
    }
}

/// Receive the pty master init sent over our console socketpair.
fn receive_console(peer: &UnixStream) -> Result<OwnedFd> {
    terminal::recv_fd(peer).context("receiving the terminal from init")
}

/// The container's cgroup, created. Without root, where the hierarchy is
/// not writable (rootless berth on cgroup v1, or v2 without delegation),
/// a container that asks for no resource limits runs without a cgroup of
/// its own, as runc's rootless mode does.
pub(super) fn container_cgroup(
    spec: &oci_spec::runtime::Spec,
    id: &str,
) -> Result<Box<dyn CgroupManager>> {
    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    let manager = cgroups::new_manager(cgroups_path.as_deref(), id)?;
    // A cgroup someone else froze is left alone (not even cleaned up).
    if manager.is_frozen().unwrap_or(false) {
        return Err(Error::precondition(
            "container's cgroup unexpectedly frozen (it exists already and is frozen; thaw it first)",
        ));
    }
    let attempt = manager.create().map(|()| manager);
    match attempt {
        Ok(m) => Ok(m),
        Err(e) if sys::geteuid() != 0 && is_permission_error(&e) && !limits_requested(spec) => {
            tracing::debug!("running without a cgroup: {e}");
            Ok(cgroups::from_state(&cgroups::CgroupState::V1 {
                paths: Default::default(),
            }))
        }
        Err(e) => Err(e.into()),
    }
}

fn is_permission_error(e: &cgroups::Error) -> bool {
    e.io_error().is_some_and(|io| {
        matches!(
            io.kind(),
            std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem
        )
    })
}

/// Whether the spec sets any resource limit (device rules aside).
fn limits_requested(spec: &oci_spec::runtime::Spec) -> bool {
    let Some(r) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) else {
        return false;
    };
    r.memory().is_some()
        || r.cpu().is_some()
        || r.pids().is_some()
        || r.block_io().is_some()
        || r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty())
        || r.network().is_some()
        || r.unified().as_ref().is_some_and(|u| !u.is_empty())
}

/// A container without a cgroup of its own (see [`container_cgroup`]).
pub(crate) fn is_unmanaged(state: &cgroups::CgroupState) -> bool {
    matches!(state, cgroups::CgroupState::V1 { paths } if paths.is_empty())
}

/// Compile `linux.seccomp`, before any side effect.
pub(crate) fn compile_seccomp(
    spec: &oci_spec::runtime::Spec,
) -> Result<Option<crate::seccomp::Filter>> {
    spec.linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .map(crate::seccomp::compile)
        .transpose()
        .map_err(Error::from)
}
