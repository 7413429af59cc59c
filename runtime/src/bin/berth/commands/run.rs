use std::path::Path;

use berth_runtime::container;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub create: super::create::Args,
    /// Do not wait: leave the container running in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Keep the container (stopped, with its cgroup) after it exits.
    #[arg(long)]
    pub keep: bool,
}

/// Returns the container's exit status (as a shell would report it).
pub fn run(root: &Path, args: &Args) -> anyhow::Result<u8> {
    let store = super::store(root)?;
    let code = container::run(&store, &args.create.options(), args.detach, args.keep)?;
    Ok(u8::try_from(code).unwrap_or(255))
}
