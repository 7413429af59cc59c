//! [`NetworkManager`]: networks, the containers' namespaces and their
//! attachments, and the name files that follow them.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use super::firewall::Firewall;
use super::{
    cni, conflist, hosts, ipam, link, netns, subnet, Attachment, CniRunner, ContainerNetwork,
    Endpoint, EndpointName, NameFiles, NetnsManager, Network, NetworkConfig, NetworkMode,
    NetworkSpec, NetworkStore, PortMapping, SetupRequest, DEFAULT_NETWORK, RESERVED_NAMES,
};
use crate::error::Context;
use crate::metadata::Db;
use crate::{Error, ErrorKind, Result};

/// The network service: networks, the containers' namespaces and their
/// attachments. Mutations are serialised, so that a network cannot be
/// removed while a container is being attached to it and hosts files are
/// rewritten one at a time.
#[derive(Debug)]
pub struct NetworkManager {
    config: NetworkConfig,
    store: NetworkStore,
    cni: CniRunner,
    netns: NetnsManager,
    firewall: Firewall,
    lock: Mutex<()>,
}

impl NetworkManager {
    /// The service over `db`, keeping its state where `config` says.
    pub fn open(db: Db, config: NetworkConfig) -> Result<Self> {
        Ok(NetworkManager {
            store: NetworkStore::open(db)?,
            cni: CniRunner::new(&config.plugin_dir),
            netns: NetnsManager::new(config.state_dir.join("netns")),
            firewall: Firewall::default(),
            config,
            lock: Mutex::new(()),
        })
    }

    /// The containers' namespaces.
    pub fn netns(&self) -> &NetnsManager {
        &self.netns
    }

    /// host-local's data directory.
    pub fn ipam_dir(&self) -> PathBuf {
        self.config.state_dir.join("ipam")
    }

    /// Where the name files of `container_id` are.
    pub fn name_files(&self, container_id: &str) -> Result<NameFiles> {
        let dir = self.files_dir(container_id)?;
        Ok(NameFiles {
            hosts: dir.join("hosts"),
            resolv_conf: dir.join("resolv.conf"),
            hostname: dir.join("hostname"),
        })
    }

    fn files_dir(&self, container_id: &str) -> Result<PathBuf> {
        netns::validate_id(container_id)?;
        Ok(self.config.state_dir.join("containers").join(container_id))
    }

    /// Creates a user-defined network. `AlreadyExists` for a taken name or
    /// an overlapping subnet, `InvalidArgument` for a reserved name or a
    /// malformed subnet.
    pub async fn create_network(&self, spec: &NetworkSpec) -> Result<Network> {
        if RESERVED_NAMES.contains(&spec.name.as_str()) {
            return Err(Error::invalid(format!(
                "network name {}: reserved for docker's network modes",
                spec.name
            )));
        }
        let _guard = self.lock.lock().await;
        let id = new_network_id();
        let bridge = format!("br-{}", &id[..12]);
        let routes = subnet::host_routes()?;
        self.store
            .create(&id, &bridge, spec, subnet::default_pool(), &routes)
    }

    /// The default network, created on first use: the preferred subnet
    /// ([`subnet::DEFAULT_NETWORK_SUBNET`]) when free, else the pool's first free one.
    pub async fn default_network(&self) -> Result<Network> {
        match self.store.find(DEFAULT_NETWORK) {
            Err(err) if err.kind == ErrorKind::NotFound => {}
            found => return found,
        }
        let _guard = self.lock.lock().await;
        match self.store.find(DEFAULT_NETWORK) {
            Err(err) if err.kind == ErrorKind::NotFound => {}
            found => return found,
        }
        let spec = NetworkSpec {
            name: DEFAULT_NETWORK.to_owned(),
            ..NetworkSpec::default()
        };
        let routes = subnet::host_routes()?;
        let candidates: Box<dyn Iterator<Item = _>> = match self.config.default_subnet {
            Some(configured) => Box::new(std::iter::once(configured)),
            None => Box::new(
                std::iter::once(subnet::DEFAULT_NETWORK_SUBNET).chain(subnet::default_pool()),
            ),
        };
        self.store.create(
            &new_network_id(),
            &self.config.default_bridge,
            &spec,
            candidates,
            &routes,
        )
    }

