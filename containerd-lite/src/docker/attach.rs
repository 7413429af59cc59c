//! `POST /containers/{id}/attach` and `/resize`, and `GET
//! /containers/{id}/logs`.
//!
//! A container's output never passes through berthd: `berth-logger` writes
//! it to the json-file log (see [`crate::logs`]). So an attach follows
//! that log from where it ends when the attach comes (with `logs=1`, from
//! its start) until the container's current run ends, or, for an attach
//! made before `start` as `docker run` makes it, its next run. Input goes
//! into the container's stdin fifo ([`StdinPipe`]), once the container
//! has one; with `StdinOnce` the end of the client's input closes it.
//! The detach keys end an attach and leave the container running.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use containerd_shim_protos::api;
use futures::{Stream, StreamExt};
use time::OffsetDateTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::containers::registry::Container;
use super::containers::stdin::StdinPipe;
use super::containers::Status;
use super::error::ApiResult;
use super::hijack::{self, DetachWatch};
use super::query::Query;
use super::{Frontend, NAMESPACE};
use crate::logs::{encode_frame, LogReader, ReadOptions, StreamFormat};
use crate::runtime::shim::{ctx, status_error};
use crate::{Error, Result};

/// The detach keys unless the client names others.
const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// A container's output as framed bytes for a client.
type Output = Pin<Box<dyn Stream<Item = std::io::Result<bytes::Bytes>> + Send>>;

/// The log of `record` as `options` select it, framed; following it until
/// `exited` when given.
fn output(
    reader: LogReader,
    options: ReadOptions,
    format: StreamFormat,
    timestamps: bool,
    exited: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
) -> Output {
    let entries: Pin<Box<dyn Stream<Item = Result<crate::logs::LogEntry>> + Send>> = match exited {
        Some(exited) => Box::pin(reader.follow(options, exited)),
        None => Box::pin(reader.into_stream(options)),
    };
    Box::pin(entries.map(move |entry| {
        let entry = entry.map_err(|err| std::io::Error::other(err.to_string()))?;
        let mut framed = Vec::with_capacity(entry.bytes.len() + 8);
        encode_frame(format, &entry, timestamps, &mut framed);
        Ok(bytes::Bytes::from(framed))
    }))
}

/// Opens the log at `path` (off the async threads).
async fn open_log(path: std::path::PathBuf) -> Result<LogReader> {
    tokio::task::spawn_blocking(move || LogReader::open(&path))
        .await
        .map_err(|err| Error::internal(format!("opening a log: {err}")))?
}

/// Resolves when the run the client attaches to is over: the current one,
/// or for a container not started yet, the next; at once for one that has
/// stopped (or when the client does not stream).
fn run_ends(container: &Arc<Container>, stream: bool) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    let status = container.status();
    let seen = container.progress().borrow().exits;
    if !stream || !(status.is_active() || status == Status::Created) {
        return Box::pin(std::future::ready(()));
    }
    let container = container.clone();
    Box::pin(async move { container.exited_after(seen).await })
}

/// `POST /containers/{id}/attach?stream=&stdin=&stdout=&stderr=&logs=&detachKeys=`.
pub async fn attach(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    request: Request,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    let container = frontend.containers.resolve(&id)?;
    let record = container.record();
    if record.state.status == Status::Removing {
        return Err(Error::precondition("container is marked for removal").into());
    }
    let detach = hijack::detach_keys(query.get("detachKeys").unwrap_or(DEFAULT_DETACH_KEYS))?;
    let tty = record.tty();
    let format = StreamFormat::for_tty(tty);
    let options = ReadOptions {
        stdout: query.flag("stdout"),
        stderr: query.flag("stderr"),
        since: None,
        until: None,
        tail: if query.flag("logs") { None } else { Some(0) },
    };
    let wants_output = options.stdout || options.stderr;
    let seen = container.progress().borrow().exits;
    let ends = run_ends(&container, query.flag("stream"));
    let reader = open_log(record.log_path.clone()).await?;
    let output = output(reader, options, format, false, Some(ends));
    let content_type = hijack::content_type(tty);
    if !hijack::wants_upgrade(&request) {
        return Ok(hijack::streamed(content_type, output));
    }
    let stdin = (query.flag("stdin") && record.config.open_stdin == Some(true)).then(|| Input {
        container: container.clone(),
        frontend: frontend.clone(),
        seen,
        // With a terminal the input's end never closes stdin (the CLI
        // ends its input when it sees the detach keys), as with dockerd.
        once: record.config.stdin_once == Some(true) && !tty,
        detach: DetachWatch::new(detach),
    });
    let session: hijack::Session = Box::new(move |io| {
        Box::pin(async move {
            let (reader, writer) = hijack::split(io);
            run_session(reader, writer, output, wants_output, stdin).await;
        })
    });
    Ok(hijack::upgrade(request, content_type, session))
}

/// Where the client's input goes.
struct Input {
    container: Arc<Container>,
    frontend: Frontend,
    seen: u64,
    /// Close the container's stdin when the input ends (`StdinOnce`).
    once: bool,
    detach: DetachWatch,
}

