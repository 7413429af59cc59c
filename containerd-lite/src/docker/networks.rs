//! Docker networks over berthd's network layer ([`crate::network`]):
//! `GET /networks`, `GET /networks/{id}`, `POST /networks/create`,
//! `DELETE /networks/{id}`, `POST /networks/{id}/connect` and
//! `/disconnect`, `POST /networks/prune`.
//!
//! The `bridge` network is the network layer's default one; `host` and
//! `none` are docker's network modes, listed as networks (with IDs derived
//! from their names, so they stay the same) and never removed. Connecting
//! a running container attaches it at once (its hosts file and its peers'
//! are rewritten, so names resolve); either way the network is kept in the
//! container's `NetworkingConfig` and joined again at every start.

use std::collections::{BTreeMap, HashMap};
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bollard_stubs::models::{
    EndpointSettings, NetworkConnectRequest, NetworkCreateRequest, NetworkDisconnectRequest,
};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::containers::registry::Container;
use super::containers::Status;
use super::error::{message_response, ApiResult};
use super::events::DockerEvent;
use super::query::{Filters, Query};
use super::Frontend;
use crate::error::ErrorKind;
use crate::network::{EndpointName, Network, NetworkMode, NetworkSpec, DEFAULT_NETWORK};
use crate::{Error, Result};

/// docker's network modes that are listed as networks without being ones.
const MODES: [(&str, &str); 2] = [("host", "host"), ("none", "null")];

const LIST_FILTERS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];
const PRUNE_FILTERS: &[&str] = &["label", "label!", "until"];