    /// A network by id, name or unique id prefix; `bridge` is the default
    /// network, created if needed.
    pub async fn network(&self, name_or_id: &str) -> Result<Network> {
        if name_or_id == DEFAULT_NETWORK {
            return self.default_network().await;
        }
        self.store.find(name_or_id)
    }

    /// A network by id, name or unique id prefix, as it is (the default
    /// network only once made).
    pub fn find(&self, name_or_id: &str) -> Result<Network> {
        self.store.find(name_or_id)
    }

    /// Every network, by name.
    pub fn networks(&self) -> Result<Vec<Network>> {
        self.store.list()
    }

    /// The containers attached to a network.
    pub fn endpoints(&self, network: &Network) -> Result<Vec<Endpoint>> {
        self.store.endpoints_of_network(&network.id)
    }

    /// What a container has on each network it is attached to, by network
    /// name (docker's `NetworkSettings.Networks`).
    pub fn attachments(&self, container_id: &str) -> Result<Vec<Attachment>> {
        let networks = self.store.list()?;
        let mut attachments: Vec<Attachment> = self
            .store
            .endpoints_of_container(container_id)?
            .iter()
            .filter_map(|endpoint| {
                let network = networks.iter().find(|n| n.id == endpoint.network_id)?;
                Some(Attachment::from_endpoint(endpoint, network))
            })
            .collect();
        attachments.sort_by(|a, b| a.network_name.cmp(&b.network_name));
        Ok(attachments)
    }

    /// Removes a user-defined network and its bridge device.
    /// `FailedPrecondition` while containers are attached (docker's 409) or
    /// for the default network.
    pub async fn remove_network(&self, name_or_id: &str) -> Result<()> {
        let _guard = self.lock.lock().await;
        let network = self.store.find(name_or_id)?;
        if network.name == DEFAULT_NETWORK {
            return Err(Error::precondition(format!(
                "{DEFAULT_NETWORK} is a pre-defined network and cannot be removed"
            )));
        }
        self.store.remove(&network)?;
        self.firewall.remove(&network).await;
        link::delete_link(&network.bridge)
            .await
            .with_context(|| format!("network {}", network.name))?;
        ipam::remove_network_leases(&self.ipam_dir(), &network.id)
    }

