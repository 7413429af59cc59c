//! `POST /containers/create`: a container from an image and docker's
//! configuration. Everything the client sent is checked before anything
//! is made; then, in order, the name is reserved, the containerd record
//! is written (it names the snapshot, so the collector keeps it), the
//! snapshot is prepared, volumes are made, and the docker record is
//! written. A failure undoes exactly what was made; what a crash cut
//! short is removed at the next start ([`remove_unfinished`]).

use std::collections::HashMap;
use std::os::unix::fs::DirBuilderExt;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::Json;
use bollard_stubs::models::{ContainerConfig, ContainerCreateBody, HostConfig, NetworkingConfig};
use serde_json::{json, Value};

use super::mounts;
use super::names;
use super::record::{now_rfc3339, Record, State as RunState};
use super::registry::{check_name, new_id};
use crate::docker::error::ApiResult;
use crate::docker::images::catalog::DockerImage;
use crate::docker::query::Query;
use crate::docker::{Frontend, NAMESPACE};
use crate::grpc::backend::DEFAULT_SNAPSHOTTER;
use crate::metadata::containers::{Container as ContainerdRecord, Payload, Runtime};
use crate::unpack::chain_ids;
use crate::{Error, Result};

/// The runtime docker containers run with unless `HostConfig.Runtime`
/// names another (it maps to berth's shim by default).
pub const DEFAULT_RUNTIME: &str = "io.containerd.runc.v2";

/// The containerd label naming the docker container a record belongs to.
pub const NAME_LABEL: &str = "com.docker/container.name";

/// `POST /containers/create?name=`.
pub async fn create(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let query = Query::parse(raw.as_deref());
    let body: ContainerCreateBody = serde_json::from_slice(&body)
        .map_err(|err| Error::invalid(format!("invalid JSON body: {err}")))?;
    let name = match query.get("name").filter(|n| !n.is_empty()) {
        Some(name) => Some(check_name(name)?.to_owned()),
        None => None,
    };
    let journal = frontend.journal.clone();
    let registry = frontend.containers.clone();
    let made = tokio::task::spawn_blocking(move || create_blocking(&frontend, name, body))
        .await
        .map_err(|err| Error::internal(format!("container create task: {err}")))??;
    if let Ok(container) = registry.resolve(&made.id) {
        journal.record(super::api::event(&container, "create", &[]));
    }
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": made.id, "Warnings": made.warnings })),
    ))
}

/// What a create made.
#[derive(Debug)]
pub struct Created {
    pub id: String,
    pub warnings: Vec<String>,
}

fn create_blocking(
    frontend: &Frontend,
    name: Option<String>,
    body: ContainerCreateBody,
) -> Result<Created> {
    let image_text = body
        .image
        .clone()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| Error::invalid("Config.Image: an image is required"))?;
    let image = frontend.catalog.find(&image_text)?;
    create_from_image(frontend, name, body, image)
}

/// A create of a container of `image` (already looked up; the body's
/// `Image` is what the container records as its image). Blocking.
pub(crate) fn create_from_image(
    frontend: &Frontend,
    name: Option<String>,
    body: ContainerCreateBody,
    image: DockerImage,
) -> Result<Created> {
    let (config, host, networking) = split_body(body)?;
    let image_text = config.image.clone().unwrap_or_else(|| image.id.to_string());
    let config = merge_image_config(config, &image)?;
    let host = check_host_config(host)?;
    check_networks_exist(frontend, &host, networking.as_ref())?;
    let requested_mounts = mounts::requested(&config, &host)?;
    let (path, args) = command_of(&config)?;

    let id = new_id();
    let name = match name {
        Some(name) => name,
        None => names::generate(|n| frontend.containers.name_taken(n)),
    };
    frontend.containers.reserve_name(&name, &id)?;
    let mut undo = Undo {
        frontend,
        id: &id,
        name: &name,
        containerd_record: false,
        snapshot: None,
        dir: false,
    };
    let snapshotter = DEFAULT_SNAPSHOTTER.to_owned();
    let record = Record {
        id: id.clone(),
        name: name.clone(),
        created: now_rfc3339(),
        image: image_text,
        image_id: image.id.to_string(),
        path,
        args,
        networking,
        snapshotter: snapshotter.clone(),
        snapshot_key: id.clone(),
        mounts: requested_mounts,
        log_path: frontend
            .containers
            .dir_of(&id)
            .join(format!("{id}-json.log")),
        state: RunState::default(),
        published: Vec::new(),
        restart_count: 0,
        manually_stopped: false,
        last_start_unix_ms: 0,
        config,
        host_config: host,
    };
    make(frontend, record, &image, &mut undo)?;
    undo.disarm();
    drop(undo);
    Ok(Created {
        id,
        warnings: Vec::new(),
    })
}

