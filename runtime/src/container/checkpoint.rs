//! `checkpoint`: save a running container's processes to image files with
//! CRIU, then (unless asked to leave it running) remove the container, as
//! runc does. The images are runc's: `restore` in berth or runc reads them.
//!
//! What the spec mounted from the host (bind mounts, the v1 cgroup
//! hierarchies, masked files) is not saved: CRIU records each as an
//! external mount under a key, and `restore` maps the keys back to host
//! paths. The container's stdio is recorded in `descriptors.json`, so a
//! restore can hand pipes back by identity.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::cgroups::CgroupState;
use crate::criu::{rpc, Criu, Notification};
use crate::error::{Context, Error, Result};
use crate::state::{ContainerState, StateStore, Status};

/// The file in the image directory naming the container's stdio (a JSON
/// list of the link targets of init's descriptors 0, 1 and 2).
pub const DESCRIPTORS_FILE: &str = "descriptors.json";

/// Options `checkpoint` and `restore` share.
#[derive(Debug, Clone, Default)]
pub struct CriuOptions {
    /// Where the images are (default: `./checkpoint`).
    pub image_path: PathBuf,
    /// Where CRIU writes its log and work files (default: the image path).
    pub work_path: Option<PathBuf>,
    pub tcp_established: bool,
    pub ext_unix_sk: bool,
    pub shell_job: bool,
    pub file_locks: bool,
    pub lazy_pages: bool,
    pub auto_dedup: bool,
    pub manage_cgroups_mode: Option<rpc::CgroupMode>,
    /// Namespaces (clone flags) CRIU creates empty instead of restoring;
    /// the network namespace always is, berth manages no network devices.
    pub empty_ns: u32,
}

/// What `checkpoint` is asked to do.
#[derive(Debug, Default)]
pub struct CheckpointOptions {
    pub criu: CriuOptions,
    /// Images of an earlier `--pre-dump`, relative to the image path.
    pub parent_path: Option<PathBuf>,
    pub leave_running: bool,
    /// Save memory only and leave the container running.
    pub pre_dump: bool,
    /// `ADDRESS:PORT` of a CRIU page server to send the memory to.
    pub page_server: Option<(String, i32)>,
    /// Gets one NUL byte once the lazy page server is ready.
    pub status_fd: Option<OwnedFd>,
}

/// Parse `--manage-cgroups-mode`.
pub fn parse_cgroup_mode(mode: &str) -> Result<rpc::CgroupMode> {
    match mode {
        "soft" => Ok(rpc::CgroupMode::Soft),
        "full" => Ok(rpc::CgroupMode::Full),
        "strict" => Ok(rpc::CgroupMode::Strict),
        other => Err(Error::invalid(format!(
            "--manage-cgroups-mode {other:?}: expected soft, full or strict"
        ))),
    }
}

/// Parse the `--empty-ns` names into clone flags (the network namespace
/// is always included).
pub fn parse_empty_ns(names: &[String]) -> Result<u32> {
    let mut mask = libc::CLONE_NEWNET as u32;
    for name in names {
        match name.as_str() {
            "network" => mask |= libc::CLONE_NEWNET as u32,
            other => {
                return Err(Error::invalid(format!(
                    "--empty-ns {other:?}: only \"network\" is supported"
                )))
            }
        }
    }
    Ok(mask)
}

/// Parse `--page-server ADDRESS:PORT`.
pub fn parse_page_server(value: &str) -> Result<(String, i32)> {
    let bad = || Error::invalid(format!("--page-server {value:?}: expected ADDRESS:PORT"));
    let (address, port) = value.rsplit_once(':').ok_or_else(bad)?;
    let address = address.trim_start_matches('[').trim_end_matches(']');
    let port: u16 = port.parse().map_err(|_| bad())?;
    if address.is_empty() || port == 0 {
        return Err(bad());
    }
    Ok((address.to_string(), i32::from(port)))
}

