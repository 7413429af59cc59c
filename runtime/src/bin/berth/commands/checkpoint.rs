use std::path::{Path, PathBuf};

use berth_runtime::container::{self, CheckpointOptions, CriuOptions};
use berth_runtime::criu::Criu;

/// Options `checkpoint` and `restore` share.
#[derive(Debug, clap::Args)]
pub struct CriuArgs {
    /// Directory of the CRIU image files [default: ./checkpoint].
    #[arg(long)]
    pub image_path: Option<PathBuf>,
    /// Directory for CRIU's log and work files [default: the image path].
    #[arg(long)]
    pub work_path: Option<PathBuf>,
    /// Allow established TCP connections.
    #[arg(long)]
    pub tcp_established: bool,
    /// Allow unix sockets connected outside the container.
    #[arg(long)]
    pub ext_unix_sk: bool,
    /// Allow a shell job (a session and terminal from outside).
    #[arg(long)]
    pub shell_job: bool,
    /// Save and restore file locks.
    #[arg(long)]
    pub file_locks: bool,
    /// Restore memory pages lazily, through userfaultfd.
    #[arg(long)]
    pub lazy_pages: bool,
    /// Deduplicate memory images against the parent's.
    #[arg(long)]
    pub auto_dedup: bool,
    /// How CRIU handles cgroups: soft (default), full or strict.
    #[arg(long)]
    pub manage_cgroups_mode: Option<String>,
    /// Create this namespace empty instead of restoring it (network only;
    /// the network namespace always is).
    #[arg(long)]
    pub empty_ns: Vec<String>,
}

impl CriuArgs {
    pub fn options(&self) -> anyhow::Result<CriuOptions> {
        let image_path = match &self.image_path {
            Some(p) => p.clone(),
            None => std::env::current_dir()?.join("checkpoint"),
        };
        Ok(CriuOptions {
            image_path,
            work_path: self.work_path.clone(),
            tcp_established: self.tcp_established,
            ext_unix_sk: self.ext_unix_sk,
            shell_job: self.shell_job,
            file_locks: self.file_locks,
            lazy_pages: self.lazy_pages,
            auto_dedup: self.auto_dedup,
            manage_cgroups_mode: self
                .manage_cgroups_mode
                .as_deref()
                .map(container::parse_cgroup_mode)
                .transpose()?,
            empty_ns: container::parse_empty_ns(&self.empty_ns)?,
        })
    }
}

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub criu: CriuArgs,
    /// Images of an earlier --pre-dump, relative to the image path.
    #[arg(long)]
    pub parent_path: Option<PathBuf>,
    /// Leave the container running after the checkpoint.
    #[arg(long)]
    pub leave_running: bool,
    /// Save the memory only, and leave the container running.
    #[arg(long)]
    pub pre_dump: bool,
    /// ADDRESS:PORT of a CRIU page server to send the memory to.
    #[arg(long)]
    pub page_server: Option<String>,
    /// Descriptor that gets a NUL byte once the lazy page server is ready.
    #[arg(long)]
    pub status_fd: Option<i32>,
    /// The container id.
    pub id: String,
}

pub fn run(root: &Path, criu: Option<&Path>, args: &Args) -> anyhow::Result<()> {
    let store = super::store(root)?;
    let status_fd = match args.status_fd.filter(|fd| *fd >= 0) {
        Some(fd) => Some(
            berth_runtime::sys::take_inherited_fd(fd)
                .map_err(|e| anyhow::anyhow!("--status-fd {fd}: {e}"))?,
        ),
        None => None,
    };
    let opts = CheckpointOptions {
        criu: args.criu.options()?,
        parent_path: args.parent_path.clone(),
        leave_running: args.leave_running,
        pre_dump: args.pre_dump,
        page_server: args
            .page_server
            .as_deref()
            .map(container::parse_page_server)
            .transpose()?,
        status_fd,
    };
    container::checkpoint(&store, &args.id, &Criu::new(criu), &opts)?;
    Ok(())
}
