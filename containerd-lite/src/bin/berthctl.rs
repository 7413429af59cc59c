//! `berthctl`: a ctr-style client for berthd (noun verb), speaking
//! containerd's gRPC API through the generated clients.
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::SystemTime;

use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::{
    DeleteContentRequest, ListContentRequest, ReadContentRequest,
};
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
};
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::leases::v1::ListRequest as LeasesListRequest;
use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::containerd::services::namespaces::v1::{
    CreateNamespaceRequest, DeleteNamespaceRequest, ListNamespacesRequest, Namespace,
};
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::{
    Info as SnapshotInfo, Kind, ListSnapshotsRequest, RemoveSnapshotRequest, UsageRequest,
};
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
    Content(ContentCommand),
    /// Snapshots of a snapshotter
    #[command(visible_alias = "snapshot")]
    Snapshots {
        /// Snapshotter to work with
        #[arg(long, default_value = "overlayfs")]
        snapshotter: String,
        #[command(subcommand)]
        command: SnapshotsCommand,
    },
    /// Namespaces
    #[command(subcommand, visible_alias = "ns")]
    Namespaces(NamespacesCommand),
    /// Leases that keep resources from garbage collection
    #[command(subcommand)]
    Leases(ListOnly),
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
    /// Give an image more names
    Tag {
        source: String,
        #[arg(required = true)]
        targets: Vec<String>,
    },
    /// Print an image record as JSON
    Inspect { name: String },
}

#[derive(Debug, Subcommand)]
enum ContentCommand {
    /// List blobs
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Write a blob to stdout
    Get { digest: String },
    /// Remove blobs from this namespace
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        digests: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SnapshotsCommand {
    /// List snapshots
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Remove snapshots (children first)
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        keys: Vec<String>,
    },
    /// Disk usage of snapshots (all when none is named)
    Usage { keys: Vec<String> },
    /// Snapshots as a tree of parents and children
    Tree,
}

#[derive(Debug, Subcommand)]
enum NamespacesCommand {
    /// List namespaces
    #[command(visible_alias = "list")]
    Ls(ListArgs),
    /// Create a namespace with labels (KEY=VALUE)
    Create { name: String, labels: Vec<String> },
    /// Remove empty namespaces
    #[command(visible_alias = "remove")]
    Rm {
        #[arg(required = true)]
        names: Vec<String>,
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
        Command::Images(command) => images(namespaced, command).await,
        Command::Content(command) => content(namespaced, command).await,
        Command::Snapshots {
            snapshotter,
            command,
        } => snapshots(namespaced, snapshotter, command).await,
        Command::Namespaces(command) => namespaces(channel, command).await,
        Command::Leases(ListOnly::Ls(args)) => leases_ls(namespaced, args).await,
    }
}

async fn images(client: Namespaced, command: ImagesCommand) -> Result<(), String> {
    match command {
        ImagesCommand::Ls(args) => images_ls(client, args).await,
        ImagesCommand::Rm { names, sync } => images_rm(client, names, sync).await,
        ImagesCommand::Tag { source, targets } => {
            let mut images = ImagesClient::new(client);
            let image = images
                .get(GetImageRequest { name: source })
                .await
                .map_err(readable)?
                .into_inner()
                .image
                .ok_or("the daemon sent no image")?;
            for target in targets {
                let copy = Image {
                    name: target.clone(),
                    labels: image.labels.clone(),
                    target: image.target.clone(),
                    created_at: None,
                    updated_at: None,
                };
                images
                    .create(CreateImageRequest { image: Some(copy) })
                    .await
                    .map_err(readable)?;
                println!("{target}");
            }
            Ok(())
        }
        ImagesCommand::Inspect { name } => {
            let image = ImagesClient::new(client)
                .get(GetImageRequest { name })
                .await
                .map_err(readable)?
                .into_inner()
                .image
                .ok_or("the daemon sent no image")?;
            let target = image.target.unwrap_or_default();
            let record = json!({
                "name": image.name,
                "labels": image.labels,
                "target": {
                    "media_type": target.media_type,
                    "digest": target.digest,
                    "size": target.size,
                    "annotations": target.annotations,
                },
                "created_at": time(image.created_at),
                "updated_at": time(image.updated_at),
            });
            println!("{record:#}");
            Ok(())
        }
    }
}

async fn content(client: Namespaced, command: ContentCommand) -> Result<(), String> {
    match command {
        ContentCommand::Ls(args) => content_ls(client, args).await,
        ContentCommand::Get { digest } => {
            let mut stream = ContentClient::new(client)
                .read(ReadContentRequest {
                    digest,
                    offset: 0,
                    size: 0,
                })
                .await
                .map_err(readable)?
                .into_inner();
            let mut stdout = std::io::stdout().lock();
            while let Some(chunk) = stream.next().await {
                stdout
                    .write_all(&chunk.map_err(readable)?.data)
                    .map_err(|e| format!("writing to stdout: {e}"))?;
            }
            stdout
                .flush()
                .map_err(|e| format!("writing to stdout: {e}"))
        }
        ContentCommand::Rm { digests } => {
            let mut content = ContentClient::new(client);
            for digest in digests {
                content
                    .delete(DeleteContentRequest {
                        digest: digest.clone(),
                    })
                    .await
                    .map_err(readable)?;
                println!("{digest}");
            }
            Ok(())
        }
    }
}