/// Checkpoint container `id`.
pub fn checkpoint(
    store: &StateStore,
    id: &str,
    criu: &Criu,
    opts: &CheckpointOptions,
) -> Result<()> {
    // Argument errors first, before anything is created.
    if let Some(parent) = &opts.parent_path {
        check_parent_path(&opts.criu.image_path, parent)?;
    }
    if let Some(fd) = &opts.status_fd {
        check_status_fd(fd.as_fd())?;
    }
    let loaded = super::load(store, id)?;
    if !matches!(loaded.status, Status::Running | Status::Paused) {
        return Err(Error::precondition(format!(
            "container {id:?} cannot be checkpointed: it is {}",
            loaded.status
        )));
    }
    criu.require_version()?;
    if opts.pre_dump {
        criu.require_memory_tracking("--pre-dump")?;
    }
    if opts.criu.lazy_pages {
        criu.require_lazy_pages("--lazy-pages")?;
    }
    let state = &loaded.state;
    let images = open_dir(&opts.criu.image_path, "--image-path", true)?;
    let work = match &opts.criu.work_path {
        Some(p) => Some(open_dir(p, "--work-path", true)?),
        None => None,
    };
    let log_name = if opts.pre_dump {
        "pre-dump.log"
    } else {
        "dump.log"
    };
    let mut request = rpc::Req {
        r#type: if opts.pre_dump {
            rpc::ReqType::PreDump
        } else {
            rpc::ReqType::Dump
        } as i32,
        opts: Some(rpc::Opts {
            images_dir_fd: images.as_raw_fd(),
            pid: Some(state.pid),
            leave_running: Some(opts.leave_running),
            root: Some(state.rootfs.to_string_lossy().into_owned()),
            parent_img: opts
                .parent_path
                .as_ref()
                .map(|p| p.to_string_lossy().into_owned()),
            track_mem: opts.parent_path.as_ref().map(|_| true),
            ps: opts
                .page_server
                .as_ref()
                .map(|(address, port)| rpc::PageServerInfo {
                    address: Some(address.clone()),
                    port: Some(*port),
                }),
            freeze_cgroup: freezer_of(&state.cgroup),
            external: external_namespaces(&state.spec)?,
            orphan_pts_master: Some(true),
            ..common_opts(&opts.criu, &state.spec, log_name, work.as_ref())
        }),
        ..Default::default()
    };
    if !opts.pre_dump {
        let ext_mnt = &mut request.opts.get_or_insert_with(Default::default).ext_mnt;
        *ext_mnt = dump_external_mounts(state)?;
        write_descriptors(state.pid, &opts.criu.image_path)?;
    }
    let log = log_path(&opts.criu, log_name);
    let mut status_fd = opts.status_fd.as_ref().map(|f| f.as_fd());
    criu.call(
        crate::criu::Call {
            request,
            inherit: Vec::new(),
            stdio: false,
            log: Some(log),
            on_start: None,
        },
        |note: Notification| {
            if note.script == "status-ready" {
                if let Some(fd) = status_fd.take() {
                    // The reader only waits for the byte; a reader that
                    // went away is no reason to fail the checkpoint.
                    let _ = nix::unistd::write(fd, &[0u8]);
                }
            }
            Ok(())
        },
    )?;
    if opts.leave_running || opts.pre_dump {
        return Ok(());
    }
    // CRIU killed the processes once they were saved: the container is
    // gone, as after `delete`.
    let super::Loaded { dir, state, .. } = loaded;
    if crate::cgroups::from_state(&state.cgroup)
        .pids()
        .is_ok_and(|p| !p.is_empty())
    {
        super::delete::stop(&state)?;
    }
    super::delete::destroy(dir, &state)
}

