use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container id.
    pub id: String,
}

pub fn pause(root: &Path, args: &Args) -> anyhow::Result<()> {
    berth_runtime::container::pause(&super::store(root)?, &args.id)?;
    Ok(())
}

pub fn resume(root: &Path, args: &Args) -> anyhow::Result<()> {
    berth_runtime::container::resume(&super::store(root)?, &args.id)?;
    Ok(())
}
