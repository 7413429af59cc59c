use std::path::Path;

use berth_runtime::container;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Signal every process of the container, not only its init.
    #[arg(short, long)]
    pub all: bool,
    /// The container id.
    pub id: String,
    /// Signal name or number.
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let signal = container::parse_signal(&args.signal)?;
    let store = super::store(root)?;
    container::kill(&store, &args.id, signal, args.all)?;
    Ok(())
}
