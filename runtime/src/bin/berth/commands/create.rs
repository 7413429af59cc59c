use std::path::{Path, PathBuf};

use berth_runtime::container::{self, CreateOptions, Launch};

/// Flags shared by `create` and `run`.
#[derive(Debug, clap::Args)]
#[group(id = "create_flags")]
pub struct Args {
    /// Path to the bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// Unix socket that receives the pty master when process.terminal is set.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Write the container's init pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Use a move-mount and chroot instead of pivot_root.
    #[arg(long)]
    pub no_pivot: bool,
    /// Keep the caller's session keyring instead of a new one.
    #[arg(long)]
    pub no_new_keyring: bool,
    /// Pass this many extra descriptors (from 3 up) to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// The container id.
    pub id: String,
}

impl Args {
    pub fn options(&self) -> CreateOptions {
        CreateOptions {
            id: self.id.clone(),
            bundle: self.bundle.clone(),
            pid_file: self.pid_file.clone(),
            console_socket: self.console_socket.clone(),
            no_pivot: self.no_pivot,
            no_new_keyring: self.no_new_keyring,
            preserve_fds: self.preserve_fds,
            listen_fds: container::socket_activation_fds(),
        }
    }
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let store = super::store(root)?;
    container::create(&store, &args.options(), Launch::Later)?;
    Ok(())
}
