//! What a containerd client says in gRPC metadata rather than in the
//! message: the namespace it works in and the lease it works under.

use tonic::metadata::MetadataMap;
use tonic::Status;

use crate::metadata::labels::validate_identifier;
use crate::Error;

/// The header carrying the namespace on every namespaced call.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The header naming a lease that new content and snapshots join.
pub const LEASE_HEADER: &str = "containerd-lease";

/// The namespace a namespaced call works in. Missing is refused with
/// FailedPrecondition and a malformed name with InvalidArgument, as
/// containerd does.
pub fn namespace(metadata: &MetadataMap) -> Result<String, Status> {
    let value = metadata
        .get(NAMESPACE_HEADER)
        .map(|v| {
            v.to_str()
                .map_err(|_| Error::invalid("namespace header is not ASCII"))
        })
        .transpose()?
        .unwrap_or_default();
    if value.is_empty() {
        return Err(Error::precondition(format!(
            "namespace is required (gRPC header {NAMESPACE_HEADER})"
        ))
        .into());
    }
    validate_identifier("namespace", value)?;
    Ok(value.to_string())
}

/// The lease the call's new resources join, if the client named one.
pub fn lease(metadata: &MetadataMap) -> Result<Option<String>, Status> {
    match metadata.get(LEASE_HEADER) {
        None => Ok(None),
        Some(value) => {
            let id = value
                .to_str()
                .map_err(|_| Error::invalid("lease header is not ASCII"))?;
            Ok((!id.is_empty()).then(|| id.to_string()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn with(header: &str, value: &str) -> MetadataMap {
        let mut map = MetadataMap::new();
        map.insert(
            tonic::metadata::MetadataKey::from_bytes(header.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        map
    }

    #[test]
    fn namespace_comes_from_the_header() {
        assert_eq!(
            namespace(&with(NAMESPACE_HEADER, "k8s.io")).unwrap(),
            "k8s.io"
        );
    }

    #[test]
    fn missing_namespace_is_a_failed_precondition() {
        let err = namespace(&MetadataMap::new()).unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert!(err.message().contains("namespace is required"));
        let err = namespace(&with(NAMESPACE_HEADER, "")).unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
    }

    #[test]
    fn malformed_namespace_is_invalid() {
        for bad in ["../etc", "a/b", "-x"] {
            let err = namespace(&with(NAMESPACE_HEADER, bad)).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn lease_is_optional() {
        assert_eq!(lease(&MetadataMap::new()).unwrap(), None);
        assert_eq!(
            lease(&with(LEASE_HEADER, "pull-1")).unwrap(),
            Some("pull-1".to_string())
        );
    }
}
