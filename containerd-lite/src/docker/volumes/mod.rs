//! Docker volumes: `GET /volumes`, `POST /volumes/create`, `GET` and
//! `DELETE /volumes/{name}`, `POST /volumes/prune`. Only docker's `local`
//! driver, on berthd's own disk ([`store`]); containers get their volumes
//! at create time (see `containers::volumes`).

pub mod store;

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use bollard_stubs::models::VolumeCreateRequest;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::events::DockerEvent;
use super::query::{Filters, Query};
use super::Frontend;
use crate::{Error, Result};
pub use store::{Store, Volume};

/// The one driver served.
pub const DRIVER: &str = "local";

/// The filters of `GET /volumes`.
const LIST_FILTERS: &[&str] = &["dangling", "driver", "label", "name"];
/// The filters of `POST /volumes/prune`.
const PRUNE_FILTERS: &[&str] = &["label", "label!", "all"];

/// A volume as the API shows it; `usage` (size, containers) for
/// `/system/df`.
pub fn to_json(volume: &Volume, usage: Option<(u64, usize)>) -> Value {
    let mut value = json!({
        "Name": volume.name,
        "Driver": DRIVER,
        "Mountpoint": volume.mountpoint,
        "CreatedAt": volume.created_at,
        "Labels": if volume.labels.is_empty() { Value::Null } else { json!(volume.labels) },
        "Scope": "local",
        "Options": Value::Null,
    });
    if let Some((size, refs)) = usage {
        value["UsageData"] = json!({ "Size": size, "RefCount": refs });
    }
    value
}

fn event(action: &str, name: &str) -> DockerEvent {
    DockerEvent {
        kind: "volume".to_owned(),
        action: action.to_owned(),
        actor: name.to_owned(),
        attributes: BTreeMap::from([("driver".to_owned(), DRIVER.to_owned())]),
        time: std::time::SystemTime::now(),
    }
}

/// Makes a volume (or finds the one of that name); a `create` event when
/// made.
pub fn create_volume(
    frontend: &Frontend,
    name: &str,
    labels: BTreeMap<String, String>,
    anonymous: bool,
) -> Result<(Volume, bool)> {
    let (volume, created) = frontend.volumes.create(name, labels, anonymous)?;
    if created {
        frontend.journal.record(event("create", name));
    }
    Ok((volume, created))
}

/// Removes a volume nothing uses; a `destroy` event.
pub fn remove_volume(frontend: &Frontend, name: &str) -> Result<()> {
    let containers = frontend.containers.clone();
    frontend
        .volumes
        .remove(name, || containers.volume_users(name))?;
    frontend.journal.record(event("destroy", name));
    Ok(())
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal(format!("{what}: {err}")))?
}

/// `GET /volumes?filters=`.
pub async fn list(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let filters = Query::parse(raw.as_deref()).filters(LIST_FILTERS)?;
    let dangling = filters.bool("dangling")?;
    for driver in filters.values("driver") {
        if driver != DRIVER {
            return Ok(Json(json!({ "Volumes": [], "Warnings": Value::Null })));
        }
    }
    let listing = frontend.clone();
    let volumes = blocking("listing volumes", move || listing.volumes.list()).await?;
    let selected: Vec<Value> = volumes
        .iter()
        .filter(|v| filters.labels_match("label", &v.labels))
        .filter(|v| !filters.contains("name") || filters.values("name").any(|n| v.name.contains(n)))
        .filter(|v| match dangling {
            Some(wanted) => frontend.containers.volume_users(&v.name).is_empty() == wanted,
            None => true,
        })
        .map(|v| to_json(v, None))
        .collect();
    Ok(Json(
        json!({ "Volumes": selected, "Warnings": Value::Null }),
    ))
}

/// `POST /volumes/create`.
pub async fn create(
    State(frontend): State<Frontend>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request: VolumeCreateRequest = if body.iter().all(u8::is_ascii_whitespace) {
        VolumeCreateRequest::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|err| Error::invalid(format!("invalid JSON body: {err}")))?
    };
    if let Some(driver) = request.driver.as_deref().filter(|d| !d.is_empty()) {
        if driver != DRIVER {
            return Err(Error::not_found(format!(
                "error looking up volume plugin {driver}: plugin \"{driver}\" not found"
            ))
            .into());
        }
    }
    if let Some(options) = request.driver_opts.as_ref().filter(|o| !o.is_empty()) {
        let keys: Vec<&str> = options.keys().map(String::as_str).collect();
        return Err(Error::unimplemented(format!(
            "volume options are not supported by berthd yet: {}",
            keys.join(", ")
        ))
        .into());
    }
    let (name, anonymous) = match request.name.filter(|n| !n.is_empty()) {
        Some(name) => (name, false),
        None => (super::containers::registry::new_id(), true),
    };
    let labels: BTreeMap<String, String> = request.labels.unwrap_or_default().into_iter().collect();
    let volume = blocking("creating a volume", move || {
        create_volume(&frontend, &name, labels, anonymous).map(|(v, _)| v)
    })
    .await?;
    Ok((StatusCode::CREATED, Json(to_json(&volume, None))))
}

/// `GET /volumes/{name}`.
pub async fn inspect(
    State(frontend): State<Frontend>,
    Path(name): Path<String>,
) -> ApiResult<Json<Value>> {
    let volume = blocking("inspecting a volume", move || frontend.volumes.get(&name)).await?;
    Ok(Json(to_json(&volume, None)))
}

/// `DELETE /volumes/{name}?force=`: a missing volume is fine when forced;
/// one in use never is.
pub async fn remove(
    State(frontend): State<Frontend>,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<StatusCode> {
    let force = Query::parse(raw.as_deref()).flag("force");
    let removed = blocking("removing a volume", move || remove_volume(&frontend, &name)).await;
    match removed {
        Ok(()) => Ok(StatusCode::NO_CONTENT),
        Err(err) if force && err.kind == crate::error::ErrorKind::NotFound => {
            Ok(StatusCode::NO_CONTENT)
        }
        Err(err) => Err(err.into()),
    }
}

/// Whether `volume` passes prune's filters.
fn prune_selects(filters: &Filters, volume: &Volume) -> bool {
    filters.labels_match("label", &volume.labels)
        && !filters
            .values("label!")
            .any(|wanted| match wanted.split_once('=') {
                Some((k, v)) => volume.labels.get(k).is_some_and(|have| have == v),
                None => volume.labels.contains_key(wanted),
            })
}

/// `POST /volumes/prune?filters=`: every volume no container uses (API
/// 1.41 prunes named volumes too).
pub async fn prune(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let filters = Query::parse(raw.as_deref()).filters(PRUNE_FILTERS)?;
    let (deleted, reclaimed) = blocking("pruning volumes", move || {
        let mut deleted = Vec::new();
        let mut reclaimed = 0u64;
        for volume in frontend.volumes.list()? {
            if !prune_selects(&filters, &volume)
                || !frontend.containers.volume_users(&volume.name).is_empty()
            {
                continue;
            }
            let size = frontend.volumes.size(&volume);
            match remove_volume(&frontend, &volume.name) {
                Ok(()) => {
                    deleted.push(volume.name.clone());
                    reclaimed += size;
                }
                // Taken by a create meanwhile: it stays.
                Err(err) if err.kind == crate::error::ErrorKind::FailedPrecondition => {}
                Err(err) => return Err(err),
            }
        }
        Ok((deleted, reclaimed))
    })
    .await?;
    Ok(Json(json!({
        "VolumesDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) },
        "SpaceReclaimed": reclaimed,
    })))
}
