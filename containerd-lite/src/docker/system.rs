//! System endpoints: `/_ping` (with the headers clients negotiate from),
//! `/version`, `/info` (what `docker info` prints) and `/system/df`.

use std::collections::BTreeMap;
use std::path::Path;

use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, PRAGMA};
use axum::http::HeaderName;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::containers::Status;
use super::error::ApiResult;
use super::images::summary;
use super::{Frontend, API_VERSION, MIN_API_VERSION, NAMESPACE};
use crate::grpc::backend::DEFAULT_SNAPSHOTTER;
use crate::Error;

/// The engine version `docker version` shows: berthd's own.
const ENGINE_VERSION: &str = env!("CARGO_PKG_VERSION");
const GIT_COMMIT: &str = env!("BERTHD_GIT_COMMIT");

/// `GET|HEAD /_ping`: `OK`, and the headers a client picks its API version
/// and features from.
pub async fn ping() -> Response {
    let headers = [
        (
            HeaderName::from_static("api-version"),
            API_VERSION.to_string(),
        ),
        (HeaderName::from_static("ostype"), "linux".to_owned()),
        (
            HeaderName::from_static("docker-experimental"),
            "false".to_owned(),
        ),
        (HeaderName::from_static("builder-version"), "1".to_owned()),
        (
            CACHE_CONTROL,
            "no-cache, no-store, must-revalidate".to_owned(),
        ),
        (PRAGMA, "no-cache".to_owned()),
    ];
    (headers, "OK").into_response()
}

/// What `uname` says: (kernel release, machine).
fn uname() -> (String, String) {
    match nix::sys::utsname::uname() {
        Ok(u) => (
            u.release().to_string_lossy().into_owned(),
            u.machine().to_string_lossy().into_owned(),
        ),
        Err(_) => ("unknown".to_owned(), std::env::consts::ARCH.to_owned()),
    }
}

/// Go's name for the architecture, as docker reports `Arch`.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// `GET /version`.
pub async fn version() -> Json<Value> {
    let (kernel, _) = uname();
    Json(json!({
        "Platform": { "Name": "Berth" },
        "Components": [{
            "Name": "Engine",
            "Version": ENGINE_VERSION,
            "Details": {
                "ApiVersion": API_VERSION.to_string(),
                "MinAPIVersion": MIN_API_VERSION.to_string(),
                "GitCommit": GIT_COMMIT,
                "GoVersion": "n/a",
                "Os": "linux",
                "Arch": go_arch(),
                "KernelVersion": kernel,
                "Experimental": "false",
                "BuildTime": "",
            },
        }],
        "Version": ENGINE_VERSION,
        "ApiVersion": API_VERSION.to_string(),
        "MinAPIVersion": MIN_API_VERSION.to_string(),
        "GitCommit": GIT_COMMIT,
        "GoVersion": "n/a",
        "Os": "linux",
        "Arch": go_arch(),
        "KernelVersion": kernel,
        "BuildTime": "",
    }))
}

/// The value of `key` in a `Key: value` file such as /proc/meminfo, or an
/// os-release `KEY="value"` line.
fn keyed_value(path: &str, key: &str, separator: char) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|line| {
        let (k, v) = line.split_once(separator)?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn memory_total() -> u64 {
    keyed_value("/proc/meminfo", "MemTotal", ':')
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn cgroup_version() -> &'static str {
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "2"
    } else {
        "1"
    }
}

/// How many of docker's containers there are, how many run and how many
/// are paused, from their records (as dockerd counts them; no shim is
/// asked).
fn container_counts(frontend: &Frontend) -> (usize, usize, usize) {
    let all = frontend.containers.all();
    let count = |status: Status| all.iter().filter(|c| c.status() == status).count();
    (all.len(), count(Status::Running), count(Status::Paused))
}

