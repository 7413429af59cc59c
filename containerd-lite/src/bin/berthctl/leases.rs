//! `berthctl leases`: what keeps resources from garbage collection.

use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::leases::v1::ListRequest as LeasesListRequest;
use serde_json::json;

use crate::output::{print_rows, time, ListArgs};
use crate::{readable, Namespaced};

/// Lists the namespace's leases.
pub(crate) async fn leases_ls(client: Namespaced, args: ListArgs) -> Result<(), String> {
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
