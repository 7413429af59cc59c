//! Container networking through the standard CNI plugins.
//!
//! berthd gives containers docker's network modes with Debian's
//! `containernetworking-plugins` (bridge, host-local, portmap) run as the
//! CNI specification says ([`cni`]), and each network's forwarding and
//! masquerading rules set once ([`firewall`]):
//!
//! - a network ([`store::Network`]) is a Linux bridge and an IPv4 subnet.
//!   The default network, named `bridge` as docker's, uses the device
//!   configured in [`NetworkConfig::default_bridge`] (`berth0`, never
//!   docker's `docker0`) and is created on first use; user-defined
//!   networks get `br-<first 12 of id>` and the next free subnet of
//!   docker's pool ([`subnet`]) unless they ask for one;
//! - each container gets its own network namespace ([`netns`]) with `lo`
//!   up, joined to networks by a veth pair ([`NetworkManager::attach`]),
//!   its published ports DNATed from the host; `host` mode uses the host's
//!   namespace, `none` leaves only `lo`, `container:<id>` joins another
//!   container's namespace;
//! - containers on one user-defined network resolve each other's names
//!   through the hosts files berthd writes for them ([`hosts`]), rewritten
//!   whenever a peer comes or goes.
//!
//! State on disk, under [`NetworkConfig::state_dir`]:
//! ```text
//! <state_dir>/netns/<container id>          the namespace (nsfs bind mount)
//! <state_dir>/ipam/<network id>/<address>   host-local's leases
//! <state_dir>/containers/<container id>/    hosts, resolv.conf, hostname
//! ```
//! Records live in the metadata database ([`store`]). [`NetworkManager::cleanup`]
//! reconciles all of it with the containers that still exist when berthd
//! starts.

pub mod cni;
pub mod conflist;
pub mod firewall;
pub mod hosts;
pub mod ipam;
pub mod link;
mod manager;
pub mod netns;
pub mod store;
pub mod subnet;

use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use cni::CniRunner;
pub use manager::NetworkManager;
pub use netns::NetnsManager;
pub use store::{Endpoint, Network, NetworkSpec, NetworkStore, PortMapping, Protocol};

use crate::{Error, Result};

/// The name of the default network, as docker calls it.
pub const DEFAULT_NETWORK: &str = "bridge";

/// Names docker reserves for its network modes; no network may take them.
const RESERVED_NAMES: [&str; 3] = ["bridge", "host", "none"];

/// Where the network layer finds plugins and keeps its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkConfig {
    /// The CNI plugin binaries (Debian: `/usr/lib/cni`).
    pub plugin_dir: PathBuf,
    /// netns, IPAM leases and the containers' name files (berthd:
    /// `<state>/network`).
    pub state_dir: PathBuf,
    /// The default network's bridge device.
    pub default_bridge: String,
    /// The default network's subnet, when configured (else the first
    /// free one is picked).
    pub default_subnet: Option<ipnet::Ipv4Net>,
    /// The host resolver configuration containers' resolv.conf derive from.
    pub host_resolv_conf: PathBuf,
}

impl NetworkConfig {
    /// The defaults for a daemon whose state directory is `state`.
    pub fn new(state: &Path) -> Self {
        NetworkConfig {
            plugin_dir: PathBuf::from("/usr/lib/cni"),
            state_dir: state.join("network"),
            default_bridge: "berth0".to_owned(),
            default_subnet: None,
            host_resolv_conf: PathBuf::from("/etc/resolv.conf"),
        }
    }
}

/// How a container is networked, as docker's `--network` says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkMode {
    /// Its own namespace on a network (by name or id; `bridge` is the
    /// default network).
    Network(String),
    /// The host's namespace.
    Host,
    /// Its own namespace with only `lo`.
    None,
    /// Another container's namespace (by that container's id).
    Container(String),
}

impl Default for NetworkMode {
    fn default() -> Self {
        NetworkMode::Network(DEFAULT_NETWORK.to_owned())
    }
}

impl FromStr for NetworkMode {
    type Err = Error;

    /// `bridge`, `default` or empty, `host`, `none`, `container:<id>`, or
    /// a network's name or id.
    fn from_str(text: &str) -> Result<Self> {
        Ok(match text {
            "" | "default" | DEFAULT_NETWORK => NetworkMode::default(),
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => match other.strip_prefix("container:") {
                Some("") => {
                    return Err(Error::invalid(
                        "network mode container: needs a container id",
                    ))
                }
                Some(id) => NetworkMode::Container(id.to_owned()),
                None => NetworkMode::Network(other.to_owned()),
            },
        })
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NetworkMode::Network(name) => f.write_str(name),
            NetworkMode::Host => f.write_str("host"),
            NetworkMode::None => f.write_str("none"),
            NetworkMode::Container(id) => write!(f, "container:{id}"),
        }
    }
}