/// `GET /info`: the fields `docker info` prints.
pub async fn info(State(frontend): State<Frontend>) -> ApiResult<Json<Value>> {
    let images = {
        let frontend = frontend.clone();
        tokio::task::spawn_blocking(move || frontend.catalog.list().map(|images| images.len()))
            .await
            .map_err(|err| Error::internal(format!("info: {err}")))??
    };
    let (containers, running, paused) = container_counts(&frontend);
    let stopped = containers.saturating_sub(running + paused);
    let (kernel, machine) = uname();
    let hostname = nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();
    let os = keyed_value("/etc/os-release", "PRETTY_NAME", '=').unwrap_or_else(|| "Linux".into());
    let os_version = keyed_value("/etc/os-release", "VERSION_ID", '=').unwrap_or_default();
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut runtimes = serde_json::Map::new();
    runtimes.insert("runc".into(), json!({ "path": "containerd-shim-berth-v2" }));
    runtimes.insert(
        "io.containerd.berth.v2".into(),
        json!({ "path": "containerd-shim-berth-v2" }),
    );
    for (name, shim) in &frontend.settings.runtimes {
        runtimes.insert(name.clone(), json!({ "path": shim }));
    }
    let root = frontend.settings.root.display().to_string();
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let mut info = json!({
        "ID": frontend.backend.uuid,
        "Containers": containers,
        "ContainersRunning": running,
        "ContainersPaused": paused,
        "ContainersStopped": stopped,
        "Images": images,
        "Driver": DEFAULT_SNAPSHOTTER,
        "DriverStatus": [["driver-type", "io.containerd.snapshotter.v1"]],
        "Plugins": {
            "Volume": [],
            "Network": [],
            "Authorization": null,
            "Log": ["json-file"],
        },
        "MemoryLimit": true,
        "SwapLimit": false,
        "KernelMemory": false,
        "KernelMemoryTCP": false,
        "CpuCfsPeriod": true,
        "CpuCfsQuota": true,
        "CPUShares": true,
        "CPUSet": true,
        "PidsLimit": true,
        "IPv4Forwarding": true,
        "BridgeNfIptables": false,
        "BridgeNfIp6tables": false,
        "Debug": false,
        "NFd": 0,
        "OomKillDisable": false,
        "NGoroutines": 0,
        "SystemTime": now,
        "LoggingDriver": "json-file",
        "CgroupDriver": "cgroupfs",
        "CgroupVersion": cgroup_version(),
        "NEventsListener": 0,
    });
    let rest = json!({
        "KernelVersion": kernel,
        "OperatingSystem": os,
        "OSVersion": os_version,
        "OSType": "linux",
        "Architecture": machine,
        "IndexServerAddress": "https://index.docker.io/v1/",
        "RegistryConfig": {
            "AllowNondistributableArtifactsCIDRs": [],
            "AllowNondistributableArtifactsHostnames": [],
            "InsecureRegistryCIDRs": ["127.0.0.0/8"],
            "IndexConfigs": {
                "docker.io": { "Name": "docker.io", "Mirrors": [], "Secure": true, "Official": true },
            },
            "Mirrors": [],
        },
        "NCPU": ncpu,
        "MemTotal": memory_total(),
        "GenericResources": null,
        "DockerRootDir": root,
        "HttpProxy": "",
        "HttpsProxy": "",
        "NoProxy": "",
        "Name": hostname,
        "Labels": [],
        "ExperimentalBuild": false,
        "ServerVersion": ENGINE_VERSION,
        "Runtimes": runtimes,
        "DefaultRuntime": "runc",
        "Swarm": {
            "NodeID": "",
            "NodeAddr": "",
            "LocalNodeState": "inactive",
            "ControlAvailable": false,
            "Error": "",
            "RemoteManagers": null,
        },
        "LiveRestoreEnabled": true,
        "Isolation": "",
        "InitBinary": "",
        "ContainerdCommit": { "ID": GIT_COMMIT, "Expected": GIT_COMMIT },
        "RuncCommit": { "ID": GIT_COMMIT, "Expected": GIT_COMMIT },
        "InitCommit": { "ID": "", "Expected": "" },
        "SecurityOptions": ["name=seccomp,profile=default"],
        "Warnings": [],
    });
    if let (Some(info), Value::Object(rest)) = (info.as_object_mut(), rest) {
        info.extend(rest);
    }
    Ok(Json(info))
}