    /// Connects the container in namespace `netns` to a network: a veth
    /// pair into the network's bridge (`eth0`, then `eth1`, ...), an address
    /// from its subnet, `ports` published. The hosts files of the
    /// container and of its peers on the network are rewritten.
    /// `AlreadyExists` if it is attached already.
    pub async fn attach(
        &self,
        endpoint: &EndpointName,
        network: &str,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<Attachment> {
        endpoint.validate()?;
        let network = self.network(network).await?;
        let _guard = self.lock.lock().await;
        self.attach_locked(endpoint, &network, netns, ports).await
    }

    async fn attach_locked(
        &self,
        endpoint: &EndpointName,
        network: &Network,
        netns: &Path,
        ports: &[PortMapping],
    ) -> Result<Attachment> {
        let container_id = endpoint.container_id.as_str();
        let context = || {
            format!(
                "attach container {container_id} to network {}",
                network.name
            )
        };
        let existing = self.store.endpoints_of_container(container_id)?;
        if existing.iter().any(|e| e.network_id == network.id) {
            return Err(Error::already_exists(format!(
                "container {container_id} is already attached to network {}",
                network.name
            )));
        }
        let ifname = (0..)
            .map(|n| format!("eth{n}"))
            .find(|name| !existing.iter().any(|e| &e.ifname == name))
            .unwrap_or_default();
        self.firewall.ensure(network).await.with_context(context)?;
        let list = conflist::network_conflist(network, &self.ipam_dir(), !ports.is_empty());
        let runtime_config = conflist::runtime_config(ports);
        let invocation = cni::Invocation {
            container_id,
            netns,
            ifname: &ifname,
        };
        let result = self
            .cni
            .add_list(&list, &invocation, &runtime_config)
            .await
            .with_context(context)?;
        let record = cni::parse_add_result(&result, &ifname).and_then(|added| {
            let record = Endpoint {
                network_id: network.id.clone(),
                container_id: container_id.to_owned(),
                name: endpoint.name.clone(),
                aliases: endpoint.aliases.clone(),
                ip: added.ip,
                prefix_len: added.prefix_len,
                gateway: added.gateway.unwrap_or(network.gateway),
                mac: added.mac,
                ifname: ifname.clone(),
                netns: netns.to_owned(),
                port_mappings: ports.to_vec(),
                cni_result: result.clone(),
            };
            self.store.put_endpoint(&record)?;
            Ok(record)
        });
        let record = match record {
            Ok(record) => record,
            Err(err) => {
                let _ = self
                    .cni
                    .del_list(&list, &invocation, &runtime_config, Some(&result))
                    .await;
                return Err(err.context(context()));
            }
        };
        self.refresh_hosts(network, container_id)
            .await
            .with_context(context)?;
        Ok(Attachment::from_endpoint(&record, network))
    }

    /// Disconnects a container from a network: the plugins' DEL in reverse
    /// order (veth, address, NAT and port rules go), then the hosts files
    /// of the remaining peers are rewritten. Nothing to do if the container
    /// is not attached (or the network is gone), as CNI's DEL.
    pub async fn detach(&self, container_id: &str, network: &str) -> Result<()> {
        let network = match self.store.find(network) {
            Err(err) if err.kind == ErrorKind::NotFound => return Ok(()),
            found => found?,
        };
        let _guard = self.lock.lock().await;
        self.detach_locked(container_id, &network).await
    }

    async fn detach_locked(&self, container_id: &str, network: &Network) -> Result<()> {
        let Some(endpoint) = self.store.endpoint(&network.id, container_id)? else {
            return Ok(());
        };
        let context = || {
            format!(
                "detach container {container_id} from network {}",
                network.name
            )
        };
        let list = conflist::network_conflist(
            network,
            &self.ipam_dir(),
            !endpoint.port_mappings.is_empty(),
        );
        let runtime_config = conflist::runtime_config(&endpoint.port_mappings);
        let invocation = cni::Invocation {
            container_id,
            netns: &endpoint.netns,
            ifname: &endpoint.ifname,
        };
        self.cni
            .del_list(
                &list,
                &invocation,
                &runtime_config,
                Some(&endpoint.cni_result),
            )
            .await
            .with_context(context)?;
        self.store.remove_endpoint(&network.id, container_id)?;
        self.refresh_hosts(network, container_id)
            .await
            .with_context(context)
    }

    /// Verifies with the plugins' CHECK that a container's attachment to a
    /// network is as ADD left it (its published ports excepted, see
    /// below). `NotFound` if it is not attached.
    pub async fn check(&self, container_id: &str, network: &str) -> Result<()> {
        let network = self.store.find(network)?;
        let endpoint = self
            .store
            .endpoint(&network.id, container_id)?
            .ok_or_else(|| {
                Error::not_found(format!(
                    "container {container_id} is not attached to network {}",
                    network.name
                ))
            })?;
        let mut list = conflist::network_conflist(&network, &self.ipam_dir(), false);
        // portmap up to plugins 1.2 (Debian's is 1.1.1) fails CHECK on an
        // IPv4-only container: it insists on IPv6 DNAT rules it never made
        // (containernetworking/plugins#819). Its rules are left unchecked.
        if let Some(plugins) = list.get_mut("plugins").and_then(|p| p.as_array_mut()) {
            plugins.retain(|plugin| plugin["type"] != "portmap");
        }
        let invocation = cni::Invocation {
            container_id,
            netns: &endpoint.netns,
            ifname: &endpoint.ifname,
        };
        self.cni
            .check_list(
                &list,
                &invocation,
                &conflist::runtime_config(&endpoint.port_mappings),
                &endpoint.cni_result,
            )
            .await
            .with_context(|| format!("check container {container_id} on network {}", network.name))
    }

    /// Networks a new container as `request.mode` says and writes its name
    /// files. On failure, whatever was set up is torn down again.
    pub async fn setup(&self, request: &SetupRequest) -> Result<ContainerNetwork> {
        // Before anything is made (or rolled back) under the id.
        request.validate()?;
        let container_id = request.endpoint.container_id.as_str();
        let result = self.setup_inner(request).await;
        if result.is_err() {
            let _ = self.teardown(container_id).await;
        }
        result.with_context(|| format!("network container {container_id} ({})", request.mode))
    }

    async fn setup_inner(&self, request: &SetupRequest) -> Result<ContainerNetwork> {
        let container_id = request.endpoint.container_id.as_str();
        let files = self.name_files(container_id)?;
        match &request.mode {
            NetworkMode::Container(other) => {
                let netns = self.netns.path(other)?;
                if !netns.exists() {
                    return Err(Error::not_found(format!(
                        "container {other} has no network namespace to join"
                    )));
                }
                // The joiner sees the owner's names, as in docker.
                return Ok(ContainerNetwork {
                    netns: Some(netns),
                    attachments: Vec::new(),
                    files: self.name_files(other)?,
                });
            }
            NetworkMode::Host => {
                self.write_host_mode_files(&files)?;
                return Ok(ContainerNetwork {
                    netns: None,
                    attachments: Vec::new(),
                    files,
                });
            }
            NetworkMode::None | NetworkMode::Network(_) => {}
        }
        self.write_name_files(&files, &request.hostname)?;
        // The namespace comes with lo up (see netns.rs).
        let netns = self.netns.create(container_id).await?;
        let mut attachments = Vec::new();
        if let NetworkMode::Network(name) = &request.mode {
            attachments.push(
                self.attach(&request.endpoint, name, &netns, &request.ports)
                    .await?,
            );
        } else {
            self.refresh_container_hosts(container_id)?;
        }
        Ok(ContainerNetwork {
            netns: Some(netns),
            attachments,
            files,
        })
    }

    /// Undoes [`setup`](Self::setup): detaches the container from every
    /// network, removes its namespace and name files. Safe to repeat.
    pub async fn teardown(&self, container_id: &str) -> Result<()> {
        let files_dir = self.files_dir(container_id)?;
        let mut first_error = None;
        for endpoint in self.store.endpoints_of_container(container_id)? {
            let network = match self.store.find(&endpoint.network_id) {
                Ok(network) => network,
                Err(err) => {
                    first_error.get_or_insert(err);
                    continue;
                }
            };
            let _guard = self.lock.lock().await;
            if let Err(err) = self.detach_locked(container_id, &network).await {
                first_error.get_or_insert(err);
            }
        }
        if let Err(err) = self.netns.remove(container_id) {
            first_error.get_or_insert(err);
        }
        match fs::remove_dir_all(&files_dir) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => {
                first_error.get_or_insert(Error::from(err).context(files_dir.display()));
            }
            _ => {}
        }
        first_error.map_or(Ok(()), |err| {
            Err(err.context(format!("tear down network of container {container_id}")))
        })
    }

