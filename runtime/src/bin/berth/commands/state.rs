use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The container id.
    pub id: String,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let store = super::store(root)?;
    let state = berth_runtime::container::state(&store, &args.id)?;
    out!("{}", serde_json::to_string_pretty(&state)?);
    Ok(())
}
