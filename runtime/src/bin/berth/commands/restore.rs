use std::path::{Path, PathBuf};

use berth_runtime::container::{self, CreateOptions, RestoreOptions};
use berth_runtime::criu::Criu;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub criu: super::checkpoint::CriuArgs,
    /// Path to the bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is set.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Write the container's init pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Do not wait: leave the container running in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Accepted for runc compatibility; CRIU sets up the root itself.
    #[arg(long)]
    pub no_pivot: bool,
    /// Accepted for runc compatibility; berth does not become a subreaper.
    #[arg(long)]
    pub no_subreaper: bool,
    /// The LSM profile of the restored processes, if not the saved one.
    #[arg(long)]
    pub lsm_profile: Option<String>,
    /// The SELinux mount context of the restored mounts.
    #[arg(long)]
    pub lsm_mount_context: Option<String>,
    /// The container id.
    pub id: String,
}

/// Returns the container's exit status (0 when detached).
pub fn run(root: &Path, criu: Option<&Path>, args: &Args) -> anyhow::Result<u8> {
    let store = super::store(root)?;
    let opts = RestoreOptions {
        create: CreateOptions {
            id: args.id.clone(),
            bundle: args.bundle.clone(),
            pid_file: args.pid_file.clone(),
            console_socket: args.console_socket.clone(),
            no_pivot: args.no_pivot,
            ..Default::default()
        },
        criu: args.criu.options()?,
        detach: args.detach,
        lsm_profile: args.lsm_profile.clone(),
        lsm_mount_context: args.lsm_mount_context.clone(),
    };
    let code = container::restore(&store, &Criu::new(criu), &opts)?;
    Ok(u8::try_from(code).unwrap_or(255))
}
