//! `berthctl images`: image records.

use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, ListImagesRequest,
};
use std::os::fd::AsFd;
use std::path::PathBuf;

use berth_proto::berth::transfer::v1::transfer_client::TransferClient;
use berth_proto::berth::transfer::v1::{
    progress, Credentials, ExportRequest, ImportRequest, Progress, PullRequest, PushRequest,
    TransferredImage,
};
use clap::Subcommand;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::progress::ProgressView;

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
    /// Pull an image from a registry and unpack it
    Pull {
        reference: String,
        #[command(flatten)]
        registry: RegistryArgs,
        /// Snapshotter to unpack into
        #[arg(long, default_value = "")]
        snapshotter: String,
        /// Platform to pull from an index (os/arch[/variant])
        #[arg(long, default_value = "")]
        platform: String,
    },
    /// Push an image to a registry
    Push {
        image: String,
        /// Where to push (default: the image's name)
        destination: Option<String>,
        #[command(flatten)]
        registry: RegistryArgs,
    },
    /// Import images from an OCI layout tar or a `docker save` tar
    Import {
        /// The archive; `-` for stdin
        file: PathBuf,
        /// Snapshotter to unpack into
        #[arg(long, default_value = "")]
        snapshotter: String,
        /// Name for images the archive leaves unnamed
        #[arg(long, default_value = "")]
        base_name: String,
    },
    /// Export images as an OCI layout tar (docker load takes it too)
    Export {
        /// The archive to write; `-` for stdout
        file: PathBuf,
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// How to reach a registry.
#[derive(Debug, clap::Args)]
pub(crate) struct RegistryArgs {
    /// Speak plain HTTP to the registry
    #[arg(long)]
    plain_http: bool,
    /// Speak plain HTTP to this registry (host[:port]) only; repeatable
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// Credentials, as user:password
    #[arg(short, long, value_name = "USER:PASSWORD")]
    user: Option<String>,
}

impl RegistryArgs {
    /// Whether `reference`'s registry is to be spoken to over plain HTTP.
    fn insecure_for(&self, reference: &str) -> bool {
        if self.plain_http {
            return true;
        }
        let registry = reference.split('/').next().unwrap_or_default();
        reference.contains('/') && self.insecure_registries.iter().any(|host| host == registry)
    }

    fn credentials(&self) -> Result<Option<Credentials>, String> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        let (username, password) = user.split_once(':').ok_or("--user takes user:password")?;
        Ok(Some(Credentials {
            username: username.to_owned(),
            password: password.to_owned(),
            token: String::new(),
        }))
    }
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
        ImagesCommand::Pull {
            reference,
            registry,
            snapshotter,
            platform,
        } => {
            let request = PullRequest {
                insecure: registry.insecure_for(&reference),
                credentials: registry.credentials()?,
                reference,
                platform,
                snapshotter,
            };
            let stream = TransferClient::new(client)
                .pull(request)
                .await
                .map_err(readable)?
                .into_inner();
            follow(stream).await
        }
        ImagesCommand::Push {
            image,
            destination,
            registry,
        } => {
            let destination = destination.unwrap_or_default();
            let target = if destination.is_empty() {
                &image
            } else {
                &destination
            };
            let request = PushRequest {
                insecure: registry.insecure_for(target),
                credentials: registry.credentials()?,
                image,
                destination,
            };
            let stream = TransferClient::new(client)
                .push(request)
                .await
                .map_err(readable)?
                .into_inner();
            follow(stream).await
        }
        ImagesCommand::Import {
            file,
            snapshotter,
            base_name,
        } => import(client, file, snapshotter, base_name).await,
        ImagesCommand::Export { file, names } => export(client, file, names).await,
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

/// Shows a transfer's progress until its last message, then the image.
async fn follow(mut stream: tonic::Streaming<Progress>) -> Result<(), String> {
    let mut view = ProgressView::for_stdout();
    let mut image = None;
    while let Some(message) = stream.message().await.map_err(|status| {
        view.finish();
        readable(status)
    })? {
        match message.event {
            Some(progress::Event::Blob(blob)) => view.report(&blob),
            Some(progress::Event::Image(done)) => image = Some(done),
            None => {}
        }
    }
    view.finish();
    let image = image.ok_or("the daemon ended the transfer without an image")?;
    print_transferred(&image);
    Ok(())
}

fn print_transferred(image: &TransferredImage) {
    let digest = image.target.as_ref().map_or("", |t| t.digest.as_str());
    println!("{} {digest}", image.name);
    if !image.snapshot.is_empty() {
        println!("unpacked {}", image.snapshot);
    }
}

/// stdin or stdout as an async file (tokio runs its reads and writes on
/// the blocking pool, which suits pipes and files alike).
fn std_stream(fd: std::os::fd::BorrowedFd<'_>) -> Result<tokio::fs::File, String> {
    let owned = fd
        .try_clone_to_owned()
        .map_err(|err| format!("duplicating a standard stream: {err}"))?;
    Ok(tokio::fs::File::from_std(std::fs::File::from(owned)))
}

/// Bytes of the archive sent per message.
const IMPORT_CHUNK: usize = 1 << 20;

async fn import(
    client: Namespaced,
    file: PathBuf,
    mut snapshotter: String,
    mut base_name: String,
) -> Result<(), String> {
    let mut input: Box<dyn tokio::io::AsyncRead + Unpin + Send> = if file.as_os_str() == "-" {
        Box::new(std_stream(std::io::stdin().as_fd())?)
    } else {
        Box::new(
            tokio::fs::File::open(&file)
                .await
                .map_err(|err| format!("{}: {err}", file.display()))?,
        )
    };
    let shown = file.display().to_string();
    let (sender, receiver) = tokio::sync::mpsc::channel::<ImportRequest>(4);
    let reader = tokio::spawn(async move {
        let mut first = true;
        loop {
            let mut data = vec![0; IMPORT_CHUNK];
            let n = input
                .read(&mut data)
                .await
                .map_err(|err| format!("{shown}: {err}"))?;
            if n == 0 && !first {
                return Ok::<(), String>(());
            }
            data.truncate(n);
            // The options ride on the first message only.
            let request = if first {
                ImportRequest {
                    data,
                    snapshotter: std::mem::take(&mut snapshotter),
                    base_name: std::mem::take(&mut base_name),
                }
            } else {
                ImportRequest {
                    data,
                    ..ImportRequest::default()
                }
            };
            first = false;
            if sender.send(request).await.is_err() || n == 0 {
                return Ok(());
            }
        }
    });
    let mut results = TransferClient::new(client)
        .import(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .map_err(readable)?
        .into_inner();
    reader
        .await
        .map_err(|err| format!("reading the archive: {err}"))??;
    while let Some(result) = results.message().await.map_err(readable)? {
        if let Some(image) = result.image {
            print_transferred(&image);
        }
    }
    Ok(())
}

async fn export(client: Namespaced, file: PathBuf, names: Vec<String>) -> Result<(), String> {
    let mut chunks = TransferClient::new(client)
        .export(ExportRequest { images: names })
        .await
        .map_err(readable)?
        .into_inner();
    let to_stdout = file.as_os_str() == "-";
    // A file is written beside its final name and renamed once complete.
    let (mut out, partial): (
        Box<dyn tokio::io::AsyncWrite + Unpin + Send>,
        Option<PathBuf>,
    ) = if to_stdout {
        (Box::new(std_stream(std::io::stdout().as_fd())?), None)
    } else {
        let partial = file.with_extension("partial");
        let created = tokio::fs::File::create(&partial)
            .await
            .map_err(|err| format!("{}: {err}", partial.display()))?;
        (Box::new(created), Some(partial))
    };
    let written: Result<(), String> = async {
        while let Some(chunk) = chunks.message().await.map_err(readable)? {
            out.write_all(&chunk.data)
                .await
                .map_err(|err| format!("{}: {err}", file.display()))?;
        }
        out.flush()
            .await
            .map_err(|err| format!("{}: {err}", file.display()))
    }
    .await;
    drop(out);
    if let Some(partial) = partial {
        if written.is_err() {
            let _ = tokio::fs::remove_file(&partial).await;
            return written;
        }
        tokio::fs::rename(&partial, &file)
            .await
            .map_err(|err| format!("{}: {err}", file.display()))?;
    }
    written
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
