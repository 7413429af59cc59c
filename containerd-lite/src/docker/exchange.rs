//! Docker's container events from the event exchange: what containerd's
//! services and the shims publish in the `moby` namespace (a container
//! created or deleted, a task started, exited, killed by the OOM killer,
//! paused or resumed) becomes the `container` event docker clients expect,
//! in the frontend's journal. Image events are not taken from here: the
//! frontend journals its own image actions as it performs them.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use berth_proto::containerd::events::{
    ContainerCreate, ContainerDelete, TaskExit, TaskOom, TaskPaused, TaskResumed, TaskStart,
};
use prost::Message;
use tokio_stream::StreamExt;

use super::events::{DockerEvent, Journal};
use super::reference::familiar;
use super::NAMESPACE;
use crate::events::{Envelope, Exchange, Received};
use crate::metadata::ContainerStore;

/// What an envelope says happened to which container: (action, container
/// ID, image when the event carries it, extra attributes).
type Happened = (
    &'static str,
    String,
    Option<String>,
    BTreeMap<String, String>,
);

/// Decodes the container lifecycle events; `None` for anything else.
fn happened(envelope: &Envelope) -> Option<Happened> {
    let any = &envelope.event;
    let is = |url: String| any.type_url.trim_start_matches('/') == url.trim_start_matches('/');
    let bytes = any.value.as_slice();
    let none = BTreeMap::new;
    if is(berth_proto::type_url::<ContainerCreate>()) {
        let event = ContainerCreate::decode(bytes).ok()?;
        return Some(("create", event.id, Some(event.image), none()));
    }
    if is(berth_proto::type_url::<ContainerDelete>()) {
        let event = ContainerDelete::decode(bytes).ok()?;
        return Some(("destroy", event.id, None, none()));
    }
    if is(berth_proto::type_url::<TaskStart>()) {
        let event = TaskStart::decode(bytes).ok()?;
        return Some(("start", event.container_id, None, none()));
    }
    if is(berth_proto::type_url::<TaskExit>()) {
        let event = TaskExit::decode(bytes).ok()?;
        // An exec's exit is not the container's death.
        if !event.id.is_empty() && event.id != event.container_id {
            return None;
        }
        let attributes = BTreeMap::from([("exitCode".to_owned(), event.exit_status.to_string())]);
        return Some(("die", event.container_id, None, attributes));
    }
    if is(berth_proto::type_url::<TaskOom>()) {
        let event = TaskOom::decode(bytes).ok()?;
        return Some(("oom", event.container_id, None, none()));
    }
    if is(berth_proto::type_url::<TaskPaused>()) {
        let event = TaskPaused::decode(bytes).ok()?;
        return Some(("pause", event.container_id, None, none()));
    }
    if is(berth_proto::type_url::<TaskResumed>()) {
        let event = TaskResumed::decode(bytes).ok()?;
        return Some(("unpause", event.container_id, None, none()));
    }
    None
}

/// What the translation remembers of a container, for its `destroy`
/// (whose record is gone by then): its image and labels.
#[derive(Debug, Clone, Default)]
struct Known {
    image: String,
    labels: BTreeMap<String, String>,
}

/// The docker event for `envelope`, its image and labels filled in from
/// the container record (or, once that is gone, from `known`).
fn translate(
    envelope: &Envelope,
    containers: &ContainerStore,
    known: &mut HashMap<String, Known>,
) -> Option<DockerEvent> {
    if envelope.namespace != NAMESPACE {
        return None;
    }
    let (action, id, image, extra) = happened(envelope)?;
    let mut facts = match containers.get(NAMESPACE, &id) {
        Ok(record) => Known {
            image: record.image,
            labels: record.labels,
        },
        Err(_) => known.get(&id).cloned().unwrap_or_default(),
    };
    if let Some(image) = image.filter(|i| !i.is_empty()) {
        facts.image = image;
    }
    if action == "destroy" {
        known.remove(&id);
    } else {
        known.insert(id.clone(), facts.clone());
    }
    let mut attributes = facts.labels;
    if !facts.image.is_empty() {
        attributes.insert("image".to_owned(), familiar(&facts.image));
    }
    // The docker frontend's containers carry their name in a label.
    let name = attributes
        .remove(super::containers::create::NAME_LABEL)
        .unwrap_or_else(|| id.clone());
    attributes.insert("name".to_owned(), name);
    attributes.extend(extra);
    Some(DockerEvent {
        kind: "container".to_owned(),
        action: action.to_owned(),
        actor: id,
        attributes,
        time: envelope.timestamp,
    })
}

