//! `POST /images/create` (pull) and `POST /images/{name}/push`: the
//! transfer service does the work; this turns its blob reports into the
//! progress lines docker prints ("Pulling fs layer", "Downloading",
//! "Pull complete", "Digest:", "Status:" ...), streamed after a 200, with
//! a failure sent as an error line.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{RawQuery, State};
use axum::http::HeaderMap;
use axum::response::Response;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde::Deserialize;
use serde_json::json;

use super::blocking;
use super::records::Records;
use crate::docker::error::ApiResult;
use crate::docker::events::DockerEvent;
use crate::docker::progress::Messages;
use crate::docker::query::Query;
use crate::docker::reference::ImageRef;
use crate::docker::{Frontend, NAMESPACE};
use crate::grpc::backend::DEFAULT_SNAPSHOTTER;
use crate::registry::{Credentials, Platform};
use crate::transfer::{cancel_when, BlobProgress, BlobState, ProgressFn, PullOptions, PushOptions};
use crate::{Error, Result};

/// The header docker clients send registry credentials in.
const REGISTRY_AUTH: &str = "x-registry-auth";
/// Bytes a layer must advance before another "Downloading" line is sent.
const PROGRESS_STEP: u64 = 512 * 1024;

/// The credentials of an `X-Registry-Auth` header: base64url JSON. Like
/// dockerd, an unreadable header means no credentials.
fn credentials(headers: &HeaderMap) -> Credentials {
    #[derive(Deserialize, Default)]
    struct AuthConfig {
        #[serde(default)]
        username: String,
        #[serde(default)]
        password: String,
        #[serde(default, rename = "registrytoken")]
        registry_token: String,
        #[serde(default, rename = "identitytoken")]
        identity_token: String,
    }
    let engine = GeneralPurpose::new(
        &base64::alphabet::URL_SAFE,
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
    );
    let config: AuthConfig = headers
        .get(REGISTRY_AUTH)
        .and_then(|value| engine.decode(value.as_bytes()).ok())
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
    if !config.registry_token.is_empty() {
        Credentials::Bearer(config.registry_token)
    } else if !config.identity_token.is_empty() {
        Credentials::Bearer(config.identity_token)
    } else if !config.username.is_empty() {
        Credentials::Basic {
            username: config.username,
            password: config.password,
        }
    } else {
        Credentials::Anonymous
    }
}

/// Whether a registry is spoken to in plain HTTP: loopback ones, as
/// dockerd's default insecure range (127.0.0.0/8) and `localhost`.
pub(crate) fn is_insecure(registry: &str) -> bool {
    let host = match registry.rsplit_once(':') {
        Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
        _ => registry,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// The 12 hex digits docker names a layer by.
fn short(digest: &str) -> String {
    digest
        .split_once(':')
        .map_or(digest, |(_, hex)| hex)
        .chars()
        .take(12)
        .collect()
}

/// Runs a transfer to its end on a blocking-pool thread that drives it
/// with the runtime's handle: the registry client's futures are Send, but
/// rustc cannot prove it through their higher-ranked closures
/// (rust-lang/rust#110338), so they cannot go to `tokio::spawn`. (As the
/// gRPC transfer service runs its transfers.)
fn run_apart<F, T>(transfer: F)
where
    F: FnOnce() -> T + Send + 'static,
    T: std::future::Future<Output = ()>,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(transfer()));
}

/// [`run_apart`] for a transfer whose result the caller awaits.
pub(crate) async fn run_transfer<F, T, R>(transfer: F) -> Result<R>
where
    F: FnOnce() -> T + Send + 'static,
    T: std::future::Future<Output = Result<R>>,
    R: Send + 'static,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(transfer()))
        .await
        .map_err(|err| Error::internal(format!("transfer task: {err}")))?
}

