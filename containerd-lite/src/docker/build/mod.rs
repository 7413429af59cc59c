//! `POST /build` (the legacy builder's protocol: the context as a tar
//! body, the options in the query, the progress as `{"stream": ...}`
//! lines) and `POST /build/prune`. What can be checked before the first
//! step (the context, the Dockerfile's syntax, the tags, the options) is
//! answered with an HTTP error, as dockerd answers it before it has
//! written anything; a failure after that is the stream's last line.
//!
//! The build runs under a lease that holds every blob and snapshot it
//! makes until an image record (a tag or the build cache) names them; a
//! failed build leaves its steps' images to the cache and nothing else.

mod builder;
mod cache;
mod context;
mod copy;
mod download;
mod image;
mod output;
mod run;

use std::collections::BTreeMap;
use std::io::Seek;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::response::Response;
use axum::Json;
use futures::StreamExt;
use serde_json::json;
use tokio::io::AsyncWriteExt;

use self::builder::Builder;
use self::context::Context;
use self::output::Output;
use crate::build::dockerfile;
use crate::docker::error::ApiResult;
use crate::docker::images::blocking;
use crate::docker::progress::Messages;
use crate::docker::query::Query;
use crate::docker::reference::ImageRef;
use crate::docker::{Frontend, NAMESPACE};
use crate::transfer::lease::TransferLease;
use crate::{Error, Result};

/// What the client asked of a build.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// `t`: the names to tag the result with.
    pub tags: Vec<String>,
    /// `buildargs`; a `null` value takes the ARG's default.
    pub build_args: BTreeMap<String, Option<String>>,
    pub no_cache: bool,
    pub pull: bool,
    /// `rm` (default on): RUN containers go once their step succeeded;
    /// with it a failed step's container goes too (a failed build leaves
    /// nothing), without it every container stays.
    pub remove: bool,
    /// `forcerm`: RUN containers go even when `rm` is off and a step fails.
    pub force_remove: bool,
    pub quiet: bool,
    /// `labels`: added to the final image by a last LABEL step.
    pub labels: BTreeMap<String, String>,
    pub target: Option<String>,
    pub dockerfile: String,
    /// `networkmode` for RUN containers (empty or `default`: bridge).
    pub network_mode: String,
}

impl BuildOptions {
    /// The options of a `POST /build` query.
    pub fn from_query(query: &Query) -> Result<BuildOptions> {
        let json_map = |key: &str| -> Result<Option<serde_json::Value>> {
            match query.get(key).filter(|v| !v.is_empty()) {
                Some(text) => serde_json::from_str(text)
                    .map(Some)
                    .map_err(|err| Error::invalid(format!("{key}: invalid JSON: {err}"))),
                None => Ok(None),
            }
        };
        let build_args = match json_map("buildargs")? {
            Some(value) => serde_json::from_value(value).map_err(|err| {
                Error::invalid(format!("buildargs: expected a map of strings: {err}"))
            })?,
            None => BTreeMap::new(),
        };
        let labels = match json_map("labels")? {
            Some(value) => serde_json::from_value(value).map_err(|err| {
                Error::invalid(format!("labels: expected a map of strings: {err}"))
            })?,
            None => BTreeMap::new(),
        };
        let tags: Vec<String> = query
            .all("t")
            .into_iter()
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        for tag in &tags {
            ImageRef::parse(tag)
                .map_err(|err| Error::invalid(format!("invalid tag {tag:?}: {}", err.message)))?;
        }
        if !query.str("remote").is_empty() {
            return Err(Error::unimplemented(
                "builds from a remote context (git or URL) are not supported by berthd",
            ));
        }
        let network_mode = match query.str("networkmode") {
            "default" => String::new(),
            other => other.to_owned(),
        };
        Ok(BuildOptions {
            tags,
            build_args,
            no_cache: query.flag("nocache"),
            remove: query.get("rm").is_none() || query.flag("rm"),
            force_remove: query.flag("forcerm"),
            pull: query.flag("pull"),
            quiet: query.flag("q"),
            labels,
            target: query
                .get("target")
                .filter(|t| !t.is_empty())
                .map(str::to_owned),
            dockerfile: query.str("dockerfile").to_owned(),
            network_mode,
        })
    }
}

