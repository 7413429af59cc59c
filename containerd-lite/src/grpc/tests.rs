//! The whole API in process: a daemon on a socket in a temp dir, driven by
//! the generated clients as ctr would drive it.

use std::path::PathBuf;

use berth_proto::containerd::services::content::v1::content_client::ContentClient;
use berth_proto::containerd::services::content::v1::{
    InfoRequest, ListContentRequest, ReadContentRequest, StatusRequest, UpdateRequest, WriteAction,
    WriteContentRequest,
};
use berth_proto::containerd::services::events::v1::events_client::EventsClient;
use berth_proto::containerd::services::events::v1::SubscribeRequest;
use berth_proto::containerd::services::images::v1::images_client::ImagesClient;
use berth_proto::containerd::services::images::v1::{
    CreateImageRequest, DeleteImageRequest, GetImageRequest, Image, UpdateImageRequest,
};
use berth_proto::containerd::services::leases::v1::leases_client::LeasesClient;
use berth_proto::containerd::services::leases::v1::{CreateRequest, ListResourcesRequest};
use berth_proto::containerd::services::namespaces::v1::namespaces_client::NamespacesClient;
use berth_proto::containerd::services::namespaces::v1::ListNamespacesRequest;
use berth_proto::containerd::services::snapshots::v1::snapshots_client::SnapshotsClient;
use berth_proto::containerd::services::snapshots::v1::ListSnapshotsRequest;
use berth_proto::containerd::services::version::v1::version_client::VersionClient;
use berth_proto::containerd::types::Descriptor;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request};

use super::client::{connect, WithNamespace};
use super::{serve, Backend};
use crate::config::Config;
use crate::content::Digest;

/// A daemon serving in a temp dir until dropped.
struct Daemon {
    dir: tempfile::TempDir,
    socket: PathBuf,
    stop: Option<oneshot::Sender<()>>,
    served: Option<tokio::task::JoinHandle<crate::Result<()>>>,
}

impl Daemon {
    async fn start() -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("run/berthd.sock");
        let config = Config::in_dir(dir.path(), socket.clone());
        let backend = Backend::open(&config).unwrap();
        let (stop, stopped) = oneshot::channel();
        let path = socket.clone();
        let served = tokio::spawn(async move {
            serve(&path, &backend, async {
                let _ = stopped.await;
            })
            .await
        });
        for _ in 0..100 {
            if socket.exists() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Daemon {
            dir,
            socket,
            stop: Some(stop),
            served: Some(served),
        }
    }

    async fn channel(&self) -> Channel {
        connect(&self.socket).await.unwrap()
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            served.await.unwrap().unwrap();
        }
        assert!(!self.socket.exists(), "the socket is removed at shutdown");
        drop(self.dir);
    }
}

type Namespaced = InterceptedService<Channel, WithNamespace>;

fn namespaced(channel: Channel, namespace: &str) -> Namespaced {
    InterceptedService::new(channel, WithNamespace::new(namespace).unwrap())
}

fn write(action: WriteAction, reference: &str, offset: i64, data: &[u8]) -> WriteContentRequest {
    WriteContentRequest {
        action: action as i32,
        r#ref: reference.into(),
        offset,
        data: data.to_vec(),
        ..Default::default()
    }
}

#[tokio::test]
async fn version_answers_and_the_socket_goes_away_at_shutdown() {
    let daemon = Daemon::start().await;
    let version = VersionClient::new(daemon.channel().await)
        .version(())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.version, env!("CARGO_PKG_VERSION"));
    assert!(!version.revision.is_empty());
    daemon.stop().await;
}