/// The stable ID of the `host` or `none` pseudo-network.
fn mode_id(name: &str) -> String {
    let digest = Sha256::digest(format!("berth network mode {name}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// An endpoint's ID: derived from its network and container.
fn endpoint_id(network_id: &str, container_id: &str) -> String {
    let digest = Sha256::digest(format!("{network_id}/{container_id}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(at: SystemTime) -> String {
    OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// What the API shows of a network; `containers` for inspect.
fn network_json(frontend: &Frontend, network: &Network, with_containers: bool) -> Value {
    let mut ipam =
        json!({ "Subnet": network.subnet.to_string(), "Gateway": network.gateway.to_string() });
    if let Some(range) = network.ip_range {
        ipam["IPRange"] = json!(range.to_string());
    }
    let containers: Map<String, Value> = if with_containers {
        frontend
            .network
            .endpoints(network)
            .unwrap_or_default()
            .iter()
            .map(|e| {
                (
                    e.container_id.clone(),
                    json!({
                        "Name": e.name,
                        "EndpointID": endpoint_id(&network.id, &e.container_id),
                        "MacAddress": e.mac,
                        "IPv4Address": format!("{}/{}", e.ip, e.prefix_len),
                        "IPv6Address": "",
                    }),
                )
            })
            .collect()
    } else {
        Map::new()
    };
    let mut options = network.options.clone();
    if network.name == DEFAULT_NETWORK {
        options
            .entry("com.docker.network.bridge.name".to_owned())
            .or_insert_with(|| network.bridge.clone());
    }
    json!({
        "Name": network.name,
        "Id": network.id,
        "Created": rfc3339(network.created),
        "Scope": "local",
        "Driver": network.driver,
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": Value::Null, "Config": [ipam] },
        "Internal": network.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": network.labels,
    })
}

/// The `host` or `none` pseudo-network.
fn mode_json(name: &str, driver: &str) -> Value {
    json!({
        "Name": name,
        "Id": mode_id(name),
        "Created": "0001-01-01T00:00:00Z",
        "Scope": "local",
        "Driver": driver,
        "EnableIPv6": false,
        "IPAM": { "Driver": "default", "Options": Value::Null, "Config": [] },
        "Internal": false,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": {},
        "Options": {},
        "Labels": {},
    })
}

fn network_event(action: &str, network: &Network, container: Option<&str>) -> DockerEvent {
    let mut attributes = BTreeMap::from([
        ("name".to_owned(), network.name.clone()),
        ("type".to_owned(), network.driver.clone()),
    ]);
    if let Some(id) = container {
        attributes.insert("container".to_owned(), id.to_owned());
    }
    DockerEvent {
        kind: "network".to_owned(),
        action: action.to_owned(),
        actor: network.id.clone(),
        attributes,
        time: SystemTime::now(),
    }
}

/// Which pseudo-network `text` names (by name, ID or ID prefix).
fn find_mode(text: &str) -> Option<(&'static str, &'static str)> {
    MODES
        .into_iter()
        .find(|(name, _)| *name == text || (!text.is_empty() && mode_id(name).starts_with(text)))
}

/// The network `text` names; `bridge` is made on first use.
async fn find(frontend: &Frontend, text: &str) -> Result<Network> {
    if text == DEFAULT_NETWORK {
        return frontend.network.default_network().await;
    }
    frontend.network.find(text)
}

fn is_builtin(network: &Network) -> bool {
    network.name == DEFAULT_NETWORK
}

fn matches_list_filters(
    filters: &Filters,
    name: &str,
    id: &str,
    driver: &str,
    builtin: bool,
    labels: &BTreeMap<String, String>,
    dangling: bool,
) -> Result<bool> {
    let any = |key: &str, test: &dyn Fn(&str) -> bool| {
        !filters.contains(key) || filters.values(key).any(test)
    };
    let mut keep = any("name", &|n| name.contains(n))
        && any("id", &|i| id.starts_with(i))
        && any("driver", &|d| d == driver)
        && any("scope", &|s| s == "local")
        && any("type", &|t| (t == "builtin") == builtin)
        && filters.labels_match("label", labels);
    for t in filters.values("type") {
        if t != "builtin" && t != "custom" {
            return Err(Error::invalid(format!("invalid filter: 'type'='{t}'")));
        }
    }
    if let Some(wanted) = filters.bool("dangling")? {
        keep = keep && dangling == wanted;
    }
    Ok(keep)
}

/// `GET /networks?filters=`.
pub async fn list(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let filters = Query::parse(raw.as_deref()).filters(LIST_FILTERS)?;
    frontend.network.default_network().await?;
    let mut listed = Vec::new();
    for network in frontend.network.networks()? {
        let dangling = !is_builtin(&network) && frontend.network.endpoints(&network)?.is_empty();
        if matches_list_filters(
            &filters,
            &network.name,
            &network.id,
            &network.driver,
            is_builtin(&network),
            &network.labels,
            dangling,
        )? {
            listed.push(network_json(&frontend, &network, false));
        }
    }
    for (name, driver) in MODES {
        if matches_list_filters(
            &filters,
            name,
            &mode_id(name),
            driver,
            true,
            &BTreeMap::new(),
            false,
        )? {
            listed.push(mode_json(name, driver));
        }
    }
    Ok(Json(Value::Array(listed)))
}

/// `GET /networks/{id}`.
pub async fn inspect(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
) -> ApiResult<Json<Value>> {
    if let Some((name, driver)) = find_mode(&id) {
        return Ok(Json(mode_json(name, driver)));
    }
    let network = find(&frontend, &id).await?;
    Ok(Json(network_json(&frontend, &network, true)))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T> {
    serde_json::from_slice(body).map_err(|err| Error::invalid(format!("invalid JSON body: {err}")))
}

/// `POST /networks/create`.
pub async fn create(
    State(frontend): State<Frontend>,
    body: Bytes,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let request: NetworkCreateRequest = parse_json(&body)?;
    let driver = request
        .driver
        .clone()
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| "bridge".to_owned());
    if driver != "bridge" {
        return Err(Error::not_found(format!("plugin \"{driver}\" not found")).into());
    }
    if request.enable_ipv6 == Some(true) {
        return Err(Error::unimplemented("IPv6 networks are not supported by berthd").into());
    }
    if request.name.is_empty() {
        return Err(Error::invalid("network name is required").into());
    }
    if find_mode(&request.name).is_some_and(|(name, _)| name == request.name) {
        return Err(Error::precondition(format!(
            "{} is a pre-defined network and cannot be created",
            request.name
        ))
        .into());
    }
    let mut spec = NetworkSpec {
        name: request.name.clone(),
        internal: request.internal == Some(true),
        labels: request.labels.unwrap_or_default().into_iter().collect(),
        options: request.options.unwrap_or_default().into_iter().collect(),
        ..NetworkSpec::default()
    };
    let configs = request
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default();
    if configs.len() > 1 {
        return Err(Error::unimplemented(
            "more than one IPAM config (IPv6 or several subnets) is not supported by berthd",
        )
        .into());
    }
    if let Some(config) = configs.first() {
        let parse = |what: &str, text: &Option<String>| -> Result<Option<String>> {
            Ok(text
                .clone()
                .filter(|t| !t.is_empty())
                .map(|t| t.trim().to_owned()))
            .and_then(|t| match t {
                Some(t) if t.contains(':') => Err(Error::unimplemented(format!(
                    "{what} {t}: IPv6 is not supported by berthd"
                ))),
                t => Ok(t),
            })
        };
        if let Some(subnet) = parse("subnet", &config.subnet)? {
            spec.subnet = Some(
                subnet
                    .parse()
                    .map_err(|_| Error::invalid(format!("invalid subnet {subnet}")))?,
            );
        }
        if let Some(range) = parse("ip range", &config.ip_range)? {
            spec.ip_range = Some(
                range
                    .parse()
                    .map_err(|_| Error::invalid(format!("invalid ip range {range}")))?,
            );
        }
        if let Some(gateway) = parse("gateway", &config.gateway)? {
            spec.gateway = Some(
                gateway
                    .parse()
                    .map_err(|_| Error::invalid(format!("invalid gateway {gateway}")))?,
            );
        }
    }
    let network = frontend.network.create_network(&spec).await?;
    frontend
        .journal
        .record(network_event("create", &network, None));
    Ok((
        StatusCode::CREATED,
        Json(json!({ "Id": network.id, "Warning": "" })),
    ))
}

/// A refusal dockerd answers with 403.
fn forbidden(message: &str) -> Response {
    message_response(StatusCode::FORBIDDEN, message)
}

/// `DELETE /networks/{id}`.
pub async fn remove(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    if let Some((name, _)) = find_mode(&id) {
        return Ok(forbidden(&format!(
            "{name} is a pre-defined network and cannot be removed"
        )));
    }
    let network = find(&frontend, &id).await?;
    match frontend.network.remove_network(&network.id).await {
        Ok(()) => {
            frontend
                .journal
                .record(network_event("destroy", &network, None));
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        Err(err) if err.kind == ErrorKind::FailedPrecondition => Ok(forbidden(&err.message)),
        Err(err) => Err(err.into()),
    }
}

/// `POST /networks/prune?filters=`: every user-defined network without
/// containers.
pub async fn prune(
    State(frontend): State<Frontend>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Json<Value>> {
    let filters = Query::parse(raw.as_deref()).filters(PRUNE_FILTERS)?;
    let until = match filters.values("until").next() {
        Some(text) => Some(super::events::parse_timestamp("until", text)?),
        None => None,
    };
    let mut deleted = Vec::new();
    for network in frontend.network.networks()? {
        let excluded = filters
            .values("label!")
            .any(|wanted| match wanted.split_once('=') {
                Some((k, v)) => network.labels.get(k).is_some_and(|have| have == v),
                None => network.labels.contains_key(wanted),
            });
        if is_builtin(&network)
            || excluded
            || !filters.labels_match("label", &network.labels)
            || until.is_some_and(|until| network.created > until)
            || !frontend.network.endpoints(&network)?.is_empty()
        {
            continue;
        }
        match frontend.network.remove_network(&network.id).await {
            Ok(()) => {
                frontend
                    .journal
                    .record(network_event("destroy", &network, None));
                deleted.push(network.name.clone());
            }
            // A container joined meanwhile.
            Err(err) if err.kind == ErrorKind::FailedPrecondition => {}
            Err(err) => return Err(err.into()),
        }
    }
    Ok(Json(json!({
        "NetworksDeleted": if deleted.is_empty() { Value::Null } else { json!(deleted) },
    })))
}

/// Refuses containers whose network mode cannot join more networks.
fn joinable(container: &Container) -> Result<()> {
    let record = container.record();
    let mode: NetworkMode = record
        .host_config
        .network_mode
        .as_deref()
        .unwrap_or("")
        .parse()?;
    match mode {
        NetworkMode::Host => Err(Error::invalid("container cannot be disconnected from host network or connected to host network")),
        NetworkMode::Container(_) => Err(Error::invalid("container sharing network namespace with another container or host cannot be connected to any other network")),
        NetworkMode::None => Err(Error::invalid("container cannot be connected to multiple networks with one of the networks in private (none) mode")),
        NetworkMode::Network(_) => Ok(()),
    }
}

/// `POST /networks/{id}/connect`.
pub async fn connect(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let request: NetworkConnectRequest = parse_json(&body)?;
    if find_mode(&id).is_some() {
        return Err(
            Error::invalid(format!("container cannot be connected to the {id} network")).into(),
        );
    }
    let network = find(&frontend, &id).await?;
    let container = frontend.containers.resolve(&request.container)?;
    let _operation = container.operation().await;
    joinable(&container)?;
    let settings = request.endpoint_config.unwrap_or_default();
    if let Some(requested) = settings
        .ipam_config
        .as_ref()
        .and_then(|c| c.ipv4_address.as_ref())
        .filter(|a| !a.is_empty())
    {
        return Err(Error::unimplemented(format!(
            "a fixed address ({requested}) is not supported by berthd"
        ))
        .into());
    }
    let record = container.record();
    if matches!(record.state.status, Status::Running | Status::Paused) {
        let endpoint = EndpointName {
            container_id: container.id.clone(),
            name: record.name.clone(),
            aliases: settings.aliases.clone().unwrap_or_default(),
        };
        let netns = frontend.network.netns().path(&container.id)?;
        frontend
            .network
            .attach(&endpoint, &network.id, &netns, &[])
            .await?;
    } else if connected_in_record(&frontend, &container, &network).await {
        return Err(Error::precondition(format!(
            "endpoint with name {} already exists in network {}",
            record.name, network.name
        ))
        .into());
    }
    container.update(|r| {
        let networking = r.networking.get_or_insert_with(Default::default);
        let endpoints = networking.endpoints_config.get_or_insert_with(HashMap::new);
        endpoints.insert(
            network.name.clone(),
            EndpointSettings {
                aliases: settings.aliases.clone(),
                ..Default::default()
            },
        );
    })?;
    frontend
        .journal
        .record(network_event("connect", &network, Some(&container.id)));
    Ok(StatusCode::OK)
}

/// Whether the record already names `network` (as its mode or a connected
/// one).
async fn connected_in_record(
    frontend: &Frontend,
    container: &Container,
    network: &Network,
) -> bool {
    for name in recorded_networks(&container.record()) {
        if let Ok(found) = find(frontend, &name).await {
            if found.id == network.id {
                return true;
            }
        }
    }
    false
}

/// Every network a record names: its mode's and the connected ones.
pub fn recorded_networks(record: &super::containers::Record) -> Vec<String> {
    let mut names = Vec::new();
    if let Ok(NetworkMode::Network(name)) = record
        .host_config
        .network_mode
        .as_deref()
        .unwrap_or("")
        .parse()
    {
        names.push(name);
    }
    if let Some(endpoints) = record
        .networking
        .as_ref()
        .and_then(|n| n.endpoints_config.as_ref())
    {
        for key in endpoints.keys() {
            // Keys name networks, or a mode (`default`, `host`...).
            if let Ok(NetworkMode::Network(name)) = key.parse() {
                names.push(name);
            }
        }
    }
    names
}

/// `POST /networks/{id}/disconnect`.
pub async fn disconnect(
    State(frontend): State<Frontend>,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<StatusCode> {
    let request: NetworkDisconnectRequest = parse_json(&body)?;
    if find_mode(&id).is_some() {
        return Err(Error::invalid(format!(
            "container cannot be disconnected from the {id} network"
        ))
        .into());
    }
    let network = find(&frontend, &id).await?;
    let container = match frontend.containers.resolve(&request.container) {
        Ok(container) => container,
        // Forced: whatever is left of a container that is gone.
        Err(err) if err.kind == ErrorKind::NotFound && request.force == Some(true) => {
            frontend
                .network
                .detach(&request.container, &network.id)
                .await?;
            return Ok(StatusCode::OK);
        }
        Err(err) => return Err(err.into()),
    };
    let _operation = container.operation().await;
    let attached = frontend
        .network
        .attachments(&container.id)?
        .iter()
        .any(|a| a.network_id == network.id);
    let recorded = connected_in_record(&frontend, &container, &network).await;
    if !attached && !recorded {
        return Err(Error::precondition(format!(
            "container {} is not connected to network {}",
            container.id, network.name
        ))
        .into());
    }
    if attached {
        frontend.network.detach(&container.id, &network.id).await?;
    }
    let (name, id) = (network.name.clone(), network.id.clone());
    container.update(|r| {
        if let Some(endpoints) = r
            .networking
            .as_mut()
            .and_then(|n| n.endpoints_config.as_mut())
        {
            endpoints.retain(|key, _| *key != name && *key != id);
        }
    })?;
    frontend
        .journal
        .record(network_event("disconnect", &network, Some(&container.id)));
    Ok(StatusCode::OK)
}
