//! `berth`: an OCI runtime with runc's command line.
//!
//! This binary only parses flags, sets up logging and calls the library;
//! one file per command under `commands/`.

#![forbid(unsafe_code)]

/// `println!` for command output that never panics: a reader that went
/// away (`berth state x | grep -q running`) is not an error.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

mod commands;
mod logging;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// What `berth --version` (or `-v`, as with runc) prints after the name:
/// `NAME version X.Y.Z`, then `commit:` and `spec:` lines, the layout of
/// runc and crun that dockerd (`docker info`) and podman parse.
const VERSION: &str = concat!(
    "version ",
    env!("CARGO_PKG_VERSION"),
    "\ncommit: ",
    env!("BERTH_GIT_COMMIT"),
    "\nspec: ",
    "1.0.2-dev"
);

#[derive(Debug, Parser)]
#[command(
    name = "berth",
    version = VERSION,
    disable_version_flag = true,
    about = "berth: an OCI container runtime (runc-compatible command line)"
)]
struct Cli {
    /// Print the version, the commit and the OCI runtime spec version.
    #[arg(short = 'v', long = "version", action = clap::ArgAction::Version)]
    version: (),
    /// Directory for container state [default: /run/berth/runtime, or
    /// $XDG_RUNTIME_DIR/berth when not run as root].
    #[arg(long, global = true)]
    root: Option<PathBuf>,
    /// Write log lines to this file instead of stderr.
    #[arg(long, global = true)]
    log: Option<PathBuf>,
    /// Format of log lines.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Log debug messages.
    #[arg(long, global = true)]
    debug: bool,
    /// Manage cgroups through systemd (not supported by berth).
    #[arg(long, global = true)]
    systemd_cgroup: bool,
    /// The CRIU binary `checkpoint` and `restore` use [default: criu
    /// from PATH].
    #[arg(long, global = true)]
    criu: Option<PathBuf>,
    /// Accepted for runc compatibility (before the command); ignored, berth
    /// detects rootless operation itself.
    #[arg(long = "rootless", id = "global_rootless", hide = true)]
    rootless: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a container: its init waits until `start`.
    Create(commands::create::Args),
    /// Run a new process inside a container.
    Exec(commands::exec::Args),
    /// Start a created container.
    Start(commands::start::Args),
    /// Create and start a container, and wait for it unless --detach.
    Run(commands::run::Args),
    /// Print the OCI state of a container.
    State(commands::state::Args),
    /// Send a signal to a container's init (or all its processes).
    Kill(commands::kill::Args),
    /// Delete a container and everything it holds.
    Delete(commands::delete::Args),
    /// Print resource statistics and OOM events of a container.
    Events(commands::events::Args),
    /// Freeze every process of a container.
    Pause(commands::pause::Args),
    /// Thaw a paused container.
    Resume(commands::pause::Args),
    /// List the processes of a container.
    Ps(commands::ps::Args),
    /// Change the resource limits of a container.
    Update(commands::update::Args),
    /// List containers.
    List(commands::list::Args),
    /// Write a default config.json.
    Spec(commands::spec::Args),
    /// Save a running container to image files with CRIU.
    Checkpoint(commands::checkpoint::Args),
    /// Restore a container from a checkpoint.
    Restore(commands::restore::Args),
    /// Print what this runtime supports, as JSON.
    Features,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log.as_deref(), cli.log_format, cli.debug);
    let result = if cli.systemd_cgroup {
        Err(anyhow::anyhow!(
            "--systemd-cgroup is not supported: berth manages cgroupfs directly (leave the flag out)"
        ))
    } else {
        dispatch(&cli)
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(err) => {
            let message = format!("{err:#}");
            if cli.log.is_some() {
                tracing::error!("{message}");
            }
            eprintln!("berth: {message}");
            // exec passes the process's status through, so its own
            // failures use 255, as runc's do.
            if matches!(cli.command, Command::Exec(_)) {
                ExitCode::from(255)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn dispatch(cli: &Cli) -> anyhow::Result<u8> {
    let root = cli
        .root
        .clone()
        .unwrap_or_else(berth_runtime::state::default_root);
    let root = root.as_path();
    match &cli.command {
        Command::Create(args) => commands::create::run(root, args).map(|_| 0),
        Command::Exec(args) => commands::exec::run(root, args),
        Command::Start(args) => commands::start::run(root, args).map(|_| 0),
        Command::Run(args) => commands::run::run(root, args),
        Command::State(args) => commands::state::run(root, args).map(|_| 0),
        Command::Kill(args) => commands::kill::run(root, args).map(|_| 0),
        Command::Delete(args) => commands::delete::run(root, args).map(|_| 0),
        Command::Events(args) => commands::events::run(root, args).map(|_| 0),
        Command::Pause(args) => commands::pause::pause(root, args).map(|_| 0),
        Command::Resume(args) => commands::pause::resume(root, args).map(|_| 0),
        Command::Ps(args) => commands::ps::run(root, args).map(|_| 0),
        Command::Update(args) => commands::update::run(root, args).map(|_| 0),
        Command::List(args) => commands::list::run(root, args).map(|_| 0),
        Command::Spec(args) => commands::spec::run(args).map(|_| 0),
        Command::Checkpoint(args) => {
            commands::checkpoint::run(root, cli.criu.as_deref(), args).map(|_| 0)
        }
        Command::Restore(args) => commands::restore::run(root, cli.criu.as_deref(), args),
        Command::Features => commands::features::run().map(|_| 0),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_names_the_spec_berth_writes() {
        assert!(super::VERSION.ends_with(berth_runtime::default_spec::OCI_VERSION));
    }

    #[test]
    fn version_has_the_layout_runtime_callers_parse() {
        use clap::CommandFactory;
        let shown = super::Cli::command().render_version();
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(
            lines[0],
            concat!("berth version ", env!("CARGO_PKG_VERSION"))
        );
        assert!(lines[1].starts_with("commit: "), "{shown}");
        assert!(lines[2].starts_with("spec: 1."), "{shown}");
    }
}
