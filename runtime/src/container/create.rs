//! `create`: validate, reserve the id, build the cgroup, clone init into its
//! namespaces and drive it until it waits to be started.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;

use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::LinuxNamespaceType;

use crate::cgroups::{self, CgroupManager};
use crate::channel::{self, Channel, FromChild, FromParent};
use crate::error::{Context, Error, Result};
use crate::hooks::{self, HookKind};
use crate::init::{self, InitArgs, StartSignal};
use crate::process_info::ProcessInfo;
use crate::seccomp::notify::Agent;
use crate::spec::Bundle;
use crate::state::{now_rfc3339, ContainerDir, ContainerState, StateStore, Status};
use crate::{namespaces, sys, terminal, userns};

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

/// Undoes a half-done create: kills and reaps init, removes the cgroup (the
/// state directory is removed by `create`). Disarmed once the container is
/// complete.
struct Cleanup<'a> {
    child: Option<Pid>,
    cgroup: Option<&'a dyn CgroupManager>,
    armed: bool,
}

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(pid) = self.child {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup {
            if let Err(e) = cg.destroy() {
                tracing::warn!("cleaning up the cgroup: {e}");
            }
        }
    }
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
    if opts.preserve_fds > MAX_PRESERVED_FDS {
        return Err(Error::invalid(format!(
            "--preserve-fds {}: at most {MAX_PRESERVED_FDS}",
            opts.preserve_fds
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

    let cgroups_path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.to_string_lossy().into_owned());
    let cgroup = container_cgroup(spec, cgroups_path.as_deref(), &opts.id)?;
    let unified = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.unified().as_ref())
        .is_some_and(|u| !u.is_empty());
    if unified && matches!(cgroup.state(), cgroups::CgroupState::V1 { .. }) {
        let _ = cgroup.destroy();
        return Err(Error::invalid(
            "invalid configuration: linux.resources.unified needs cgroup v2, and this host's cgroups are v1",
        ));
    }
    let mut cleanup = Cleanup {
        child: None,
        cgroup: Some(cgroup.as_ref()),
        armed: true,
    };
    if !is_unmanaged(&cgroup.state()) {
        let present = cgroup.pids().map(|p| p.len()).unwrap_or(0);
        if present > 0 {
            tracing::warn!("container's cgroup is not empty: {present} process(es) already in it");
        }
        // Device rules are always applied at create (deny all but the
        // spec's and the default devices), even without a resources section.
        let mut resources = spec
            .linux()
            .as_ref()
            .and_then(|l| l.resources().clone())
            .unwrap_or_default();
        if resources.devices().is_none() {
            resources.set_devices(Some(Vec::new()));
        }
        cgroup.apply(&resources)?;
    }

    let join = namespaces::open_paths(ns)?;
    // Init is born in a joined pid namespace; our hooks are not.
    let pid_for_children = match join.iter().find(|(t, _)| *t == LinuxNamespaceType::Pid) {
        Some((_, pidns)) => Some(namespaces::ChildrenInPidNamespace::enter(pidns)?),
        None => None,
    };
    // In a new user namespace, init may not reach bind sources the caller
    // can: open them here and hand them over.
    let mount_sources = if namespaces::is_new(ns, LinuxNamespaceType::User) {
        crate::rootfs::mounts::open_bind_sources(
            spec.mounts().as_deref().unwrap_or(&[]),
            &bundle.dir,
            userns::mappings(spec),
        )?
    } else {
        Vec::new()
    };
    let (parent_end, child_end) = channel::pair().context("creating the sync channel")?;
    let start = match launch {
        Launch::Later => {
            let fifo = dir.exec_fifo();
            nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o622))
                .with_context(|| format!("creating {}", fifo.display()))?;
            let fd = nix::fcntl::open(&fifo, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
                .with_context(|| format!("opening {}", fifo.display()))?;
            StartSignal::Fifo(fd)
        }
        Launch::Now => StartSignal::Channel,
    };

    let flags = namespaces::clone_flags(ns);
    let into_cgroup = cgroup.clone_into_fd();
    let mut close: Vec<RawFd> = vec![dir.lock_fd(), parent_end.as_fd().as_raw_fd()];
    close.extend(into_cgroup.as_ref().map(|f| f.as_raw_fd()));
    // Not dumpable from the clone on: nothing that shares a namespace with
    // init can reach the host binary through /proc/PID/exe or ptrace. Not
    // when unprivileged with a new user namespace: we must write init's
    // uid_map, which a non-dumpable init's /proc hands to root (init turns
    // itself non-dumpable once mapped).
    let rootless_userns = sys::geteuid() != 0 && namespaces::is_new(ns, LinuxNamespaceType::User);
    if !rootless_userns {
        let _ = nix::sys::prctl::set_dumpable(false);
    }
    let (fork, born_in_cgroup) =
        sys::clone_fork(flags.bits(), into_cgroup.as_ref().map(|f| f.as_fd()))
            .context("cloning the container's init")?;
    let child = match fork {
        sys::CloneResult::Child => {
            init::run(InitArgs {
                id: &opts.id,
                bundle,
                channel: child_end,
                start,
                console,
                cgroup: cgroup.state(),
                born_in_cgroup,
                join,
                no_pivot: opts.no_pivot,
                no_new_keyring: opts.no_new_keyring,
                preserve_fds: opts.preserve_fds as RawFd,
                seccomp,
                agent,
                mount_sources,
                dumpable_until_mapped: rootless_userns,
                close,
            });
        }
        sys::CloneResult::Parent(pid) => pid,
    };
    cleanup.child = Some(child);
    drop(pid_for_children);
    drop(child_end);
    drop(start);
    drop(console);
    drop(agent);
    drop(into_cgroup);

    if namespaces::is_new(ns, LinuxNamespaceType::User) {
        let (uids, gids) = userns::mappings(spec);
        userns::write_mappings(child.as_raw(), uids, gids)?;
        let message = |idmapped_rootfs| FromParent::UsersMapped { idmapped_rootfs };
        match userns::idmapped_rootfs(child.as_raw(), &bundle.rootfs, uids)? {
            Some(tree) => parent_end.send_with_fd(&message(true), tree.as_fd()),
            None => parent_end.send(&message(false)),
        }
        .context("talking to the container's init")?;
    }
    if let Some(process) = spec.process().as_ref() {
        crate::process::set_oom_score_adj(child, process)?;
    }
    if !born_in_cgroup {
        cgroup.add_task(child.as_raw())?;
    }
    let start_time = ProcessInfo::read(child.as_raw())
        .map(|p| p.start_time)
        .ok_or_else(|| Error::internal("the container's init vanished"))?;
    let state = ContainerState {
        id: opts.id.clone(),
        bundle: bundle.dir.clone(),
        rootfs: bundle.rootfs.clone(),
        pid: child.as_raw(),
        pid_start_time: start_time,
        created: now_rfc3339(),
        owner: String::new(),
        cgroup: cgroup.state(),
        spec: spec.clone(),
        own_pid_namespace: namespaces::is_new(ns, LinuxNamespaceType::Pid),
    };
    drive_init(&parent_end, &state, child, born_in_cgroup)?;
    let console_master = match console_peer {
        Some(peer) => Some(receive_console(&peer)?),
        None => None,
    };

    dir.save(&state)?;
    if let Some(pid_file) = &opts.pid_file {
        crate::state::write_pid_file(pid_file, child.as_raw())?;
    }
    cleanup.armed = false;
    let channel = (launch == Launch::Now).then_some(parent_end);
    Ok((state, channel, console_master))
}

