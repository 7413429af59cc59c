//! The byte streams around a layer: media types and their compression,
//! and readers/writers that digest and count what passes through them.

use std::io::{self, BufReader, Read, Write};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// How a layer's tar stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

/// OCI layer media types.
pub const MEDIA_TYPE_TAR: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_TAR_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_TAR_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker's (schema 2) compressed layer media type.
pub const MEDIA_TYPE_DOCKER_TAR_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

impl Compression {
    /// The compression a layer media type names. Unknown types are
    /// Unimplemented, so a caller can try another differ as containerd does.
    pub fn from_media_type(media_type: &str) -> Result<Self> {
        let compression = match media_type {
            MEDIA_TYPE_TAR | "application/vnd.oci.image.layer.nondistributable.v1.tar" => {
                Compression::None
            }
            MEDIA_TYPE_TAR_GZIP
            | MEDIA_TYPE_DOCKER_TAR_GZIP
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
            | "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip" => Compression::Gzip,
            MEDIA_TYPE_TAR_ZSTD
            | "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd" => Compression::Zstd,
            other => {
                return Err(Error::unimplemented(format!(
                    "layer media type {other:?}: not supported"
                )))
            }
        };
        Ok(compression)
    }

    /// The OCI layer media type for a layer with this compression.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::None => MEDIA_TYPE_TAR,
            Compression::Gzip => MEDIA_TYPE_TAR_GZIP,
            Compression::Zstd => MEDIA_TYPE_TAR_ZSTD,
        }
    }

    /// Wraps `reader` in the matching decompressor.
    pub fn decompress<'a>(self, reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => {
                Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(reader)))
            }
            Compression::Zstd => Box::new(
                zstd::stream::read::Decoder::new(reader)
                    .map_err(|e| Error::internal(format!("zstd decoder: {e}")))?,
            ),
        })
    }
}

/// `sha256:<hex>` of a finished hasher.
pub fn digest_string(hasher: Sha256) -> String {
    format!("sha256:{:x}", hasher.finalize())
}

/// A reader that digests and counts what it reads and fails once more than
/// `limit` bytes have come through (a decompression bomb stops there).
pub struct DigestReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
    limit: u64,
    exceeded: bool,
}

impl<R: Read> DigestReader<R> {
    pub fn new(inner: R, limit: u64) -> Self {
        DigestReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
            limit,
            exceeded: false,
        }
    }

    /// Whether reading stopped because the limit was passed.
    pub fn exceeded(&self) -> bool {
        self.exceeded
    }

    /// Reads what is left (a tar stream's trailing blocks) into the digest.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(drop)
    }

    /// The digest and number of bytes read.
    pub fn finish(self) -> (String, u64) {
        (digest_string(self.hasher), self.count)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count += n as u64;
        if self.count > self.limit {
            self.exceeded = true;
            return Err(io::Error::other(format!(
                "layer expands past the limit of {} bytes",
                self.limit
            )));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// A writer that digests and counts what it writes.
pub struct DigestWriter<W> {
    inner: W,
    hasher: Sha256,
    count: u64,
}

impl<W: Write> DigestWriter<W> {
    pub fn new(inner: W) -> Self {
        DigestWriter {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }

    /// The inner writer, the digest and the number of bytes written.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, digest_string(self.hasher), self.count)
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A compressing writer that can be finished (trailers written).
pub enum Compressor<W: Write> {
    None(W),
    Gzip(flate2::write::GzEncoder<W>),
    Zstd(zstd::stream::write::Encoder<'static, W>),
}

impl<W: Write> Compressor<W> {
    pub fn new(compression: Compression, inner: W) -> Result<Self> {
        Ok(match compression {
            Compression::None => Compressor::None(inner),
            Compression::Gzip => Compressor::Gzip(flate2::write::GzEncoder::new(
                inner,
                flate2::Compression::default(),
            )),
            Compression::Zstd => Compressor::Zstd(
                zstd::stream::write::Encoder::new(inner, 3)
                    .map_err(|e| Error::internal(format!("zstd encoder: {e}")))?,
            ),
        })
    }

    /// Writes the compression trailer and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Compressor::None(w) => Ok(w),
            Compressor::Gzip(w) => w.finish(),
            Compressor::Zstd(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Compressor<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Compressor::None(w) => w.write(buf),
            Compressor::Gzip(w) => w.write(buf),
            Compressor::Zstd(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Compressor::None(w) => w.flush(),
            Compressor::Gzip(w) => w.flush(),
            Compressor::Zstd(w) => w.flush(),
        }
    }
}
