//! Docker's events: what the frontend did (`image pull`, `image tag`,
//! `image delete`, ...) in docker's shape, kept in a bounded journal so
//! `docker events --since/--until` can replay them, and streamed live to
//! `GET /events` as JSON lines.
//!
//! Image actions are journaled by the handler that performed them, before
//! the response goes out, so a client that saw the response finds the
//! event when it asks for the past (the containerd-level events of the
//! same changes go to the [`crate::events::Exchange`] as the gRPC services
//! publish them). Container events come from the exchange, translated by
//! [`super::exchange`].

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::{Stream, StreamExt};

use super::error::ApiResult;
use super::query::{Filters, Query};
use super::Frontend;
use crate::{Error, Result};

/// How many past events the journal keeps (dockerd keeps 256).
const JOURNAL_SIZE: usize = 1024;
/// How far a live listener may fall behind before it loses events.
const LIVE_BACKLOG: usize = 1024;

/// The filters `/events` knows.
const EVENT_FILTERS: &[&str] = &["type", "event", "image", "label", "container", "scope"];

/// One docker event.
#[derive(Debug, Clone, PartialEq)]
pub struct DockerEvent {
    /// `image` or `container` (later `network`, `volume`).
    pub kind: String,
    /// `pull`, `tag`, `untag`, `delete`, `push`, `save`, `load`, ...
    pub action: String,
    /// The object: an image ID or reference.
    pub actor: String,
    pub attributes: BTreeMap<String, String>,
    pub time: SystemTime,
}

impl DockerEvent {
    /// An image event as dockerd logs them: the actor and its `name`.
    pub fn image(action: &str, actor: &str, name: &str) -> DockerEvent {
        DockerEvent {
            kind: "image".to_owned(),
            action: action.to_owned(),
            actor: actor.to_owned(),
            attributes: BTreeMap::from([("name".to_owned(), name.to_owned())]),
            time: SystemTime::now(),
        }
    }

    /// The event as `/events` sends it.
    pub fn to_json(&self) -> Value {
        let since_epoch = self.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        json!({
            "status": self.action,
            "id": self.actor,
            "Type": self.kind,
            "Action": self.action,
            "Actor": { "ID": self.actor, "Attributes": self.attributes },
            "scope": "local",
            "time": since_epoch.as_secs(),
            "timeNano": since_epoch.as_nanos() as u64,
        })
    }

    fn matches(&self, filters: &Filters) -> bool {
        let any = |key: &str, test: &dyn Fn(&str) -> bool| {
            !filters.contains(key) || filters.values(key).any(test)
        };
        any("type", &|kind| kind == self.kind)
            && any("event", &|action| action == self.action)
            && any("scope", &|scope| scope == "local")
            && any("container", &|wanted| {
                self.kind == "container"
                    && (self.actor.starts_with(wanted)
                        || self
                            .attributes
                            .get("name")
                            .is_some_and(|name| name == wanted))
            })
            && any("image", &|image| {
                let named = self.attributes.get(if self.kind == "image" {
                    "name"
                } else {
                    "image"
                });
                (self.kind == "image" && image == self.actor)
                    || named.is_some_and(|name| name == image || without_tag(name) == image)
            })
            && filters.labels_match("label", &self.attributes)
    }
}

/// `repo` of `repo:tag` (a registry port is not a tag).
fn without_tag(name: &str) -> &str {
    match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => name,
    }
}

/// The frontend's events: a bounded past and the live feed. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct Journal {
    past: Arc<Mutex<VecDeque<DockerEvent>>>,
    live: broadcast::Sender<DockerEvent>,
    closed: watch::Sender<bool>,
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

impl Journal {
    /// An empty journal with no listeners.
    pub fn new() -> Journal {
        let (live, _) = broadcast::channel(LIVE_BACKLOG);
        let (closed, _) = watch::channel(false);
        Journal {
            past: Arc::new(Mutex::new(VecDeque::new())),
            live,
            closed,
        }
    }

    /// Keeps `event` and hands it to live listeners.
    pub fn record(&self, event: DockerEvent) {
        let Ok(mut past) = self.past.lock() else {
            return;
        };
        if past.len() == JOURNAL_SIZE {
            past.pop_front();
        }
        past.push_back(event.clone());
        // Sent under the lock, so a listener sees each event once: either
        // in the past it copied or live.
        let _ = self.live.send(event);
    }

    /// The past events from `since` on, and the live feed after them.
    fn listen(
        &self,
        since: Option<SystemTime>,
    ) -> (Vec<DockerEvent>, broadcast::Receiver<DockerEvent>) {
        let past = self
            .past
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let replay = match since {
            Some(since) => past.iter().filter(|e| e.time >= since).cloned().collect(),
            None => Vec::new(),
        };
        (replay, self.live.subscribe())
    }

    /// Ends every live stream (berthd is stopping).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    fn closed(&self) -> impl Stream<Item = ()> + Send + Unpin + 'static {
        WatchStream::new(self.closed.subscribe())
            .filter(|closed| *closed)
            .map(|_| ())
    }
}

