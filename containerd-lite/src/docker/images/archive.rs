//! `docker save` (`GET /images/get`, `GET /images/{name}/get`) and
//! `docker load` (`POST /images/load`) over the transfer service's export
//! and import: saves are OCI layouts that also hold docker's
//! manifest.json; loads take either format.

use std::collections::BTreeMap;
use std::io::{self, Seek, Write};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use super::blocking;
use super::records::Records;
use crate::content::Descriptor;
use crate::docker::error::ApiResult;
use crate::docker::events::DockerEvent;
use crate::docker::progress::Messages;
use crate::docker::query::Query;
use crate::docker::reference::{
    dangling_name, familiar, is_unnamed, ImageRef, Lookup, DANGLING_PREFIX,
};
use crate::docker::{Frontend, NAMESPACE};
use crate::grpc::backend::DEFAULT_SNAPSHOTTER;
use crate::snapshots::Snapshotter;
use crate::transfer::ImportOptions;
use crate::{Error, Result};

/// Bytes of an archive sent per body chunk.
const CHUNK: usize = 256 * 1024;

/// A blocking writer feeding a response body; a failed export ends the
/// body with an error, so the client sees a broken transfer rather than a
/// short archive.
struct BodyWriter {
    sender: mpsc::Sender<io::Result<Bytes>>,
    buffer: Vec<u8>,
}

impl BodyWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buffer));
        self.sender
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for BodyWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        if self.buffer.len() >= CHUNK {
            self.send()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// `GET /images/get?names=a&names=b`.
pub async fn save_many(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    let names = query.all("names").into_iter().map(str::to_owned).collect();
    save(frontend, names).await
}

/// The record names a `docker save` argument stands for: the reference's
/// own record, or every record of the image an ID names.
fn records_for(frontend: &Frontend, text: &str) -> Result<Vec<String>> {
    if let Lookup::Reference(parsed, _) = Lookup::parse(text)? {
        if frontend
            .backend
            .images
            .get(NAMESPACE, &parsed.name())
            .is_ok()
        {
            return Ok(vec![parsed.name()]);
        }
    }
    let image = frontend.catalog.find(text)?;
    let named: Vec<String> = image
        .records
        .iter()
        .filter(|r| !is_unnamed(&r.name))
        .map(|r| r.name.clone())
        .collect();
    Ok(if named.is_empty() {
        image
            .records
            .iter()
            .map(|r| r.name.clone())
            .take(1)
            .collect()
    } else {
        named
    })
}

/// Streams the images `texts` name as one tar.
pub async fn save(frontend: Frontend, texts: Vec<String>) -> ApiResult<Response> {
    if texts.is_empty() {
        return Err(Error::invalid("docker save: no image named").into());
    }
    let worker = frontend.clone();
    let (names, hold) = blocking(move || {
        let mut names = Vec::new();
        for text in &texts {
            for name in records_for(&worker, text)? {
                if !names.contains(&name) {
                    names.push(name);
                }
            }
        }
        // The images are held for the whole export: an `rmi` meanwhile
        // must not let the collector take blobs the archive still reads.
        let targets: Vec<Descriptor> = worker
            .catalog
            .records()?
            .into_iter()
            .filter(|r| names.contains(&r.name))
            .map(|r| r.target)
            .collect();
        let hold = Records::new(&worker.backend).hold(targets.iter())?;
        Ok((names, hold))
    })
    .await?;
    let (sender, receiver) = mpsc::channel::<io::Result<Bytes>>(4);
    let transfers = frontend.transfers.clone();
    let exported = names.clone();
    tokio::task::spawn_blocking(move || {
        let mut writer = BodyWriter {
            sender: sender.clone(),
            buffer: Vec::with_capacity(CHUNK),
        };
        if let Err(err) = transfers.export(NAMESPACE, &exported, &mut writer) {
            tracing::warn!("docker save: {err}");
            let _ = sender.blocking_send(Err(io::Error::other(err.message)));
        }
        hold.release();
    });
    for name in &names {
        let shown = familiar(name);
        frontend
            .journal
            .record(DockerEvent::image("save", &shown, &shown));
    }
    let body = Body::from_stream(ReceiverStream::new(receiver));
    Ok(([(CONTENT_TYPE, "application/x-tar")], body).into_response())
}

/// `POST /images/load`: the body is a `docker save` tar or an OCI
/// layout. The archive is spooled and imported before the answer, so a bad
/// archive is a 400 rather than an error line.
pub async fn load(State(frontend): State<Frontend>, body: Body) -> ApiResult<Response> {
    let spool_dir = frontend.transfers.spool_dir();
    let spool = blocking(move || {
        tempfile::tempfile_in(&spool_dir)
            .map_err(|err| Error::internal(format!("docker load: spool file: {err}")))
    })
    .await?;
    let mut spool = tokio::fs::File::from_std(spool);
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk
            .map_err(|err| Error::invalid(format!("docker load: reading the archive: {err}")))?;
        spool.write_all(&chunk).await.map_err(|err| {
            Error::unavailable(format!("docker load: spooling the archive: {err}"))
        })?;
    }
    spool
        .flush()
        .await
        .map_err(|err| Error::unavailable(format!("docker load: spooling the archive: {err}")))?;
    let mut spool = spool.into_std().await;
    let worker = frontend.clone();
    let loaded = blocking(move || {
        spool
            .rewind()
            .map_err(|err| Error::internal(format!("docker load: rewind the spool: {err}")))?;
        let before: BTreeMap<String, Descriptor> = worker
            .catalog
            .records()?
            .into_iter()
            .map(|r| (r.name, r.target))
            .collect();
        let snapshotter = worker.backend.snapshotters.get(DEFAULT_SNAPSHOTTER)?;
        let records = Records::new(&worker.backend);
        // Every image a loaded name may leave is held until it is kept as
        // a dangling image.
        let hold = records.hold(before.values())?;
        let loaded = load_records(&worker, &records, spool, &snapshotter, &before);
        hold.release();
        loaded
    })
    .await;
    // What a failed import stored is held only by an expiring lease.
    frontend.backend.gc.schedule();
    let loaded = loaded?;
    let (messages, response) = Messages::channel();
    for image in &loaded {
        let (line, actor) = match image {
            Loaded::Name(name) => (format!("Loaded image: {name}\n"), name),
            Loaded::Id(id) => (format!("Loaded image ID: {id}\n"), id),
        };
        // `quiet` silences progress only; these lines are always sent.
        messages.stream(line);
        frontend
            .journal
            .record(DockerEvent::image("load", actor, actor));
    }
    Ok(response)
}