/// Copies the output to the client and its input to the container until
/// the output ends or the client detaches.
async fn run_session(
    mut reader: impl tokio::io::AsyncRead + Send + Unpin,
    mut writer: impl tokio::io::AsyncWrite + Send + Unpin,
    mut output: Output,
    wants_output: bool,
    input: Option<Input>,
) {
    let copy_output = async {
        if wants_output {
            while let Some(chunk) = output.next().await {
                let Ok(chunk) = chunk else { break };
                if writer.write_all(&chunk).await.is_err() {
                    return;
                }
                let _ = writer.flush().await;
            }
        } else {
            // Nothing to show: the attach lasts as long as the run.
            while output.next().await.is_some() {}
        }
        let _ = writer.shutdown().await;
    };
    let copy_input = async {
        let Some(mut input) = input else {
            return std::future::pending::<()>().await;
        };
        let mut buf = vec![0u8; 32 * 1024];
        let mut stdin: Option<Arc<StdinPipe>> = None;
        loop {
            let n = match reader.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let (pass, detached) = input.detach.feed(&buf[..n]);
            if !pass.is_empty() {
                if stdin.is_none() {
                    stdin = input.container.stdin_once_started(input.seen).await;
                }
                let Some(pipe) = &stdin else { break };
                if pipe.write_all(&pass).await.is_err() {
                    break;
                }
            }
            if detached {
                // The attach ends; the container runs on.
                return;
            }
        }
        if input.once {
            let pipe = match stdin {
                Some(pipe) => Some(pipe),
                None => input.container.stdin_once_started(input.seen).await,
            };
            if let Some(pipe) = pipe {
                pipe.close().await;
                close_stdin(&input.frontend, &input.container.id, "").await;
            }
        }
        // Input is over; the output goes on until the run ends.
        std::future::pending::<()>().await
    };
    tokio::select! {
        () = copy_output => {}
        () = copy_input => {}
    }
}

/// Tells the shim the stdin of a container's process (its init, or the
/// exec `exec_id`) has ended (CloseIO).
pub(super) async fn close_stdin(frontend: &Frontend, id: &str, exec_id: &str) {
    let Ok(task) = frontend.backend.tasks.get(NAMESPACE, id) else {
        return;
    };
    let closed = task
        .client()
        .close_io(
            ctx(),
            &api::CloseIORequest {
                id: id.to_owned(),
                exec_id: exec_id.to_owned(),
                stdin: true,
                ..Default::default()
            },
        )
        .await;
    if let Err(err) = closed {
        tracing::debug!(%id, %exec_id, "closing stdin: {err}");
    }
}

/// The `h` and `w` of a resize request: rows and columns.
pub fn terminal_size(query: &Query) -> Result<(u32, u32)> {
    let size = |key: &str| -> Result<u32> {
        query
            .str(key)
            .parse()
            .map_err(|_| Error::invalid(format!("invalid {key}: {:?}", query.str(key))))
    };
    Ok((size("h")?, size("w")?))
}

/// `POST /containers/{id}/resize?h=&w=`.
pub async fn resize(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<StatusCode> {
    let (height, width) = terminal_size(&Query::parse(raw.as_deref()))?;
    let container = frontend.containers.resolve(&id)?;
    if !matches!(container.status(), Status::Running | Status::Paused) {
        return Err(
            Error::precondition(format!("Container {} is not running", container.id)).into(),
        );
    }
    let task = frontend.backend.tasks.get(NAMESPACE, &container.id)?;
    task.client()
        .resize_pty(
            ctx(),
            &api::ResizePtyRequest {
                id: container.id.clone(),
                width,
                height,
                ..Default::default()
            },
        )
        .await
        .map_err(|err| {
            status_error(err).context(format!("resizing the terminal of {}", container.id))
        })?;
    Ok(StatusCode::OK)
}

/// `GET /containers/{id}/logs?follow=&stdout=&stderr=&since=&until=&timestamps=&tail=`.
pub async fn logs(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    let container = frontend.containers.resolve(&id)?;
    let record = container.record();
    let stdout = query.flag("stdout");
    let stderr = query.flag("stderr");
    if !stdout && !stderr {
        return Err(Error::invalid("Bad parameters: you must choose at least one stream").into());
    }
    let driver = record
        .host_config
        .log_config
        .as_ref()
        .and_then(|l| l.typ.clone())
        .unwrap_or_default();
    if driver == "none" {
        return Err(
            Error::unimplemented("configured logging driver does not support reading").into(),
        );
    }
    let time = |key: &str| -> Result<Option<OffsetDateTime>> {
        match query.get(key).filter(|t| !t.is_empty() && *t != "0") {
            Some(text) => {
                let at = super::events::parse_timestamp(key, text)?;
                Ok(Some(OffsetDateTime::from(at)))
            }
            None => Ok(None),
        }
    };
    let tail = match query.get("tail").filter(|t| !t.is_empty() && *t != "all") {
        Some(text) => Some(
            text.parse::<usize>()
                .map_err(|_| Error::invalid(format!("invalid value for tail: {text:?}")))?,
        ),
        None => None,
    };
    let options = ReadOptions {
        stdout,
        stderr,
        since: time("since")?,
        until: time("until")?,
        tail,
    };
    let follow = query.flag("follow");
    let ends = follow.then(|| run_ends(&container, true));
    let reader = open_log(record.log_path.clone()).await?;
    let format = StreamFormat::for_tty(record.tty());
    let stream = output(reader, options, format, query.flag("timestamps"), ends);
    Ok(hijack::streamed(hijack::content_type(record.tty()), stream))
}
