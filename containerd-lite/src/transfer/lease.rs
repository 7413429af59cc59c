//! The lease a transfer works under.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::format_description::well_known::Rfc3339;

use crate::metadata::leases::{LeaseResource, EXPIRE_LABEL};
use crate::metadata::{Labels, LeaseManager};
use crate::{Error, Result};

/// How long a transfer's lease protects its work if berthd dies mid-way.
const TRANSFER_LEASE_TTL: Duration = Duration::from_secs(60 * 60);

/// A lease held for one transfer; [`TransferLease::release`] ends it, and
/// if berthd dies first it expires by itself.
#[derive(Debug)]
pub(crate) struct TransferLease {
    leases: LeaseManager,
    namespace: String,
    id: String,
}

impl TransferLease {
    /// Creates a lease named after `purpose` in `namespace`.
    pub(crate) fn begin(leases: &LeaseManager, namespace: &str, purpose: &str) -> Result<Self> {
        static SEQUENCE: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let id = format!(
            "{purpose}-{}-{}-{}",
            now.as_nanos(),
            std::process::id(),
            SEQUENCE.fetch_add(1, Ordering::Relaxed)
        );
        let expires = (time::OffsetDateTime::now_utc() + TRANSFER_LEASE_TTL)
            .format(&Rfc3339)
            .map_err(|err| Error::internal(format!("format lease expiry: {err}")))?;
        leases.create(
            namespace,
            &id,
            Labels::from([(EXPIRE_LABEL.to_owned(), expires)]),
        )?;
        Ok(TransferLease {
            leases: leases.clone(),
            namespace: namespace.to_owned(),
            id,
        })
    }

    /// The lease's id, for content writers.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Has the lease hold snapshot `key` of `snapshotter`.
    pub(crate) fn hold_snapshot(&self, snapshotter: &str, key: &str) -> Result<()> {
        self.leases.add_resource(
            &self.namespace,
            &self.id,
            &LeaseResource::Snapshot {
                snapshotter: snapshotter.to_owned(),
                key: key.to_owned(),
            },
        )
    }

    /// Ends the lease. Failing to is harmless (it expires), so it is only
    /// logged.
    pub(crate) fn release(self) {
        if let Err(err) = self.leases.delete(&self.namespace, &self.id) {
            tracing::warn!(lease = self.id, error = %err, "cannot release a lease; it will expire");
        }
    }
}
