//! `restore`: bring a container back from `checkpoint` images with CRIU,
//! under a new (or the same) id and the bundle's config, as runc does.
//!
//! berth creates and fills the container's cgroup, then CRIU recreates the
//! processes and their namespaces and mounts. The rootfs, the mount points
//! of the spec's mounts and the temporary mounts CRIU needs are set up in
//! a private mount namespace of this process: none of them can outlive
//! it. CRIU tells us where it stands through notifications: the hooks run
//! once the namespaces exist, the restored pid is saved as the state, and
//! a terminal container's new pty master goes to the console socket.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use oci_spec::runtime::LinuxNamespaceType;

use super::checkpoint::{
    common_opts, external_ns_key, host_mounts, log_path, open_dir, CriuOptions, DESCRIPTORS_FILE,
    MASKED_FILE_KEY,
};
use super::create::{apply_resources, container_cgroup, container_state, RemoveCgroup};
use super::run::Forwarder;
use super::CreateOptions;
use crate::cgroups::CgroupState;
use crate::criu::{rpc, Call, Criu, Notification};
use crate::error::{Context, Error, ErrorKind, Result};
use crate::hooks::{self, HookKind};
use crate::spec::Bundle;
use crate::state::{ContainerDir, ContainerState, StateStore, Status};

/// What `restore` is asked to do.
#[derive(Debug, Default)]
pub struct RestoreOptions {
    /// The id, bundle, pid file and console socket (the rest is unused).
    pub create: CreateOptions,
    pub criu: CriuOptions,
    pub detach: bool,
    /// The LSM profile of the restored processes, and the SELinux mount
    /// context of their mounts, when they must differ from the dumped ones.
    pub lsm_profile: Option<String>,
    pub lsm_mount_context: Option<String>,
}

/// The directory (in the container's state directory) the rootfs is
/// bind-mounted on for CRIU, which needs a mount point as its root.
const CRIU_ROOT: &str = "criu-root";

/// Restore a container; returns its exit status (0 when detached).
pub fn restore(store: &StateStore, criu: &Criu, opts: &RestoreOptions) -> Result<i32> {
    let id = &opts.create.id;
    let bundle = Bundle::load(&opts.create.bundle)?;
    let terminal = bundle
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::invalid("process: missing"))?
        .terminal()
        .unwrap_or(false);
    if terminal && opts.detach && opts.create.console_socket.is_none() {
        return Err(Error::invalid(
            "process.terminal is set: --detach needs a --console-socket to hand the terminal to",
        ));
    }
    // Checked here, before anything is created; opened in the mount
    // namespace CRIU will run in (see `Restore::run`).
    open_dir(&opts.criu.image_path, "--image-path", false)?;
    let descriptors = read_descriptors(&opts.criu.image_path)?;
    criu.require_version()?;
    if opts.criu.lazy_pages {
        criu.require_lazy_pages("--lazy-pages")?;
    }
    let console = match (&opts.create.console_socket, terminal) {
        (Some(path), true) => Some(
            UnixStream::connect(path)
                .with_context(|| format!("connecting to the console socket {}", path.display()))?,
        ),
        _ => None,
    };
    // Before the processes exist, so that no signal meant for them is lost.
    let signals = if opts.detach {
        None
    } else {
        Some(Forwarder::new()?)
    };
    let dir = store.create(id)?;
    let restored = Restore {
        criu,
        opts,
        bundle: &bundle,
        descriptors,
        console,
    }
    .run(&dir);
    let (state, console_master) = match restored {
        Ok(done) => done,
        Err(e) => {
            let _ = dir.remove();
            return Err(e);
        }
    };
    // Let kill, state and delete in other processes see the container.
    drop(dir);
    let Some(signals) = signals else {
        return Ok(0);
    };
    let code = signals.supervise(
        nix::unistd::Pid::from_raw(state.pid),
        console_master.as_ref(),
    );
    // Clean up as delete would; another process may have deleted it already.
    match store.get(id) {
        Ok(dir) => {
            if code.is_err() || !state.own_pid_namespace {
                super::delete::stop(&state)?;
            }
            super::delete::destroy(dir, &state)?;
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    code
}

/// One restore in progress.
struct Restore<'a> {
    criu: &'a Criu,
    opts: &'a RestoreOptions,
    bundle: &'a Bundle,
    descriptors: Vec<String>,
    /// The console socket, for a terminal container's pty master.
    console: Option<UnixStream>,
}

