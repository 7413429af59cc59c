//! `berth.transfer.v1.Transfer`: berthd's own service for moving whole
//! images (containerd 1.6 has no server-side transfer). A thin adapter
//! over [`crate::transfer::Transfers`]: progress becomes a stream of
//! messages, archives travel in chunks.

use std::collections::HashMap;
use std::io::{self, Seek, Write};
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use berth_proto::berth::transfer::v1::{
    progress, transfer_server, BlobProgress as WireBlobProgress, BlobState as WireBlobState,
    Credentials as WireCredentials, ExportChunk, ExportRequest, ImportRequest, ImportResult,
    Progress, PullRequest, PushRequest, TransferredImage,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, UnboundedReceiverStream};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

use super::backend::{Gc, Snapshotters};
use super::images::descriptor_to_wire;
use super::request;
use crate::registry::{Credentials, Platform};
use crate::transfer::{
    cancel_when, BlobProgress, BlobState, ImportOptions, ProgressFn, PullOptions, PushOptions,
    Transferred, Transfers,
};
use crate::{Error, Result};

type ResponseStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Bytes of an export sent per message.
const EXPORT_CHUNK: usize = 1 << 20;
/// Bytes a blob must advance before another progress message is sent.
const PROGRESS_STEP: u64 = 1 << 20;

/// The Transfer service over berthd's stores.
#[derive(Debug, Clone)]
pub struct TransferService {
    transfers: Transfers,
    snapshotters: Snapshotters,
    gc: Gc,
}

impl TransferService {
    pub fn new(transfers: Transfers, snapshotters: Snapshotters, gc: Gc) -> Self {
        TransferService {
            transfers,
            snapshotters,
            gc,
        }
    }
}

/// The service over `backend`, ready to add to a router.
pub fn server(backend: &super::Backend) -> transfer_server::TransferServer<TransferService> {
    let transfers = Transfers::new(
        backend.content.clone(),
        backend.images.clone(),
        backend.leases.clone(),
    );
    transfer_server::TransferServer::new(TransferService::new(
        transfers,
        backend.snapshotters.clone(),
        backend.gc.clone(),
    ))
}

fn credentials(wire: Option<WireCredentials>) -> Credentials {
    match wire {
        Some(wire) if !wire.token.is_empty() => Credentials::Bearer(wire.token),
        Some(wire) if !wire.username.is_empty() => Credentials::Basic {
            username: wire.username,
            password: wire.password,
        },
        _ => Credentials::Anonymous,
    }
}

fn image_to_wire(image: Transferred) -> TransferredImage {
    TransferredImage {
        name: image.name,
        target: Some(descriptor_to_wire(image.target)),
        snapshot: image.snapshot,
    }
}

fn state_to_wire(state: BlobState) -> WireBlobState {
    match state {
        BlobState::Exists => WireBlobState::Exists,
        BlobState::Transferring => WireBlobState::Transferring,
        BlobState::Done => WireBlobState::Done,
        BlobState::Unpacked => WireBlobState::Unpacked,
    }
}

/// A progress callback feeding `sender`, sending a blob's advance only
/// every [`PROGRESS_STEP`] bytes (its other states always).
fn progress_to(sender: mpsc::UnboundedSender<Result<Progress, Status>>) -> ProgressFn {
    let sent: Mutex<HashMap<String, u64>> = Mutex::new(HashMap::new());
    Arc::new(move |report: BlobProgress| {
        if report.state == BlobState::Transferring {
            let Ok(mut sent) = sent.lock() else { return };
            let last = sent.entry(report.digest.clone()).or_insert(0);
            if report.done < *last + PROGRESS_STEP && report.done < report.total {
                return;
            }
            *last = report.done;
        }
        let message = Progress {
            event: Some(progress::Event::Blob(WireBlobProgress {
                kind: report.kind,
                digest: report.digest,
                done: i64::try_from(report.done).unwrap_or(i64::MAX),
                total: i64::try_from(report.total).unwrap_or(i64::MAX),
                state: state_to_wire(report.state) as i32,
            })),
        };
        let _ = sender.send(Ok(message));
    })
}

/// Sends a transfer's outcome as the stream's last message.
fn finish(sender: &mpsc::UnboundedSender<Result<Progress, Status>>, done: Result<Transferred>) {
    let message = done.map(|image| Progress {
        event: Some(progress::Event::Image(image_to_wire(image))),
    });
    let _ = sender.send(message.map_err(Status::from));
}

/// Runs blocking transfer work on the blocking pool.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| Error::internal(format!("transfer task: {err}")))?
}

/// Runs a registry transfer to completion on a blocking-pool thread that
/// drives it with the runtime's handle. The registry client's futures are
/// Send, but rustc cannot prove it through their higher-ranked closures
/// (rust-lang/rust#110338), so they cannot go to `tokio::spawn`; built on
/// the thread itself, the future never has to cross threads.
fn run_apart<F, T>(transfer: F)
where
    F: FnOnce() -> T + Send + 'static,
    T: std::future::Future<Output = ()>,
{
    let handle = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || handle.block_on(transfer()));
}

