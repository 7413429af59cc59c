//! `containerd.services.introspection.v1.Introspection`: which plugins this
//! daemon really serves, and the daemon's stable identity.

use std::collections::HashMap;
use std::fs;
use std::io::{self, Write};
use std::path::Path;

use berth_proto::containerd::services::introspection::v1::{
    introspection_server, Plugin as WirePlugin, PluginsRequest, PluginsResponse, ServerResponse,
};
use berth_proto::containerd::types::Platform;
use tonic::{Request, Response, Status};

use crate::error::Context;
use crate::metadata::{Fields, Filter};
use crate::{Error, Result};

/// One capability the daemon offers, named as containerd names its plugins
/// (`io.containerd.grpc.v1` / `content`, `io.containerd.snapshotter.v1` /
/// `overlayfs`, ...) so clients that probe for features find them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    pub r#type: String,
    pub id: String,
    pub requires: Vec<String>,
    /// Empty when the plugin works on any platform.
    pub platforms: Vec<Platform>,
    pub exports: HashMap<String, String>,
}

impl Plugin {
    /// A plugin with no requirements, platforms or exports.
    pub fn new(r#type: &str, id: &str) -> Self {
        Plugin {
            r#type: r#type.to_string(),
            id: id.to_string(),
            requires: Vec::new(),
            platforms: Vec::new(),
            exports: HashMap::new(),
        }
    }

    /// Restricts the plugin to the platform the daemon runs on.
    pub fn on_host_platform(mut self) -> Self {
        self.platforms.push(host_platform());
        self
    }

    /// Names the plugin types this one depends on.
    pub fn requiring(mut self, types: &[&str]) -> Self {
        self.requires = types.iter().map(|t| t.to_string()).collect();
        self
    }

    /// Publishes a value for clients, e.g. a snapshotter's `root` dir.
    pub fn exporting(mut self, key: &str, value: impl Into<String>) -> Self {
        self.exports.insert(key.to_string(), value.into());
        self
    }
}

/// The OCI platform of this machine (`linux/amd64`, `linux/arm64`, ...).
pub fn host_platform() -> Platform {
    let (architecture, variant) = match std::env::consts::ARCH {
        "x86_64" => ("amd64", ""),
        "aarch64" => ("arm64", "v8"),
        "x86" => ("386", ""),
        "arm" => ("arm", "v7"),
        "powerpc64" => ("ppc64le", ""),
        other => (other, ""),
    };
    Platform {
        os: std::env::consts::OS.to_string(),
        architecture: architecture.to_string(),
        variant: variant.to_string(),
    }
}

/// Serves the plugin list it is given and the daemon's uuid.
#[derive(Debug, Clone)]
pub struct IntrospectionService {
    plugins: Vec<Plugin>,
    uuid: String,
}

impl IntrospectionService {
    pub fn new(plugins: Vec<Plugin>, uuid: String) -> Self {
        IntrospectionService { plugins, uuid }
    }
}

#[tonic::async_trait]
impl introspection_server::Introspection for IntrospectionService {
    async fn plugins(
        &self,
        request: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filter = Filter::parse_all(&request.get_ref().filters)?;
        let plugins = self
            .plugins
            .iter()
            .filter(|plugin| filter.matches(&PluginFields(plugin)))
            .map(|plugin| WirePlugin {
                r#type: plugin.r#type.clone(),
                id: plugin.id.clone(),
                requires: plugin.requires.clone(),
                platforms: plugin.platforms.clone(),
                exports: plugin.exports.clone(),
                capabilities: Vec::new(),
                init_err: None,
            })
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _: Request<()>) -> Result<Response<ServerResponse>, Status> {
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
            pid: u64::from(std::process::id()),
            pidns: pid_namespace().unwrap_or(0),
        }))
    }
}

/// A plugin as list filters see it: `type`, `id`, `platforms`.
struct PluginFields<'a>(&'a Plugin);

