use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory to write config.json into.
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// A spec for running as an unprivileged user (user namespace).
    #[arg(long)]
    pub rootless: bool,
}

pub fn run(args: &Args) -> anyhow::Result<()> {
    berth_runtime::default_spec::write_default_spec(&args.bundle, args.rootless)?;
    Ok(())
}