    /// Reconciles the network state with the containers that exist when
    /// berthd starts: endpoints, namespaces and name files of any other
    /// container are torn down (the plugins' DEL also drops their NAT and
    /// port rules), then host-local leases no endpoint accounts for are
    /// released. Returns the ids of the containers cleaned up.
    pub async fn cleanup(&self, live_containers: &HashSet<String>) -> Result<Vec<String>> {
        let mut dead: Vec<String> = self
            .store
            .endpoints()?
            .into_iter()
            .map(|e| e.container_id)
            .chain(self.netns.list()?)
            .chain(list_dir_names(&self.config.state_dir.join("containers"))?)
            .filter(|id| !live_containers.contains(id))
            .collect();
        dead.sort();
        dead.dedup();
        let mut first_error = None;
        for id in &dead {
            if let Err(err) = self.teardown(id).await {
                first_error.get_or_insert(err);
            }
        }
        let _guard = self.lock.lock().await;
        let networks: HashSet<String> = self.store.list()?.into_iter().map(|n| n.id).collect();
        let endpoints: HashSet<(String, String)> = self
            .store
            .endpoints()?
            .into_iter()
            .map(|e| (e.network_id, e.container_id))
            .collect();
        ipam::remove_stale_leases(
            &self.ipam_dir(),
            |network| networks.contains(network),
            |network, container| endpoints.contains(&(network.to_owned(), container.to_owned())),
        )?;
        first_error.map_or(Ok(dead), |err| Err(err.context("network cleanup")))
    }