impl Fields for PluginFields<'_> {
    fn field(&self, path: &[String]) -> Option<String> {
        let plugin = self.0;
        match path {
            [one] if one == "type" => Some(plugin.r#type.clone()),
            [one] if one == "id" => Some(plugin.id.clone()),
            [one] if one == "platforms" => Some(
                plugin
                    .platforms
                    .iter()
                    .map(|p| format!("{}/{}", p.os, p.architecture))
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            _ => None,
        }
    }
}

/// The inode of our pid namespace, as `ls -l /proc/self/ns/pid` shows it.
fn pid_namespace() -> Option<u64> {
    let link = fs::read_link("/proc/self/ns/pid").ok()?;
    let text = link.to_str()?;
    text.strip_prefix("pid:[")?.strip_suffix(']')?.parse().ok()
}

/// The daemon's uuid, kept in `<root>/uuid`: made once, then read back, so
/// it identifies the data root across restarts.
pub fn load_or_create_uuid(root: &Path) -> Result<String> {
    let path = root.join("uuid");
    match fs::read_to_string(&path) {
        Ok(text) => {
            let uuid = uuid::Uuid::parse_str(text.trim())
                .map_err(|e| Error::internal(format!("{}: not a uuid: {e}", path.display())))?;
            return Ok(uuid.to_string());
        }
        Err(err) if err.kind() == io::ErrorKind::NotFound => {}
        Err(err) => return Err(Error::from(err).context(path.display())),
    }
    let uuid = uuid::Uuid::new_v4().to_string();
    write_atomically(&path, uuid.as_bytes()).with_context(|| path.display())?;
    Ok(uuid)
}

/// Writes `data` to a temp file beside `path`, fsyncs, renames it over
/// `path` and fsyncs the directory, so `path` is either absent or whole.
fn write_atomically(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let mut temp = tempfile::NamedTempFile::new_in(dir)?;
    temp.write_all(data)?;
    temp.as_file().sync_all()?;
    temp.persist(path).map_err(|e| e.error)?;
    fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_proto::containerd::services::introspection::v1::introspection_server::Introspection;

    #[test]
    fn uuid_is_created_once_and_kept() {
        let root = tempfile::tempdir().unwrap();
        let first = load_or_create_uuid(root.path()).unwrap();
        assert_eq!(uuid::Uuid::parse_str(&first).unwrap().get_version_num(), 4);
        assert_eq!(load_or_create_uuid(root.path()).unwrap(), first);
        let leftovers: Vec<_> = fs::read_dir(root.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temp file left behind");
    }

    #[test]
    fn a_corrupt_uuid_file_is_an_error_not_a_new_identity() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("uuid"), "garbage").unwrap();
        let err = load_or_create_uuid(root.path()).unwrap_err();
        assert!(err.message.contains("not a uuid"), "{}", err.message);
    }

    #[tokio::test]
    async fn plugins_are_listed_and_filtered() {
        let service = IntrospectionService::new(
            vec![
                Plugin::new("io.containerd.grpc.v1", "content"),
                Plugin::new("io.containerd.snapshotter.v1", "overlayfs").on_host_platform(),
            ],
            "u".into(),
        );
        let all = service
            .plugins(Request::new(PluginsRequest::default()))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(all.plugins.len(), 2);
        assert_eq!(all.plugins[1].platforms, vec![host_platform()]);
        let snapshotters = service
            .plugins(Request::new(PluginsRequest {
                filters: vec!["type==io.containerd.snapshotter.v1".into()],
            }))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(snapshotters.plugins.len(), 1);
        assert_eq!(snapshotters.plugins[0].id, "overlayfs");
    }

    #[tokio::test]
    async fn server_reports_uuid_and_pid() {
        let service = IntrospectionService::new(Vec::new(), "abc".into());
        let server = service.server(Request::new(())).await.unwrap().into_inner();
        assert_eq!(server.uuid, "abc");
        assert_eq!(server.pid, u64::from(std::process::id()));
        assert_ne!(server.pidns, 0);
    }
}