fn make(
    frontend: &Frontend,
    mut record: Record,
    image: &DockerImage,
    undo: &mut Undo<'_>,
) -> Result<()> {
    let backend = &frontend.backend;
    let image_name = image
        .records
        .first()
        .map(|r| r.name.clone())
        .unwrap_or_default();
    let mut containerd = ContainerdRecord::new(
        record.id.clone(),
        Runtime {
            name: runtime_name(&record.host_config),
            options: None,
        },
        Payload {
            type_url: crate::oci::SPEC_TYPE_URL.to_owned(),
            value: b"{}".to_vec(),
        },
    );
    containerd.image = image_name;
    containerd.snapshotter = record.snapshotter.clone();
    containerd.snapshot_key = record.snapshot_key.clone();
    containerd
        .labels
        .insert(NAME_LABEL.to_owned(), record.name.clone());
    backend.containers.create(NAMESPACE, containerd)?;
    undo.containerd_record = true;

    let snapshotter = backend.snapshotters.get(&record.snapshotter)?;
    let parent = chain_ids(&image.config.rootfs.diff_ids)
        .pop()
        .ok_or_else(|| Error::invalid(format!("image {}: it has no layers", image.id)))?;
    snapshotter
        .stat(NAMESPACE, &parent)
        .map_err(|err| err.context(format!("image {} is not unpacked", image.id)))?;
    snapshotter.prepare(
        NAMESPACE,
        &record.snapshot_key,
        Some(&parent),
        Default::default(),
    )?;
    undo.snapshot = Some(snapshotter);

    let dir = frontend.containers.dir_of(&record.id);
    std::fs::DirBuilder::new()
        .mode(0o710)
        .create(&dir)
        .map_err(|err| Error::from(err).context(format!("creating {}", dir.display())))?;
    undo.dir = true;
    let provided = super::volumes::provide(frontend, &mut record)?;
    if let Err(err) = frontend.containers.insert(record) {
        drop(provided.claims);
        super::volumes::undo(frontend, &provided.created);
        return Err(err);
    }
    Ok(())
}

/// Refuses a network mode or endpoint naming a network that does not
/// exist before anything is made (dockerd makes the container and fails
/// its start).
fn check_networks_exist(
    frontend: &Frontend,
    host: &HostConfig,
    networking: Option<&NetworkingConfig>,
) -> Result<()> {
    let mode = host.network_mode.as_deref().unwrap_or("");
    let mut names: Vec<&str> = Vec::new();
    if let Ok(crate::network::NetworkMode::Network(_)) = mode.parse() {
        names.push(mode);
    }
    if let Some(endpoints) = networking.and_then(|n| n.endpoints_config.as_ref()) {
        names.extend(endpoints.keys().map(String::as_str));
    }
    for name in names {
        if matches!(name, "" | "default" | crate::network::DEFAULT_NETWORK) {
            continue;
        }
        if let Err(err) = frontend.network.find(name) {
            // Not 404: the CLI takes a 404 from create for a missing
            // image and pulls it.
            return Err(match err.kind {
                crate::ErrorKind::NotFound => Error::invalid(err.message),
                _ => err,
            });
        }
    }
    Ok(())
}

/// Removes what creates cut short by a crash left, before the API is
/// served: containerd records this frontend wrote (they carry
/// [`NAME_LABEL`]) that have no docker record and no task, with their
/// snapshots. The collector then takes what only they held. Returns how
/// many were removed.
pub(crate) fn remove_unfinished(frontend: &Frontend) -> usize {
    let known: std::collections::HashSet<String> = frontend
        .containers
        .all()
        .iter()
        .map(|c| c.id.clone())
        .collect();
    let backend = &frontend.backend;
    let records = match backend
        .containers
        .list(NAMESPACE, &crate::metadata::filter::Filter::everything())
    {
        Ok(records) => records,
        Err(err) => {
            tracing::warn!("listing containerd records of docker containers: {err}");
            return 0;
        }
    };
    let mut removed = 0;
    for record in records {
        if known.contains(&record.id) || !record.labels.contains_key(NAME_LABEL) {
            continue;
        }
        if backend.tasks.get(NAMESPACE, &record.id).is_ok() {
            tracing::warn!(id = %record.id, "a task without a docker container: left alone");
            continue;
        }
        let snapshot = backend
            .snapshotters
            .get(&record.snapshotter)
            .and_then(|s| s.remove(NAMESPACE, &record.snapshot_key));
        match snapshot {
            Err(err) if err.kind != crate::ErrorKind::NotFound => {
                tracing::warn!(id = %record.id, "removing an unfinished create's snapshot: {err}");
                continue;
            }
            _ => {}
        }
        match backend.containers.delete(NAMESPACE, &record.id) {
            Ok(()) => removed += 1,
            Err(err) => tracing::warn!(id = %record.id, "removing an unfinished create: {err}"),
        }
    }
    if removed > 0 {
        tracing::info!(containers = removed, "unfinished creates removed");
        backend.gc.schedule();
    }
    removed
}