/// The options every CRIU call of ours sets.
pub(crate) fn common_opts(
    criu: &CriuOptions,
    spec: &Spec,
    log_name: &str,
    work: Option<&OwnedFd>,
) -> rpc::Opts {
    rpc::Opts {
        log_level: Some(4),
        log_file: Some(log_name.to_string()),
        manage_cgroups: Some(true),
        manage_cgroups_mode: criu.manage_cgroups_mode.map(|m| m as i32),
        notify_scripts: Some(true),
        shell_job: Some(criu.shell_job),
        tcp_established: Some(criu.tcp_established),
        ext_unix_sk: Some(criu.ext_unix_sk),
        file_locks: Some(criu.file_locks),
        empty_ns: Some(criu.empty_ns),
        auto_dedup: Some(criu.auto_dedup),
        lazy_pages: Some(criu.lazy_pages),
        work_dir_fd: work.map(|w| w.as_raw_fd()),
        config_file: criu_config_file(spec),
        ..Default::default()
    }
}

/// CRIU's configuration file: the container's `org.criu.config`
/// annotation (empty: none at all), else `/etc/criu/berth.conf`. CRIU
/// ignores a file that does not exist.
fn criu_config_file(spec: &Spec) -> Option<String> {
    match spec
        .annotations()
        .as_ref()
        .and_then(|a| a.get("org.criu.config"))
    {
        Some(path) if path.is_empty() => None,
        Some(path) => Some(path.clone()),
        None => Some("/etc/criu/berth.conf".to_string()),
    }
}

/// Where CRIU's log of this call ends up.
pub(crate) fn log_path(criu: &CriuOptions, log_name: &str) -> PathBuf {
    criu.work_path
        .as_deref()
        .unwrap_or(&criu.image_path)
        .join(log_name)
}

/// Create (when asked) and open a directory CRIU works in.
pub(crate) fn open_dir(path: &Path, option: &str, create: bool) -> Result<OwnedFd> {
    if create {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(path)
            .map_err(|e| Error::invalid(format!("{option} {}: {e}", path.display())))?;
    }
    nix::fcntl::open(
        path,
        OFlag::O_DIRECTORY | OFlag::O_RDONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::invalid(format!("{option} {}: {e}", path.display())))
}

/// `--parent-path` is relative to the image path and must name the
/// directory of an earlier pre-dump.
fn check_parent_path(image_path: &Path, parent: &Path) -> Result<()> {
    if parent.is_absolute() {
        return Err(Error::invalid(format!(
            "--parent-path {}: must be relative to --image-path",
            parent.display()
        )));
    }
    // Lexically, as runc joins them: the image directory may not exist yet.
    let real = lexical_join(image_path, parent);
    match std::fs::metadata(&real) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::invalid(format!(
            "--parent-path {}: {} is not a directory",
            parent.display(),
            real.display()
        ))),
        Err(e) => Err(Error::invalid(format!(
            "--parent-path {}: {}: {e}",
            parent.display(),
            real.display()
        ))),
    }
}

/// `base` joined with the relative `path`, `..` taken off lexically.
fn lexical_join(base: &Path, path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for part in base.components().chain(path.components()) {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    out
}

/// `--status-fd` must be open for writing.
fn check_status_fd(fd: BorrowedFd<'_>) -> Result<()> {
    let flags = fcntl(fd, FcntlArg::F_GETFL)
        .map_err(|e| Error::invalid(format!("--status-fd {}: {e}", fd.as_raw_fd())))?;
    let mode = OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE;
    if mode == OFlag::O_RDONLY {
        return Err(Error::invalid(format!(
            "--status-fd {}: not open for writing",
            fd.as_raw_fd()
        )));
    }
    Ok(())
}

/// The cgroup CRIU freezes the container through (instead of stopping
/// each task with ptrace).
fn freezer_of(cgroup: &CgroupState) -> Option<String> {
    match cgroup {
        CgroupState::V1 { paths } => paths.get("freezer"),
        CgroupState::V2 { path } => Some(path),
    }
    .map(|p| p.to_string_lossy().into_owned())
}

/// The key under which CRIU records a namespace joined by path, the
/// same at dump and restore (runc's keys, so images are interchangeable).
pub(crate) fn external_ns_key(typ: LinuxNamespaceType) -> Option<&'static str> {
    match typ {
        LinuxNamespaceType::Network => Some("extRootNetNS"),
        LinuxNamespaceType::Pid => Some("extRootPidNS"),
        _ => None,
    }
}