/// Where contexts are unpacked: `<root>/builder/tmp` (removed at start).
fn scratch_dir(frontend: &Frontend) -> std::path::PathBuf {
    frontend.settings.root.join("builder/tmp")
}

/// Removes contexts a previous berthd left (it died mid-build).
pub fn remove_stale_contexts(root: &std::path::Path) {
    let dir = root.join("builder/tmp");
    if dir.exists() {
        if let Err(err) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), "removing stale build contexts: {err}");
        }
    }
}

/// `POST /build`.
pub async fn build(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
    body: Body,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    // The body is read before bad options are answered: a client still
    // sending its context would see a reset connection, not the error.
    let options = BuildOptions::from_query(&query);
    let dockerfile = query.str("dockerfile").to_owned();
    let context = receive_context(&frontend, body, dockerfile).await?;
    let options = options?;
    let file =
        dockerfile::parse(&context.dockerfile).map_err(|err| Error::invalid(err.to_string()))?;
    check_target(&file, options.target.as_deref())?;
    let backend = frontend.backend.clone();
    let lease = blocking(move || TransferLease::begin(&backend.leases, NAMESPACE, "build")).await?;
    let (messages, response) = Messages::channel();
    let out = Output::new(messages, options.quiet);
    let escape = file.escape;
    tokio::spawn(async move {
        let mut builder = Builder::new(
            frontend.clone(),
            out.clone(),
            options,
            context,
            lease,
            escape,
        );
        if let Err(failure) = builder.build(file).await {
            out.fail(&failure.message, failure.code);
        }
        builder.finish().await;
        frontend.backend.gc.schedule();
    });
    Ok(response)
}

/// A build target must name a stage.
fn check_target(file: &dockerfile::Dockerfile, target: Option<&str>) -> Result<()> {
    if let Some(target) = target {
        let wanted = target.to_lowercase();
        if !file
            .stages
            .iter()
            .any(|s| s.name.as_deref() == Some(wanted.as_str()))
        {
            return Err(Error::invalid(format!(
                "failed to reach build target {target} in Dockerfile"
            )));
        }
    }
    Ok(())
}

/// Spools the body and unpacks it as the build context.
async fn receive_context(frontend: &Frontend, body: Body, dockerfile: String) -> Result<Context> {
    let scratch = scratch_dir(frontend);
    let spool_dir = frontend.transfers.spool_dir();
    let spool = blocking(move || {
        std::fs::create_dir_all(&spool_dir)
            .map_err(|err| Error::internal(format!("build context spool dir: {err}")))?;
        tempfile::tempfile_in(&spool_dir)
            .map_err(|err| Error::internal(format!("build context spool file: {err}")))
    })
    .await?;
    let mut spool = tokio::fs::File::from_std(spool);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk =
            chunk.map_err(|err| Error::invalid(format!("reading the build context: {err}")))?;
        spool
            .write_all(&chunk)
            .await
            .map_err(|err| Error::unavailable(format!("spooling the build context: {err}")))?;
    }
    spool
        .flush()
        .await
        .map_err(|err| Error::unavailable(format!("spooling the build context: {err}")))?;
    let mut spool = spool.into_std().await;
    blocking(move || {
        spool
            .rewind()
            .map_err(|err| Error::internal(format!("rewinding the build context: {err}")))?;
        Context::unpack(spool, &scratch, &dockerfile)
    })
    .await
}

/// `POST /build/prune`: drops the build cache's records; the collector
/// then takes what only they kept.
pub async fn prune(State(frontend): State<Frontend>) -> ApiResult<Json<serde_json::Value>> {
    let worker = frontend.clone();
    let (removed, before) = blocking(move || {
        let before = worker.catalog.list()?.iter().map(|i| i.size).sum::<u64>();
        Ok((cache::clear(&worker)?, before))
    })
    .await?;
    frontend.backend.gc.collect().await?;
    let worker = frontend.clone();
    let after =
        blocking(move || Ok(worker.catalog.list()?.iter().map(|i| i.size).sum::<u64>())).await?;
    let deleted: Vec<String> = removed
        .iter()
        .map(|name| {
            name.trim_start_matches(crate::docker::reference::BUILD_CACHE_PREFIX)
                .to_owned()
        })
        .collect();
    Ok(Json(json!({
        "CachesDeleted": deleted,
        "SpaceReclaimed": before.saturating_sub(after),
    })))
}

pub(super) use crate::docker::images::blocking as run_blocking;
