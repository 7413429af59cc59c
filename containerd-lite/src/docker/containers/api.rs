//! The container endpoints: thin handlers that parse the query, look the
//! container up and call [`lifecycle`](super::lifecycle),
//! [`remove`](super::remove) or [`view`](super::view).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use berth_proto::containerd::events::TaskOom;
use prost::Message;
use serde_json::{json, Value};
use tokio_stream::StreamExt;

use super::lifecycle::{self, Outcome};
use super::registry::Container;
use super::remove::{self, Removal};
use super::view;
use crate::docker::error::ApiResult;
use crate::docker::events::DockerEvent;
use crate::docker::query::Query;
use crate::docker::{Frontend, NAMESPACE};
use crate::events::Received;
use crate::{Error, Result};

/// The container `text` names.
fn find(frontend: &Frontend, text: &str) -> Result<Arc<Container>> {
    frontend.containers.resolve(text)
}

/// 204 when done, 304 when there was nothing to do.
fn outcome(outcome: Outcome) -> StatusCode {
    match outcome {
        Outcome::Done => StatusCode::NO_CONTENT,
        Outcome::NotModified => StatusCode::NOT_MODIFIED,
    }
}

/// A container event for `/events`, with the attributes dockerd gives.
pub fn event(container: &Container, action: &str, extra: &[(&str, String)]) -> DockerEvent {
    let record = container.record();
    let mut attributes: BTreeMap<String, String> = record
        .labels()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    attributes.insert("name".to_owned(), record.name.clone());
    attributes.insert("image".to_owned(), record.image.clone());
    for (key, value) in extra {
        attributes.insert((*key).to_owned(), value.clone());
    }
    DockerEvent {
        kind: "container".to_owned(),
        action: action.to_owned(),
        actor: container.id.clone(),
        attributes,
        time: std::time::SystemTime::now(),
    }
}

/// `GET /containers/json`.
pub async fn list(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let query = Query::parse(raw.as_deref());
    let filters = query.filters(view::LIST_FILTERS)?;
    let limit = match query.get("limit").filter(|l| !l.is_empty()) {
        Some(text) => Some(
            text.parse::<i64>()
                .map_err(|_| Error::invalid(format!("invalid value for limit: {text:?}")))?,
        ),
        None => None,
    };
    let records = frontend
        .containers
        .all()
        .iter()
        .map(|c| c.record())
        .collect();
    let selected = view::select(
        &frontend,
        records,
        &filters,
        query.flag("all"),
        limit.and_then(|l| usize::try_from(l).ok()),
    )?;
    Ok(Json(Value::Array(
        selected
            .iter()
            .map(|r| view::summary(&frontend, r))
            .collect(),
    )))
}

/// `GET /containers/{id}/json`.
pub async fn inspect(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    let container = find(&frontend, &id)?;
    Ok(Json(view::inspect(&frontend, &container.record())))
}

/// `POST /containers/{id}/start`.
pub async fn start(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let container = find(&frontend, &id)?;
    let done = lifecycle::start(&frontend, &container).await?;
    Ok(outcome(done))
}

/// The `t` (seconds) of stop and restart.
fn timeout(query: &Query) -> Result<Option<i64>> {
    match query.get("t").filter(|t| !t.is_empty()) {
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| Error::invalid(format!("invalid value for t: {text:?}"))),
        None => Ok(None),
    }
}