/// Turns transfer reports into docker's per-layer lines.
fn pull_progress(messages: Messages) -> ProgressFn {
    let sent: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    Arc::new(move |report: BlobProgress| {
        if report.kind != "layer" {
            return;
        }
        let id = short(&report.digest);
        let Ok(mut sent) = sent.lock() else { return };
        let first = !sent.contains_key(&report.digest);
        let last = sent.entry(report.digest.clone()).or_insert(0);
        match report.state {
            BlobState::Exists => {
                // Marked so its unpack report is not shown as a pull.
                *last = u64::MAX;
                messages.item(&id, "Already exists");
            }
            BlobState::Transferring => {
                if first {
                    messages.item(&id, "Pulling fs layer");
                }
                if report.done >= last.saturating_add(PROGRESS_STEP) || (first && report.done > 0) {
                    *last = report.done;
                    messages.bytes(&id, "Downloading", report.done, report.total);
                }
            }
            BlobState::Done => {
                if first {
                    messages.item(&id, "Pulling fs layer");
                }
                messages.item(&id, "Download complete");
            }
            BlobState::Unpacked if *last != u64::MAX => messages.item(&id, "Pull complete"),
            BlobState::Unpacked => {}
        }
    })
}

/// `POST /images/create?fromImage=&tag=&platform=`: pulls, streaming
/// progress. Importing (`fromSrc`) is not supported yet.
pub async fn create(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    if !query.str("fromSrc").is_empty() {
        return Err(Error::unimplemented("docker import (fromSrc) is not supported yet").into());
    }
    let from = query.str("fromImage");
    if from.is_empty() {
        return Err(Error::invalid("fromImage: an image to pull is required").into());
    }
    let reference = ImageRef::with_tag(from, query.str("tag"))?;
    let platform = match query.str("platform") {
        "" => Platform::host(),
        text => Platform::parse(text)?,
    };
    let snapshotter = frontend.backend.snapshotters.get(DEFAULT_SNAPSHOTTER)?;
    let options = PullOptions {
        platform,
        insecure: is_insecure(reference.registry()),
        credentials: credentials(&headers),
        cancel: Default::default(),
    };
    let (messages, response) = Messages::channel();
    run_apart(move || async move {
        let shown = reference.familiar();
        let tag_or_digest = reference
            .tag()
            .or(reference.digest())
            .unwrap_or("latest")
            .to_owned();
        messages.send(json!({
            "status": format!("Pulling from {}", reference.path()),
            "id": tag_or_digest,
        }));
        let name = reference.name();
        let backend = frontend.backend.clone();
        let lookup = name.clone();
        // What the name points at now is held until it is either kept
        // again or kept as a dangling image.
        let held = blocking(move || {
            let records = Records::new(&backend);
            let previous = records.target_of(&lookup)?;
            let hold = records.hold(previous.as_ref())?;
            Ok((previous, hold))
        })
        .await;
        let (previous, hold) = match held {
            Ok(held) => held,
            Err(err) => return messages.error(&err.message),
        };
        // A client that hangs up (ctrl-c) cancels the pull, as with dockerd.
        let pulled = cancel_when(
            frontend.transfers.pull(
                NAMESPACE,
                &name,
                snapshotter,
                &options,
                pull_progress(messages.clone()),
            ),
            messages.closed(),
            &options.cancel,
        )
        .await;
        // What a failed pull stored, once its lease is released, and the
        // image a moved name may no longer keep, are collectable.
        frontend.backend.gc.schedule();
        let pulled = match pulled {
            Ok(pulled) => pulled,
            Err(err) => {
                tracing::info!(image = %shown, "docker pull failed: {}", err.message);
                let (backend, before) = (frontend.backend.clone(), previous.clone());
                let restored = blocking(move || {
                    let restored = Records::new(&backend).restore(&name, before.as_ref());
                    hold.release();
                    restored
                })
                .await;
                if let Err(undo) = restored {
                    tracing::warn!("docker pull: restoring the image record: {undo}");
                }
                return messages.error(&err.message);
            }
        };
        let backend = frontend.backend.clone();
        let (recorded, before) = (pulled.name.clone(), previous.clone());
        let moved = blocking(move || {
            let moved = Records::new(&backend).moved(&recorded, before.as_ref());
            hold.release();
            moved
        })
        .await;
        if let Err(err) = moved {
            return messages.error(&err.message);
        }
        messages.status(format!("Digest: {}", pulled.target.digest));
        let fresh = previous.is_none_or(|p| p.digest != pulled.target.digest);
        messages.status(if fresh {
            format!("Status: Downloaded newer image for {shown}")
        } else {
            format!("Status: Image is up to date for {shown}")
        });
        frontend
            .journal
            .record(DockerEvent::image("pull", &shown, &shown));
    });
    Ok(response)
}