/// Follow init through its setup, running the hooks that belong to us.
fn drive_init(
    channel: &Channel,
    state: &ContainerState,
    child: Pid,
    born_in_cgroup: bool,
) -> Result<()> {
    if !born_in_cgroup {
        // If init already failed, its report is what matters: it is read
        // below, so a failed send is not an error here.
        let _ = channel.send(&FromParent::CgroupJoined);
    }
    loop {
        match channel
            .recv::<FromChild>()
            .context("talking to the container's init")?
        {
            Some(FromChild::RunCreateRuntimeHooks) => {
                let oci = serde_json::to_string(&state.oci_state(Status::Creating))
                    .context("encoding the state")?;
                let all = state.spec.hooks().as_ref();
                hooks::run_hooks(
                    HookKind::Prestart,
                    hooks::hooks_of(all, HookKind::Prestart),
                    oci.as_bytes(),
                )?;
                hooks::run_hooks(
                    HookKind::CreateRuntime,
                    hooks::hooks_of(all, HookKind::CreateRuntime),
                    oci.as_bytes(),
                )?;
                channel
                    .send(&FromParent::HooksDone { state: oci })
                    .context("talking to the container's init")?;
            }
            Some(FromChild::Ready) => return Ok(()),
            Some(FromChild::Started) => {
                return Err(Error::internal(
                    "container init: out-of-order start confirmation",
                ))
            }
            Some(FromChild::Failed(failure)) => {
                return Err(Error::internal(format!("container init failed: {failure}")))
            }
            None => {
                // Peek only: the cleanup guard reaps it, and must not kill
                // a pid that was already reaped (and maybe reused).
                let status = nix::sys::wait::waitid(
                    nix::sys::wait::Id::Pid(child),
                    nix::sys::wait::WaitPidFlag::WEXITED | nix::sys::wait::WaitPidFlag::WNOWAIT,
                )
                .map(|s| format!("{s:?}"))
                .unwrap_or_default();
                return Err(Error::internal(format!(
                    "container init exited during setup ({status})"
                )));
            }
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
fn container_cgroup(
    spec: &oci_spec::runtime::Spec,
    cgroups_path: Option<&str>,
    id: &str,
) -> Result<Box<dyn CgroupManager>> {
    let manager = cgroups::new_manager(cgroups_path, id)?;
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