/// `POST /containers/{id}/stop?t=&signal=`.
pub async fn stop(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<StatusCode> {
    let query = Query::parse(raw.as_deref());
    let container = find(&frontend, &id)?;
    let done =
        lifecycle::stop(&frontend, &container, timeout(&query)?, query.get("signal")).await?;
    if done == Outcome::Done {
        frontend.journal.record(event(&container, "stop", &[]));
    }
    Ok(outcome(done))
}

/// `POST /containers/{id}/restart?t=&signal=`.
pub async fn restart(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<StatusCode> {
    let query = Query::parse(raw.as_deref());
    let container = find(&frontend, &id)?;
    lifecycle::restart(&frontend, &container, timeout(&query)?, query.get("signal")).await?;
    frontend.journal.record(event(&container, "restart", &[]));
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/kill?signal=`.
pub async fn kill(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<StatusCode> {
    let query = Query::parse(raw.as_deref());
    let container = find(&frontend, &id)?;
    lifecycle::kill(&frontend, &container, query.get("signal")).await?;
    let signal = query.get("signal").unwrap_or("KILL").to_owned();
    frontend
        .journal
        .record(event(&container, "kill", &[("signal", signal)]));
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/pause`.
pub async fn pause(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let container = find(&frontend, &id)?;
    lifecycle::pause(&frontend, &container).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/unpause`.
pub async fn unpause(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    let container = find(&frontend, &id)?;
    lifecycle::unpause(&frontend, &container).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/rename?name=`.
pub async fn rename(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<StatusCode> {
    let query = Query::parse(raw.as_deref());
    let container = find(&frontend, &id)?;
    let name = super::registry::check_name(query.str("name"))?.to_owned();
    let _operation = container.operation().await;
    let old = container.record().name;
    if old == name {
        return Err(
            Error::invalid("Renaming a container with the same name as its current name").into(),
        );
    }
    frontend.containers.rename(&container, &name)?;
    // Events name the container from its containerd record's label.
    let label = super::create::NAME_LABEL;
    let relabelled = frontend
        .backend
        .containers
        .get(NAMESPACE, &container.id)
        .and_then(|mut record| {
            record.labels.insert(label.to_owned(), name.clone());
            frontend
                .backend
                .containers
                .update(NAMESPACE, record, &[format!("labels.{label}")])
        });
    if let Err(err) = relabelled {
        tracing::warn!(id = %container.id, "rename: the containerd record keeps the old name: {err}");
    }
    frontend.journal.record(event(
        &container,
        "rename",
        &[("oldName", format!("/{old}"))],
    ));
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/{id}/update`.
pub async fn update(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> ApiResult<Json<Value>> {
    let change: bollard_stubs::models::ContainerUpdateBody = serde_json::from_slice(&body)
        .map_err(|err| Error::invalid(format!("invalid JSON body: {err}")))?;
    let container = find(&frontend, &id)?;
    lifecycle::update(&frontend, &container, change).await?;
    frontend.journal.record(event(&container, "update", &[]));
    Ok(Json(json!({ "Warnings": [] })))
}

/// `DELETE /containers/{id}?force=&v=`.
pub async fn delete(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<StatusCode> {
    let query = Query::parse(raw.as_deref());
    if query.flag("link") {
        return Err(Error::invalid("legacy links are not supported").into());
    }
    let container = find(&frontend, &id)?;
    let how = Removal {
        force: query.flag("force"),
        volumes: query.flag("v"),
    };
    let destroyed = event(&container, "destroy", &[]);
    remove::remove(&frontend, &container, how).await?;
    frontend.journal.record(destroyed);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /containers/prune?filters=` (`until`, `label`, `label!`).
pub async fn prune(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let query = Query::parse(raw.as_deref());
    let filters = query.filters(&["until", "label", "label!"])?;
    let until = match filters.values("until").next() {
        Some(text) => Some(crate::docker::events::parse_timestamp("until", text)?),
        None => None,
    };
    let label_matches = |record: &super::Record, text: &str| match text.split_once('=') {
        Some((key, value)) => record.labels().any(|(k, v)| k == key && v == value),
        None => record.labels().any(|(k, _)| k == text),
    };
    let removed = remove::prune(&frontend, |record| {
        let created = time::OffsetDateTime::parse(
            &record.created,
            &time::format_description::well_known::Rfc3339,
        )
        .map(std::time::SystemTime::from)
        .ok();
        until.is_some_and(|until| created.is_some_and(|c| c >= until))
            || filters.values("label").any(|l| !label_matches(record, l))
            || filters.values("label!").any(|l| label_matches(record, l))
    })
    .await?;
    Ok(Json(json!({
        "ContainersDeleted": if removed.is_empty() { Value::Null } else { json!(removed) },
        "SpaceReclaimed": 0,
    })))
}

/// `POST /containers/{id}/wait?condition=` (`not-running`, the default;
/// `next-exit`; `removed`). The headers go at once, the body when the
/// condition is met: `{"StatusCode": n, "Error": null}`.
pub async fn wait(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    let condition = match query.str("condition") {
        "" | "not-running" => Condition::NotRunning,
        "next-exit" => Condition::NextExit,
        "removed" => Condition::Removed,
        other => return Err(Error::invalid(format!("invalid condition: \"{other}\"")).into()),
    };
    let container = find(&frontend, &id)?;
    let mut progress = container.progress();
    let seen = progress.borrow_and_update().exits;
    let status = container.status();
    let last_code = container.record().state.exit_code;
    let body = async move {
        let code = match condition {
            Condition::NotRunning if !status.is_active() => last_code,
            Condition::NotRunning | Condition::NextExit => {
                match progress.wait_for(|p| p.exits > seen || p.removed).await {
                    Ok(p) => p.exit_code,
                    Err(_) => last_code,
                }
            }
            Condition::Removed => match progress.wait_for(|p| p.removed).await {
                Ok(p) if p.exits > 0 => p.exit_code,
                Ok(_) => last_code,
                Err(_) => last_code,
            },
        };
        let text = json!({ "StatusCode": code, "Error": Value::Null }).to_string() + "\n";
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(text))
    };
    let stream = futures::stream::once(body);
    Ok((
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

#[derive(Debug, Clone, Copy)]
enum Condition {
    NotRunning,
    NextExit,
    Removed,
}

/// Marks containers whose task the OOM killer hit (`State.OOMKilled`),
/// from the shims' `/tasks/oom` events; runs until the exchange closes.
pub fn follow_oom(frontend: &Frontend) {
    let mut received = frontend.backend.events.subscribe();
    let containers = frontend.containers.clone();
    tokio::spawn(async move {
        while let Some(next) = received.next().await {
            let Received::Event(envelope) = next else {
                continue;
            };
            if envelope.namespace != NAMESPACE || envelope.topic != "/tasks/oom" {
                continue;
            }
            let Ok(oom) = TaskOom::decode(envelope.event.value.as_slice()) else {
                continue;
            };
            if let Ok(container) = containers.resolve(&oom.container_id) {
                if container.id == oom.container_id {
                    if let Err(err) = container.update(|r| r.state.oom_killed = true) {
                        tracing::warn!(id = %container.id, "recording an OOM kill: {err}");
                    }
                }
            }
        }
    });
}
