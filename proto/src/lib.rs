//! containerd 1.6's gRPC API as Berth speaks it: prost messages and tonic
//! servers and clients generated from our own .proto files under `protos/`,
//! which keep containerd's wire contract (package, service, method, message
//! and field names and numbers).
//!
//! Modules follow the proto packages, e.g.
//! [`containerd::services::content::v1`] holds the `Content` service's
//! messages, `content_server` and `content_client`. Well-known types
//! (`Timestamp`, `Any`, `FieldMask`, `Empty` as `()`) come from prost-types.

// Generated code: its doc comments and lints are protoc's and prost's.
#[allow(clippy::all, missing_docs, rustdoc::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/protocol.rs"));
}

pub use generated::*;

/// The encoded `FileDescriptorSet` of every .proto file in this crate: what
/// the wire contract is, for reflection and for tests.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/descriptor_set.bin"));

pub use prost;
pub use prost_types;
pub use tonic;

/// The `type_url` containerd gives a message packed into an `Any`: its full
/// proto name with no domain (e.g. `containerd.events.ImageCreate`), which is
/// what containerd's clients look types up by.
pub fn type_url<M: prost::Name>() -> String {
    M::full_name()
}

/// Packs a message into an `Any` the way containerd does (see [`type_url`]).
pub fn to_any<M: prost::Name>(message: &M) -> prost_types::Any {
    prost_types::Any {
        type_url: type_url::<M>(),
        value: prost::Message::encode_to_vec(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn descriptor_fields_carry_containerds_numbers() {
        let descriptor = containerd::types::Descriptor {
            media_type: String::new(),
            digest: "d".into(),
            size: 3,
            annotations: [("k".to_string(), "v".to_string())].into(),
        };
        // digest: field 2, wire type 2 (length-delimited) => tag 0x12.
        // size: field 3, varint => 0x18. annotations: field 5, a map entry
        // (length-delimited) => 0x2a, holding key (0x0a) and value (0x12).
        assert_eq!(
            descriptor.encode_to_vec(),
            vec![0x12, 1, b'd', 0x18, 3, 0x2a, 6, 0x0a, 1, b'k', 0x12, 1, b'v']
        );
    }

    #[test]
    fn image_timestamps_keep_their_sparse_numbers() {
        let image = containerd::services::images::v1::Image {
            created_at: Some(prost_types::Timestamp {
                seconds: 1,
                nanos: 0,
            }),
            ..Default::default()
        };
        // created_at is field 7 (not 4): tag (7 << 3) | 2 = 0x3a, then the
        // Timestamp { seconds: 1 } = [0x08, 1].
        assert_eq!(image.encode_to_vec(), vec![0x3a, 2, 0x08, 1]);
    }

    #[test]
    fn events_are_packed_under_their_bare_proto_name() {
        let any = to_any(&containerd::events::SnapshotRemove {
            key: "k".into(),
            snapshotter: "overlayfs".into(),
        });
        assert_eq!(any.type_url, "containerd.events.SnapshotRemove");
        let back = containerd::events::SnapshotRemove::decode(any.value.as_slice()).unwrap();
        assert_eq!(back.key, "k");
        // Image events are declared in the images service's package.
        let any = to_any(&containerd::services::images::v1::ImageDelete {
            name: "busybox:latest".into(),
        });
        assert_eq!(any.type_url, "containerd.services.images.v1.ImageDelete");
    }

    /// Every gRPC method path served, from the compiled descriptor set.
    fn method_paths() -> Vec<String> {
        let set = prost_types::FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
        let mut paths = Vec::new();
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    paths.push(format!(
                        "/{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
        paths.sort();
        paths
    }

    #[test]
    fn method_paths_match_containerds() {
        let expected = [
            "/berth.transfer.v1.Transfer/Export",
            "/berth.transfer.v1.Transfer/Import",
            "/berth.transfer.v1.Transfer/Pull",
            "/berth.transfer.v1.Transfer/Push",
            "/containerd.services.containers.v1.Containers/Create",
            "/containerd.services.containers.v1.Containers/Delete",
            "/containerd.services.containers.v1.Containers/Get",
            "/containerd.services.containers.v1.Containers/List",
            "/containerd.services.containers.v1.Containers/ListStream",
            "/containerd.services.containers.v1.Containers/Update",
            "/containerd.services.content.v1.Content/Abort",
            "/containerd.services.content.v1.Content/Delete",
            "/containerd.services.content.v1.Content/Info",
            "/containerd.services.content.v1.Content/List",
            "/containerd.services.content.v1.Content/ListStatuses",
            "/containerd.services.content.v1.Content/Read",
            "/containerd.services.content.v1.Content/Status",
            "/containerd.services.content.v1.Content/Update",
            "/containerd.services.content.v1.Content/Write",
            "/containerd.services.diff.v1.Diff/Apply",
            "/containerd.services.diff.v1.Diff/Diff",
            "/containerd.services.events.v1.Events/Forward",
            "/containerd.services.events.v1.Events/Publish",
            "/containerd.services.events.v1.Events/Subscribe",
            "/containerd.services.images.v1.Images/Create",
            "/containerd.services.images.v1.Images/Delete",
            "/containerd.services.images.v1.Images/Get",
            "/containerd.services.images.v1.Images/List",
            "/containerd.services.images.v1.Images/Update",
            "/containerd.services.introspection.v1.Introspection/Plugins",
            "/containerd.services.introspection.v1.Introspection/Server",
            "/containerd.services.leases.v1.Leases/AddResource",
            "/containerd.services.leases.v1.Leases/Create",
            "/containerd.services.leases.v1.Leases/Delete",
            "/containerd.services.leases.v1.Leases/DeleteResource",
            "/containerd.services.leases.v1.Leases/List",
            "/containerd.services.leases.v1.Leases/ListResources",
            "/containerd.services.namespaces.v1.Namespaces/Create",
            "/containerd.services.namespaces.v1.Namespaces/Delete",
            "/containerd.services.namespaces.v1.Namespaces/Get",
            "/containerd.services.namespaces.v1.Namespaces/List",
            "/containerd.services.namespaces.v1.Namespaces/Update",
            "/containerd.services.snapshots.v1.Snapshots/Cleanup",
            "/containerd.services.snapshots.v1.Snapshots/Commit",
            "/containerd.services.snapshots.v1.Snapshots/List",
            "/containerd.services.snapshots.v1.Snapshots/Mounts",
            "/containerd.services.snapshots.v1.Snapshots/Prepare",
            "/containerd.services.snapshots.v1.Snapshots/Remove",
            "/containerd.services.snapshots.v1.Snapshots/Stat",
            "/containerd.services.snapshots.v1.Snapshots/Update",
            "/containerd.services.snapshots.v1.Snapshots/Usage",
            "/containerd.services.snapshots.v1.Snapshots/View",
            "/containerd.services.tasks.v1.Tasks/Checkpoint",
            "/containerd.services.tasks.v1.Tasks/CloseIO",
            "/containerd.services.tasks.v1.Tasks/Create",
            "/containerd.services.tasks.v1.Tasks/Delete",
            "/containerd.services.tasks.v1.Tasks/DeleteProcess",
            "/containerd.services.tasks.v1.Tasks/Exec",
            "/containerd.services.tasks.v1.Tasks/Get",
            "/containerd.services.tasks.v1.Tasks/Kill",
            "/containerd.services.tasks.v1.Tasks/List",
            "/containerd.services.tasks.v1.Tasks/ListPids",
            "/containerd.services.tasks.v1.Tasks/Metrics",
            "/containerd.services.tasks.v1.Tasks/Pause",
            "/containerd.services.tasks.v1.Tasks/ResizePty",
            "/containerd.services.tasks.v1.Tasks/Resume",
            "/containerd.services.tasks.v1.Tasks/Start",
            "/containerd.services.tasks.v1.Tasks/Update",
            "/containerd.services.tasks.v1.Tasks/Wait",
            "/containerd.services.version.v1.Version/Version",
        ];
        assert_eq!(method_paths(), expected);
    }

    #[test]
    fn task_create_keeps_its_gap_at_field_two() {
        let request = containerd::services::tasks::v1::CreateTaskRequest {
            container_id: "c".into(),
            terminal: true,
            ..Default::default()
        };
        // container_id is 1 (0x0a); terminal is 7, a varint: (7 << 3) = 0x38.
        assert_eq!(request.encode_to_vec(), vec![0x0a, 1, b'c', 0x38, 1]);
    }

    #[test]
    fn generated_service_names_match_the_descriptor() {
        use containerd::services::content::v1::content_server::SERVICE_NAME;
        assert_eq!(SERVICE_NAME, "containerd.services.content.v1.Content");
    }
}