/// Removes what a failed create made.
struct Undo<'a> {
    frontend: &'a Frontend,
    id: &'a str,
    name: &'a str,
    containerd_record: bool,
    snapshot: Option<std::sync::Arc<crate::snapshots::Snapshotter>>,
    dir: bool,
}

impl Undo<'_> {
    fn disarm(&mut self) {
        self.containerd_record = false;
        self.snapshot = None;
        self.dir = false;
        self.name = "";
    }
}

impl Drop for Undo<'_> {
    fn drop(&mut self) {
        if self.dir {
            let dir = self.frontend.containers.dir_of(self.id);
            if let Err(err) = std::fs::remove_dir_all(&dir) {
                tracing::warn!(dir = %dir.display(), "undoing a container create: {err}");
            }
        }
        if let Some(snapshotter) = self.snapshot.take() {
            if let Err(err) = snapshotter.remove(NAMESPACE, self.id) {
                tracing::warn!(id = self.id, "undoing a container create: {err}");
            }
        }
        if self.containerd_record {
            if let Err(err) = self.frontend.backend.containers.delete(NAMESPACE, self.id) {
                tracing::warn!(id = self.id, "undoing a container create: {err}");
            }
        }
        if !self.name.is_empty() {
            self.frontend.containers.release_name(self.name, self.id);
        }
    }
}

/// The runtime a container runs with.
pub fn runtime_name(host: &HostConfig) -> String {
    host.runtime
        .clone()
        .filter(|r| !r.is_empty() && r != "runc")
        .unwrap_or_else(|| DEFAULT_RUNTIME.to_owned())
}

/// The create body as docker's three parts: the container's config, the
/// host config, and the networks' endpoint settings.
fn split_body(
    body: ContainerCreateBody,
) -> Result<(ContainerConfig, HostConfig, Option<NetworkingConfig>)> {
    let mut value = serde_json::to_value(&body)
        .map_err(|err| Error::internal(format!("re-encoding a create body: {err}")))?;
    let host = value
        .as_object_mut()
        .and_then(|o| o.remove("HostConfig"))
        .unwrap_or(Value::Null);
    if let Some(object) = value.as_object_mut() {
        object.remove("NetworkingConfig");
    }
    let config: ContainerConfig = serde_json::from_value(value)
        .map_err(|err| Error::invalid(format!("invalid container config: {err}")))?;
    let host: HostConfig = if host.is_null() {
        HostConfig::default()
    } else {
        serde_json::from_value(host)
            .map_err(|err| Error::invalid(format!("invalid HostConfig: {err}")))?
    };
    Ok((config, host, body.networking_config))
}

/// The config merged with the image's, as dockerd merges them: the image
/// supplies what the client left empty (command and entrypoint together,
/// working dir, user, stop signal), environment variables and labels the
/// client did not set, and its exposed ports and volumes.
pub fn merge_image_config(
    mut config: ContainerConfig,
    image: &DockerImage,
) -> Result<ContainerConfig> {
    let image_config: ContainerConfig = match &image.config.config {
        Some(value) => serde_json::from_value(value.clone()).map_err(|err| {
            Error::invalid(format!("image {}: unreadable config: {err}", image.id))
        })?,
        None => ContainerConfig::default(),
    };
    let empty = |v: &Option<Vec<String>>| v.as_ref().is_none_or(|v| v.is_empty());
    if empty(&config.entrypoint) {
        if empty(&config.cmd) {
            config.cmd = image_config.cmd.clone();
        }
        if config.entrypoint.is_none() {
            config.entrypoint = image_config.entrypoint.clone();
        }
    }
    let env = config.env.get_or_insert_with(Vec::new);
    for var in image_config.env.iter().flatten() {
        let key = var.split('=').next().unwrap_or(var);
        if !env
            .iter()
            .any(|own| own.split('=').next().unwrap_or(own) == key)
        {
            env.push(var.clone());
        }
    }
    for (key, value) in image_config.labels.iter().flatten() {
        config
            .labels
            .get_or_insert_with(HashMap::new)
            .entry(key.clone())
            .or_insert_with(|| value.clone());
    }
    for (ours, theirs) in [
        (&mut config.exposed_ports, &image_config.exposed_ports),
        (&mut config.volumes, &image_config.volumes),
    ] {
        for item in theirs.iter().flatten() {
            let list = ours.get_or_insert_with(Vec::new);
            if !list.contains(item) {
                list.push(item.clone());
            }
        }
    }
    let blank = |v: &Option<String>| v.as_deref().is_none_or(str::is_empty);
    if blank(&config.working_dir) {
        config.working_dir = image_config.working_dir.clone();
    }
    if blank(&config.user) {
        config.user = image_config.user.clone();
    }
    if blank(&config.stop_signal) {
        config.stop_signal = image_config.stop_signal.clone();
    }
    if config.healthcheck.is_none() {
        config.healthcheck = image_config.healthcheck.clone();
    }
    if let Some(env) = &config.env {
        for var in env {
            crate::oci::check_env(var)?;
        }
    }
    Ok(config)
}