    fn write_name_files(&self, files: &NameFiles, hostname: &str) -> Result<()> {
        if let Some(dir) = files.hosts.parent() {
            fs::create_dir_all(dir).with_context(|| dir.display())?;
        }
        let host_resolv = read_optional(&self.config.host_resolv_conf)?;
        hosts::write_atomic(&files.resolv_conf, &hosts::resolv_conf(&host_resolv))?;
        hosts::write_atomic(&files.hostname, &hosts::hostname_file(hostname))?;
        hosts::write_atomic(&files.hosts, &hosts::hosts_file(None, &[]))
    }

    /// Host mode: the host's own files, as docker does.
    fn write_host_mode_files(&self, files: &NameFiles) -> Result<()> {
        if let Some(dir) = files.hosts.parent() {
            fs::create_dir_all(dir).with_context(|| dir.display())?;
        }
        let copy = |from: &Path, to: &Path| -> Result<()> {
            hosts::write_atomic(to, &read_optional(from)?)
        };
        copy(&self.config.host_resolv_conf, &files.resolv_conf)?;
        copy(Path::new("/etc/hosts"), &files.hosts)?;
        copy(Path::new("/etc/hostname"), &files.hostname)
    }

    /// Rewrites the hosts files of every container on `network` and of
    /// `changed`, the container that just joined or left it.
    async fn refresh_hosts(&self, network: &Network, changed: &str) -> Result<()> {
        let mut containers: Vec<String> = self
            .store
            .endpoints_of_network(&network.id)?
            .into_iter()
            .map(|e| e.container_id)
            .collect();
        containers.push(changed.to_owned());
        containers.sort();
        containers.dedup();
        for container_id in containers {
            self.refresh_container_hosts(&container_id)?;
        }
        Ok(())
    }

    /// Rewrites one container's hosts file: itself (address, hostname,
    /// name and aliases), then its peers on every user-defined network it
    /// is on (the default network has no name resolution, as in docker).
    fn refresh_container_hosts(&self, container_id: &str) -> Result<()> {
        let files = self.name_files(container_id)?;
        if let Some(dir) = files.hosts.parent() {
            fs::create_dir_all(dir).with_context(|| dir.display())?;
        }
        let hostname = read_optional(&files.hostname)?.trim().to_owned();
        let hostname = if hostname.is_empty() {
            container_id.chars().take(12).collect()
        } else {
            hostname
        };
        let all = self.store.endpoints()?;
        let networks: BTreeMap<String, Network> = self
            .store
            .list()?
            .into_iter()
            .map(|n| (n.id.clone(), n))
            .collect();
        let mine: Vec<&Endpoint> = all
            .iter()
            .filter(|e| e.container_id == container_id)
            .collect();
        let own = mine.first().map(|endpoint| {
            let mut names = vec![hostname.clone()];
            for name in std::iter::once(&endpoint.name).chain(&endpoint.aliases) {
                if !name.is_empty() && !names.contains(name) {
                    names.push(name.clone());
                }
            }
            hosts::HostEntry {
                ip: endpoint.ip.into(),
                names,
            }
        });
        let mut peers: Vec<hosts::HostEntry> = Vec::new();
        for endpoint in &mine {
            let user_network = networks
                .get(&endpoint.network_id)
                .is_some_and(|n| n.name != DEFAULT_NETWORK);
            if !user_network {
                continue;
            }
            for peer in all
                .iter()
                .filter(|p| p.network_id == endpoint.network_id && p.container_id != container_id)
            {
                let names: Vec<String> = std::iter::once(&peer.name)
                    .chain(&peer.aliases)
                    .filter(|n| !n.is_empty())
                    .cloned()
                    .collect();
                match peers
                    .iter_mut()
                    .find(|e| e.ip == std::net::IpAddr::V4(peer.ip))
                {
                    Some(entry) => entry.names.extend(names),
                    None => peers.push(hosts::HostEntry {
                        ip: peer.ip.into(),
                        names,
                    }),
                }
            }
        }
        hosts::rewrite_in_place(&files.hosts, &hosts::hosts_file(own.as_ref(), &peers))
    }
}

