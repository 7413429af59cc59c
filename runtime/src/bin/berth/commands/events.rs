use std::io::Write;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print the container's statistics once and exit.
    #[arg(long)]
    pub stats: bool,
    /// How often to print statistics (e.g. 5s, 500ms, 1m).
    #[arg(long, default_value = "5s")]
    pub interval: String,
    /// The container id.
    pub id: String,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<()> {
    let store = super::store(root)?;
    if args.stats {
        let event = berth_runtime::container::stats(&store, &args.id)?;
        out!("{}", serde_json::to_string(&event)?);
        return Ok(());
    }
    let interval = parse_duration(&args.interval)
        .with_context(|| format!("--interval {:?}", args.interval))?;
    let stdout = std::io::stdout();
    berth_runtime::container::watch(&store, &args.id, interval, |event| {
        let mut out = stdout.lock();
        if let Ok(line) = serde_json::to_string(event) {
            let _ = writeln!(out, "{line}");
        }
        let _ = out.flush();
    })?;
    Ok(())
}

/// "5s", "250ms", "1m", "2h", or plain seconds.
fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let t = text.trim();
    let (num, unit) = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .map(|i| t.split_at(i))
        .unwrap_or((t, "s"));
    let n: f64 = num.parse().map_err(|_| anyhow::anyhow!("not a duration"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => bail!("unknown unit {unit:?} (use ms, s, m or h)"),
    };
    if !(secs > 0.0 && secs.is_finite()) {
        bail!("must be positive");
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("250ms").unwrap(), Duration::from_millis(250));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5y").is_err());
    }
}
