use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kill the container first if it is still running.
    #[arg(short, long)]
    pub force: bool,
    /// The container id.
    pub id: String,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let store = super::store(root)?;
    berth_runtime::container::delete(&store, &args.id, args.force)?;
    Ok(())
}
