//! `containerd.services.events.v1.Events` over the in-process [`Exchange`].

use std::pin::Pin;
use std::time::SystemTime;

use berth_proto::containerd::services::events::v1::{
    events_server, Envelope as WireEnvelope, ForwardRequest, PublishRequest, SubscribeRequest,
};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::request;
use crate::events::{Envelope, Exchange, Received};
use crate::metadata::Filter;
use crate::Error;

/// Publish, Forward and Subscribe for gRPC clients (`ctr events`, shims).
#[derive(Debug, Clone)]
pub struct EventsService {
    exchange: Exchange,
}

impl EventsService {
    pub fn new(exchange: Exchange) -> Self {
        EventsService { exchange }
    }
}

/// Envelopes as the wire carries them.
fn to_wire(envelope: &Envelope) -> WireEnvelope {
    WireEnvelope {
        timestamp: Some(envelope.timestamp.into()),
        namespace: envelope.namespace.clone(),
        topic: envelope.topic.clone(),
        event: Some(envelope.event.clone()),
    }
}

fn from_wire(envelope: WireEnvelope) -> Result<Envelope, Error> {
    let timestamp = match envelope.timestamp {
        Some(timestamp) => SystemTime::try_from(timestamp)
            .map_err(|e| Error::invalid(format!("event {}: timestamp: {e}", envelope.topic)))?,
        None => SystemTime::now(),
    };
    Ok(Envelope {
        timestamp,
        event: envelope
            .event
            .ok_or_else(|| Error::invalid(format!("event {}: no payload", envelope.topic)))?,
        namespace: envelope.namespace,
        topic: envelope.topic,
    })
}

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<WireEnvelope, Status>> + Send>>;

#[tonic::async_trait]
impl events_server::Events for EventsService {
    async fn publish(&self, request: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let namespace = request::namespace(request.metadata())?;
        let PublishRequest { topic, event } = request.into_inner();
        let event = event.ok_or_else(|| Error::invalid(format!("event {topic}: no payload")))?;
        self.exchange.forward(Envelope {
            timestamp: SystemTime::now(),
            namespace,
            topic,
            event,
        })?;
        Ok(Response::new(()))
    }

    async fn forward(&self, request: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let envelope = request
            .into_inner()
            .envelope
            .ok_or_else(|| Error::invalid("forward: no envelope"))?;
        self.exchange.forward(from_wire(envelope)?)?;
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        request: Request<SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let filter = Filter::parse_all(&request.get_ref().filters)?;
        let stream = self
            .exchange
            .subscribe()
            .filter_map(move |received| match received {
                Received::Event(envelope) => filter
                    .matches(envelope.as_ref())
                    .then(|| Ok(to_wire(&envelope))),
                Received::Lost(count) => {
                    tracing::warn!(count, "an events subscriber fell behind; envelopes dropped");
                    None
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::containerd::services::events::v1::events_server::Events;
    use berth_proto::containerd::services::images::v1::ImageDelete;

    fn namespaced<T>(message: T, namespace: &str) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(request::NAMESPACE_HEADER, namespace.parse().unwrap());
        request
    }

    #[tokio::test]
    async fn subscribers_get_only_what_their_filters_match() {
        let exchange = Exchange::new();
        let service = EventsService::new(exchange.clone());
        let mut subscribed = service
            .subscribe(Request::new(SubscribeRequest {
                filters: vec!["namespace==b".into()],
            }))
            .await
            .unwrap()
            .into_inner();
        let event = berth_proto::to_any(&ImageDelete { name: "x".into() });
        for namespace in ["a", "b"] {
            service
                .publish(namespaced(
                    PublishRequest {
                        topic: "/images/delete".into(),
                        event: Some(event.clone()),
                    },
                    namespace,
                ))
                .await
                .unwrap();
        }
        let got = subscribed.next().await.unwrap().unwrap();
        assert_eq!(got.namespace, "b");
        assert_eq!(got.topic, "/images/delete");
        assert_eq!(got.event, Some(event));
    }

    #[tokio::test]
    async fn forward_keeps_the_envelope_and_checks_it() {
        let exchange = Exchange::new();
        let service = EventsService::new(exchange.clone());
        let mut subscribed = exchange.subscribe();
        let stamp = prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        };
        let envelope = WireEnvelope {
            timestamp: Some(stamp),
            namespace: "moby".into(),
            topic: "/tasks/exit".into(),
            event: Some(prost_types::Any::default()),
        };
        service
            .forward(Request::new(ForwardRequest {
                envelope: Some(envelope.clone()),
            }))
            .await
            .unwrap();
        let Some(Received::Event(got)) = subscribed.next().await else {
            panic!("expected the forwarded envelope");
        };
        assert_eq!(to_wire(&got), envelope);

        let bad = WireEnvelope {
            namespace: "../x".into(),
            ..envelope
        };
        let err = service
            .forward(Request::new(ForwardRequest {
                envelope: Some(bad),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn publish_needs_a_namespace_and_a_payload() {
        let service = EventsService::new(Exchange::new());
        let err = service
            .publish(Request::new(PublishRequest {
                topic: "/x".into(),
                event: Some(Default::default()),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        let err = service
            .publish(namespaced(
                PublishRequest {
                    topic: "/x".into(),
                    event: None,
                },
                "default",
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }

    #[tokio::test]
    async fn bad_filters_are_refused_up_front() {
        let service = EventsService::new(Exchange::new());
        let err = service
            .subscribe(Request::new(SubscribeRequest {
                filters: vec!["topic~=\"(\"".into()],
            }))
            .await
            .err()
            .unwrap();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
    }
}
