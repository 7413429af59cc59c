//! `berthctl snapshots`: the snapshots of one snapshotter.

use std::collections::BTreeMap;

use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::{
    Info as SnapshotInfo, Kind, ListSnapshotsRequest, PrepareSnapshotRequest,
    RemoveSnapshotRequest, UsageRequest,
};
use clap::Subcommand;
use serde_json::json;
use tokio_stream::StreamExt;

use crate::output::{print_rows, Format, ListArgs};
use crate::{readable, Namespaced};

/// The verbs of `berthctl snapshots`.
#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotsCommand {
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
    /// Make an active snapshot on PARENT and print the command that
    /// mounts it (append the target directory), as `ctr snapshots
    /// prepare --mounts` does. It is labelled `containerd.io/gc.root`, so
    /// it stays until removed
    Prepare { key: String, parent: String },
}

/// Runs one `snapshots` verb on `snapshotter`.
pub(crate) async fn snapshots(
    client: Namespaced,
    snapshotter: String,
    command: SnapshotsCommand,
) -> Result<(), String> {
    match command {
        SnapshotsCommand::Ls(args) => snapshots_ls(client, snapshotter, args).await,
        SnapshotsCommand::Prepare { key, parent } => {
            let mounts = SnapshotsClient::new(client)
                .prepare(PrepareSnapshotRequest {
                    snapshotter,
                    key,
                    parent,
                    labels: [("containerd.io/gc.root".to_owned(), "berthctl".to_owned())].into(),
                })
                .await
                .map_err(readable)?
                .into_inner()
                .mounts;
            for mount in mounts {
                let options = if mount.options.is_empty() {
                    String::new()
                } else {
                    format!(" -o {}", mount.options.join(","))
                };
                println!("mount -t {} {}{options}", mount.r#type, mount.source);
            }
            Ok(())
        }
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
