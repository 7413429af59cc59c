//! Log output as runc writes it: text, or one JSON object per line with
//! `level`, `msg` and `time` (what containerd's shims parse from log.json).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

use crate::LogFormat;

/// Install the global logger: to `path` (appending) or stderr.
pub fn init(path: Option<&Path>, format: LogFormat, debug: bool) {
    let sink: Box<dyn Write + Send> =
        match path.map(|p| File::options().create(true).append(true).open(p)) {
            Some(Ok(f)) => Box::new(f),
            Some(Err(e)) => {
                eprintln!("berth: cannot open log file: {e}; logging to stderr");
                Box::new(std::io::stderr())
            }
            None => Box::new(std::io::stderr()),
        };
    let layer = LineLayer {
        sink: Mutex::new(sink),
        json: matches!(format, LogFormat::Json),
        max: if debug { Level::DEBUG } else { Level::WARN },
    };
    let _ = tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer));
}

struct LineLayer {
    sink: Mutex<Box<dyn Write + Send>>,
    json: bool,
    max: Level,
}

#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        } else {
            self.0.push_str(&format!(" {}={value:?}", field.name()));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        } else {
            self.0.push_str(&format!(" {}={value}", field.name()));
        }
    }
}

impl<S: Subscriber> Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > self.max {
            return;
        }
        let mut msg = Message::default();
        event.record(&mut msg);
        let level = level.as_str().to_ascii_lowercase();
        let time = berth_runtime::state::now_rfc3339();
        let line = if self.json {
            serde_json::json!({"level": level, "msg": msg.0, "time": time}).to_string()
        } else {
            format!("time=\"{time}\" level={level} msg={:?}", msg.0)
        };
        if let Ok(mut sink) = self.sink.lock() {
            let _ = writeln!(sink, "{line}");
        }
    }
}
