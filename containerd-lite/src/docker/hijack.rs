//! Taking over a connection, as dockerd does for attach and exec: the
//! client asks for `Connection: Upgrade` + `Upgrade: tcp`, the answer is
//! `101 UPGRADED`, and from then on the connection carries raw bytes both
//! ways: the process's output to the client (framed with 8-byte headers
//! unless it has a terminal), the client's input to the process. A client
//! that does not ask for the upgrade gets the output as a streamed `200`
//! body and sends no input.

use std::future::Future;
use std::pin::Pin;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use futures::Stream;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

/// The content type of a stream framed with 8-byte headers.
pub const MULTIPLEXED: &str = "application/vnd.docker.multiplexed-stream";
/// The content type of a terminal's raw stream.
pub const RAW: &str = "application/vnd.docker.raw-stream";

/// The connection after the upgrade: read the client's input, write the
/// output.
pub type Io = TokioIo<hyper::upgrade::Upgraded>;

/// What runs on a taken-over connection.
pub type Session = Box<dyn FnOnce(Io) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Whether the client asked to take the connection over.
pub fn wants_upgrade(request: &Request) -> bool {
    let has = |name: header::HeaderName, value: &str| {
        request
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|v| v.trim().eq_ignore_ascii_case(value))
    };
    has(header::CONNECTION, "upgrade") && has(header::UPGRADE, "tcp")
}

/// Answers `101 UPGRADED` and runs `session` on the connection once hyper
/// hands it over (after the answer is sent).
pub fn upgrade(mut request: Request, content_type: &'static str, session: Session) -> Response {
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => session(TokioIo::new(upgraded)).await,
            Err(err) => tracing::debug!("docker API: connection upgrade failed: {err}"),
        }
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    response
}

/// The output alone, as a streamed `200` body (no upgrade asked).
pub fn streamed<S>(content_type: &'static str, output: S) -> Response
where
    S: Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static,
{
    let mut response = Response::new(Body::from_stream(output));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// The content type of a stream for a process with or without a terminal.
pub fn content_type(tty: bool) -> &'static str {
    if tty {
        RAW
    } else {
        MULTIPLEXED
    }
}

/// Splits the connection into its reading and writing halves.
pub fn split(
    io: Io,
) -> (
    impl AsyncRead + Send + Unpin,
    impl AsyncWrite + Send + Unpin,
) {
    tokio::io::split(io)
}

/// Detach keys (`ctrl-p,ctrl-q`, docker's default): each comma-separated
/// key is a single character or `ctrl-<c>` with `c` one of `a`-`z`, `@`,
/// `[`, `\`, `]`, `^`, `_`.
pub fn detach_keys(text: &str) -> crate::Result<Vec<u8>> {
    let invalid = || crate::Error::invalid(format!("Invalid detach keys ({text}) provided"));
    let mut keys = Vec::new();
    for key in text.split(',') {
        let key = key.trim();
        match key.strip_prefix("ctrl-") {
            Some(c) if c.len() == 1 => {
                let c = c.as_bytes()[0].to_ascii_lowercase();
                let code = match c {
                    b'a'..=b'z' => c - b'a' + 1,
                    b'@' => 0,
                    b'[' => 27,
                    b'\\' => 28,
                    b']' => 29,
                    b'^' => 30,
                    b'_' => 31,
                    _ => return Err(invalid()),
                };
                keys.push(code);
            }
            Some(_) => return Err(invalid()),
            None if key.len() == 1 => keys.push(key.as_bytes()[0]),
            None => return Err(invalid()),
        }
    }
    if keys.is_empty() {
        return Err(invalid());
    }
    Ok(keys)
}

/// Finds the detach sequence in a stream of input, across reads.
#[derive(Debug)]
pub struct DetachWatch {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachWatch {
    pub fn new(keys: Vec<u8>) -> DetachWatch {
        DetachWatch { keys, matched: 0 }
    }

    /// Looks at the next input. Returns the bytes to pass on (a partial
    /// match is held back until it is known not to be the sequence) and
    /// whether the sequence is complete (then nothing after it counts).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        for &byte in input {
            if byte == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
            } else {
                out.extend_from_slice(&self.keys[..self.matched]);
                self.matched = 0;
                if byte == self.keys[0] {
                    self.matched = 1;
                } else {
                    out.push(byte);
                }
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_read_as_docker_writes_them() {
        assert_eq!(detach_keys("ctrl-p,ctrl-q").unwrap(), [16, 17]);
        assert_eq!(
            detach_keys("ctrl-a,x,ctrl-@,ctrl-[").unwrap(),
            [1, b'x', 0, 27]
        );
        for bad in ["", "ctrl-", "ctrl-1", "ab", "ctrl-p,,"] {
            assert!(detach_keys(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_detach_sequence_is_found_across_reads_and_held_back() {
        let mut watch = DetachWatch::new(vec![16, 17]);
        assert_eq!(watch.feed(b"ab\x10"), (b"ab".to_vec(), false));
        // The held-back ctrl-p is passed on when the next byte breaks it.
        assert_eq!(watch.feed(b"c"), (b"\x10c".to_vec(), false));
        assert_eq!(watch.feed(b"x\x10\x10"), (b"x\x10".to_vec(), false));
        assert_eq!(watch.feed(b"\x11rest"), (Vec::new(), true));
    }
}