/// Imports the spooled archive and records its images the way dockerd
/// names them: an unnamed image as a dangling one, a named one moved from
/// what it named `before` (which stays as a dangling image if nothing else
/// names it).
fn load_records(
    worker: &Frontend,
    records: &Records<'_>,
    spool: std::fs::File,
    snapshotter: &Snapshotter,
    before: &BTreeMap<String, Descriptor>,
) -> Result<Vec<Loaded>> {
    let imported = worker
        .transfers
        .import(NAMESPACE, spool, snapshotter, &ImportOptions::default())
        .map_err(|err| err.context("docker load"))?;
    let mut loaded = Vec::new();
    for image in imported {
        let unnamed = image.name.starts_with("import-")
            || familiar(&image.name).starts_with(DANGLING_PREFIX)
            || ImageRef::parse(&image.name).is_err();
        if unnamed {
            // Unnamed in the archive: kept as a dangling image (made
            // before the import's own record goes, so nothing lets go).
            let name = dangling_name(image.target.digest.as_str());
            records.set(&name, &image.target)?;
            records.remove(&image.name)?;
            let id = worker.catalog.by_name(&name)?.id.to_string();
            loaded.push(Loaded::Id(id));
        } else {
            let pinned = ImageRef::parse(&image.name)
                .ok()
                .and_then(|name| name.digest().map(str::to_owned));
            if pinned.is_some_and(|digest| digest != image.target.digest.as_str()) {
                // `name@digest` naming another image: never recorded.
                records.restore(&image.name, before.get(&image.name))?;
                return Err(Error::invalid(format!(
                    "docker load: {} pins a digest that is not its image's ({})",
                    familiar(&image.name),
                    image.target.digest
                )));
            }
            records.moved(&image.name, before.get(&image.name))?;
            loaded.push(Loaded::Name(familiar(&image.name)));
        }
    }
    Ok(loaded)
}

/// What a load reports per image.
enum Loaded {
    Name(String),
    Id(String),
}