/// A `Write` that hands full chunks to an async receiver.
struct ChunkWriter {
    sender: mpsc::Sender<Result<ExportChunk, Status>>,
    buffer: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buffer, Vec::with_capacity(EXPORT_CHUNK));
        self.sender
            .blocking_send(Ok(ExportChunk { data }))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = EXPORT_CHUNK - self.buffer.len();
        let n = room.min(buf.len());
        self.buffer.extend_from_slice(&buf[..n]);
        if self.buffer.len() == EXPORT_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

#[tonic::async_trait]
impl transfer_server::Transfer for TransferService {
    type PullStream = ResponseStream<Progress>;
    type PushStream = ResponseStream<Progress>;
    type ImportStream = ResponseStream<ImportResult>;
    type ExportStream = ResponseStream<ExportChunk>;

    async fn pull(
        &self,
        request: Request<PullRequest>,
    ) -> Result<Response<Self::PullStream>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let wire = request.into_inner();
        let platform = match wire.platform.as_str() {
            "" => Platform::host(),
            text => Platform::parse(text)?,
        };
        let snapshotter = self.snapshotters.get(&wire.snapshotter)?;
        let options = PullOptions {
            platform,
            insecure: wire.insecure,
            credentials: credentials(wire.credentials),
            cancel: Default::default(),
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let (transfers, gc) = (self.transfers.clone(), self.gc.clone());
        run_apart(move || async move {
            let progress = progress_to(sender.clone());
            // A client that hangs up (ctrl-c) cancels the pull.
            let pulled = cancel_when(
                transfers.pull(&namespace, &wire.reference, snapshotter, &options, progress),
                sender.closed(),
                &options.cancel,
            )
            .await;
            gc.schedule();
            finish(&sender, pulled);
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            receiver,
        ))))
    }

    async fn push(
        &self,
        request: Request<PushRequest>,
    ) -> Result<Response<Self::PushStream>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let wire = request.into_inner();
        let options = PushOptions {
            insecure: wire.insecure,
            credentials: credentials(wire.credentials),
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let transfers = self.transfers.clone();
        run_apart(move || async move {
            let progress = progress_to(sender.clone());
            let pushed = transfers
                .push(
                    &namespace,
                    &wire.image,
                    &wire.destination,
                    &options,
                    progress,
                )
                .await;
            finish(&sender, pushed);
        });
        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(
            receiver,
        ))))
    }

    async fn import(
        &self,
        request: Request<Streaming<ImportRequest>>,
    ) -> Result<Response<Self::ImportStream>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let mut incoming = request.into_inner();
        let first = incoming
            .message()
            .await?
            .ok_or_else(|| Error::invalid("import: the stream carried no archive"))?;
        let snapshotter = self.snapshotters.get(&first.snapshotter)?;
        let options = ImportOptions {
            base_name: first.base_name.clone(),
            platform: None,
        };
        // The archive is spooled to an unnamed file beside the content
        // store: it vanishes with the last handle, even on a crash.
        let spool_dir = self.transfers.spool_dir();
        let spool = blocking(move || {
            tempfile::tempfile_in(&spool_dir)
                .map_err(|err| Error::internal(format!("import: spool file: {err}")))
        })
        .await?;
        let mut spool = tokio::fs::File::from_std(spool);
        let mut next = Some(first);
        while let Some(message) = next {
            tokio::io::AsyncWriteExt::write_all(&mut spool, &message.data)
                .await
                .map_err(|err| {
                    Error::unavailable(format!("import: spooling the archive: {err}"))
                })?;
            next = incoming.message().await?;
        }
        let mut spool = spool.into_std().await;
        let transfers = self.transfers.clone();
        let imported = blocking(move || {
            spool
                .rewind()
                .map_err(|err| Error::internal(format!("import: rewind the spool: {err}")))?;
            transfers.import(&namespace, spool, &snapshotter, &options)
        })
        .await;
        self.gc.schedule();
        let results: Vec<Result<ImportResult, Status>> = imported?
            .into_iter()
            .map(|image| {
                Ok(ImportResult {
                    image: Some(image_to_wire(image)),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(results))))
    }

    async fn export(
        &self,
        request: Request<ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let names = request.into_inner().images;
        let (sender, receiver) = mpsc::channel(4);
        let transfers = self.transfers.clone();
        tokio::task::spawn_blocking(move || {
            let mut out = ChunkWriter {
                sender: sender.clone(),
                buffer: Vec::with_capacity(EXPORT_CHUNK),
            };
            if let Err(err) = transfers.export(&namespace, &names, &mut out) {
                let _ = sender.blocking_send(Err(err.into()));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(receiver))))
    }
}
