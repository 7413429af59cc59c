//! `berthctl content`: blobs in the content store.

use std::io::Write;

use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::{
    DeleteContentRequest, ListContentRequest, ReadContentRequest,
};
use clap::Subcommand;
use serde_json::json;
use tokio_stream::StreamExt;

use crate::output::{age, print_rows, ListArgs};
use crate::{readable, Namespaced};

/// The verbs of `berthctl content`.
#[derive(Debug, Subcommand)]
pub(crate) enum ContentCommand {
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

/// Runs one `content` verb.
pub(crate) async fn content(client: Namespaced, command: ContentCommand) -> Result<(), String> {
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
