//! Network and endpoint records in berthd's metadata database.
//!
//! Networks are daemon-wide (docker has no namespaces), keyed by their
//! 64-hex id; names are unique among them. An endpoint is one container's
//! attachment to one network, kept so that a network in use cannot be
//! removed, detach can hand the plugins the result of ADD, and the hosts
//! files of a network's containers can be regenerated.
//!
//! ```text
//! networks            <network id> -> { name, driver, bridge, subnet, gateway,
//!                         ip_range, internal, labels, options, created }
//! network_endpoints   (<network id>, <container id>) -> { name, aliases,
//!                         ip, prefix_len, gateway, mac, ifname, netns,
//!                         port_mappings, cni_result }
//! ```
//! Subnets are allocated and checked for overlap inside the write
//! transaction that stores the network, so two concurrent creates cannot
//! take the same subnet.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::SystemTime;

use ipnet::Ipv4Net;
use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::subnet;
use crate::metadata::Db;
use crate::{Error, Result};

/// network id -> [`Network`].
const NETWORKS: TableDefinition<&str, &[u8]> = TableDefinition::new("networks");
/// (network id, container id) -> [`Endpoint`].
const ENDPOINTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("network_endpoints");

/// A network: one Linux bridge and the IPv4 subnet its containers get
/// addresses from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    /// 64 lowercase hex digits, as docker's network ids.
    #[serde(skip)]
    pub id: String,
    pub name: String,
    /// Always `bridge` for now.
    pub driver: String,
    /// The host's bridge device: the default network's is configured
    /// (`berth0`), a user-defined network's is `br-<first 12 of id>`.
    pub bridge: String,
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    /// Where container addresses come from, inside `subnet`; the whole
    /// subnet when absent.
    pub ip_range: Option<Ipv4Net>,
    /// No route out and no masquerading: containers reach each other only.
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    /// Driver options, kept as given (docker's `--opt`).
    pub options: BTreeMap<String, String>,
    pub created: SystemTime,
}

/// A port published on the host: docker's `-p [host_ip:]host_port:container_port[/proto]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// `0.0.0.0` (every address) or one address such as `127.0.0.1`.
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

/// A transport protocol of a published port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// The name CNI and docker use.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One container attached to one network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    #[serde(skip)]
    pub network_id: String,
    #[serde(skip)]
    pub container_id: String,
    /// The container's name, resolvable by its peers on the network.
    pub name: String,
    /// More names the container answers to on this network.
    pub aliases: Vec<String>,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    /// The interface inside the container (`eth0`, `eth1`, ...).
    pub ifname: String,
    /// The network namespace the interface lives in.
    pub netns: PathBuf,
    pub port_mappings: Vec<PortMapping>,
    /// The conflist's ADD result, handed back to the plugins on DEL and CHECK.
    pub cni_result: serde_json::Value,
}

/// What a new network is made from; unset fields take defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkSpec {
    pub name: String,
    /// Drawn from the pool when absent.
    pub subnet: Option<Ipv4Net>,
    /// The subnet's first host address when absent.
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub labels: BTreeMap<String, String>,
    pub options: BTreeMap<String, String>,
}

fn encode<T: Serialize>(record: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(record).map_err(|err| Error::internal(format!("encode record: {err}")))
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: impl std::fmt::Display) -> Result<T> {
    serde_json::from_slice(bytes)
        .map_err(|err| Error::internal(format!("{what}: corrupt record: {err}")))
}

fn decode_network(id: &str, bytes: &[u8]) -> Result<Network> {
    let mut network: Network = decode(bytes, format_args!("network {id}"))?;
    network.id = id.to_owned();
    Ok(network)
}

fn decode_endpoint(network_id: &str, container_id: &str, bytes: &[u8]) -> Result<Endpoint> {
    let mut endpoint: Endpoint = decode(
        bytes,
        format_args!("endpoint of container {container_id} on network {network_id}"),
    )?;
    endpoint.network_id = network_id.to_owned();
    endpoint.container_id = container_id.to_owned();
    Ok(endpoint)
}