async fn snapshots(
    client: Namespaced,
    snapshotter: String,
    command: SnapshotsCommand,
) -> Result<(), String> {
    match command {
        SnapshotsCommand::Ls(args) => snapshots_ls(client, snapshotter, args).await,
        SnapshotsCommand::Rm { keys } => {
            let mut snapshots = SnapshotsClient::new(client);
            for key in keys {
                snapshots
                    .remove(RemoveSnapshotRequest {
                        snapshotter: snapshotter.clone(),
                        key: key.clone(),
                    })
                    .await
                    .map_err(readable)?;
                println!("{key}");
            }
            Ok(())
        }
        SnapshotsCommand::Usage { keys } => {
            let mut snapshots = SnapshotsClient::new(client);
            let keys = if keys.is_empty() {
                list_snapshots(&mut snapshots, &snapshotter)
                    .await?
                    .into_iter()
                    .map(|info| info.name)
                    .collect()
            } else {
                keys
            };
            let mut rows = Vec::new();
            for key in keys {
                let usage = snapshots
                    .usage(UsageRequest {
                        snapshotter: snapshotter.clone(),
                        key: key.clone(),
                    })
                    .await
                    .map_err(readable)?
                    .into_inner();
                rows.push(json!({"key": key, "size": usage.size, "inodes": usage.inodes}));
            }
            print_rows(Format::Table, &["key", "size", "inodes"], rows);
            Ok(())
        }
        SnapshotsCommand::Tree => {
            let mut snapshots = SnapshotsClient::new(client);
            let infos = list_snapshots(&mut snapshots, &snapshotter).await?;
            let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
            for info in &infos {
                children
                    .entry(info.parent.as_str())
                    .or_default()
                    .push(info.name.as_str());
            }
            print_tree(&children, "", 0);
            Ok(())
        }
    }
}

/// Prints the snapshots under `parent`, indented by depth.
fn print_tree(children: &BTreeMap<&str, Vec<&str>>, parent: &str, depth: usize) {
    for child in children.get(parent).into_iter().flatten() {
        println!("{}{child}", "  ".repeat(depth));
        print_tree(children, child, depth + 1);
    }
}

async fn list_snapshots(
    client: &mut SnapshotsClient<Namespaced>,
    snapshotter: &str,
) -> Result<Vec<SnapshotInfo>, String> {
    let mut stream = client
        .list(ListSnapshotsRequest {
            snapshotter: snapshotter.to_string(),
            filters: Vec::new(),
        })
        .await
        .map_err(readable)?
        .into_inner();
    let mut infos = Vec::new();
    while let Some(chunk) = stream.next().await {
        infos.extend(chunk.map_err(readable)?.info);
    }
    Ok(infos)
}

async fn namespaces(channel: Channel, command: NamespacesCommand) -> Result<(), String> {
    match command {
        NamespacesCommand::Ls(args) => namespaces_ls(channel, args).await,
        NamespacesCommand::Create { name, labels } => {
            let labels = labels
                .iter()
                .map(|pair| match pair.split_once('=') {
                    Some((key, value)) => Ok((key.to_string(), value.to_string())),
                    None => Err(format!("label {pair:?}: expected KEY=VALUE")),
                })
                .collect::<Result<_, _>>()?;
            NamespacesClient::new(channel)
                .create(CreateNamespaceRequest {
                    namespace: Some(Namespace {
                        name: name.clone(),
                        labels,
                    }),
                })
                .await
                .map_err(readable)?;
            println!("{name}");
            Ok(())
        }
        NamespacesCommand::Rm { names } => {
            let mut namespaces = NamespacesClient::new(channel);
            for name in names {
                namespaces
                    .delete(DeleteNamespaceRequest { name: name.clone() })
                    .await
                    .map_err(readable)?;
                println!("{name}");
            }
            Ok(())
        }
    }
}

async fn leases_ls(client: Namespaced, args: ListArgs) -> Result<(), String> {
    let leases = LeasesClient::new(client)
        .list(LeasesListRequest {
            filters: args.filters,
        })
        .await
        .map_err(readable)?
        .into_inner()
        .leases;
    let rows = leases
        .into_iter()
        .map(|lease| {
            json!({
                "id": lease.id,
                "created_at": time(lease.created_at),
                "labels": lease.labels,
            })
        })
        .collect();
    print_rows(args.format, &["id", "created_at", "labels"], rows);
    Ok(())
}

/// A timestamp as RFC 3339 seconds, or "-".
fn time(stamp: Option<prost_types::Timestamp>) -> String {
    stamp
        .map(|t| t.to_string())
        .unwrap_or_else(|| "-".to_string())
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