/// Network and pid namespaces the container joined by path: CRIU leaves
/// them alone and expects them back at restore (`TYPE[INODE]:KEY`).
fn external_namespaces(spec: &Spec) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in namespaces {
        let (Some(key), Some(path)) = (external_ns_key(ns.typ()), ns.path()) else {
            continue;
        };
        let name = if ns.typ() == LinuxNamespaceType::Network {
            "net"
        } else {
            "pid"
        };
        let meta = std::fs::metadata(path)
            .with_context(|| format!("linux.namespaces: {}", path.display()))?;
        out.push(format!(
            "{name}[{}]:{key}",
            std::os::unix::fs::MetadataExt::ino(&meta)
        ));
    }
    Ok(out)
}

/// A mount of the spec, as a path in the container with its symlinks
/// resolved inside the rootfs (where it really is), and its host source.
pub(crate) struct HostMount {
    pub dest: String,
    pub source: String,
}

/// Everything the container has mounted from the host, which CRIU must
/// treat as external: the spec's bind mounts, the v1 cgroup hierarchies,
/// and the devices.
pub(crate) fn host_mounts(
    spec: &Spec,
    rootfs: &Path,
    bundle: &Path,
    cgroup: &CgroupState,
) -> Result<Vec<HostMount>> {
    let in_rootfs = |dest: &Path| -> Result<String> {
        let real = crate::rootfs::path::secure_join(rootfs, dest)?;
        let inside = real.strip_prefix(rootfs).unwrap_or(&real);
        Ok(Path::new("/").join(inside).to_string_lossy().into_owned())
    };
    let cgroupns = crate::namespaces::is_new(
        spec.linux()
            .as_ref()
            .and_then(|l| l.namespaces().as_deref())
            .unwrap_or(&[]),
        LinuxNamespaceType::Cgroup,
    );
    let mut out = Vec::new();
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        let dest = m.destination();
        if crate::rootfs::mounts::is_bind(m) {
            let Some(source) = m.source() else { continue };
            out.push(HostMount {
                dest: in_rootfs(dest)?,
                source: bundle.join(source).to_string_lossy().into_owned(),
            });
        } else if m.typ().as_deref() == Some("cgroup") || m.typ().as_deref() == Some("cgroup2") {
            match cgroup {
                // A tmpfs with one bind per hierarchy.
                CgroupState::V1 { paths } => {
                    let base = in_rootfs(dest)?;
                    for (name, path) in crate::rootfs::mounts::v1_cgroup_binds(paths) {
                        out.push(HostMount {
                            dest: format!(
                                "{}/{}",
                                base.trim_end_matches('/'),
                                name.to_string_lossy()
                            ),
                            source: path.to_string_lossy().into_owned(),
                        });
                    }
                }
                // Without a cgroup namespace: a bind of the container's cgroup.
                CgroupState::V2 { path } if !cgroupns => out.push(HostMount {
                    dest: in_rootfs(dest)?,
                    source: path.to_string_lossy().into_owned(),
                }),
                CgroupState::V2 { .. } => {}
            }
        }
    }
    for dev in spec
        .linux()
        .as_ref()
        .and_then(|l| l.devices().as_deref())
        .unwrap_or(&[])
    {
        let path = dev.path().to_string_lossy().into_owned();
        out.push(HostMount {
            dest: path.clone(),
            source: path,
        });
    }
    Ok(out)
}

