//! `DELETE /images/{name}` (docker rmi) and `POST /images/prune`: names
//! untagged and images deleted as dockerd decides it, refused while a
//! container needs the image, and the garbage collector run before the
//! answer so the image's snapshots and blobs are gone when it arrives.

use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::blocking;
use super::catalog::DockerImage;
use super::records::Records;
use crate::docker::error::ApiResult;
use crate::docker::events::{parse_timestamp, DockerEvent};
use crate::docker::query::Query;
use crate::docker::reference::{familiar, is_unnamed, ImageRef, Lookup};
use crate::docker::{Frontend, NAMESPACE};
use crate::metadata::Filter;
use crate::{Error, Result};

/// The filters `POST /images/prune` knows.
const PRUNE_FILTERS: &[&str] = &["dangling", "label", "until"];

/// The containers (in docker's namespace) made from `image`: those that
/// name it (by a name it has or its ID), and those whose root filesystem
/// sits on its top layer, which still holds after its names are gone.
fn containers_using(frontend: &Frontend, image: &DockerImage) -> Result<Vec<String>> {
    let names: Vec<String> = image.records.iter().map(|r| r.name.clone()).collect();
    let top_layer = image.chain_ids().pop();
    let on_top_layer = |snapshotter: &str, key: &str| -> bool {
        if key.is_empty() || top_layer.is_none() {
            return false;
        }
        frontend
            .backend
            .snapshotters
            .get(snapshotter)
            .and_then(|s| s.stat(NAMESPACE, key))
            .is_ok_and(|info| info.parent == top_layer)
    };
    Ok(frontend
        .backend
        .containers
        .list(NAMESPACE, &Filter::everything())?
        .into_iter()
        .filter(|c| {
            c.image == image.id.as_str()
                || names.contains(&c.image)
                || ImageRef::parse(&c.image).is_ok_and(|r| names.contains(&r.name()))
                || on_top_layer(&c.snapshotter, &c.snapshot_key)
        })
        .map(|c| c.id)
        .collect())
}

/// What a removal did, in the order dockerd reports it.
#[derive(Debug, Default)]
struct Removed {
    untagged: Vec<String>,
    deleted: Option<String>,
}

impl Removed {
    fn to_json(&self) -> Vec<Value> {
        let mut items: Vec<Value> = self
            .untagged
            .iter()
            .map(|name| json!({ "Untagged": name }))
            .collect();
        if let Some(id) = &self.deleted {
            items.push(json!({ "Deleted": id }));
        }
        items
    }
}

/// Untags `name` or deletes the image it names, as `docker rmi` does:
/// a reference untags just that name unless it is the image's last one;
/// an ID deletes every name, refused without `force` when there are
/// several; an image containers use is refused without `force`, and with
/// it only loses its names.
fn remove_image(frontend: &Frontend, text: &str, force: bool) -> Result<(String, Removed)> {
    let image = frontend.catalog.find(text)?;
    let id = image.id.to_string();
    let records = Records::new(&frontend.backend);
    let named: Vec<_> = image
        .records
        .iter()
        .filter(|r| !is_unnamed(&r.name))
        .collect();
    let by_reference = match Lookup::parse(text)? {
        Lookup::Reference(parsed, _) => image.records.iter().find(|r| r.name == parsed.name()),
        _ => None,
    };
    let users = containers_using(frontend, &image)?;
    let short = image.short_id();
    let mut removed = Removed::default();

    if let Some(record) = by_reference {
        if named.len() > 1 {
            records.remove(&record.name)?;
            removed.untagged.push(familiar(&record.name));
            return Ok((id, removed));
        }
        if let (Some(user), false) = (users.first(), force) {
            return Err(Error::precondition(format!(
                "conflict: unable to remove repository reference {text:?} (must force) - container {} is using its referenced image {short}",
                user.chars().take(12).collect::<String>()
            )));
        }
    } else {
        if named.len() > 1 && !force {
            return Err(Error::precondition(format!(
                "conflict: unable to delete {short} (must be forced) - image is referenced in multiple repositories"
            )));
        }
        if let (Some(user), false) = (users.first(), force) {
            return Err(Error::precondition(format!(
                "conflict: unable to delete {short} (must be forced) - image is being used by stopped container {}",
                user.chars().take(12).collect::<String>()
            )));
        }
    }
    // An image containers still use stays, unnamed: held while its names
    // go, so a collection in between cannot take it.
    let hold = records.hold(image.records.first().map(|r| &r.target))?;
    for record in &image.records {
        records.remove(&record.name)?;
        if !is_unnamed(&record.name) {
            removed.untagged.push(familiar(&record.name));
            if let Ok(parsed) = ImageRef::parse(&record.name) {
                if parsed.digest().is_none() {
                    removed.untagged.push(format!(
                        "{}@{}",
                        parsed.familiar_repository(),
                        record.target.digest
                    ));
                }
            }
        }
    }
    removed.untagged.dedup();
    if users.is_empty() {
        removed.deleted = Some(image.id.to_string());
    } else if let Some(record) = image.records.first() {
        records.keep_if_unnamed(&record.target)?;
    }
    hold.release();
    Ok((id, removed))
}

