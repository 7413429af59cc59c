use std::collections::HashSet;
use std::path::Path;

use anyhow::{bail, Context};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Output format: a ps(1) table, or the pids as a JSON array.
    #[arg(short, long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// The container id.
    pub id: String,
    /// Options for ps(1) (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let pids = berth_runtime::container::pids(&super::store(root)?, &args.id)?;
    if let Format::Json = args.format {
        out!("{}", serde_json::to_string(&pids)?);
        return Ok(());
    }
    let ps_args = if args.ps_args.is_empty() {
        vec!["-ef".to_string()]
    } else {
        args.ps_args.clone()
    };
    let out = std::process::Command::new("ps")
        .args(&ps_args)
        .output()
        .context("running ps")?;
    if !out.status.success() {
        bail!(
            "ps {}: {}",
            ps_args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default();
    let Some(column) = header.split_whitespace().position(|h| h == "PID") else {
        bail!("ps {}: its output has no PID column", ps_args.join(" "));
    };
    let wanted: HashSet<i32> = pids.into_iter().collect();
    out!("{header}");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse().ok());
        if pid.is_some_and(|p| wanted.contains(&p)) {
            out!("{line}");
        }
    }
    Ok(())
}
