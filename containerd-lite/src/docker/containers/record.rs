//! What berthd keeps about one docker container, on disk as
//! `<root>/docker/containers/<id>/config.v2.json` (dockerd's file name):
//! the configuration it was created with, where its rootfs and log are,
//! and its state. The containerd container record in the `moby` namespace
//! (spec, snapshot) is kept beside it for the GC and for `ctr -n moby`;
//! this file holds what only the Docker API knows.

use std::path::PathBuf;

use bollard_stubs::models::{ContainerConfig, HostConfig, NetworkingConfig};
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Where a container is in its life, as docker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    #[default]
    Created,
    Running,
    Paused,
    Restarting,
    Removing,
    Exited,
    Dead,
}

impl Status {
    /// docker's word for it (`created`, `running`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Restarting => "restarting",
            Status::Removing => "removing",
            Status::Exited => "exited",
            Status::Dead => "dead",
        }
    }

    /// Whether a task is (or should be) alive: running, paused, or between
    /// two runs of a restart policy.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Paused | Status::Restarting)
    }
}

/// The state `docker inspect` shows under `State`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub status: Status,
    /// The init process's host pid while running (0 otherwise).
    pub pid: u32,
    pub exit_code: i64,
    /// Why the last start failed, as the client was told.
    pub error: String,
    pub oom_killed: bool,
    /// RFC 3339; `None` until first started.
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

/// The kind of a mount, as docker names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MountKind::Bind => "bind",
            MountKind::Volume => "volume",
            MountKind::Tmpfs => "tmpfs",
        }
    }
}

/// One mount of the container, resolved at create time: binds and
/// volumes have a host source; tmpfs has options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountPoint {
    pub kind: MountKind,
    /// The volume's name (volumes only).
    pub name: Option<String>,
    /// The host path (binds, volumes); empty for tmpfs.
    pub source: PathBuf,
    pub destination: String,
    pub read_write: bool,
    /// Mount options beyond ro/rw (`nosuid`, `size=64m`, propagation...).
    pub options: Vec<String>,
    /// What the user wrote after the second colon of `-v` (`ro`, `z`...).
    pub mode: String,
    pub propagation: String,
    /// Copy the image's content at the destination into the volume on
    /// first use (docker's default for named volumes; `nocopy` turns it
    /// off).
    pub copy_image_data: bool,
}

/// Everything berthd records about one docker container.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// 64 hex characters.
    pub id: String,
    /// Without docker's leading `/`.
    pub name: String,
    /// RFC 3339 with nanoseconds.
    pub created: String,
    /// The image as the client named it (`Config.Image`).
    pub image: String,
    /// The image's ID (its config digest) when created.
    pub image_id: String,
    /// The process docker shows as `Path` and `Args`: the entrypoint and
    /// command after merging with the image's.
    pub path: String,
    pub args: Vec<String>,
    /// The container's configuration after merging with the image's
    /// (what `docker inspect` shows as `Config`).
    pub config: ContainerConfig,
    pub host_config: HostConfig,
    /// Endpoint settings per network asked for at create (aliases, ...).
    #[serde(default)]
    pub networking: Option<NetworkingConfig>,
    pub snapshotter: String,
    /// The snapshot holding the rootfs (the containerd record names it too).
    pub snapshot_key: String,
    pub mounts: Vec<MountPoint>,
    /// The json-file log (`<dir>/<id>-json.log`).
    pub log_path: PathBuf,
    pub state: State,
    /// The ports published for the current run (host ports picked).
    #[serde(default)]
    pub published: Vec<crate::network::PortMapping>,
    pub restart_count: u32,
    /// Stopped by the client (stop, kill, or a restart policy given up):
    /// `unless-stopped` and `always` do not bring it back at the next
    /// berthd start... except `always`, which does, as dockerd does.
    pub manually_stopped: bool,
    /// The time of the last start, to tell a restart loop from a container
    /// that ran a while (restart backoff resets after 10 s of running).
    #[serde(default)]
    pub last_start_unix_ms: i64,
}

impl Record {
    /// The name docker shows (`/name`).
    pub fn slash_name(&self) -> String {
        format!("/{}", self.name)
    }

    /// The labels of the container (its config's).
    pub fn labels(&self) -> impl Iterator<Item = (&String, &String)> {
        self.config.labels.iter().flatten()
    }

    /// The exposed ports (`80/tcp`).
    pub fn exposed(&self) -> &[String] {
        self.config.exposed_ports.as_deref().unwrap_or(&[])
    }

    /// Whether the container has a terminal.
    pub fn tty(&self) -> bool {
        self.config.tty.unwrap_or(false)
    }
}

/// Now, as docker writes times (RFC 3339 with nanoseconds, UTC).
pub fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

/// `time` as docker writes it.
pub fn rfc3339(time: OffsetDateTime) -> String {
    time.format(&Rfc3339)
        .unwrap_or_else(|_| "0001-01-01T00:00:00Z".to_owned())
}

/// docker's "never" (Go's zero time).
pub const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
