//! Image endpoints: list, inspect, history and tag here; remove and
//! prune in [`remove`], pull and push in [`pull`], save and load in
//! [`archive`]. Images are the
//! `moby` namespace's records seen through [`catalog::Catalog`]; changes
//! go through [`records::Records`] so names, dangling images and events
//! stay as dockerd keeps them.

pub mod archive;
pub mod catalog;
pub mod pull;
pub mod records;
pub mod remove;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiResult;
use super::events::DockerEvent;
use super::query::Query;
use super::reference::{ImageRef, Lookup};
use super::Frontend;
use crate::{Error, Result};
use catalog::{Catalog, DockerImage};
use records::Records;

/// The filters `GET /images/json` knows.
const LIST_FILTERS: &[&str] = &["dangling", "label", "reference", "before", "since"];

/// Runs blocking store work off the reactor.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal(format!("docker API worker: {err}")))?
}

/// An RFC 3339 time with nanoseconds, as docker prints `Created`.
fn rfc3339(time: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// An image as `GET /images/json` lists it.
pub fn summary(image: &DockerImage) -> Value {
    let (tags, digests) = if image.is_dangling() || image.is_intermediate() {
        (
            vec!["<none>:<none>".to_owned()],
            vec!["<none>@<none>".to_owned()],
        )
    } else {
        (image.repo_tags(), image.repo_digests())
    };
    let labels = image.config.labels();
    json!({
        "Id": image.id.as_str(),
        "ParentId": "",
        "RepoTags": tags,
        "RepoDigests": digests,
        "Created": image.config.created_unix(),
        "Size": image.size,
        "VirtualSize": image.size,
        "SharedSize": -1,
        "Labels": if labels.is_empty() { Value::Null } else { json!(labels) },
        "Containers": -1,
    })
}

/// `GET /images/json`.
pub async fn list(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let query = Query::parse(raw.as_deref());
    let filters = query.filters(LIST_FILTERS)?;
    let dangling = filters.bool("dangling")?;
    let all = query.flag("all");
    let references: Vec<glob::Pattern> = filters
        .values("reference")
        .map(|pattern| {
            glob::Pattern::new(pattern).map_err(|err| {
                Error::invalid(format!("invalid filter 'reference={pattern}': {err}"))
            })
        })
        .collect::<Result<_>>()?;
    let catalog = frontend.catalog.clone();
    let before: Vec<String> = filters.values("before").map(str::to_owned).collect();
    let since: Vec<String> = filters.values("since").map(str::to_owned).collect();
    let images = blocking(move || {
        let created_of =
            |text: &String| catalog.find(text).map(|image| image.config.created_unix());
        let before = before.iter().map(created_of).collect::<Result<Vec<_>>>()?;
        let since = since.iter().map(created_of).collect::<Result<Vec<_>>>()?;
        let images = catalog.list()?;
        Ok(images
            .into_iter()
            .filter(|image| all || !image.is_intermediate())
            .filter(|image| dangling.is_none_or(|want| image.is_dangling() == want))
            .filter(|image| filters.labels_match("label", &image.config.labels()))
            .filter(|image| before.iter().all(|t| image.config.created_unix() < *t))
            .filter(|image| since.iter().all(|t| image.config.created_unix() > *t))
            .collect::<Vec<_>>())
    })
    .await?;
    let summaries = images.iter().filter_map(|image| {
        if references.is_empty() {
            return Some(summary(image));
        }
        // As dockerd: only the names that match are listed.
        let tags: Vec<String> = image
            .repo_tags()
            .into_iter()
            .filter(|tagged| matches_reference(tagged, &references))
            .collect();
        if tags.is_empty() {
            return None;
        }
        let repositories: Vec<&str> = tags
            .iter()
            .map(|tagged| tagged.rsplit_once(':').map_or(tagged.as_str(), |(r, _)| r))
            .collect();
        let digests: Vec<String> = image
            .repo_digests()
            .into_iter()
            .filter(|d| {
                d.split_once('@')
                    .is_some_and(|(r, _)| repositories.contains(&r))
            })
            .collect();
        let mut listed = summary(image);
        listed["RepoTags"] = json!(tags);
        listed["RepoDigests"] = json!(digests);
        Some(listed)
    });
    Ok(Json(Value::Array(summaries.collect())))
}

/// Whether a familiar `repo:tag` matches a `reference` pattern, tried on
/// the whole name and on the repository alone, as dockerd does.
fn matches_reference(tagged: &str, patterns: &[glob::Pattern]) -> bool {
    let options = glob::MatchOptions {
        require_literal_separator: true,
        ..glob::MatchOptions::new()
    };
    let repository = tagged.rsplit_once(':').map_or(tagged, |(r, _)| r);
    patterns
        .iter()
        .any(|p| p.matches_with(tagged, options) || p.matches_with(repository, options))
}

/// `GET /images/{name}/json`, `/history`, `/get`.
pub async fn by_name_get(
    State(frontend): State<Frontend>,
    Path(path): Path<String>,
) -> ApiResult<Response> {
    if let Some(name) = path.strip_suffix("/json") {
        return inspect(frontend, name.to_owned()).await;
    }
    if let Some(name) = path.strip_suffix("/history") {
        return history(frontend, name.to_owned()).await;
    }
    if let Some(name) = path.strip_suffix("/get") {
        return archive::save(frontend, vec![name.to_owned()]).await;
    }
    Err(Error::not_found("page not found").into())
}

/// `POST /images/{name}/tag`, `/push`.
pub async fn by_name_post(
    State(frontend): State<Frontend>,
    Path(path): Path<String>,
    RawQuery(raw): RawQuery,
    headers: axum::http::HeaderMap,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    if let Some(name) = path.strip_suffix("/tag") {
        return tag(frontend, name.to_owned(), &query).await;
    }
    if let Some(name) = path.strip_suffix("/push") {
        return pull::push(frontend, name.to_owned(), &query, &headers).await;
    }
    Err(Error::not_found("page not found").into())
}

async fn find(catalog: &Catalog, name: String) -> Result<DockerImage> {
    let catalog = catalog.clone();
    blocking(move || catalog.find(&name)).await
}

/// `GET /images/{name}/json`.
async fn inspect(frontend: Frontend, name: String) -> ApiResult<Response> {
    let image = find(&frontend.catalog, name).await?;
    let config = &image.config;
    let run_config = config.config.clone().unwrap_or_else(|| json!({}));
    let (tags, digests) = (image.repo_tags(), image.repo_digests());
    Ok(Json(json!({
        "Id": image.id.as_str(),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": "",
        "Comment": config.history.last().and_then(|h| h.comment.clone()).unwrap_or_default(),
        "Created": config.created.clone().unwrap_or_else(|| "0001-01-01T00:00:00Z".to_owned()),
        "Container": "",
        "ContainerConfig": run_config,
        "DockerVersion": "",
        "Author": config.author.clone().unwrap_or_default(),
        "Config": run_config,
        "Architecture": config.architecture,
        "Variant": config.variant,
        "Os": config.os,
        "Size": image.size,
        "VirtualSize": image.size,
        "GraphDriver": { "Name": crate::grpc::backend::DEFAULT_SNAPSHOTTER, "Data": null },
        "RootFS": { "Type": "layers", "Layers": config.rootfs.diff_ids },
        "Metadata": { "LastTagTime": rfc3339(image.last_tag_time()) },
    }))
    .into_response())
}

/// `GET /images/{name}/history`: newest step first; the top step carries
/// the image ID and tags, older ones `<missing>` as with pulled images.
async fn history(frontend: Frontend, name: String) -> ApiResult<Response> {
    let catalog = frontend.catalog.clone();
    let (image, sizes) = blocking(move || {
        let image = catalog.find(&name)?;
        let sizes = catalog.layer_sizes(&image);
        Ok((image, sizes))
    })
    .await?;
    let mut sizes = sizes.into_iter();
    let steps: Vec<_> = if image.config.history.is_empty() {
        image
            .layers
            .iter()
            .map(|_| catalog::History::default())
            .collect()
    } else {
        image.config.history.clone()
    };
    let mut entries: Vec<Value> = steps
        .iter()
        .map(|step| {
            let size = if step.empty_layer {
                0
            } else {
                sizes.next().unwrap_or(0)
            };
            let created = step.created.as_deref().map_or(0, catalog::unix_time);
            json!({
                "Id": "<missing>",
                "Created": created,
                "CreatedBy": step.created_by.clone().unwrap_or_default(),
                "Tags": null,
                "Size": size,
                "Comment": step.comment.clone().unwrap_or_default(),
            })
        })
        .collect();
    entries.reverse();
    if let Some(top) = entries.first_mut() {
        top["Id"] = json!(image.id.as_str());
        let tags = image.repo_tags();
        top["Tags"] = if tags.is_empty() {
            Value::Null
        } else {
            json!(tags)
        };
    }
    Ok(Json(Value::Array(entries)).into_response())
}

/// `POST /images/{name}/tag?repo=&tag=`: 201 with no body.
async fn tag(frontend: Frontend, name: String, query: &Query) -> ApiResult<Response> {
    let repo = query.str("repo");
    if repo.is_empty() {
        return Err(Error::invalid("repository name must have at least one component").into());
    }
    let new = ImageRef::with_tag(repo, query.str("tag"))?;
    if new.digest().is_some() {
        return Err(Error::invalid("refusing to create a tag with a digest reference").into());
    }
    let backend = frontend.backend.clone();
    let catalog = frontend.catalog.clone();
    let new_name = new.name();
    let image = blocking(move || {
        let image = catalog.find(&name)?;
        // The record the name given stands for, else any of the image's.
        let source = match Lookup::parse(&name)? {
            Lookup::Reference(parsed, _) => image
                .records
                .iter()
                .find(|r| r.name == parsed.name())
                .or_else(|| image.records.first()),
            _ => image.records.first(),
        }
        .ok_or_else(|| Error::not_found(format!("No such image: {name}")))?;
        Records::new(&backend).set(&new_name, &source.target)?;
        Ok(image)
    })
    .await?;
    frontend.journal.record(DockerEvent::image(
        "tag",
        image.id.as_str(),
        &new.familiar(),
    ));
    Ok(StatusCode::CREATED.into_response())
}