/// A container as its network peers know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointName {
    pub container_id: String,
    /// The container's name (docker's `--name`), resolvable by its peers.
    pub name: String,
    /// More names on the networks it joins (docker's `--network-alias`).
    pub aliases: Vec<String>,
}

impl EndpointName {
    /// Refuses what could not be a name in a hosts file or a path
    /// component: these end up in every peer's `/etc/hosts` and under the
    /// state directory, so a newline or a `/` must never get through.
    pub fn validate(&self) -> Result<()> {
        check_label("container id", &self.container_id)?;
        if !self.name.is_empty() {
            check_label("container name", &self.name)?;
        }
        for alias in &self.aliases {
            check_label("network alias", alias)?;
        }
        Ok(())
    }
}

impl SetupRequest {
    /// [`EndpointName::validate`], and the hostname alike.
    pub fn validate(&self) -> Result<()> {
        self.endpoint.validate()?;
        if !self.hostname.is_empty() {
            check_label("hostname", &self.hostname)?;
        }
        Ok(())
    }
}

/// `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, at most 255 bytes: docker's container
/// names, and every hostname and DNS name.
fn check_label(what: &str, value: &str) -> Result<()> {
    let mut chars = value.chars();
    let first = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first && rest && value.len() <= 255 {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} {value:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed, at most 255 bytes"
        )))
    }
}

/// What [`NetworkManager::attach`] gave the container on one network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub network_id: String,
    pub network_name: String,
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    /// The interface inside the container.
    pub ifname: String,
}

impl Attachment {
    fn from_endpoint(endpoint: &Endpoint, network: &Network) -> Self {
        Attachment {
            network_id: network.id.clone(),
            network_name: network.name.clone(),
            ip: endpoint.ip,
            prefix_len: endpoint.prefix_len,
            gateway: endpoint.gateway,
            mac: endpoint.mac.clone(),
            ifname: endpoint.ifname.clone(),
        }
    }
}

/// Everything a container needs to be networked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupRequest {
    pub endpoint: EndpointName,
    /// Written to `/etc/hostname` and mapped to the container's address.
    pub hostname: String,
    pub mode: NetworkMode,
    /// Published ports (ignored, as docker does, in `host`, `none` and
    /// `container:` modes).
    pub ports: Vec<PortMapping>,
}

/// The files a container's `/etc/hosts`, `/etc/resolv.conf` and
/// `/etc/hostname` are bind-mounted from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

/// A networked container: what its OCI spec needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerNetwork {
    /// The namespace to join; `None` in host mode (the host's).
    pub netns: Option<PathBuf>,
    pub attachments: Vec<Attachment>,
    pub files: NameFiles,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_reach_hosts_files_are_checked() {
        let endpoint = |id: &str, name: &str, alias: &str| EndpointName {
            container_id: id.into(),
            name: name.into(),
            aliases: vec![alias.into()],
        };
        endpoint("abc123", "web", "web-1.local").validate().unwrap();
        for (bad, named) in [
            (endpoint("abc", "web\n1.2.3.4 evil", "x"), "container name"),
            (endpoint("abc", "web", "a b"), "network alias"),
            (endpoint("../etc", "web", "x"), "container id"),
            (endpoint("abc", "web", ""), "network alias"),
            (endpoint("abc", "web", "-x"), "network alias"),
        ] {
            let err = bad.validate().unwrap_err();
            assert_eq!(err.kind, crate::ErrorKind::InvalidArgument);
            assert!(err.message.contains(named), "{err}");
        }
        let request = SetupRequest {
            endpoint: endpoint("abc", "web", "x"),
            hostname: "host\tname".into(),
            mode: NetworkMode::None,
            ports: Vec::new(),
        };
        assert!(request.validate().unwrap_err().message.contains("hostname"));
    }

    #[test]
    fn network_modes_parse_as_docker_spells_them() {
        assert_eq!("".parse::<NetworkMode>().unwrap(), NetworkMode::default());
        assert_eq!(
            "bridge".parse::<NetworkMode>().unwrap(),
            NetworkMode::Network("bridge".into())
        );
        assert_eq!("host".parse::<NetworkMode>().unwrap(), NetworkMode::Host);
        assert_eq!("none".parse::<NetworkMode>().unwrap(), NetworkMode::None);
        assert_eq!(
            "container:abc".parse::<NetworkMode>().unwrap(),
            NetworkMode::Container("abc".into())
        );
        assert_eq!(
            "front".parse::<NetworkMode>().unwrap(),
            NetworkMode::Network("front".into())
        );
        assert!("container:".parse::<NetworkMode>().is_err());
        assert_eq!(
            NetworkMode::Container("x".into()).to_string(),
            "container:x"
        );
    }
}