/// Network names follow docker's container-name rule: an alphanumeric
/// first character, then alphanumerics, `_`, `.` or `-`.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let valid_first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let valid_rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if valid_first && valid_rest && name.len() <= 128 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 128 bytes"
        )))
    }
}

/// The network and endpoint tables.
#[derive(Debug, Clone)]
pub struct NetworkStore {
    db: Db,
}

impl NetworkStore {
    /// The store over `db`, its tables created if the database predates them.
    pub fn open(db: Db) -> Result<Self> {
        db.write(|txn| {
            txn.open_table(NETWORKS)?;
            txn.open_table(ENDPOINTS)?;
            Ok(())
        })?;
        Ok(NetworkStore { db })
    }

    /// Stores a new network made from `spec` under `id` with bridge device
    /// `bridge`. Without a subnet in `spec`, the first of `candidates` that
    /// overlaps neither another network nor `host_routes` is taken.
    /// `AlreadyExists` if the name is taken or the subnet overlaps another
    /// network's; `Unavailable` if the pool is exhausted.
    pub fn create(
        &self,
        id: &str,
        bridge: &str,
        spec: &NetworkSpec,
        candidates: impl IntoIterator<Item = Ipv4Net>,
        host_routes: &[Ipv4Net],
    ) -> Result<Network> {
        validate_name(&spec.name)?;
        self.db.write(|txn| {
            let existing = all_networks(txn)?;
            if existing.iter().any(|n| n.name == spec.name) {
                return Err(Error::already_exists(format!(
                    "network with name {} already exists",
                    spec.name
                )));
            }
            let subnet = match spec.subnet {
                Some(subnet) => {
                    if let Some(other) = existing
                        .iter()
                        .find(|n| subnet::overlaps(&n.subnet, &subnet))
                    {
                        return Err(Error::already_exists(format!(
                            "subnet {subnet} overlaps subnet {} of network {}",
                            other.subnet, other.name
                        )));
                    }
                    subnet
                }
                None => {
                    let mut taken: Vec<Ipv4Net> = existing.iter().map(|n| n.subnet).collect();
                    taken.extend_from_slice(host_routes);
                    subnet::first_free(candidates, &taken).ok_or_else(|| {
                        Error::unavailable(format!(
                            "network {}: no free subnet left in the address pool",
                            spec.name
                        ))
                    })?
                }
            };
            let gateway = subnet::validate(&subnet, spec.gateway, spec.ip_range.as_ref())
                .map_err(|err| err.context(format!("network {}", spec.name)))?;
            let network = Network {
                id: id.to_owned(),
                name: spec.name.clone(),
                driver: "bridge".to_owned(),
                bridge: bridge.to_owned(),
                subnet,
                gateway,
                ip_range: spec.ip_range,
                internal: spec.internal,
                labels: spec.labels.clone(),
                options: spec.options.clone(),
                created: SystemTime::now(),
            };
            let mut table = txn.open_table(NETWORKS)?;
            table.insert(id, encode(&network)?.as_slice())?;
            Ok(network)
        })
    }

    /// A network by full id, name, or unique id prefix (docker's lookup
    /// order); `NotFound` otherwise, `InvalidArgument` for an ambiguous prefix.
    pub fn find(&self, name_or_id: &str) -> Result<Network> {
        let networks = self.list()?;
        if let Some(network) = networks.iter().find(|n| n.id == name_or_id) {
            return Ok(network.clone());
        }
        if let Some(network) = networks.iter().find(|n| n.name == name_or_id) {
            return Ok(network.clone());
        }
        let mut by_prefix = networks.iter().filter(|n| n.id.starts_with(name_or_id));
        match (by_prefix.next(), by_prefix.next()) {
            (Some(network), None) if !name_or_id.is_empty() => Ok(network.clone()),
            (Some(_), Some(_)) => Err(Error::invalid(format!(
                "network {name_or_id} is ambiguous: several network ids start with it"
            ))),
            _ => Err(Error::not_found(format!("network {name_or_id} not found"))),
        }
    }

