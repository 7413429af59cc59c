//! The build's stream, as the legacy builder writes it: `{"stream": ...}`
//! lines for the steps and the commands' output, `{"aux": {"ID": ...}}`
//! for the image made, and an error line at the end of a failed build.
//! Quiet builds (`q=1`) only print the image ID, and on failure what the
//! steps printed, as dockerd does.

use std::sync::{Arc, Mutex};

use serde_json::json;

use crate::docker::progress::Messages;

/// Where a build writes. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Output {
    messages: Messages,
    /// With `q=1`: what the steps printed, kept for an error.
    quiet: Option<Arc<Mutex<String>>>,
}

impl Output {
    pub fn new(messages: Messages, quiet: bool) -> Output {
        Output {
            messages,
            quiet: quiet.then(Default::default),
        }
    }

    /// A line (or the output of a command) of a step.
    pub fn step(&self, text: impl Into<String>) {
        let text = text.into();
        match &self.quiet {
            Some(kept) => {
                if let Ok(mut kept) = kept.lock() {
                    kept.push_str(&text);
                }
            }
            None => self.messages.stream(text),
        }
    }

    /// The image the build made.
    pub fn built(&self, id: &str) {
        self.messages.send(json!({ "aux": { "ID": id } }));
        if self.quiet.is_some() {
            self.messages.stream(format!("{id}\n"));
        }
    }

    /// The build failed with `message` (and `code`, a command's exit code).
    pub fn fail(&self, message: &str, code: Option<i64>) {
        if let Some(kept) = &self.quiet {
            if let Ok(kept) = kept.lock() {
                if !kept.is_empty() {
                    self.messages.stream(kept.clone());
                }
            }
        }
        let mut detail = json!({ "message": message });
        if let Some(code) = code {
            detail["code"] = json!(code);
        }
        self.messages
            .send(json!({ "errorDetail": detail, "error": message }));
    }

    /// Whether the client has gone (the build should stop).
    pub fn is_closed(&self) -> bool {
        self.messages.is_closed()
    }

    /// Resolves when the client has gone.
    pub async fn closed(&self) {
        self.messages.closed().await;
    }
}
