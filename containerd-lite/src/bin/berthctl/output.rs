//! How listings are printed: aligned columns for people, JSON for tools.

use std::time::SystemTime;

use clap::{Subcommand, ValueEnum};

#[derive(Debug, Subcommand)]
pub(crate) enum ListOnly {
    /// List them
    #[command(visible_alias = "list")]
    Ls(ListArgs),
}

#[derive(Debug, clap::Args)]
pub(crate) struct ListArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    pub(crate) format: Format,
    /// containerd filters (`name==x`, `labels."k"==v`), any of which may match
    pub(crate) filters: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// A timestamp as RFC 3339 seconds, or "-".
pub(crate) fn time(stamp: Option<prost_types::Timestamp>) -> String {
    stamp
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".to_string())
}

/// How long ago, in whole units, as people read it.
pub(crate) fn age(created: Option<prost_types::Timestamp>) -> String {
    let Some(created) = created.and_then(|t| SystemTime::try_from(t).ok()) else {
        return "-".into();
    };
    let seconds = SystemTime::now()
        .duration_since(created)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    match seconds {
        0..=59 => format!("{seconds}s"),
        60..=3599 => format!("{}m", seconds / 60),
        3600..=86399 => format!("{}h", seconds / 3600),
        _ => format!("{}d", seconds / 86400),
    }
}

/// Prints rows as aligned columns (the named ones) or as a JSON array.
pub(crate) fn print_rows(format: Format, columns: &[&str], rows: Vec<serde_json::Value>) {
    if format == Format::Json {
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    let cell = |row: &serde_json::Value, column: &str| match &row[column] {
        serde_json::Value::String(s) if s.is_empty() => "-".to_string(),
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Object(map) if map.is_empty() => "-".to_string(),
        serde_json::Value::Object(map) => {
            let mut pairs: Vec<_> = map
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect();
            pairs.sort();
            pairs.join(",")
        }
        other => other.to_string(),
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|row| columns.iter().map(|c| cell(row, c)).collect())
        .collect();
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| {
            table
                .iter()
                .map(|r| r[i].len())
                .chain([c.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(columns.iter().map(|c| c.to_uppercase()).collect());
    for row in table {
        line(row);
    }
}
