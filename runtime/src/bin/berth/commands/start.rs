use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container id.
    pub id: String,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let store = super::store(root)?;
    berth_runtime::container::start(&store, &args.id)?;
    Ok(())
}