/// Follows the exchange until it closes, journaling container events.
pub fn follow(exchange: &Exchange, containers: ContainerStore, journal: Journal) {
    let mut received = exchange.subscribe();
    let known = Arc::new(Mutex::new(HashMap::new()));
    tokio::spawn(async move {
        while let Some(next) = received.next().await {
            match next {
                Received::Event(envelope) => {
                    let (containers, known) = (containers.clone(), known.clone());
                    let translated = tokio::task::spawn_blocking(move || {
                        let mut known = known.lock().unwrap_or_else(|e| e.into_inner());
                        translate(&envelope, &containers, &mut known)
                    })
                    .await
                    .ok()
                    .flatten();
                    if let Some(event) = translated {
                        journal.record(event);
                    }
                }
                Received::Lost(lost) => {
                    tracing::warn!(lost, "docker events: fell behind the event exchange");
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metadata::Db;

    /// An envelope as the exchange carries one, stamped now.
    fn envelope<M: prost::Name>(namespace: &str, topic: &str, event: &M) -> Envelope {
        Envelope {
            timestamp: std::time::SystemTime::now(),
            namespace: namespace.to_owned(),
            topic: topic.to_owned(),
            event: berth_proto::to_any(event),
        }
    }

    fn store(dir: &std::path::Path) -> ContainerStore {
        ContainerStore::open(Db::open(dir.join("meta.redb")).unwrap()).unwrap()
    }

    #[test]
    fn task_and_container_events_become_docker_container_events() {
        let dir = tempfile::tempdir().unwrap();
        let containers = store(dir.path());
        let mut known = HashMap::new();
        let create = ContainerCreate {
            id: "c1".into(),
            image: "docker.io/library/busybox:latest".into(),
            runtime: None,
        };
        let event = translate(
            &envelope(NAMESPACE, "/containers/create", &create),
            &containers,
            &mut known,
        )
        .unwrap();
        assert_eq!(
            (
                event.kind.as_str(),
                event.action.as_str(),
                event.actor.as_str()
            ),
            ("container", "create", "c1")
        );
        assert_eq!(event.attributes["image"], "busybox:latest");

        let exit = TaskExit {
            container_id: "c1".into(),
            id: "c1".into(),
            pid: 7,
            exit_status: 3,
            exited_at: None,
        };
        let event = translate(
            &envelope(NAMESPACE, "/tasks/exit", &exit),
            &containers,
            &mut known,
        )
        .unwrap();
        assert_eq!(event.action, "die");
        assert_eq!(event.attributes["exitCode"], "3");

        let exec_exit = TaskExit {
            id: "exec-1".into(),
            ..exit.clone()
        };
        assert!(translate(
            &envelope(NAMESPACE, "/tasks/exit", &exec_exit),
            &containers,
            &mut known
        )
        .is_none());
        assert!(translate(
            &envelope("default", "/tasks/exit", &exit),
            &containers,
            &mut known
        )
        .is_none());
        let delete = ContainerDelete { id: "c1".into() };
        let event = translate(
            &envelope(NAMESPACE, "/containers/delete", &delete),
            &containers,
            &mut known,
        )
        .unwrap();
        assert_eq!(event.action, "destroy");
        assert_eq!(
            event.attributes["image"], "busybox:latest",
            "remembered past the record"
        );
        assert!(known.is_empty());
        let start = TaskStart {
            container_id: "c1".into(),
            pid: 7,
        };
        assert_eq!(
            translate(
                &envelope(NAMESPACE, "/tasks/start", &start),
                &containers,
                &mut known
            )
            .unwrap()
            .action,
            "start"
        );
    }
}
