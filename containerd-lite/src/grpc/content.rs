//! `containerd.services.content.v1.Content` over the namespaced
//! [`ContentStore`]: blobs are read in chunks, written through resumable
//! ingests held open for the life of one Write stream.

use std::pin::Pin;

use berth_proto::containerd::events::ContentDelete;
use berth_proto::containerd::services::content::v1::{
    content_server, AbortRequest, DeleteContentRequest, Info as WireInfo, InfoRequest,
    InfoResponse, ListContentRequest, ListContentResponse, ListStatusesRequest,
    ListStatusesResponse, ReadContentRequest, ReadContentResponse, Status as WireStatus,
    StatusRequest, StatusResponse, UpdateRequest, UpdateResponse, WriteAction, WriteContentRequest,
    WriteContentResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::backend::Gc;
use super::{blocking, field_paths, labels_from_wire, labels_to_wire, request, timestamp};
use crate::content::{Digest, Info, Status as IngestStatus, WriterOptions};
use crate::events::Exchange;
use crate::metadata::{ContentStore, Filter, NamespacedWriter};
use crate::Error;

/// The most bytes one Read response carries.
const READ_CHUNK: usize = 1 << 20;
/// How many infos one List response carries.
const LIST_CHUNK: usize = 100;

/// The Content service.
#[derive(Debug, Clone)]
pub struct ContentService {
    store: ContentStore,
    events: Exchange,
    gc: Gc,
}

impl ContentService {
    pub fn new(store: ContentStore, events: Exchange, gc: Gc) -> Self {
        ContentService { store, events, gc }
    }
}

fn info_to_wire(info: Info) -> WireInfo {
    WireInfo {
        digest: info.digest.to_string(),
        size: size_to_wire(info.size),
        created_at: timestamp(info.created_at),
        updated_at: timestamp(info.updated_at),
        labels: labels_to_wire(info.labels),
    }
}

fn status_to_wire(status: IngestStatus) -> WireStatus {
    WireStatus {
        started_at: timestamp(status.started_at),
        updated_at: timestamp(status.updated_at),
        r#ref: status.reference,
        offset: size_to_wire(status.offset),
        total: size_to_wire(status.total),
        expected: status.expected.map(|d| d.to_string()).unwrap_or_default(),
    }
}

/// Sizes are `int64` on the wire; ours never reach 2^63.
fn size_to_wire(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

/// A non-negative wire size; `what` names it in the error.
fn size_from_wire(size: i64, what: &str) -> Result<u64, Error> {
    u64::try_from(size).map_err(|_| Error::invalid(format!("{what} {size}: must not be negative")))
}

fn digest(text: &str) -> Result<Digest, Status> {
    Ok(Digest::parse(text)?)
}

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl content_server::Content for ContentService {
    async fn info(&self, request: Request<InfoRequest>) -> Result<Response<InfoResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let digest = digest(&request.get_ref().digest)?;
        let store = self.store.clone();
        let info = blocking(move || store.info(&namespace, &digest)).await?;
        Ok(Response::new(InfoResponse {
            info: Some(info_to_wire(info)),
        }))
    }

    async fn update(
        &self,
        request: Request<UpdateRequest>,
    ) -> Result<Response<UpdateResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let UpdateRequest { info, update_mask } = request.into_inner();
        let info = info.ok_or_else(|| Error::invalid("update content: no info given"))?;
        let digest = digest(&info.digest)?;
        let paths = field_paths(update_mask);
        let labels = labels_from_wire(info.labels);
        let store = self.store.clone();
        let updated = blocking(move || store.update(&namespace, &digest, labels, &paths)).await?;
        Ok(Response::new(UpdateResponse {
            info: Some(info_to_wire(updated)),
        }))
    }

    type ListStream = ResponseStream<ListContentResponse>;

    async fn list(
        &self,
        request: Request<ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let filter = Filter::parse_all(&request.get_ref().filters)?;
        let store = self.store.clone();
        let infos = blocking(move || store.list(&namespace, &filter)).await?;
        let chunks: Vec<_> = infos
            .chunks(LIST_CHUNK)
            .map(|chunk| {
                Ok(ListContentResponse {
                    info: chunk.iter().cloned().map(info_to_wire).collect(),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn delete(&self, request: Request<DeleteContentRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let digest = digest(&request.get_ref().digest)?;
        let store = self.store.clone();
        let (ns, deleted) = (namespace.clone(), digest.clone());
        blocking(move || store.delete(&ns, &deleted)).await?;
        self.events.publish(
            &namespace,
            "/content/delete",
            &ContentDelete {
                digest: digest.to_string(),
            },
        )?;
        self.gc.schedule();
        Ok(Response::new(()))
    }

    type ReadStream = ResponseStream<ReadContentResponse>;

    async fn read(
        &self,
        request: Request<ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let ReadContentRequest {
            digest: text,
            offset,
            size,
        } = request.into_inner();
        let digest = digest(&text)?;
        let store = self.store.clone();
        let reader = blocking(move || store.reader(&namespace, &digest)).await?;
        let blob_size = reader.size();
        // Zero or less means "from the start", as containerd reads it.
        let start = u64::try_from(offset).unwrap_or(0);
        if start > blob_size {
            return Err(Error::invalid(format!(
                "content {text}: offset {start} is past its end ({blob_size} bytes)"
            ))
            .into());
        }
        let end = match size_from_wire(size, "read size")? {
            0 => blob_size,
            size => start.saturating_add(size).min(blob_size),
        };
        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut reader = reader;
            let mut at = start;
            while at < end {
                let want = usize::try_from(end - at)
                    .unwrap_or(READ_CHUNK)
                    .min(READ_CHUNK);
                let chunk = tokio::task::spawn_blocking(move || {
                    let mut data = vec![0; want];
                    let read = reader.read_at(&mut data, at);
                    (
                        reader,
                        read.map(|n| {
                            data.truncate(n);
                            data
                        }),
                    )
                })
                .await;
                let (back, data) = match chunk {
                    Ok(result) => result,
                    Err(join) => {
                        let _ = sender
                            .send(Err(
                                Error::internal(format!("reading {text}: {join}")).into()
                            ))
                            .await;
                        return;
                    }
                };
                reader = back;
                let message = match data {
                    Ok(data) if data.is_empty() => Err(Error::internal(format!(
                        "content {text}: ended at {at}, before its size {blob_size}"
                    ))
                    .into()),
                    Ok(data) => {
                        let message = ReadContentResponse {
                            offset: size_to_wire(at),
                            data,
                        };
                        at += message.data.len() as u64;
                        Ok(message)
                    }
                    Err(err) => Err(err.into()),
                };
                let failed = message.is_err();
                if sender.send(message).await.is_err() || failed {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn status(
        &self,
        request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let reference = request.into_inner().r#ref;
        let store = self.store.clone();
        let status = blocking(move || store.status(&namespace, &reference)).await?;
        Ok(Response::new(StatusResponse {
            status: Some(status_to_wire(status)),
        }))
    }

    async fn list_statuses(
        &self,
        request: Request<ListStatusesRequest>,
    ) -> Result<Response<ListStatusesResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let filter = Filter::parse_all(&request.get_ref().filters)?;
        let store = self.store.clone();
        let statuses = blocking(move || store.list_statuses(&namespace, &filter)).await?;
        Ok(Response::new(ListStatusesResponse {
            statuses: statuses.into_iter().map(status_to_wire).collect(),
        }))
    }

    type WriteStream = ResponseStream<WriteContentResponse>;

    async fn write(
        &self,
        request: Request<Streaming<WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let lease = request::lease(request.metadata())?;
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Error::invalid("write: the stream carried no request"))?;
        if first.r#ref.is_empty() {
            return Err(Error::invalid("write: the first request must name a ref").into());
        }
        let options = WriterOptions {
            reference: first.r#ref.clone(),
            total: size_from_wire(first.total, "write total")?,
            expected: match first.expected.as_str() {
                "" => None,
                text => Some(digest(text)?),
            },
        };
        let store = self.store.clone();
        let writer = blocking(move || store.writer(&namespace, lease.as_deref(), options)).await?;

        let (sender, receiver) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut ingest = Ingest::new(writer);
            let mut next = Some(first);
            while let Some(message) = next.take() {
                let (back, reply) = match tokio::task::spawn_blocking(move || {
                    let reply = ingest.handle(message);
                    (ingest, reply)
                })
                .await
                {
                    Ok(done) => done,
                    Err(join) => {
                        let _ = sender
                            .send(Err(Error::internal(format!("write: {join}")).into()))
                            .await;
                        return;
                    }
                };
                let finished = match &reply {
                    Ok(reply) => reply.action == WriteAction::Commit as i32,
                    Err(_) => true,
                };
                if sender.send(reply.map_err(Status::from)).await.is_err() || finished {
                    return;
                }
                ingest = back;
                next = match incoming.message().await {
                    Ok(message) => message,
                    Err(status) => {
                        let _ = sender.send(Err(status)).await;
                        return;
                    }
                };
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }

    async fn abort(&self, request: Request<AbortRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let reference = request.into_inner().r#ref;
        let store = self.store.clone();
        blocking(move || store.abort(&namespace, &reference)).await?;
        Ok(Response::new(()))
    }
}

/// One Write stream's ingest: what the client announced so far and the
/// writer holding the ref's lock (gone once committed).
struct Ingest {
    writer: Option<NamespacedWriter>,
    total: u64,
    expected: Option<Digest>,
}

impl Ingest {
    fn new(writer: NamespacedWriter) -> Self {
        let status = writer.status();
        Ingest {
            total: status.total,
            expected: status.expected,
            writer: Some(writer),
        }
    }

    /// Applies one request (stat, write at the current offset, or commit)
    /// and answers with the ingest's state.
    fn handle(&mut self, request: WriteContentRequest) -> Result<WriteContentResponse, Error> {
        let action = WriteAction::try_from(request.action)
            .map_err(|_| Error::invalid(format!("write: unknown action {}", request.action)))?;
        let writer = self
            .writer
            .as_mut()
            .ok_or_else(|| Error::precondition("write: the ingest is already committed"))?;
        let reference = writer.reference().to_string();
        if request.total > 0 {
            let total = size_from_wire(request.total, "write total")?;
            if total != self.total {
                writer.set_total(total)?;
                self.total = total;
            }
        }
        if !request.expected.is_empty() {
            self.expected = Some(Digest::parse(&request.expected)?);
        }
        let mut digest = String::new();
        match action {
            WriteAction::Stat => {}
            WriteAction::Write | WriteAction::Commit => {
                let offset = size_from_wire(request.offset, "write offset")?;
                let current = writer.offset();
                if offset == 0 && current > 0 {
                    // Writing at zero restarts the ingest, as containerd allows.
                    writer.truncate(0)?;
                } else if offset != current {
                    return Err(Error::invalid(format!(
                        "ingest {reference}: write at {offset}, but the data so far ends at {current}"
                    )));
                }
                if !request.data.is_empty() {
                    writer.write(&request.data)?;
                }
                if action == WriteAction::Commit {
                    let writer = self.writer.take().ok_or_else(|| {
                        Error::internal(format!("ingest {reference}: writer vanished"))
                    })?;
                    let status = writer.status();
                    let size = if self.total > 0 {
                        self.total
                    } else {
                        status.offset
                    };
                    let committed = writer.commit(
                        size,
                        self.expected.as_ref(),
                        labels_from_wire(request.labels),
                    )?;
                    digest = committed.to_string();
                    return Ok(WriteContentResponse {
                        action: request.action,
                        started_at: timestamp(status.started_at),
                        updated_at: timestamp(status.updated_at),
                        offset: size_to_wire(status.offset),
                        total: size_to_wire(size),
                        digest,
                    });
                }
            }
        }
        let status = writer.status();
        Ok(WriteContentResponse {
            action: request.action,
            started_at: timestamp(status.started_at),
            updated_at: timestamp(status.updated_at),
            offset: size_to_wire(status.offset),
            total: size_to_wire(self.total),
            digest,
        })
    }
}