/// What CRIU reported while it restored.
#[derive(Default)]
struct Reported {
    pid: Option<i32>,
    state: Option<ContainerState>,
    console_master: Option<OwnedFd>,
}

impl Restore<'_> {
    /// Restore into the reserved `dir`: the saved state, and the pty
    /// master when we relay the terminal ourselves.
    fn run(self, dir: &ContainerDir) -> Result<(ContainerState, Option<OwnedFd>)> {
        let spec = &self.bundle.spec;
        let id = &self.opts.create.id;
        let cgroup = container_cgroup(spec, id)?;
        let mut remove_cgroup = RemoveCgroup {
            cgroup: cgroup.as_ref(),
            armed: true,
        };
        apply_resources(spec, cgroup.as_ref())?;
        let cgroup_state = cgroup.state();
        enter_private_mount_namespace()?;
        // CRIU works in these directories by their descriptors, so they
        // must be opened in its mount namespace: a directory opened before
        // it was created is in a mount CRIU cannot mount on.
        let images = open_dir(&self.opts.criu.image_path, "--image-path", false)?;
        prepare_mountpoints(self.bundle)?;
        let root = dir.path().join(CRIU_ROOT);
        let _root = RootMount::new(&self.bundle.rootfs, &root)?;
        let namespace_files = self.namespace_files()?;
        let work = match &self.opts.criu.work_path {
            Some(p) => Some(open_dir(p, "--work-path", true)?),
            None => None,
        };
        let request = self.request(
            &root,
            &cgroup_state,
            &namespace_files,
            &images,
            work.as_ref(),
        )?;
        let log = log_path(&self.opts.criu, "restore.log");

        let mut reported = Reported::default();
        let result = self.criu.call(
            Call {
                request,
                inherit: namespace_files.iter().map(|(_, f)| f.as_fd()).collect(),
                stdio: true,
                log: Some(log),
                on_start: Some(Box::new(|criu_pid, request: &mut rpc::Req| {
                    // CRIU restores into the cgroups it is in, mapped by
                    // cg_root: the container's.
                    cgroup.add_task(criu_pid)?;
                    if let CgroupState::V1 { .. } = cgroup_state {
                        let opts = request.opts.get_or_insert_with(Default::default);
                        opts.cg_root = v1_cgroup_roots(criu_pid)?;
                    }
                    Ok(())
                })),
            },
            |note| self.on_notify(note, &mut reported, &cgroup_state),
        );
        let pid = match result {
            Ok(resp) => reported
                .pid
                .or(resp.restore.map(|r| r.pid))
                .ok_or_else(|| Error::internal("criu restored no process"))?,
            Err(e) => {
                // Whatever CRIU restored before it failed goes.
                if let Some(state) = &reported.state {
                    let _ = super::delete::stop(state);
                }
                return Err(e);
            }
        };
        let state = match reported.state.take() {
            Some(state) if state.pid == pid => state,
            _ => container_state(id, self.bundle, pid, cgroup_state)?,
        };
        let saved = dir
            .save(&state)
            .and_then(|()| match &self.opts.create.pid_file {
                Some(pid_file) => crate::state::write_pid_file(pid_file, state.pid),
                None => Ok(()),
            });
        if let Err(e) = saved {
            let _ = super::delete::stop(&state);
            return Err(e);
        }
        remove_cgroup.armed = false;
        Ok((state, reported.console_master))
    }

    /// Open the network and pid namespaces the container joins by path:
    /// CRIU takes them as inherited descriptors.
    fn namespace_files(&self) -> Result<Vec<(&'static str, OwnedFd)>> {
        let mut out = Vec::new();
        for ns in self.bundle.namespaces() {
            let (Some(key), Some(path)) = (external_ns_key(ns.typ()), ns.path()) else {
                continue;
            };
            let fd = nix::fcntl::open(
                path,
                nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| {
                Error::invalid(format!(
                    "linux.namespaces: {} must exist to restore into it: {e}",
                    path.display()
                ))
            })?;
            out.push((key, fd));
        }
        Ok(out)
    }

    fn request(
        &self,
        root: &Path,
        cgroup: &CgroupState,
        namespace_files: &[(&'static str, OwnedFd)],
        images: &OwnedFd,
        work: Option<&OwnedFd>,
    ) -> Result<rpc::Req> {
        let spec = &self.bundle.spec;
        let mut opts = rpc::Opts {
            images_dir_fd: images.as_raw_fd(),
            evasive_devices: Some(true),
            rst_sibling: Some(true),
            root: Some(root.to_string_lossy().into_owned()),
            orphan_pts_master: Some(true),
            lsm_profile: self.opts.lsm_profile.clone(),
            lsm_mount_context: self.opts.lsm_mount_context.clone(),
            ..common_opts(&self.opts.criu, spec, "restore.log", work)
        };
        for m in host_mounts(spec, &self.bundle.rootfs, &self.bundle.dir, cgroup)? {
            opts.ext_mnt.push(rpc::ExtMountMap {
                key: m.dest,
                val: m.source,
            });
        }
        let masks = spec
            .linux()
            .as_ref()
            .and_then(|l| l.masked_paths().as_ref())
            .is_some_and(|m| !m.is_empty());
        if masks {
            opts.ext_mnt.push(rpc::ExtMountMap {
                key: MASKED_FILE_KEY.to_string(),
                val: "/dev/null".to_string(),
            });
        }
        // The container's pipes come back as ours, by identity.
        for (fd, link) in self.descriptors.iter().enumerate() {
            // A pipe on two descriptors (2>&1) is one key: the first wins.
            let seen = opts.inherit_fd.iter().any(|i| &i.key == link);
            if link.starts_with("pipe:") && !seen {
                opts.inherit_fd.push(rpc::InheritFd {
                    key: link.clone(),
                    fd: fd as i32,
                });
            }
        }
        for (key, file) in namespace_files {
            opts.inherit_fd.push(rpc::InheritFd {
                key: (*key).to_string(),
                fd: file.as_raw_fd(),
            });
        }
        for ns in self.bundle.namespaces() {
            let Some(path) = ns.path() else { continue };
            let name = match ns.typ() {
                LinuxNamespaceType::Network | LinuxNamespaceType::Pid => continue,
                LinuxNamespaceType::Ipc => "ipc",
                LinuxNamespaceType::Uts => "uts",
                LinuxNamespaceType::User => "user",
                LinuxNamespaceType::Time => "time",
                other => {
                    return Err(Error::unsupported(format!(
                        "linux.namespaces: criu cannot restore into a {other:?} namespace joined by path ({})",
                        path.display()
                    )))
                }
            };
            opts.join_ns.push(rpc::JoinNamespace {
                ns: name.to_string(),
                ns_file: path.to_string_lossy().into_owned(),
            });
        }
        Ok(rpc::Req {
            r#type: rpc::ReqType::Restore as i32,
            opts: Some(opts),
            ..Default::default()
        })
    }

    fn on_notify(
        &self,
        note: Notification,
        reported: &mut Reported,
        cgroup: &CgroupState,
    ) -> Result<()> {
        match note.script.as_str() {
            // The namespaces exist, the processes do not run yet.
            "setup-namespaces" => {
                let pid = note
                    .pid
                    .ok_or_else(|| Error::internal("criu's setup-namespaces names no pid"))?;
                let state = self.state_for(pid, cgroup)?;
                let oci = serde_json::to_string(&state.oci_state(Status::Creating))
                    .context("encoding the state")?;
                let all = state.spec.hooks().as_ref();
                for kind in [HookKind::Prestart, HookKind::CreateRuntime] {
                    hooks::run_hooks(kind, hooks::hooks_of(all, kind), oci.as_bytes())?;
                }
            }
            "post-restore" => {
                let pid = note
                    .pid
                    .ok_or_else(|| Error::internal("criu's post-restore names no pid"))?;
                reported.pid = Some(pid);
                reported.state = Some(self.state_for(pid, cgroup)?);
            }
            "orphan-pts-master" => {
                let master = note
                    .fd
                    .ok_or_else(|| Error::internal("criu sent no pty master"))?;
                match &self.console {
                    // With a name, as every console socket message has: a
                    // message without data reads as end-of-file.
                    Some(socket) => {
                        let name =
                            std::fs::read_link(format!("/proc/self/fd/{}", master.as_raw_fd()))
                                .map_or_else(
                                    |_| "/dev/ptmx".to_string(),
                                    |p| p.to_string_lossy().into_owned(),
                                );
                        crate::terminal::send_fd(socket.as_fd(), master.as_fd(), &name)
                            .context("sending the terminal to the console socket")?
                    }
                    None => reported.console_master = Some(master),
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn state_for(&self, pid: i32, cgroup: &CgroupState) -> Result<ContainerState> {
        container_state(&self.opts.create.id, self.bundle, pid, cgroup.clone())
    }
}

/// Read the stdio record `checkpoint` left in the image directory.
fn read_descriptors(image_path: &Path) -> Result<Vec<String>> {
    let path = image_path.join(DESCRIPTORS_FILE);
    let text = std::fs::read(&path).map_err(|e| {
        Error::invalid(format!(
            "--image-path {}: not a checkpoint ({}: {e})",
            image_path.display(),
            path.display()
        ))
    })?;
    serde_json::from_slice(&text).map_err(|e| Error::invalid(format!("{}: {e}", path.display())))
}

/// Leave the host's mount namespace for a private copy (receiving the
/// host's later mounts, propagating none back).
fn enter_private_mount_namespace() -> Result<()> {
    unshare(CloneFlags::CLONE_NEWNS).context("creating a mount namespace for the restore")?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .context("making the restore's mounts private")
}

/// The rootfs bind-mounted on CRIU's root directory, undone on drop.
struct RootMount {
    path: PathBuf,
}

impl RootMount {
    fn new(rootfs: &Path, path: &Path) -> Result<Self> {
        std::fs::create_dir(path).with_context(|| format!("creating {}", path.display()))?;
        let guard = Self {
            path: path.to_path_buf(),
        };
        mount(
            Some(rootfs),
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("bind-mounting {} on {}", rootfs.display(), path.display()))?;
        Ok(guard)
    }
}

impl Drop for RootMount {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
        let _ = std::fs::remove_dir(&self.path);
    }
}

/// Create the mount points of the spec's mounts in the rootfs (CRIU mounts
/// on them but does not create them), as `create` would, except under a
/// tmpfs, whose content CRIU restores. Bind mounts are mounted for the
/// while, so the mount points of mounts nested in them are created in
/// their sources, and unmounted before CRIU sees the rootfs.
fn prepare_mountpoints(bundle: &Bundle) -> Result<()> {
    let mut binds = Vec::new();
    let prepared = prepare_mountpoints_in(bundle, &mut binds);
    let resolver = crate::rootfs::path::Resolver::new(&bundle.rootfs)?;
    for dest in binds.iter().rev() {
        if let Ok(target) = resolver.open(dest) {
            let at = format!("/proc/self/fd/{}", target.fd.as_raw_fd());
            if let Err(e) = umount2(at.as_str(), MntFlags::MNT_DETACH) {
                tracing::warn!("unmounting the mount point helper {}: {e}", dest.display());
            }
        }
    }
    prepared
}

fn prepare_mountpoints_in(bundle: &Bundle, binds: &mut Vec<PathBuf>) -> Result<()> {
    let spec = &bundle.spec;
    let mounts = spec.mounts().as_deref().unwrap_or(&[]);
    let tmpfs: Vec<&Path> = mounts
        .iter()
        .filter(|m| m.typ().as_deref() == Some("tmpfs"))
        .map(|m| m.destination().as_path())
        .collect();
    let resolver = crate::rootfs::path::Resolver::new(&bundle.rootfs)?;
    for (i, m) in mounts.iter().enumerate() {
        let dest = m.destination();
        if tmpfs.iter().any(|t| dest != *t && dest.starts_with(t)) {
            continue;
        }
        let shown = || format!("mounts[{i}] ({})", dest.display());
        let is_cgroup = matches!(m.typ().as_deref(), Some("cgroup" | "cgroup2"));
        if is_cgroup {
            continue;
        }
        if !crate::rootfs::mounts::is_bind(m) {
            resolver.mkdir_all(dest).map_err(|e| e.context(shown()))?;
            continue;
        }
        let Some(source) = m.source() else { continue };
        let source = bundle.dir.join(source);
        let target = if source.is_dir() {
            resolver.mkdir_all(dest)
        } else {
            resolver.ensure_file(dest)
        }
        .map_err(|e| e.context(shown()))?;
        let at = PathBuf::from(format!("/proc/self/fd/{}", target.fd.as_raw_fd()));
        mount(
            Some(&source),
            &at,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .with_context(|| format!("{}: bind-mounting {}", shown(), source.display()))?;
        binds.push(dest.clone());
    }
    Ok(())
}

/// The cgroup of each v1 hierarchy process `pid` is in, as CRIU's cgroup
/// roots (controllers, path in the hierarchy).
fn v1_cgroup_roots(pid: i32) -> Result<Vec<rpc::CgroupRoot>> {
    let path = format!("/proc/{pid}/cgroup");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.splitn(3, ':');
            let (_, ctrl, path) = (fields.next()?, fields.next()?, fields.next()?);
            (!ctrl.is_empty()).then(|| rpc::CgroupRoot {
                ctrl: Some(ctrl.to_string()),
                path: path.to_string(),
            })
        })
        .collect())
}