/// A `since`/`until` value: Unix seconds with optional nanoseconds
/// (`1700000000.000000001`), as the CLI sends them.
pub fn parse_timestamp(key: &str, text: &str) -> Result<SystemTime> {
    let invalid = || {
        Error::invalid(format!(
            "invalid value for '{key}': {text:?} is not a Unix timestamp"
        ))
    };
    let (secs, nanos) = text.split_once('.').unwrap_or((text, "0"));
    let secs: u64 = secs.parse().map_err(|_| invalid())?;
    if nanos.len() > 9 || !nanos.chars().all(|c| c.is_ascii_digit()) {
        return Err(invalid());
    }
    let nanos: u32 = format!("{nanos:0<9}").parse().map_err(|_| invalid())?;
    Ok(UNIX_EPOCH + Duration::new(secs, nanos))
}

/// `GET /events`: past events from `since`, then live ones until `until`
/// (or for as long as the client stays).
pub async fn events(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let query = Query::parse(raw.as_deref());
    let filters = query.filters(EVENT_FILTERS)?;
    let since = query
        .get("since")
        .filter(|s| !s.is_empty())
        .map(|s| parse_timestamp("since", s))
        .transpose()?;
    let until = query
        .get("until")
        .filter(|s| !s.is_empty())
        .map(|s| parse_timestamp("until", s))
        .transpose()?;
    let (past, live) = frontend.journal.listen(since);
    let within = move |event: &DockerEvent| until.is_none_or(|until| event.time <= until);
    let replay: Vec<Bytes> = past
        .into_iter()
        .filter(|e| within(e) && e.matches(&filters))
        .map(|e| line(&e))
        .collect();

    // The live part ends at `until`, when berthd stops, or never.
    let deadline = until.map(|until| {
        let wait = until.duration_since(SystemTime::now()).unwrap_or_default();
        tokio::time::Instant::now() + wait
    });
    let ended = match deadline {
        Some(deadline) => Box::pin(futures::stream::once(tokio::time::sleep_until(deadline)))
            as std::pin::Pin<Box<dyn Stream<Item = ()> + Send>>,
        None => Box::pin(tokio_stream::pending()),
    };
    let stop = ended.merge(frontend.journal.closed());
    let live = BroadcastStream::new(live)
        .filter_map(move |next| match next {
            Ok(event) if within(&event) && event.matches(&filters) => Some(Some(line(&event))),
            Ok(_) => None,
            Err(BroadcastStreamRecvError::Lagged(lost)) => {
                tracing::debug!(lost, "a slow /events listener lost events");
                None
            }
        })
        .merge(stop.map(|()| None))
        .take_while(Option::is_some)
        .filter_map(|line| line);
    let stream = tokio_stream::iter(replay)
        .chain(live)
        .map(Ok::<Bytes, Infallible>);
    Ok((
        [(CONTENT_TYPE, "application/json")],
        Body::from_stream(stream),
    )
        .into_response())
}

fn line(event: &DockerEvent) -> Bytes {
    let mut bytes = event.to_json().to_string().into_bytes();
    bytes.push(b'\n');
    Bytes::from(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_parse_as_the_cli_sends_them() {
        let t = parse_timestamp("since", "1700000000.5").unwrap();
        assert_eq!(
            t.duration_since(UNIX_EPOCH).unwrap(),
            Duration::new(1_700_000_000, 500_000_000)
        );
        assert!(parse_timestamp("since", "yesterday").is_err());
        assert!(parse_timestamp("until", "1.1234567890").is_err());
    }

    #[test]
    fn filters_select_by_type_action_and_image() {
        let event = DockerEvent::image("pull", "busybox:latest", "busybox:latest");
        let f = |json: &str| Filters::parse(json).unwrap();
        assert!(event.matches(&f(r#"{"type":["image"],"event":["pull"]}"#)));
        assert!(event.matches(&f(r#"{"image":["busybox"]}"#)));
        let local = DockerEvent::image("push", "localhost:5000/x:1", "localhost:5000/x:1");
        assert!(local.matches(&f(r#"{"image":["localhost:5000/x"]}"#)));
        assert!(!local.matches(&f(r#"{"image":["localhost"]}"#)));
        assert!(!event.matches(&f(r#"{"event":["delete"]}"#)));
        assert!(!event.matches(&f(r#"{"type":["container"]}"#)));
        let died = DockerEvent {
            kind: "container".into(),
            action: "die".into(),
            actor: "c0ffee".into(),
            attributes: BTreeMap::from([
                ("image".into(), "busybox:latest".into()),
                ("name".into(), "web".into()),
            ]),
            time: SystemTime::now(),
        };
        assert!(died.matches(&f(r#"{"container":["c0f"]}"#)));
        assert!(died.matches(&f(r#"{"container":["web"],"image":["busybox"]}"#)));
        assert!(!died.matches(&f(r#"{"container":["other"]}"#)));
        assert!(!died.matches(&f(r#"{"type":["image"]}"#)));
        let value = event.to_json();
        assert_eq!(value["Actor"]["Attributes"]["name"], "busybox:latest");
        assert_eq!(value["Type"], "image");
    }

    #[test]
    fn the_journal_replays_from_since_and_stays_bounded() {
        let journal = Journal::new();
        for i in 0..JOURNAL_SIZE + 5 {
            journal.record(DockerEvent::image("tag", &i.to_string(), "x"));
        }
        let (past, _) = journal.listen(Some(UNIX_EPOCH));
        assert_eq!(past.len(), JOURNAL_SIZE);
        assert_eq!(past[0].actor, "5");
        let (none, _) = journal.listen(None);
        assert!(none.is_empty());
    }
}