/// Journals a removal's events: an `untag` per name, then `delete`.
fn journal_removal(frontend: &Frontend, id: &str, removed: &Removed) {
    for _ in &removed.untagged {
        frontend.journal.record(DockerEvent::image("untag", id, id));
    }
    if removed.deleted.is_some() {
        frontend
            .journal
            .record(DockerEvent::image("delete", id, id));
    }
}

/// `DELETE /images/{name}?force=&noprune=`.
pub async fn remove(
    State(frontend): State<Frontend>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    let force = query.flag("force");
    let worker = frontend.clone();
    let (id, removed) = blocking(move || remove_image(&worker, &name, force)).await?;
    journal_removal(&frontend, &id, &removed);
    if removed.deleted.is_some() {
        // Collected now, so the image's snapshots and blobs are gone when
        // `docker rmi` returns.
        frontend.backend.gc.collect().await?;
    }
    Ok(Json(removed.to_json()).into_response())
}

/// `POST /images/prune`: removes dangling images (with `dangling=false`,
/// every image no container uses), optionally by label and age.
pub async fn prune(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    let filters = query.filters(PRUNE_FILTERS)?;
    let only_dangling = filters.bool("dangling")?.unwrap_or(true);
    let until = filters
        .values("until")
        .map(|value| parse_timestamp("until", value))
        .collect::<Result<Vec<_>>>()?;
    let worker = frontend.clone();
    let pruned = blocking(move || {
        let mut pruned = Vec::new();
        for image in worker.catalog.list()? {
            let created = std::time::UNIX_EPOCH
                + std::time::Duration::from_secs(image.config.created_unix().max(0) as u64);
            if (only_dangling && !image.is_dangling())
                || !filters.labels_match("label", &image.config.labels())
                || until.iter().any(|until| created >= *until)
                || !containers_using(&worker, &image)?.is_empty()
            {
                continue;
            }
            let id = image.id.to_string();
            let mut removed = Removed::default();
            let records = Records::new(&worker.backend);
            for record in &image.records {
                records.remove(&record.name)?;
                if !is_unnamed(&record.name) {
                    removed.untagged.push(familiar(&record.name));
                }
            }
            removed.deleted = Some(id.clone());
            pruned.push((id, image.size, removed));
        }
        Ok(pruned)
    })
    .await?;
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    for (id, size, removed) in &pruned {
        journal_removal(&frontend, id, removed);
        deleted.extend(removed.to_json());
        reclaimed += size;
    }
    if !pruned.is_empty() {
        frontend.backend.gc.collect().await?;
    }
    Ok(Json(json!({
        "ImagesDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) },
        "SpaceReclaimed": reclaimed,
    }))
    .into_response())
}
