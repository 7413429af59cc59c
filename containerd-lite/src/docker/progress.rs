//! Streamed JSON messages, one object a line, as dockerd writes the
//! progress of pulls, pushes and loads: `{"status": ..., "id": ...}`
//! lines the CLI renders, and an `{"errorDetail": ..., "error": ...}`
//! line when the work fails after the 200 went out.

use std::convert::Infallible;

use axum::body::{Body, Bytes};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tokio_stream::StreamExt;

/// The sending end of a message stream. Cheap to clone; sends after the
/// client left are dropped.
#[derive(Debug, Clone)]
pub struct Messages {
    sender: mpsc::UnboundedSender<Bytes>,
}

impl Messages {
    /// A stream and the 200 response carrying it.
    pub fn channel() -> (Messages, Response) {
        let (sender, receiver) = mpsc::unbounded_channel::<Bytes>();
        let body =
            Body::from_stream(UnboundedReceiverStream::new(receiver).map(Ok::<Bytes, Infallible>));
        let response = ([(CONTENT_TYPE, "application/json")], body).into_response();
        (Messages { sender }, response)
    }

    /// Sends one message.
    pub fn send(&self, message: Value) {
        let mut line = message.to_string().into_bytes();
        line.push(b'\n');
        let _ = self.sender.send(Bytes::from(line));
    }

    /// `{"status": status}`.
    pub fn status(&self, status: impl Into<String>) {
        self.send(json!({ "status": status.into() }));
    }

    /// `{"status": status, "progressDetail": {}, "id": id}`.
    pub fn item(&self, id: &str, status: &str) {
        self.send(json!({ "status": status, "progressDetail": {}, "id": id }));
    }

    /// A byte-count progress line for `id`.
    pub fn bytes(&self, id: &str, status: &str, current: u64, total: u64) {
        self.send(json!({
            "status": status,
            "progressDetail": { "current": current, "total": total },
            "progress": bar(current, total),
            "id": id,
        }));
    }

    /// `{"stream": text}` (docker load's lines).
    pub fn stream(&self, text: impl Into<String>) {
        self.send(json!({ "stream": text.into() }));
    }

    /// Whether the client is gone (nothing sent reaches anyone).
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }

    /// Resolves when the client is gone.
    pub async fn closed(&self) {
        self.sender.closed().await;
    }

    /// The failure line the CLI prints and exits non-zero on.
    pub fn error(&self, message: &str) {
        self.send(json!({ "errorDetail": { "message": message }, "error": message }));
    }
}

/// A text bar like dockerd's: `[=====>      ]  1.2MB/3.4MB`.
fn bar(current: u64, total: u64) -> String {
    const WIDTH: u64 = 50;
    if total == 0 {
        return human(current);
    }
    let filled = (current.min(total) * WIDTH / total) as usize;
    let mut bar = "=".repeat(filled);
    if (filled as u64) < WIDTH {
        bar.push('>');
    }
    format!(
        "[{bar:<width$}] {:>8}/{}",
        human(current),
        human(total),
        width = WIDTH as usize
    )
}

/// Sizes in decimal units, as docker prints them (`1.2MB`).
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes}B")
    } else {
        let number = format!("{value:.3}");
        let number = number.trim_end_matches('0').trim_end_matches('.');
        format!("{number}{}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_bars_read_like_dockers() {
        assert_eq!(human(999), "999B");
        assert_eq!(human(1_500_000), "1.5MB");
        assert!(bar(5, 10).starts_with("[=========================>"));
        assert!(bar(10, 10).ends_with("10B/10B"));
    }

    #[tokio::test]
    async fn messages_are_json_lines() {
        let (messages, response) = Messages::channel();
        messages.item("abc", "Pulling fs layer");
        messages.error("boom");
        drop(messages);
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let lines: Vec<Value> = body
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect();
        assert_eq!(lines[0]["id"], "abc");
        assert_eq!(lines[1]["errorDetail"]["message"], "boom");
    }
}