/// `POST /images/{name}/push?tag=`: pushes one tag (or, without a tag,
/// every tag of the repository) to its registry.
pub async fn push(
    frontend: Frontend,
    name: String,
    query: &Query,
    headers: &HeaderMap,
) -> ApiResult<Response> {
    let repository = ImageRef::parse(&name)?;
    let tag = query.str("tag").to_owned();
    let catalog = frontend.catalog.clone();
    let repo = repository.repository();
    let tags: Vec<ImageRef> = blocking(move || {
        let wanted = |r: &ImageRef| {
            r.repository() == repo && (tag.is_empty() || r.tag() == Some(tag.as_str()))
        };
        let names: Vec<ImageRef> = catalog
            .records()?
            .iter()
            .filter_map(|r| ImageRef::parse(&r.name).ok())
            .filter(|r| r.tag().is_some() && wanted(r))
            .collect();
        if names.is_empty() {
            let shown = if tag.is_empty() {
                repository.familiar_repository()
            } else {
                format!("{}:{tag}", repository.familiar_repository())
            };
            return Err(Error::not_found(format!(
                "An image does not exist locally with the tag: {shown}"
            )));
        }
        Ok(names)
    })
    .await?;
    let options = PushOptions {
        insecure: is_insecure(tags[0].registry()),
        credentials: credentials(headers),
    };
    let (messages, response) = Messages::channel();
    run_apart(move || async move {
        messages.status(format!(
            "The push refers to repository [{}]",
            tags[0].familiar_repository()
        ));
        for reference in &tags {
            if let Err(err) = push_one(&frontend, reference, &options, &messages).await {
                return messages.error(&err.message);
            }
        }
    });
    Ok(response)
}

async fn push_one(
    frontend: &Frontend,
    reference: &ImageRef,
    options: &PushOptions,
    messages: &Messages,
) -> Result<()> {
    let name = reference.name();
    let catalog = frontend.catalog.clone();
    let lookup = name.clone();
    let image = blocking(move || catalog.by_name(&lookup)).await?;
    let layers: Vec<String> = image
        .layers
        .iter()
        .rev()
        .map(|l| short(l.digest.as_str()))
        .collect();
    for id in &layers {
        messages.item(id, "Preparing");
    }
    let pushed = frontend
        .transfers
        .push(NAMESPACE, &name, &name, options, Arc::new(|_| {}))
        .await?;
    for id in &layers {
        messages.item(id, "Pushed");
    }
    let tag = reference.tag().unwrap_or("latest");
    messages.status(format!(
        "{tag}: digest: {} size: {}",
        pushed.target.digest, pushed.target.size
    ));
    messages.send(json!({
        "progressDetail": {},
        "aux": { "Tag": tag, "Digest": pushed.target.digest.as_str(), "Size": pushed.target.size },
    }));
    let shown = reference.familiar();
    frontend
        .journal
        .record(DockerEvent::image("push", &shown, &shown));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        assert!(is_insecure("127.0.0.1:5000"));
        assert!(is_insecure("localhost:5000"));
        assert!(is_insecure("[::1]:5000"));
        assert!(!is_insecure("docker.io"));
        assert!(!is_insecure("registry.example.com:5000"));
    }

    #[test]
    fn registry_auth_headers_decode_or_mean_anonymous() {
        let mut headers = HeaderMap::new();
        let json = br#"{"username":"u","password":"p","serveraddress":"127.0.0.1:5000"}"#;
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        headers.insert(REGISTRY_AUTH, encoded.parse().unwrap());
        assert!(matches!(
            credentials(&headers),
            Credentials::Basic { username, password } if username == "u" && password == "p"
        ));
        headers.insert(REGISTRY_AUTH, "%%%".parse().unwrap());
        assert!(matches!(credentials(&headers), Credentials::Anonymous));
        assert!(matches!(
            credentials(&HeaderMap::new()),
            Credentials::Anonymous
        ));
    }
}
