//! `berthctl images`: image records.

use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
};
use clap::Subcommand;
use serde_json::json;

use crate::output::{print_rows, time, ListArgs};
use crate::{readable, Namespaced};

/// The verbs of `berthctl images`.
#[derive(Debug, Subcommand)]
pub(crate) enum ImagesCommand {
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

/// Runs one `images` verb.
pub(crate) async fn images(client: Namespaced, command: ImagesCommand) -> Result<(), String> {
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

pub(crate) async fn images_ls(client: Namespaced, args: ListArgs) -> Result<(), String> {
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

pub(crate) async fn images_rm(
    client: Namespaced,
    names: Vec<String>,
    sync: bool,
) -> Result<(), String> {
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