/// `Path` and `Args`: the entrypoint then the command.
fn command_of(config: &ContainerConfig) -> Result<(String, Vec<String>)> {
    let mut all = config
        .entrypoint
        .iter()
        .flatten()
        .chain(config.cmd.iter().flatten())
        .cloned();
    let path = all
        .next()
        .ok_or_else(|| Error::invalid("No command specified"))?;
    Ok((path, all.collect()))
}

/// The host config checked where a mistake would only show at start:
/// restart policy, limits, network mode, log driver.
pub(super) fn check_host_config(mut host: HostConfig) -> Result<HostConfig> {
    use bollard_stubs::models::RestartPolicyNameEnum as Policy;
    if let Some(parent) = host.cgroup_parent.as_deref() {
        super::spec::cgroup_parent(parent)?;
    }
    if let Some(policy) = &host.restart_policy {
        let retries = policy.maximum_retry_count.unwrap_or(0);
        match policy.name {
            Some(Policy::ON_FAILURE) if retries < 0 => {
                return Err(Error::invalid(
                    "invalid restart policy: maximum retry count can't be negative",
                ))
            }
            Some(Policy::ON_FAILURE) | None | Some(Policy::EMPTY) => {}
            Some(_) if retries != 0 => return Err(Error::invalid(
                "invalid restart policy: maximum retry count can only be used with 'on-failure'",
            )),
            Some(_) => {}
        }
    }
    if host.auto_remove == Some(true)
        && host
            .restart_policy
            .as_ref()
            .and_then(|p| p.name)
            .is_some_and(|n| !matches!(n, Policy::NO | Policy::EMPTY))
    {
        return Err(Error::invalid(
            "conflicting options: cannot specify both --restart and --rm",
        ));
    }
    for (value, what) in [
        (host.memory, "Memory"),
        (host.nano_cpus, "NanoCpus"),
        (host.cpu_shares, "CpuShares"),
        (host.cpu_quota, "CpuQuota"),
        (host.cpu_period, "CpuPeriod"),
        (host.shm_size, "ShmSize"),
    ] {
        if value.is_some_and(|v| v < 0) {
            return Err(Error::invalid(format!(
                "invalid {what}: it can't be negative"
            )));
        }
    }
    if let Some(memory) = host.memory.filter(|m| *m > 0) {
        if memory < 6 * 1024 * 1024 {
            return Err(Error::invalid("Minimum memory limit allowed is 6MB"));
        }
        if let Some(swap) = host.memory_swap.filter(|s| *s > 0) {
            if swap < memory {
                return Err(Error::invalid(
                    "Minimum memoryswap limit should be larger than memory limit, see usage",
                ));
            }
        }
    }
    if host.nano_cpus.is_some_and(|n| n > 0) && host.cpu_quota.is_some_and(|q| q > 0) {
        return Err(Error::invalid(
            "Conflicting options: Nano CPUs and CPU Period cannot both be set",
        ));
    }
    if let Some(cpus) = host.nano_cpus.filter(|n| *n > 0) {
        let available = std::thread::available_parallelism().map_or(1, |n| n.get()) as i64;
        if cpus > available * 1_000_000_000 {
            return Err(Error::invalid(format!(
                "Range of CPUs is from 0.01 to {available}.00, as there are only {available} CPUs available"
            )));
        }
    }
    super::ports::check(&host)?;
    let mode = host.network_mode.clone().unwrap_or_default();
    mode.parse::<crate::network::NetworkMode>()?;
    let log_type = host
        .log_config
        .as_ref()
        .and_then(|l| l.typ.clone())
        .unwrap_or_default();
    if !matches!(log_type.as_str(), "" | "json-file" | "none") {
        return Err(Error::invalid(format!(
            "failed to create task for container: logger: no log driver named '{log_type}' is registered"
        )));
    }
    if let Some(log) = &host.log_config {
        let options = log.config.clone().unwrap_or_default();
        crate::logs::Rotation::from_log_opts(
            options.iter().map(|(k, v)| (k.as_str(), v.as_str())),
        )?;
    }
    if host.network_mode.as_deref().unwrap_or("").is_empty() {
        host.network_mode = Some("default".to_owned());
    }
    for mount in host.mounts.iter().flatten() {
        if mount.typ.is_none() {
            return Err(Error::invalid("invalid mount config: Type is required"));
        }
    }
    Ok(host)
}
