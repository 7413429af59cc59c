//! The in-process event exchange: every service publishes what it changed
//! (`/images/create`, `/snapshot/commit`, ...) and subscribers (the gRPC
//! `Subscribe` stream, later the Docker API's `/events`) receive envelopes.
//!
//! Events are protobuf messages packed into an `Any`, as containerd's are,
//! so a containerd client decodes them with the types it already knows. The
//! exchange keeps nothing: a subscriber sees what is published after it
//! subscribed, and one that falls too far behind loses the oldest envelopes
//! (it is told how many) rather than slowing publishers down.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{broadcast, watch};
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};
use tokio_stream::{Stream, StreamExt};

use crate::metadata::labels::validate_identifier;
use crate::metadata::Fields;
use crate::{Error, Result};

/// How many envelopes a slow subscriber may lag behind before it loses some.
const BACKLOG: usize = 1024;

/// One published event: when, in which namespace, under which topic, and
/// the payload (`containerd.events.ImageCreate`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub timestamp: SystemTime,
    pub namespace: String,
    pub topic: String,
    pub event: prost_types::Any,
}

/// What subscription filters see, with containerd's field names: `topic`,
/// `namespace`, and `event` (its type; the payload is opaque here, so
/// `event.*` paths match nothing).
impl Fields for Envelope {
    fn field(&self, path: &[String]) -> Option<String> {
        match path {
            [one] if one == "topic" => Some(self.topic.clone()),
            [one] if one == "namespace" => Some(self.namespace.clone()),
            [one] if one == "event" => Some(self.event.type_url.clone()),
            _ => None,
        }
    }
}

/// Fans published envelopes out to every subscriber. Cheap to clone: all
/// clones publish to the same subscribers.
#[derive(Debug, Clone)]
pub struct Exchange {
    sender: broadcast::Sender<Arc<Envelope>>,
    /// Set once the daemon stops: every subscription then ends.
    closed: watch::Sender<bool>,
}

impl Default for Exchange {
    fn default() -> Self {
        Self::new()
    }
}

impl Exchange {
    /// An exchange with no subscribers yet.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(BACKLOG);
        let (closed, _) = watch::channel(false);
        Exchange { sender, closed }
    }

    /// Publishes `event` under `topic` in `namespace`, stamped now.
    pub fn publish<M: prost::Name>(&self, namespace: &str, topic: &str, event: &M) -> Result<()> {
        self.forward(Envelope {
            timestamp: SystemTime::now(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event: berth_proto::to_any(event),
        })
    }

    /// Publishes an envelope as it is (its timestamp and namespace kept), as
    /// shims forward theirs. The namespace and topic must be valid.
    pub fn forward(&self, envelope: Envelope) -> Result<()> {
        validate_identifier("namespace", &envelope.namespace)
            .map_err(|e| e.context(format!("event {}", envelope.topic)))?;
        validate_topic(&envelope.topic)?;
        // An error here only means nobody is subscribed: not a failure.
        let _ = self.sender.send(Arc::new(envelope));
        Ok(())
    }

    /// Every envelope published from now on, until [`Exchange::close`].
    pub fn subscribe(&self) -> impl Stream<Item = Received> + Send + Unpin + 'static {
        let events = BroadcastStream::new(self.sender.subscribe()).map(|next| {
            Some(match next {
                Ok(envelope) => Received::Event(envelope),
                Err(BroadcastStreamRecvError::Lagged(lost)) => Received::Lost(lost),
            })
        });
        // `None` marks the close; the stream ends there.
        let closing = WatchStream::new(self.closed.subscribe())
            .filter(|closed| *closed)
            .map(|_| None);
        Box::pin(
            events
                .merge(closing)
                .take_while(Option::is_some)
                .filter_map(|received| received),
        )
    }

    /// Ends every subscription, so subscribers (`ctr events`) do not keep
    /// a stopping daemon waiting. Publishing still works; nobody listens.
    pub fn close(&self) {
        self.closed.send_replace(true);
    }
}