/// A new network id: 64 hex digits from 32 random bytes, as docker's.
fn new_network_id() -> String {
    let mut hasher = Sha256::new();
    hasher.update(uuid::Uuid::new_v4().as_bytes());
    hasher.update(uuid::Uuid::new_v4().as_bytes());
    hex::encode(hasher.finalize())
}

fn read_optional(path: &Path) -> Result<String> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(err) => Err(Error::from(err).context(path.display())),
    }
}

fn list_dir_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(Error::from(err).context(dir.display())),
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| dir.display())?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_owned());
        }
    }
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn network_ids_are_64_hex_and_distinct() {
        let (a, b) = (new_network_id(), new_network_id());
        assert_eq!(a.len(), 64);
        assert!(a
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(a, b);
    }

    #[tokio::test]
    async fn store_allocates_refuses_overlaps_and_in_use_removal() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path().join("metadata.redb")).unwrap();
        let config = NetworkConfig {
            plugin_dir: "/nonexistent".into(),
            ..NetworkConfig::new(dir.path())
        };
        let manager = NetworkManager::open(db, config).unwrap();
        let spec = |name: &str, subnet: Option<&str>| NetworkSpec {
            name: name.into(),
            subnet: subnet.map(|s| s.parse().unwrap()),
            ..NetworkSpec::default()
        };
        let a = manager
            .create_network(&spec("a", Some("10.201.0.0/16")))
            .await
            .unwrap();
        assert_eq!(a.gateway, Ipv4Addr::new(10, 201, 0, 1));
        assert_eq!(a.bridge, format!("br-{}", &a.id[..12]));
        let err = manager
            .create_network(&spec("b", Some("10.201.7.0/24")))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        assert!(
            err.message
                .contains("overlaps subnet 10.201.0.0/16 of network a"),
            "{err}"
        );
        let err = manager.create_network(&spec("a", None)).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::AlreadyExists);
        let err = manager
            .create_network(&spec("host", None))
            .await
            .unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        let pooled = manager.create_network(&spec("pooled", None)).await.unwrap();
        assert!(subnet::default_pool().any(|n| n == pooled.subnet));
        assert_eq!(manager.network(&a.id[..10]).await.unwrap().name, "a");

        let endpoint = Endpoint {
            network_id: a.id.clone(),
            container_id: "c1".into(),
            name: "one".into(),
            aliases: vec![],
            ip: Ipv4Addr::new(10, 201, 0, 2),
            prefix_len: 16,
            gateway: a.gateway,
            mac: String::new(),
            ifname: "eth0".into(),
            netns: "/nonexistent".into(),
            port_mappings: vec![],
            cni_result: serde_json::Value::Null,
        };
        manager.store.put_endpoint(&endpoint).unwrap();
        let err = manager.remove_network("a").await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
        assert_eq!(
            err.message,
            format!(
                "error while removing network: network a id {} has active endpoints",
                a.id
            )
        );
        manager.store.remove_endpoint(&a.id, "c1").unwrap();
        manager.remove_network("a").await.unwrap();
        // By its whole id: "a" alone is also a prefix of one id in 16.
        let err = manager.network(&a.id).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        // The pre-defined network stays.
        let default = manager.network(DEFAULT_NETWORK).await.unwrap();
        assert_eq!(default.bridge, "berth0");
        let err = manager.remove_network(DEFAULT_NETWORK).await.unwrap_err();
        assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    }
}
