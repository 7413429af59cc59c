//! How containers look to docker clients: `GET /containers/{id}/json`
//! (inspect) and `GET /containers/json` (`docker ps`) with its filters.

use std::time::{Duration, SystemTime};

use serde_json::{json, Map, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::record::{MountKind, Record, Status, ZERO_TIME};
use super::spec::hostname_of;
use crate::docker::query::Filters;
use crate::docker::Frontend;
use crate::network::Attachment;
use crate::{Error, Result};

/// The filters `docker ps` may send.
pub const LIST_FILTERS: &[&str] = &[
    "id", "name", "label", "status", "ancestor", "exited", "before", "since", "volume", "network",
    "health", "is-task", "expose", "publish",
];

/// `docker inspect` of one container.
pub fn inspect(frontend: &Frontend, record: &Record) -> Value {
    let state = &record.state;
    let files = frontend.network.name_files(&record.id).ok();
    let path_of = |pick: fn(&crate::network::NameFiles) -> &std::path::PathBuf| {
        files
            .as_ref()
            .map(|f| pick(f).to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut config = serde_json::to_value(&record.config).unwrap_or(Value::Null);
    if let Some(object) = config.as_object_mut() {
        object.insert("Hostname".into(), json!(hostname_of(record)));
        object.entry("Image").or_insert_with(|| json!(record.image));
    }
    json!({
        "Id": record.id,
        "Created": record.created,
        "Path": record.path,
        "Args": record.args,
        "State": {
            "Status": state.status.as_str(),
            "Running": matches!(state.status, Status::Running | Status::Paused),
            "Paused": state.status == Status::Paused,
            "Restarting": state.status == Status::Restarting,
            "OOMKilled": state.oom_killed,
            "Dead": state.status == Status::Dead,
            "Pid": state.pid,
            "ExitCode": state.exit_code,
            "Error": state.error,
            "StartedAt": state.started_at.as_deref().unwrap_or(ZERO_TIME),
            "FinishedAt": state.finished_at.as_deref().unwrap_or(ZERO_TIME),
        },
        "Image": record.image_id,
        "ResolvConfPath": path_of(|f| &f.resolv_conf),
        "HostnamePath": path_of(|f| &f.hostname),
        "HostsPath": path_of(|f| &f.hosts),
        "LogPath": record.log_path,
        "Name": record.slash_name(),
        "RestartCount": record.restart_count,
        "Driver": "overlayfs",
        "Platform": "linux",
        "MountLabel": "",
        "ProcessLabel": "",
        "AppArmorProfile": "",
        "ExecIDs": match frontend.execs.live_of(&record.id) {
            ids if ids.is_empty() => Value::Null,
            ids => json!(ids),
        },
        "HostConfig": serde_json::to_value(&record.host_config).unwrap_or(Value::Null),
        "GraphDriver": { "Name": "overlayfs", "Data": Value::Null },
        "Mounts": mounts(record),
        "Config": config,
        "NetworkSettings": network_settings(frontend, record),
    })
}

/// The mounts as inspect and `docker ps` show them.
fn mounts(record: &Record) -> Value {
    Value::Array(
        record
            .mounts
            .iter()
            .map(|m| {
                let mut mount = json!({
                    "Type": m.kind.as_str(),
                    "Source": m.source,
                    "Destination": m.destination,
                    "Mode": m.mode,
                    "RW": m.read_write,
                    "Propagation": m.propagation,
                });
                if m.kind == MountKind::Volume {
                    mount["Name"] = json!(m.name);
                    mount["Driver"] = json!("local");
                }
                mount
            })
            .collect(),
    )
}

/// `NetworkSettings`: one entry per network the container is attached to.
fn network_settings(frontend: &Frontend, record: &Record) -> Value {
    let attachments = if record.state.status.is_active() {
        frontend.network.attachments(&record.id).unwrap_or_default()
    } else {
        Vec::new()
    };
    let networks: Map<String, Value> = attachments
        .iter()
        .map(|a| (a.network_name.clone(), endpoint(a)))
        .collect();
    let primary = attachments.first();
    let sandbox = frontend
        .network
        .netns()
        .path(&record.id)
        .ok()
        .filter(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    json!({
        "Bridge": "",
        "SandboxID": if sandbox.is_empty() { "" } else { record.id.as_str() },
        "SandboxKey": sandbox,
        "Ports": super::ports::inspect_ports(&record.published, record.exposed()),
        "Gateway": primary.map(|a| a.gateway.to_string()).unwrap_or_default(),
        "IPAddress": primary.map(|a| a.ip.to_string()).unwrap_or_default(),
        "IPPrefixLen": primary.map_or(0, |a| a.prefix_len),
        "MacAddress": primary.map(|a| a.mac.clone()).unwrap_or_default(),
        "Networks": networks,
    })
}

fn endpoint(attachment: &Attachment) -> Value {
    json!({
        "NetworkID": attachment.network_id,
        "EndpointID": "",
        "Gateway": attachment.gateway.to_string(),
        "IPAddress": attachment.ip.to_string(),
        "IPPrefixLen": attachment.prefix_len,
        "MacAddress": attachment.mac,
    })
}

/// One container as `docker ps` lists it.
pub fn summary(frontend: &Frontend, record: &Record) -> Value {
    let command = std::iter::once(record.path.as_str())
        .chain(record.args.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    let networks: Map<String, Value> = if record.state.status.is_active() {
        frontend
            .network
            .attachments(&record.id)
            .unwrap_or_default()
            .iter()
            .map(|a| (a.network_name.clone(), endpoint(a)))
            .collect()
    } else {
        Map::new()
    };
    json!({
        "Id": record.id,
        "Names": [record.slash_name()],
        "Image": record.image,
        "ImageID": record.image_id,
        "Command": command,
        "Created": unix_seconds(&record.created),
        "Ports": super::ports::summary_ports(&record.published, record.exposed()),
        "Labels": record.config.labels.clone().unwrap_or_default(),
        "State": record.state.status.as_str(),
        "Status": status_text(record, SystemTime::now()),
        "HostConfig": { "NetworkMode": record.host_config.network_mode.clone().unwrap_or_default() },
        "NetworkSettings": { "Networks": networks },
        "Mounts": mounts(record),
    })
}

/// `Up 5 seconds`, `Exited (0) 2 minutes ago`, ... as `docker ps` shows.
pub fn status_text(record: &Record, now: SystemTime) -> String {
    let since = |text: Option<&str>| {
        let at = text.and_then(parse_time).unwrap_or(now);
        human_duration(now.duration_since(at).unwrap_or_default())
    };
    let state = &record.state;
    match state.status {
        Status::Created => "Created".to_owned(),
        Status::Running => format!("Up {}", since(state.started_at.as_deref())),
        Status::Paused => format!("Up {} (Paused)", since(state.started_at.as_deref())),
        Status::Restarting => format!(
            "Restarting ({}) {} ago",
            state.exit_code,
            since(state.finished_at.as_deref())
        ),
        Status::Removing => "Removal In Progress".to_owned(),
        Status::Dead => "Dead".to_owned(),
        Status::Exited if state.started_at.is_none() => "Created".to_owned(),
        Status::Exited => format!(
            "Exited ({}) {} ago",
            state.exit_code,
            since(state.finished_at.as_deref())
        ),
    }
}

/// A duration in docker's words (`Less than a second`, `3 minutes`,
/// `About an hour`).
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    let hours = minutes / 60;
    if seconds < 1 {
        "Less than a second".to_owned()
    } else if seconds == 1 {
        "1 second".to_owned()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_owned()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_owned()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

fn parse_time(text: &str) -> Option<SystemTime> {
    OffsetDateTime::parse(text, &Rfc3339)
        .ok()
        .map(SystemTime::from)
}

fn unix_seconds(text: &str) -> i64 {
    OffsetDateTime::parse(text, &Rfc3339).map_or(0, |t| t.unix_timestamp())
}

/// The records `docker ps` shows: running ones unless `all`, those the
/// filters keep, newest first, at most `limit` (when positive).
pub fn select(
    frontend: &Frontend,
    mut records: Vec<Record>,
    filters: &Filters,
    all: bool,
    limit: Option<usize>,
) -> Result<Vec<Record>> {
    records.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
    let created_of = |text: &str| -> Result<String> {
        let container = frontend.containers.resolve(text)?;
        Ok(container.record().created)
    };
    let before: Option<String> = filters
        .values("before")
        .next()
        .map(created_of)
        .transpose()?;
    let since: Option<String> = filters.values("since").next().map(created_of).transpose()?;
    for status in filters.values("status") {
        if !matches!(
            status,
            "created" | "restarting" | "running" | "removing" | "paused" | "exited" | "dead"
        ) {
            return Err(Error::invalid(format!("invalid filter 'status={status}'")));
        }
    }
    let exited: Vec<i64> = filters
        .values("exited")
        .map(|v| {
            v.parse()
                .map_err(|_| Error::invalid(format!("invalid filter 'exited={v}'")))
        })
        .collect::<Result<_>>()?;
    let all = all || filters.contains("status") || filters.contains("exited");
    let keep = |record: &Record| -> bool {
        let status = record.state.status;
        if !all && !status.is_active() {
            return false;
        }
        let any = |key: &str, test: &dyn Fn(&str) -> bool| {
            !filters.contains(key) || filters.values(key).any(test)
        };
        any("id", &|v| record.id.starts_with(v))
            && any("name", &|v| {
                let v = v.strip_prefix('/').unwrap_or(v);
                regex::Regex::new(v).map_or(record.name.contains(v), |re| re.is_match(&record.name))
            })
            && any("status", &|v| status.as_str() == v)
            && any("label", &|v| match v.split_once('=') {
                Some((key, value)) => record.labels().any(|(k, val)| k == key && val == value),
                None => record.labels().any(|(k, _)| k == v),
            })
            && any("ancestor", &|v| ancestor_matches(record, v))
            && (exited.is_empty()
                || (status == Status::Exited && exited.contains(&record.state.exit_code)))
            && before.as_ref().is_none_or(|b| record.created < *b)
            && since.as_ref().is_none_or(|s| record.created > *s)
            && any("volume", &|v| {
                record
                    .mounts
                    .iter()
                    .any(|m| m.name.as_deref() == Some(v) || m.destination == v)
            })
            && any("network", &|v| {
                record.host_config.network_mode.as_deref() == Some(v)
                    || record
                        .networking
                        .as_ref()
                        .and_then(|n| n.endpoints_config.as_ref())
                        .is_some_and(|e| e.contains_key(v))
            })
            && any("health", &|v| v == "none")
            && any("is-task", &|v| v == "false")
    };
    let mut selected: Vec<Record> = records.into_iter().filter(|r| keep(r)).collect();
    if let Some(limit) = limit.filter(|l| *l > 0) {
        selected.truncate(limit);
    }
    Ok(selected)
}

/// Whether `record` was made from the image `text` names (its ID, a
/// prefix of it, or the reference it was created with).
fn ancestor_matches(record: &Record, text: &str) -> bool {
    let id = record.image_id.trim_start_matches("sha256:");
    let asked = text.trim_start_matches("sha256:");
    if !asked.is_empty() && id.starts_with(asked) {
        return true;
    }
    let normal = |name: &str| {
        crate::docker::reference::ImageRef::parse(name)
            .map(|r| r.name())
            .unwrap_or_else(|_| name.to_owned())
    };
    normal(&record.image) == normal(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_docker_writes_them() {
        for (secs, text) in [
            (0, "Less than a second"),
            (1, "1 second"),
            (42, "42 seconds"),
            (60, "About a minute"),
            (300, "5 minutes"),
            (3600, "About an hour"),
            (7200, "2 hours"),
            (3 * 86400, "3 days"),
            (20 * 86400, "2 weeks"),
            (90 * 86400, "3 months"),
            (800 * 86400, "2 years"),
        ] {
            assert_eq!(human_duration(Duration::from_secs(secs)), text);
        }
    }
}