/// The external mounts of a dump: every host mount keyed by its path in
/// the container, and masked files (binds of /dev/null) keyed `/dev/null`.
fn dump_external_mounts(state: &ContainerState) -> Result<Vec<rpc::ExtMountMap>> {
    let mut out: Vec<rpc::ExtMountMap> =
        host_mounts(&state.spec, &state.rootfs, &state.bundle, &state.cgroup)?
            .into_iter()
            .map(|m| rpc::ExtMountMap {
                key: m.dest.clone(),
                val: m.dest,
            })
            .collect();
    let masked = state
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.masked_paths().clone())
        .unwrap_or_default();
    for path in masked {
        let seen = format!("/proc/{}/root{}", state.pid, path);
        match std::fs::metadata(&seen) {
            Ok(m) if !m.is_dir() => out.push(rpc::ExtMountMap {
                key: path,
                val: MASKED_FILE_KEY.to_string(),
            }),
            _ => {}
        }
    }
    Ok(out)
}

/// The key masked files are recorded under; restore maps it to the host's
/// /dev/null.
pub(crate) const MASKED_FILE_KEY: &str = "/dev/null";

/// Record what init's stdio is (`pipe:[INODE]`, `/dev/pts/0`, ...).
fn write_descriptors(pid: i32, image_path: &Path) -> Result<()> {
    let links: Vec<String> = (0..3)
        .map(|fd| {
            std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                .map(|l| l.to_string_lossy().into_owned())
                .unwrap_or_default()
        })
        .collect();
    let text = serde_json::to_vec(&links).context("encoding the descriptors")?;
    let path = image_path.join(DESCRIPTORS_FILE);
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_server_addresses_parse() {
        assert_eq!(
            parse_page_server("0.0.0.0:27277").ok(),
            Some(("0.0.0.0".to_string(), 27277))
        );
        assert_eq!(
            parse_page_server("[::1]:80").ok(),
            Some(("::1".to_string(), 80))
        );
        for bad in ["", "host", ":80", "host:", "host:x", "host:0", "host:70000"] {
            let err = parse_page_server(bad)
                .err()
                .map(|e| e.message().to_string());
            assert!(
                err.as_deref().is_some_and(|m| m.contains("--page-server")),
                "{bad:?}: {err:?}"
            );
        }
    }

    #[test]
    fn empty_ns_always_holds_the_network() {
        assert_eq!(parse_empty_ns(&[]).ok(), Some(libc::CLONE_NEWNET as u32));
        assert_eq!(
            parse_empty_ns(&["network".into()]).ok(),
            Some(libc::CLONE_NEWNET as u32)
        );
        assert!(parse_empty_ns(&["pid".into()]).is_err());
    }

    #[test]
    fn cgroup_modes_parse() {
        assert_eq!(parse_cgroup_mode("full").ok(), Some(rpc::CgroupMode::Full));
        assert!(parse_cgroup_mode("hard").is_err());
    }

    #[test]
    fn parent_paths_join_lexically() {
        let join = |a: &str, b: &str| lexical_join(Path::new(a), Path::new(b));
        assert_eq!(join("/x/images", "../parent"), PathBuf::from("/x/parent"));
        assert_eq!(join("./images", "../p"), PathBuf::from("p"));
        assert_eq!(join("images", "../../p"), PathBuf::from("../p"));
    }

    #[test]
    fn a_parent_path_is_relative_and_exists() -> Result<()> {
        let dir = tempfile::tempdir().context("tempdir")?;
        let images = dir.path().join("images");
        std::fs::create_dir_all(dir.path().join("parent")).context("mkdir")?;
        assert!(check_parent_path(&images, Path::new("../parent")).is_ok());
        for bad in [dir.path().join("parent"), PathBuf::from("../missing")] {
            let err = check_parent_path(&images, &bad)
                .err()
                .map(|e| e.message().to_string());
            assert!(
                err.as_deref().is_some_and(|m| m.contains("--parent-path")),
                "{bad:?}: {err:?}"
            );
        }
        Ok(())
    }
}
