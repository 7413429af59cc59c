//! `containerd.services.diff.v1.Diff`: applying a layer blob from the
//! content store onto mounts, and storing the layer computed between two
//! sets of mounts.

use std::io::{self, BufReader, Write};

use berth_proto::containerd::services::diff::v1::{
    diff_server, ApplyRequest, ApplyResponse, DiffRequest, DiffResponse,
};
use berth_proto::containerd::types::Descriptor as WireDescriptor;
use tonic::{Request, Response, Status};

use super::images::descriptor_from_wire;
use super::snapshots::mount_from_wire;
use super::{blocking, labels_from_wire, request};
use crate::content::{Digest, WriterOptions};
use crate::diff::{self, ApplyOptions, Compression, ComputeOptions};
use crate::metadata::{ContentStore, NamespacedWriter};
use crate::{Error, Result};

/// The label containerd puts on a compressed layer: its uncompressed digest.
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";

/// The Diff service.
#[derive(Debug, Clone)]
pub struct DiffService {
    content: ContentStore,
    limits: ApplyOptions,
}

impl DiffService {
    pub fn new(content: ContentStore, limits: ApplyOptions) -> Self {
        DiffService { content, limits }
    }
}

/// `io::Write` over an ingest, so a layer streams straight into content.
struct IngestWriter<'a>(&'a mut NamespacedWriter);

impl Write for IngestWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf).map_err(|e| io::Error::other(e.message))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn size_to_wire(size: u64) -> i64 {
    i64::try_from(size).unwrap_or(i64::MAX)
}

#[tonic::async_trait]
impl diff_server::Diff for DiffService {
    async fn apply(
        &self,
        request: Request<ApplyRequest>,
    ) -> Result<Response<ApplyResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let ApplyRequest { diff, mounts, .. } = request.into_inner();
        let layer = descriptor_from_wire(
            diff.ok_or_else(|| Error::invalid("apply: no layer descriptor given"))?,
            "apply: layer",
        )?;
        let mounts: Vec<_> = mounts.into_iter().map(mount_from_wire).collect();
        let content = self.content.clone();
        let limits = self.limits.clone();
        let applied = blocking(move || {
            let blob = content.reader(&namespace, &layer.digest)?;
            if blob.size() != layer.size {
                return Err(Error::precondition(format!(
                    "apply: layer {}: the descriptor says {} bytes, the blob has {}",
                    layer.digest,
                    layer.size,
                    blob.size()
                )));
            }
            let file = BufReader::new(blob.into_file());
            diff::apply(&mounts, file, &layer.media_type, &limits)
                .map_err(|e| e.context(format!("apply layer {}", layer.digest)))
        })
        .await?;
        Ok(Response::new(ApplyResponse {
            applied: Some(WireDescriptor {
                media_type: Compression::None.media_type().to_string(),
                digest: applied.diff_id,
                size: size_to_wire(applied.size),
                annotations: Default::default(),
            }),
        }))
    }

    async fn diff(&self, request: Request<DiffRequest>) -> Result<Response<DiffResponse>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let lease = request::lease(request.metadata())?;
        let DiffRequest {
            left,
            right,
            media_type,
            r#ref,
            labels,
        } = request.into_inner();
        let compression = match media_type.as_str() {
            "" => Compression::Gzip,
            other => Compression::from_media_type(other)?,
        };
        let reference = if r#ref.is_empty() {
            format!("diff-{}", uuid::Uuid::new_v4().simple())
        } else {
            r#ref
        };
        let left: Vec<_> = left.into_iter().map(mount_from_wire).collect();
        let right: Vec<_> = right.into_iter().map(mount_from_wire).collect();
        let content = self.content.clone();
        let descriptor = blocking(move || -> Result<WireDescriptor> {
            let mut writer =
                content.writer(&namespace, lease.as_deref(), WriterOptions::new(&reference))?;
            // A restarted ref starts over.
            writer.truncate(0)?;
            let computed = diff::compute(
                &left,
                &right,
                IngestWriter(&mut writer),
                &ComputeOptions { compression },
            );
            let computed = match computed {
                Ok(computed) => computed,
                Err(err) => {
                    drop(writer);
                    let _ = content.abort(&namespace, &reference);
                    return Err(err.context("diff"));
                }
            };
            let mut labels = labels_from_wire(labels);
            if compression != Compression::None {
                labels.insert(UNCOMPRESSED_LABEL.to_string(), computed.diff_id.clone());
            }
            let digest = Digest::parse(&computed.digest)?;
            match writer.commit(computed.size, Some(&digest), labels) {
                Ok(_) => {}
                // The same layer computed before: it is there, all is well.
                Err(err) if err.kind == crate::ErrorKind::AlreadyExists => {}
                Err(err) => return Err(err),
            }
            Ok(WireDescriptor {
                media_type: computed.media_type,
                digest: computed.digest,
                size: size_to_wire(computed.size),
                annotations: Default::default(),
            })
        })
        .await?;
        Ok(Response::new(DiffResponse {
            diff: Some(descriptor),
        }))
    }
}
