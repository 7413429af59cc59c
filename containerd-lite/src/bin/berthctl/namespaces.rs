//! `berthctl namespaces`: namespaces are not namespaced, so these calls
//! carry no namespace header.

use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::containerd::services::namespaces::v1::{
    CreateNamespaceRequest, DeleteNamespaceRequest, ListNamespacesRequest, Namespace,
};
use clap::Subcommand;
use serde_json::json;
use tonic::transport::Channel;

use crate::output::{print_rows, ListArgs};
use crate::readable;

/// The verbs of `berthctl namespaces`.
#[derive(Debug, Subcommand)]
pub(crate) enum NamespacesCommand {
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

/// Runs one `namespaces` verb.
pub(crate) async fn namespaces(channel: Channel, command: NamespacesCommand) -> Result<(), String> {
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