#[tokio::test]
async fn namespaced_calls_without_a_namespace_are_refused() {
    let daemon = Daemon::start().await;
    let err = ImagesClient::new(daemon.channel().await)
        .get(GetImageRequest { name: "x".into() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message().contains("namespace is required"),
        "{}",
        err.message()
    );
    daemon.stop().await;
}

#[tokio::test]
async fn content_write_resumes_commits_once_and_reads_back() {
    let daemon = Daemon::start().await;
    let mut content = ContentClient::new(namespaced(daemon.channel().await, "test"));
    let data = b"hello, resumable world".to_vec();
    let digest = Digest::sha256_of(&data).to_string();

    // First stream: writes a prefix, then goes away.
    let first = tokio_stream::iter(vec![write(WriteAction::Write, "ingest-1", 0, &data[..5])]);
    let mut replies = content.write(first).await.unwrap().into_inner();
    assert_eq!(replies.next().await.unwrap().unwrap().offset, 5);
    drop(replies);

    // The ingest is visible with its offset.
    let mut status = None;
    for _ in 0..50 {
        match content
            .status(StatusRequest {
                r#ref: "ingest-1".into(),
            })
            .await
        {
            Ok(found) => {
                status = found.into_inner().status;
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
    assert_eq!(status.unwrap().offset, 5);

    // Second stream: resumes at 5 (a stat first, as ctr does) and commits.
    let mut commit = write(WriteAction::Commit, "", 5, &data[5..]);
    commit.expected = digest.clone();
    commit.total = data.len() as i64;
    commit.labels = [("k".to_string(), "v".to_string())].into();
    let mut stat = write(WriteAction::Stat, "ingest-1", 0, &[]);
    stat.expected = digest.clone();
    let replies: Vec<_> = content
        .write(tokio_stream::iter(vec![stat, commit]))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0].as_ref().unwrap().offset, 5);
    assert_eq!(replies[1].as_ref().unwrap().digest, digest);

    // Committing the same digest again is AlreadyExists, as ctr expects.
    let mut again = write(WriteAction::Commit, "ingest-2", 0, &data);
    again.expected = digest.clone();
    let err = content
        .write(tokio_stream::iter(vec![again]))
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    let info = content
        .info(InfoRequest {
            digest: digest.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(info.size, data.len() as i64);
    assert_eq!(info.labels.get("k").map(String::as_str), Some("v"));

    let read: Vec<u8> = content
        .read(ReadContentRequest {
            digest: digest.clone(),
            offset: 7,
            size: 11,
        })
        .await
        .unwrap()
        .into_inner()
        .map(|r| r.unwrap().data)
        .collect::<Vec<_>>()
        .await
        .concat();
    assert_eq!(read, &data[7..18]);

    let err = content
        .read(ReadContentRequest {
            digest: digest.clone(),
            offset: 1000,
            size: 0,
        })
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);

    let updated = content
        .update(UpdateRequest {
            info: Some(berth_proto::containerd::services::content::v1::Info {
                digest: digest.clone(),
                labels: [("k2".to_string(), "v2".to_string())].into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.k2".into()],
            }),
        })
        .await
        .unwrap()
        .into_inner()
        .info
        .unwrap();
    assert_eq!(updated.labels.len(), 2);

    let listed: Vec<_> = content
        .list(ListContentRequest {
            filters: vec!["labels.k2==v2".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].as_ref().unwrap().info[0].digest, digest);
    daemon.stop().await;
}

#[tokio::test]
async fn a_commit_with_the_wrong_digest_leaves_nothing_visible() {
    let daemon = Daemon::start().await;
    let mut content = ContentClient::new(namespaced(daemon.channel().await, "test"));
    let mut commit = write(WriteAction::Commit, "bad", 0, b"not what was promised");
    commit.expected = Digest::sha256_of(b"something else").to_string();
    let replies: Vec<_> = content
        .write(tokio_stream::iter(vec![commit]))
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    let err = replies.last().unwrap().as_ref().unwrap_err();
    assert!(
        matches!(err.code(), Code::FailedPrecondition | Code::InvalidArgument),
        "{err:?}"
    );
    let err = content
        .info(InfoRequest {
            digest: Digest::sha256_of(b"not what was promised").to_string(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    daemon.stop().await;
}

#[tokio::test]
async fn images_publish_events_and_writes_join_the_lease_header() {
    let daemon = Daemon::start().await;
    let channel = daemon.channel().await;
    let mut events = EventsClient::new(channel.clone())
        .subscribe(SubscribeRequest {
            filters: vec![r#"topic~="^/images/""#.into()],
        })
        .await
        .unwrap()
        .into_inner();
    let mut images = ImagesClient::new(namespaced(channel.clone(), "test"));
    let target = Descriptor {
        media_type: "application/vnd.oci.image.manifest.v1+json".into(),
        digest: Digest::sha256_of(b"m").to_string(),
        size: 1,
        annotations: Default::default(),
    };
    let image = Image {
        name: "example.com/a:1".into(),
        target: Some(target.clone()),
        ..Default::default()
    };
    images
        .create(CreateImageRequest {
            image: Some(image.clone()),
        })
        .await
        .unwrap();
    let err = images
        .create(CreateImageRequest {
            image: Some(image.clone()),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    images
        .update(UpdateImageRequest {
            image: Some(Image {
                name: image.name.clone(),
                labels: [("l".to_string(), "1".to_string())].into(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec!["labels.l".into()],
            }),
        })
        .await
        .unwrap();
    let got = images
        .get(GetImageRequest {
            name: image.name.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .image
        .unwrap();
    assert_eq!(got.target, Some(target), "a label update keeps the target");
    assert_eq!(got.labels.get("l").map(String::as_str), Some("1"));
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        images.delete(DeleteImageRequest {
            name: image.name.clone(),
            sync: true,
        }),
    )
    .await
    .expect("delete with sync returns")
    .unwrap();
    for topic in ["/images/create", "/images/update", "/images/delete"] {
        let envelope = tokio::time::timeout(std::time::Duration::from_secs(5), events.next())
            .await
            .unwrap_or_else(|_| panic!("no {topic} event"))
            .unwrap()
            .unwrap();
        assert_eq!(envelope.topic, topic);
        assert_eq!(envelope.namespace, "test");
    }

    // A write under a lease is held by it.
    let mut leases = LeasesClient::new(namespaced(channel.clone(), "test"));
    let lease = leases
        .create(CreateRequest::default())
        .await
        .unwrap()
        .into_inner()
        .lease
        .unwrap();
    let mut content = ContentClient::new(namespaced(channel.clone(), "test"));
    let data = b"leased".to_vec();
    let mut commit = write(WriteAction::Commit, "leased", 0, &data);
    commit.expected = Digest::sha256_of(&data).to_string();
    let mut request = Request::new(tokio_stream::iter(vec![commit]));
    request
        .metadata_mut()
        .insert("containerd-lease", lease.id.parse().unwrap());
    let replies: Vec<_> = content
        .write(request)
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert!(replies[0].is_ok(), "{replies:?}");
    let resources = leases
        .list_resources(ListResourcesRequest { id: lease.id })
        .await
        .unwrap()
        .into_inner()
        .resources;
    assert!(
        resources
            .iter()
            .any(|r| r.r#type == "content" && r.id == Digest::sha256_of(&data).to_string()),
        "{resources:?}"
    );

    let namespaces = NamespacesClient::new(channel)
        .list(ListNamespacesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .namespaces;
    assert!(
        namespaces.iter().any(|n| n.name == "test"),
        "created on first use"
    );
    daemon.stop().await;
}

#[tokio::test]
async fn an_unknown_snapshotter_is_an_invalid_argument() {
    let daemon = Daemon::start().await;
    let mut snapshots = SnapshotsClient::new(namespaced(daemon.channel().await, "test"));
    let err = snapshots
        .list(ListSnapshotsRequest {
            snapshotter: "zfs".into(),
            filters: vec![],
        })
        .await
        .err()
        .unwrap();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("zfs"), "{}", err.message());
    let listed: Vec<_> = snapshots
        .list(ListSnapshotsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .collect()
        .await;
    assert!(listed.is_empty());
    daemon.stop().await;
}
