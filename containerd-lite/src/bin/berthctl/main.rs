//! `berthctl`: a ctr-style client for berthd (noun verb), speaking
//! containerd's gRPC API through the generated clients. One module per noun.
#![forbid(unsafe_code)]

mod build;
mod content;
mod images;
mod leases;
mod namespaces;
mod output;
mod progress;
mod resolve;
mod run;
mod snapshots;
mod stdio;
mod tty;

use std::path::PathBuf;
use std::process::ExitCode;

use berth_proto::containerd::services::version::v1::version_client::VersionClient;
use berthd::config::DEFAULT_ADDRESS;
use berthd::grpc::client::{connect, WithNamespace};
use clap::{Parser, Subcommand};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use content::ContentCommand;
use images::ImagesCommand;
use namespaces::NamespacesCommand;
use output::ListOnly;
use snapshots::SnapshotsCommand;

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
    /// Run a container of an image, as `ctr run` does
    Run(run::RunArgs),
    /// Build an image from a Dockerfile (through berthd's Docker API)
    Build(build::BuildArgs),
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
        Ok(code) => code,
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

async fn run(cli: Cli) -> Result<ExitCode, String> {
    // The builder is the Docker API's: no gRPC connection is made for it.
    let command = match cli.command {
        Command::Build(args) => return build::build(args).await,
        command => command,
    };
    let channel = connect(&cli.address).await.map_err(|e| e.to_string())?;
    let with_namespace = WithNamespace::new(&cli.namespace).map_err(|e| e.to_string())?;
    let namespaced = InterceptedService::new(channel.clone(), with_namespace);
    let done = match command {
        Command::Version => version(channel).await,
        Command::Images(command) => images::images(namespaced, command).await,
        Command::Content(command) => content::content(namespaced, command).await,
        Command::Snapshots {
            snapshotter,
            command,
        } => snapshots::snapshots(namespaced, snapshotter, command).await,
        Command::Namespaces(command) => namespaces::namespaces(channel, command).await,
        Command::Leases(ListOnly::Ls(args)) => leases::leases_ls(namespaced, args).await,
        // The one verb whose exit code is not ours: the task's.
        Command::Run(args) => return run::run(namespaced, &cli.namespace, args).await,
        Command::Build(args) => return build::build(args).await,
    };
    done.map(|()| ExitCode::SUCCESS)
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
