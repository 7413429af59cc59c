use std::path::Path;

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Print only the ids.
    #[arg(short, long)]
    pub quiet: bool,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let store = super::store(root)?;
    let containers = berth_runtime::container::list(&store)?;
    if args.quiet {
        for c in &containers {
            out!("{}", c.id);
        }
        return Ok(());
    }
    match args.format {
        Format::Json => out!("{}", serde_json::to_string(&containers)?),
        Format::Table => {
            out!(
                "{:<24} {:<8} {:<10} {:<40} {:<31} OWNER",
                "ID",
                "PID",
                "STATUS",
                "BUNDLE",
                "CREATED"
            );
            for c in &containers {
                out!(
                    "{:<24} {:<8} {:<10} {:<40} {:<31} {}",
                    c.id,
                    c.pid,
                    c.status,
                    c.bundle.display(),
                    c.created,
                    c.owner
                );
            }
        }
    }
    Ok(())
}
