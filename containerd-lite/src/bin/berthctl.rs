//! `berthctl`: a ctr-style client for berthd (noun verb), speaking
//! containerd's gRPC API through the generated clients.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::ListContentRequest;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::{DeleteImageRequest, ListImagesRequest};
use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::containerd::services::namespaces::v1::ListNamespacesRequest;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::{Kind, ListSnapshotsRequest};
use berth_proto::containerd::services::version::v1::version_client::VersionClient;
use berthd::config::DEFAULT_ADDRESS;
use berthd::grpc::client::{connect, WithNamespace};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::json;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

/// A client for berthd, laid out like ctr: `berthctl NOUN VERB`.
#[derive(Debug, Parser)]
#[command(name = "berthctl", version)]
struct Cli {
    /// berthd's gRPC socket
    #[arg(short, long, global = true, env = "BERTH_ADDRESS", default_value = DEFAULT_ADDRESS)]
    address: PathBuf,
    /// Namespace to work in
    #[arg(
        short,
        long,
        global = true,
        env = "BERTH_NAMESPACE",
        default_value = "default"
    )]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Client and daemon versions
    Version,
    /// Images: named roots in the content store
    #[command(subcommand, visible_alias = "i")]
    Images(ImagesCommand),
    /// Blobs in the content store
    #[command(subcommand)]
    Content(ListOnly),
    /// Snapshots of a snapshotter
    #[command(visible_alias = "snapshot")]
    Snapshots {
        /// Snapshotter to list
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
        #[command(subcommand)]
        command: ListOnly,
    },
    /// Namespaces
    #[command(subcommand, visible_alias = "ns")]
    Namespaces(ListOnly),
}

#[derive(Debug, Subcommand)]
enum ImagesCommand {
    /// List images
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Remove images by name
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
        /// Wait for garbage collection to finish
        #[arg(long)]
        sync: bool,
    },
}

#[derive(Debug, Subcommand)]
enum ListOnly {
    /// List them
    #[command(visible_alias = "list")]
    Ls(ListArgs),
}

#[derive(Debug, clap::Args)]
struct ListArgs {
    /// Output format
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// containerd filters (`name==x`, `labels."k"==v`), any of which may match
    filters: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("berthctl: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("berthctl: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Errors as the user reads them: the daemon's message, not a status dump.
fn readable(status: tonic::Status) -> String {
    status.message().to_string()
}

type Namespaced = InterceptedService<Channel, WithNamespace>;

async fn run(cli: Cli) -> Result<(), String> {
    let channel = connect(&cli.address).await.map_err(|e| e.to_string())?;
    let with_namespace = WithNamespace::new(&cli.namespace).map_err(|e| e.to_string())?;
    let namespaced = InterceptedService::new(channel.clone(), with_namespace);
    match cli.command {
        Command::Version => version(channel).await,
        Command::Images(ImagesCommand::Ls(args)) => images_ls(namespaced, args).await,
        Command::Images(ImagesCommand::Rm { names, sync }) => {
            images_rm(namespaced, names, sync).await
        }
        Command::Content(ListOnly::Ls(args)) => content_ls(namespaced, args).await,
        Command::Snapshots {
            snapshotter,
            command: ListOnly::Ls(args),
        } => snapshots_ls(namespaced, snapshotter, args).await,
        Command::Namespaces(ListOnly::Ls(args)) => namespaces_ls(channel, args).await,
    }
}

async fn version(channel: Channel) -> Result<(), String> {
    let server = VersionClient::new(channel)
        .version(())
        .await
        .map_err(readable)?
        .into_inner();
    println!("Client:\n  Version:  {}", env!("CARGO_PKG_VERSION"));
    println!(
        "Server:\n  Version:  {}\n  Revision: {}",
        server.version, server.revision
    );
    Ok(())
}

async fn images_ls(client: Namespaced, args: ListArgs) -> Result<(), String> {
    let images = ImagesClient::new(client)
        .list(ListImagesRequest {
            filters: args.filters,
        })
        .await
        .map_err(readable)?
        .into_inner()
        .images;
    let rows = images
        .into_iter()
        .map(|image| {
            let target = image.target.unwrap_or_default();
            json!({
                "name": image.name,
                "media_type": target.media_type,
                "digest": target.digest,
                "size": target.size,
                "labels": image.labels,
            })
        })
        .collect();
    print_rows(args.format, &["name", "media_type", "digest", "size"], rows);
    Ok(())
}

async fn images_rm(client: Namespaced, names: Vec<String>, sync: bool) -> Result<(), String> {
    let mut images = ImagesClient::new(client);
    let mut failed = Vec::new();
    for (i, name) in names.iter().enumerate() {
        // Collect once, after the last one, when asked to wait.
        let sync = sync && i + 1 == names.len();
        match images
            .delete(DeleteImageRequest {
                name: name.clone(),
                sync,
            })
            .await
        {
            Ok(_) => println!("{name}"),
            Err(status) => {
                eprintln!("berthctl: {}", readable(status));
                failed.push(name.as_str());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("not removed: {}", failed.join(", ")))
    }
}

async fn content_ls(client: Namespaced, args: ListArgs) -> Result<(), String> {
    let mut stream = ContentClient::new(client)
        .list(ListContentRequest {
            filters: args.filters,
        })
        .await
        .map_err(readable)?
        .into_inner();
    let mut rows = Vec::new();
    while let Some(chunk) = stream.next().await {
        for info in chunk.map_err(readable)?.info {
            rows.push(json!({
                "digest": info.digest,
                "size": info.size,
                "age": age(info.created_at),
                "labels": info.labels,
            }));
        }
    }
    print_rows(args.format, &["digest", "size", "age", "labels"], rows);
    Ok(())
}

async fn snapshots_ls(
    client: Namespaced,
    snapshotter: String,
    args: ListArgs,
) -> Result<(), String> {
    let mut stream = SnapshotsClient::new(client)
        .list(ListSnapshotsRequest {
            snapshotter,
            filters: args.filters,
        })
        .await
        .map_err(readable)?
        .into_inner();
    let mut rows = Vec::new();
    while let Some(chunk) = stream.next().await {
        for info in chunk.map_err(readable)?.info {
            let kind = Kind::try_from(info.kind)
                .map(|k| k.as_str_name().to_lowercase())
                .unwrap_or_else(|_| "unknown".into());
            rows.push(json!({
                "key": info.name,
                "parent": info.parent,
                "kind": kind,
                "labels": info.labels,
            }));
        }
    }
    print_rows(args.format, &["key", "parent", "kind"], rows);
    Ok(())
}

async fn namespaces_ls(channel: Channel, args: ListArgs) -> Result<(), String> {
    let namespaces = NamespacesClient::new(channel)
        .list(ListNamespacesRequest {
            filter: args.filters.join(","),
        })
        .await
        .map_err(readable)?
        .into_inner()
        .namespaces;
    let rows = namespaces
        .into_iter()
        .map(|ns| json!({ "name": ns.name, "labels": ns.labels }))
        .collect();
    print_rows(args.format, &["name", "labels"], rows);
    Ok(())
}

/// How long ago, in whole units, as people read it.
fn age(created: Option<prost_types::Timestamp>) -> String {
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
fn print_rows(format: Format, columns: &[&str], rows: Vec<serde_json::Value>) {
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
