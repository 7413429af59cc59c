//! Task events, forwarded to containerd's ttrpc events service
//! (`$TTRPC_ADDRESS`, `containerd.services.events.ttrpc.v1.Events/Forward`)
//! one at a time, in the order they were published: containerd and its
//! clients rely on create < start < exit < delete.

use containerd_shim_protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskExit, TaskOOM, TaskPaused,
    TaskResumed, TaskStart,
};
use containerd_shim_protos::protobuf::well_known_types::any::Any;
use containerd_shim_protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim_protos::protobuf::{Message, MessageField};
use containerd_shim_protos::shim::event::Envelope;
use containerd_shim_protos::shim::events::ForwardRequest;
use containerd_shim_protos::shim_async::EventsClient;
use containerd_shim_protos::ttrpc::asynchronous::Client;
use containerd_shim_protos::ttrpc::context;
use std::time::{Duration, SystemTime};
use tokio::sync::mpsc;

/// A message's proto name, which containerd's typeurl uses as its type URL.
/// Spelled out instead of asked of protobuf's reflection, which would parse
/// and keep the whole descriptor set in memory; a test checks each name.
pub trait TypeUrl: Message {
    const TYPE_URL: &'static str;
}

macro_rules! type_urls {
    ($($ty:ty => $url:literal),* $(,)?) => {
        $(impl TypeUrl for $ty { const TYPE_URL: &'static str = $url; })*
    };
}

type_urls! {
    TaskCreate => "containerd.events.TaskCreate",
    TaskStart => "containerd.events.TaskStart",
    TaskExecAdded => "containerd.events.TaskExecAdded",
    TaskExecStarted => "containerd.events.TaskExecStarted",
    TaskExit => "containerd.events.TaskExit",
    TaskDelete => "containerd.events.TaskDelete",
    TaskOOM => "containerd.events.TaskOOM",
    TaskPaused => "containerd.events.TaskPaused",
    TaskResumed => "containerd.events.TaskResumed",
    containerd_shim_protos::cgroups::metrics::Metrics => "io.containerd.cgroups.v1.Metrics",
    containerd_shim_protos::cgroups_v2::metrics::Metrics => "io.containerd.cgroups.v2.Metrics",
    containerd_shim_protos::shim::oci::ProcessDetails => "containerd.runc.v1.ProcessDetails",
}

/// Pack a message as containerd's typeurl expects: the bare proto name.
pub fn to_any<M: TypeUrl>(msg: &M) -> Any {
    Any {
        type_url: M::TYPE_URL.to_string(),
        value: msg.write_to_bytes().unwrap_or_default(),
        ..Default::default()
    }
}

pub fn timestamp(at: SystemTime) -> Timestamp {
    let d = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    }
}

/// Every event the shim sends, with its topic.
pub trait TaskEvent: TypeUrl {
    const TOPIC: &'static str;
}

macro_rules! topics {
    ($($ty:ty => $topic:literal),* $(,)?) => {
        $(impl TaskEvent for $ty { const TOPIC: &'static str = $topic; })*
    };
}

topics! {
    TaskCreate => "/tasks/create",
    TaskStart => "/tasks/start",
    TaskExecAdded => "/tasks/exec-added",
    TaskExecStarted => "/tasks/exec-started",
    TaskExit => "/tasks/exit",
    TaskDelete => "/tasks/delete",
    TaskOOM => "/tasks/oom",
    TaskPaused => "/tasks/paused",
    TaskResumed => "/tasks/resumed",
}

/// Hands events to the forwarding task; never blocks the caller.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Item>,
    namespace: String,
}

/// Attempts per event before it is logged and dropped (containerd gone
/// for longer than a restart takes).
const ATTEMPTS: u32 = 30;
const RETRY: Duration = Duration::from_millis(200);
const FORWARD_TIMEOUT: Duration = Duration::from_secs(5);

impl Publisher {
    /// `address` is containerd's ttrpc socket (`unix://` prefix optional);
    /// without one, events are only logged.
    pub fn start(address: Option<String>, namespace: String) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(forward_loop(address, rx));
        Publisher { tx, namespace }
    }

    pub fn publish<E: TaskEvent>(&self, event: &E) {
        let envelope = Envelope {
            timestamp: MessageField::some(timestamp(SystemTime::now())),
            namespace: self.namespace.clone(),
            topic: E::TOPIC.to_string(),
            event: MessageField::some(to_any(event)),
            ..Default::default()
        };
        crate::log::debug(format!("event {}", E::TOPIC));
        let _ = self.tx.send(Item::Event(envelope));
    }

    /// Wait (at most `limit`) until everything published so far was handed
    /// to containerd or given up on: a shim about to exit calls this.
    pub async fn flush(&self, limit: Duration) {
        let (done, wait) = tokio::sync::oneshot::channel();
        if self.tx.send(Item::Flush(done)).is_ok() {
            let _ = tokio::time::timeout(limit, wait).await;
        }
    }
}

enum Item {
    Event(Envelope),
    Flush(tokio::sync::oneshot::Sender<()>),
}

async fn connect(address: &str) -> std::io::Result<EventsClient> {
    let path = address.strip_prefix("unix://").unwrap_or(address);
    let stream = tokio::net::UnixStream::connect(path).await?;
    Ok(EventsClient::new(Client::new(stream.into())))
}

async fn forward_loop(address: Option<String>, mut rx: mpsc::UnboundedReceiver<Item>) {
    let mut client: Option<EventsClient> = None;
    while let Some(item) = rx.recv().await {
        let envelope = match item {
            Item::Event(envelope) => envelope,
            Item::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let Some(address) = address.as_deref() else {
            continue;
        };
        let request = ForwardRequest {
            envelope: MessageField::some(envelope),
            ..Default::default()
        };
        let mut sent = false;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(RETRY).await;
            }
            if client.is_none() {
                client = connect(address).await.ok();
            }
            let Some(c) = client.as_ref() else { continue };
            let ctx = context::with_timeout(FORWARD_TIMEOUT.as_nanos() as i64);
            match c.forward(ctx, &request).await {
                Ok(_) => {
                    sent = true;
                    break;
                }
                Err(e) => {
                    crate::log::debug(format!("forwarding {}: {e}", request.envelope.topic));
                    client = None;
                }
            }
        }
        if !sent {
            crate::log::error(format!(
                "dropping event {}: containerd's event service at {address} did not take it",
                request.envelope.topic
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_named<M: TypeUrl + containerd_shim_protos::protobuf::MessageFull>() {
        assert_eq!(M::TYPE_URL, M::descriptor().full_name());
    }

    #[test]
    fn type_urls_are_the_proto_names() {
        assert_named::<TaskCreate>();
        assert_named::<TaskStart>();
        assert_named::<TaskExecAdded>();
        assert_named::<TaskExecStarted>();
        assert_named::<TaskExit>();
        assert_named::<TaskDelete>();
        assert_named::<TaskOOM>();
        assert_named::<TaskPaused>();
        assert_named::<TaskResumed>();
        assert_named::<containerd_shim_protos::cgroups::metrics::Metrics>();
        assert_named::<containerd_shim_protos::cgroups_v2::metrics::Metrics>();
        assert_named::<containerd_shim_protos::shim::oci::ProcessDetails>();
    }

    #[test]
    fn any_carries_the_bare_proto_name() {
        let ev = TaskExit {
            container_id: "c".into(),
            exit_status: 3,
            ..Default::default()
        };
        let any = to_any(&ev);
        assert_eq!(any.type_url, "containerd.events.TaskExit");
        assert_eq!(TaskExit::TOPIC, "/tasks/exit");
        let back: TaskExit =
            containerd_shim_protos::protobuf::Message::parse_from_bytes(&any.value).unwrap();
        assert_eq!(back.exit_status, 3);
    }
}