/// What a subscriber receives next.
#[derive(Debug)]
pub enum Received {
    Event(Arc<Envelope>),
    /// The subscriber was too slow: this many envelopes were dropped.
    Lost(u64),
}

/// A topic is a `/`-separated path of at least one component, each one an
/// identifier as containerd restricts them, e.g. `/images/create`.
pub fn validate_topic(topic: &str) -> Result<()> {
    let invalid = |why: &str| Error::invalid(format!("event topic {topic:?}: {why}"));
    let Some(path) = topic.strip_prefix('/') else {
        return Err(invalid("must start with /"));
    };
    if path.is_empty() {
        return Err(invalid("has no components"));
    }
    for component in path.split('/') {
        validate_identifier("component", component).map_err(|e| invalid(&e.message))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::containerd::services::images::v1::ImageCreate;

    fn create(name: &str) -> ImageCreate {
        ImageCreate {
            name: name.into(),
            labels: Default::default(),
        }
    }

    #[tokio::test]
    async fn subscribers_receive_what_is_published_after_they_subscribe() {
        let exchange = Exchange::new();
        exchange
            .publish("default", "/images/create", &create("before"))
            .unwrap();
        let mut first = exchange.subscribe();
        let mut second = exchange.subscribe();
        exchange
            .publish("default", "/images/create", &create("after"))
            .unwrap();
        for subscription in [&mut first, &mut second] {
            let Some(Received::Event(envelope)) = subscription.next().await else {
                panic!("expected an event");
            };
            assert_eq!(envelope.topic, "/images/create");
            assert_eq!(envelope.namespace, "default");
            assert_eq!(
                envelope.event.type_url,
                "containerd.services.images.v1.ImageCreate"
            );
            let payload: ImageCreate =
                prost::Message::decode(envelope.event.value.as_slice()).unwrap();
            assert_eq!(payload.name, "after");
        }
    }

    #[tokio::test]
    async fn a_slow_subscriber_is_told_what_it_lost() {
        let exchange = Exchange::new();
        let mut slow = exchange.subscribe();
        for i in 0..BACKLOG + 5 {
            exchange
                .publish("default", "/images/create", &create(&i.to_string()))
                .unwrap();
        }
        assert!(matches!(slow.next().await, Some(Received::Lost(5))));
        assert!(matches!(slow.next().await, Some(Received::Event(_))));
    }

    #[tokio::test]
    async fn closing_ends_every_subscription() {
        let exchange = Exchange::new();
        let mut subscription = exchange.subscribe();
        exchange.close();
        assert!(subscription.next().await.is_none());
        assert!(exchange.subscribe().next().await.is_none());
    }

    #[test]
    fn bad_topics_and_namespaces_are_refused() {
        let exchange = Exchange::new();
        for topic in [
            "images/create",
            "/",
            "/images//create",
            "/images/../x",
            "/a b",
        ] {
            let err = exchange
                .publish("default", topic, &create("x"))
                .unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::InvalidArgument, "{topic}");
            assert!(err.message.contains(topic), "{}", err.message);
        }
        let err = exchange
            .publish("bad/ns", "/images/create", &create("x"))
            .unwrap_err();
        assert_eq!(err.kind, crate::ErrorKind::InvalidArgument);
    }

    #[test]
    fn filters_see_topic_and_namespace() {
        let envelope = Envelope {
            timestamp: SystemTime::UNIX_EPOCH,
            namespace: "k8s.io".into(),
            topic: "/snapshot/commit".into(),
            event: prost_types::Any::default(),
        };
        let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            envelope.field(&path(&["topic"])).as_deref(),
            Some("/snapshot/commit")
        );
        assert_eq!(
            envelope.field(&path(&["namespace"])).as_deref(),
            Some("k8s.io")
        );
        assert_eq!(envelope.field(&path(&["event", "name"])), None);
        let filter = crate::metadata::Filter::parse_all(&[r#"topic~="^/snapshot/""#]).unwrap();
        assert!(filter.matches(&envelope));
        let filter = crate::metadata::Filter::parse_all(&["namespace==default"]).unwrap();
        assert!(!filter.matches(&envelope));
    }
}
