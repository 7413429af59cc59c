//! berth-bench-report --results R.jsonl --machine M.json --markdown OUT.md
//!     --chart OUT.png [--font TTF]
//!
//! Writes the report and its chart (each through a temp file and a rename).
//! hack/bench/all runs it; run by hand, it redraws a report from kept results.

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use berth_bench_report::{chart, markdown, results};

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const USAGE: &str = "usage: berth-bench-report --results R.jsonl --machine M.json \
                     --markdown OUT.md --chart OUT.png [--font TTF]";

#[derive(Debug)]
struct Args {
    results: PathBuf,
    machine: PathBuf,
    markdown: PathBuf,
    chart: PathBuf,
    font: PathBuf,
}

fn parse_args(mut argv: impl Iterator<Item = OsString>) -> Result<Args> {
    let (mut results, mut machine, mut md, mut png) = (None, None, None, None);
    let mut font = PathBuf::from(DEFAULT_FONT);
    while let Some(flag) = argv.next() {
        let flag = flag.to_string_lossy().into_owned();
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = PathBuf::from(
            argv.next()
                .with_context(|| format!("{flag} wants a value\n{USAGE}"))?,
        );
        match flag.as_str() {
            "--results" => results = Some(value),
            "--machine" => machine = Some(value),
            "--markdown" => md = Some(value),
            "--chart" => png = Some(value),
            "--font" => font = value,
            _ => bail!("unknown argument {flag:?}\n{USAGE}"),
        }
    }
    let need =
        |v: Option<PathBuf>, name: &str| v.with_context(|| format!("{name} is missing\n{USAGE}"));
    Ok(Args {
        results: need(results, "--results")?,
        machine: need(machine, "--machine")?,
        markdown: need(md, "--markdown")?,
        chart: need(png, "--chart")?,
        font,
    })
}

/// Writes `bytes` to `path` through `path.tmp`, synced, then renamed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let write = || -> std::io::Result<()> {
        use std::io::Write as _;
        let mut f = fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    };
    write().with_context(|| format!("writing {}", path.display()))
}

/// The chart's link from the report: its file name when both share a
/// directory, else the path as given.
fn chart_link(markdown: &Path, chart: &Path) -> String {
    match (markdown.parent(), chart.parent(), chart.file_name()) {
        (Some(a), Some(b), Some(name)) if a == b => name.to_string_lossy().into_owned(),
        _ => chart.to_string_lossy().into_owned(),
    }
}

fn run(args: &Args) -> Result<()> {
    let text = fs::read_to_string(&args.results)
        .with_context(|| format!("reading {}", args.results.display()))?;
    let benches =
        results::parse(&text).with_context(|| format!("in {}", args.results.display()))?;
    let machine: markdown::Machine = serde_json::from_slice(
        &fs::read(&args.machine).with_context(|| format!("reading {}", args.machine.display()))?,
    )
    .with_context(|| format!("in {}", args.machine.display()))?;

    let ttf = fs::read(&args.font).with_context(|| {
        format!(
            "reading the font {} (apt-get install fonts-dejavu-core, or --font)",
            args.font.display()
        )
    })?;
    let font = chart::load_font(ttf).with_context(|| format!("loading {}", args.font.display()))?;
    let title = format!(
        "Berth relative to its peers: median ratio per case ({}, {})",
        machine.date, machine.mode
    );
    let png = chart::png(&chart::bars(&benches), &title, &font)?;
    write_atomic(&args.chart, &png)?;

    let md = markdown::render(&machine, &benches, &chart_link(&args.markdown, &args.chart));
    write_atomic(&args.markdown, md.as_bytes())?;
    let cases: usize = benches.iter().map(|b| b.cases.len()).sum();
    eprintln!(
        "wrote {} and {} ({} benchmarks, {cases} cases)",
        args.markdown.display(),
        args.chart.display(),
        benches.len()
    );
    Ok(())
}

fn main() {
    let result = parse_args(std::env::args_os().skip(1)).and_then(|args| run(&args));
    if let Err(e) = result {
        eprintln!("berth-bench-report: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Args> {
        parse_args(list.iter().map(OsString::from))
    }

    #[test]
    fn arguments() -> Result<()> {
        let a = args(&[
            "--results",
            "r",
            "--machine",
            "m",
            "--markdown",
            "d/b.md",
            "--chart",
            "d/b.png",
        ])?;
        assert_eq!(a.font, PathBuf::from(DEFAULT_FONT));
        assert_eq!(chart_link(&a.markdown, &a.chart), "b.png");
        assert_eq!(
            chart_link(Path::new("a/b.md"), Path::new("c/b.png")),
            "c/b.png"
        );
        assert!(args(&["--results", "r"]).is_err());
        assert!(args(&["--results"]).is_err());
        assert!(args(&["--bogus", "x"]).is_err());
        Ok(())
    }
}