/// `GET /system/df`: images (with their layers' sizes, shared ones
/// counted once, and how many containers use each), containers (the size
/// of their writable layer) and volumes (their size and users).
pub async fn disk_usage(State(frontend): State<Frontend>) -> ApiResult<Json<Value>> {
    let catalog = frontend.catalog.clone();
    let usage_of = frontend.clone();
    let (images, containers, volumes) = tokio::task::spawn_blocking(move || {
        let images = catalog.list()?;
        let layers: Vec<Vec<(String, u64)>> = images
            .iter()
            .map(|image| {
                image
                    .chain_ids()
                    .into_iter()
                    .zip(catalog.layer_sizes(image))
                    .collect()
            })
            .collect();
        Ok::<_, Error>((
            (images, layers),
            containers_usage(&usage_of),
            volumes_usage(&usage_of)?,
        ))
    })
    .await
    .map_err(|err| Error::internal(format!("system df: {err}")))??;
    let (images, layers) = images;
    // A layer is shared when more than one image stands on it; each is
    // counted once in the total.
    let mut users: BTreeMap<&str, (u64, usize)> = BTreeMap::new();
    for (chain, size) in layers.iter().flatten() {
        users.entry(chain).or_insert((*size, 0)).1 += 1;
    }
    let layers_size: u64 = users.values().map(|(size, _)| size).sum();
    let images: Vec<Value> = images
        .iter()
        .zip(&layers)
        .map(|(image, layers)| {
            let shared: u64 = layers
                .iter()
                .filter(|(chain, _)| users.get(chain.as_str()).is_some_and(|(_, n)| *n > 1))
                .map(|(_, size)| size)
                .sum();
            let mut value = summary(image);
            let users = containers
                .iter()
                .filter(|c| c["ImageID"] == image.id.as_str())
                .count();
            value["Containers"] = json!(users);
            value["SharedSize"] = json!(shared);
            value
        })
        .collect();
    Ok(Json(json!({
        "LayersSize": layers_size,
        "Images": images,
        "Containers": containers,
        "Volumes": volumes,
        "BuildCache": [],
    })))
}

/// Every docker container as `docker ps` lists it, with the size of its
/// writable layer (`SizeRw`) and that plus its image (`SizeRootFs`).
fn containers_usage(frontend: &Frontend) -> Vec<Value> {
    let image_sizes: BTreeMap<String, u64> = frontend
        .catalog
        .list()
        .unwrap_or_default()
        .iter()
        .map(|image| (image.id.to_string(), image.size))
        .collect();
    frontend
        .containers
        .all()
        .iter()
        .map(|container| {
            let record = container.record();
            let size_rw = frontend
                .backend
                .snapshotters
                .get(&record.snapshotter)
                .and_then(|s| s.usage(NAMESPACE, &record.snapshot_key))
                .map_or(0, |usage| usage.size);
            let mut value = super::containers::view::summary(frontend, &record);
            value["SizeRw"] = json!(size_rw);
            value["SizeRootFs"] =
                json!(size_rw + image_sizes.get(&record.image_id).copied().unwrap_or(0));
            value
        })
        .collect()
}

/// Every volume with its size and how many containers mount it.
fn volumes_usage(frontend: &Frontend) -> crate::Result<Vec<Value>> {
    Ok(frontend
        .volumes
        .list()?
        .iter()
        .map(|volume| {
            let users = frontend.containers.volume_users(&volume.name).len();
            let size = frontend.volumes.size(volume);
            super::volumes::to_json(volume, Some((size, users)))
        })
        .collect())
}