    /// Every network, by name.
    pub fn list(&self) -> Result<Vec<Network>> {
        let mut networks = self.db.read(|txn| {
            let table = txn.open_table(NETWORKS)?;
            let mut networks = Vec::new();
            for entry in table.iter()? {
                let (id, bytes) = entry?;
                networks.push(decode_network(id.value(), bytes.value())?);
            }
            Ok(networks)
        })?;
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(networks)
    }

    /// Deletes the network record; `FailedPrecondition` while containers
    /// are attached to it (checked in the same transaction).
    pub fn remove(&self, network: &Network) -> Result<()> {
        self.db.write(|txn| {
            let endpoints = txn.open_table(ENDPOINTS)?;
            let in_use = endpoints
                .range((network.id.as_str(), "")..)?
                .next()
                .transpose()?
                .is_some_and(|(key, _)| key.value().0 == network.id);
            if in_use {
                return Err(Error::precondition(format!(
                    "error while removing network: network {} id {} has active endpoints",
                    network.name, network.id
                )));
            }
            let mut table = txn.open_table(NETWORKS)?;
            table.remove(network.id.as_str())?;
            Ok(())
        })
    }

    /// Stores (or replaces) an endpoint; `NotFound` if its network is gone.
    pub fn put_endpoint(&self, endpoint: &Endpoint) -> Result<()> {
        self.db.write(|txn| {
            let networks = txn.open_table(NETWORKS)?;
            if networks.get(endpoint.network_id.as_str())?.is_none() {
                return Err(Error::not_found(format!(
                    "network {} not found",
                    endpoint.network_id
                )));
            }
            let mut table = txn.open_table(ENDPOINTS)?;
            let key = (endpoint.network_id.as_str(), endpoint.container_id.as_str());
            table.insert(key, encode(endpoint)?.as_slice())?;
            Ok(())
        })
    }

    /// Forgets an endpoint; absent is fine.
    pub fn remove_endpoint(&self, network_id: &str, container_id: &str) -> Result<()> {
        self.db.write(|txn| {
            let mut table = txn.open_table(ENDPOINTS)?;
            table.remove((network_id, container_id))?;
            Ok(())
        })
    }

    /// One container's endpoint on one network, if attached.
    pub fn endpoint(&self, network_id: &str, container_id: &str) -> Result<Option<Endpoint>> {
        self.db.read(|txn| {
            let table = txn.open_table(ENDPOINTS)?;
            table
                .get((network_id, container_id))?
                .map(|bytes| decode_endpoint(network_id, container_id, bytes.value()))
                .transpose()
        })
    }

    /// Every endpoint, by network then container.
    pub fn endpoints(&self) -> Result<Vec<Endpoint>> {
        self.db.read(|txn| {
            let table = txn.open_table(ENDPOINTS)?;
            let mut endpoints = Vec::new();
            for entry in table.iter()? {
                let (key, bytes) = entry?;
                let (network_id, container_id) = key.value();
                endpoints.push(decode_endpoint(network_id, container_id, bytes.value())?);
            }
            Ok(endpoints)
        })
    }

    /// The endpoints on one network.
    pub fn endpoints_of_network(&self, network_id: &str) -> Result<Vec<Endpoint>> {
        Ok(self
            .endpoints()?
            .into_iter()
            .filter(|e| e.network_id == network_id)
            .collect())
    }

    /// The endpoints of one container, on every network.
    pub fn endpoints_of_container(&self, container_id: &str) -> Result<Vec<Endpoint>> {
        Ok(self
            .endpoints()?
            .into_iter()
            .filter(|e| e.container_id == container_id)
            .collect())
    }
}

fn all_networks(txn: &WriteTransaction) -> Result<Vec<Network>> {
    let table = txn.open_table(NETWORKS)?;
    let mut networks = Vec::new();
    for entry in table.iter()? {
        let (id, bytes) = entry?;
        networks.push(decode_network(id.value(), bytes.value())?);
    }
    Ok(networks)
}
