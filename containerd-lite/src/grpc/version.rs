//! `containerd.services.version.v1.Version`: which build answers.

use berth_proto::containerd::services::version::v1::{version_server, VersionResponse};
use tonic::{Request, Response, Status};

/// The release from Cargo and the git commit recorded at build time.
#[derive(Debug, Clone, Default)]
pub struct VersionService;

/// berthd's release, e.g. "0.1.0".
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git commit berthd was built from, or "unknown".
pub const REVISION: &str = env!("BERTHD_GIT_COMMIT");

#[tonic::async_trait]
impl version_server::Version for VersionService {
    async fn version(&self, _: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: VERSION.to_string(),
            revision: REVISION.to_string(),
        }))
    }
}
