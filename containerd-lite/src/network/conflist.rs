//! The CNI configuration lists berthd runs for its networks.
//!
//! A network's list chains:
//! - `bridge`: the network's Linux bridge with the gateway address on it
//!   (`isGateway`), a veth pair into the container, hairpin mode (a
//!   container reaches itself through a published port), and `host-local`
//!   IPAM over the network's subnet with its leases under berthd's state;
//! - `portmap`, only for a container that publishes ports
//!   (`runtimeConfig.portMappings`): DNAT from the host, SNAT so that
//!   `127.0.0.1` mappings work.
//!
//! Masquerading and the FORWARD rules are the network's, set once (see
//! [`super::firewall`]), not the plugins' per container.
//!
//! The list is named after the network id, so the plugins' iptables
//! chains and the IPAM directory are unique to one network.

use std::path::Path;

use serde_json::{json, Value};

use super::cni::CNI_VERSION;
use super::store::{Network, PortMapping};

/// The configuration list for `network`; host-local keeps its leases in
/// `ipam_dir/<network id>`. `publishes` adds portmap (a container with
/// ports to publish; its DEL must name the same plugins).
pub fn network_conflist(network: &Network, ipam_dir: &Path, publishes: bool) -> Value {
    let mut range = json!({
        "subnet": network.subnet.to_string(),
        "gateway": network.gateway.to_string(),
    });
    if let Some(ip_range) = network.ip_range {
        let mut hosts = ip_range.hosts();
        if let (Some(first), Some(last)) = (hosts.next(), hosts.next_back()) {
            range["rangeStart"] = json!(first.to_string());
            range["rangeEnd"] = json!(last.to_string());
        }
    }
    let routes = if network.internal {
        json!([])
    } else {
        json!([{ "dst": "0.0.0.0/0" }])
    };
    let mut plugins = vec![json!({
        "type": "bridge",
        "bridge": network.bridge,
        "isGateway": true,
        "ipMasq": false,
        "hairpinMode": true,
        "ipam": {
            "type": "host-local",
            "ranges": [[range]],
            "routes": routes,
            "dataDir": ipam_dir.to_string_lossy(),
        }
    })];
    if publishes {
        plugins.push(json!({
            "type": "portmap",
            "capabilities": { "portMappings": true },
            "snat": true
        }));
    }
    json!({
        "cniVersion": CNI_VERSION,
        "name": network.id,
        "plugins": plugins,
    })
}

/// `runtimeConfig` for a container: its published ports, in the keys
/// portmap reads.
pub fn runtime_config(ports: &[PortMapping]) -> Value {
    let mappings: Vec<Value> = ports
        .iter()
        .map(|port| {
            json!({
                "hostPort": port.host_port,
                "containerPort": port.container_port,
                "protocol": port.protocol.as_str(),
                "hostIP": port.host_ip.to_string(),
            })
        })
        .collect();
    json!({ "portMappings": mappings })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::store::Protocol;
    use std::net::Ipv4Addr;
    use std::time::SystemTime;

    fn network(internal: bool, ip_range: Option<&str>) -> Network {
        Network {
            id: "ab".repeat(32),
            name: "front".into(),
            driver: "bridge".into(),
            bridge: "br-abababababab".into(),
            subnet: "10.77.0.0/16".parse().unwrap(),
            gateway: Ipv4Addr::new(10, 77, 0, 1),
            ip_range: ip_range.map(|r| r.parse().unwrap()),
            internal,
            labels: Default::default(),
            options: Default::default(),
            created: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn conflist_chains_bridge_and_portmap_only_when_publishing() {
        let list = network_conflist(&network(false, None), Path::new("/run/berth/ipam"), true);
        assert_eq!(list["cniVersion"], "1.0.0");
        assert_eq!(list["name"], "ab".repeat(32));
        let plugins = list["plugins"].as_array().unwrap();
        let types: Vec<&str> = plugins
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["bridge", "portmap"]);
        let bridge = &plugins[0];
        assert_eq!(bridge["bridge"], "br-abababababab");
        assert_eq!(bridge["isGateway"], true);
        // Masquerading is the network's rule (firewall.rs), not per container.
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["hairpinMode"], true);
        assert_eq!(
            bridge["ipam"],
            json!({
                "type": "host-local",
                "ranges": [[{"subnet": "10.77.0.0/16", "gateway": "10.77.0.1"}]],
                "routes": [{"dst": "0.0.0.0/0"}],
                "dataDir": "/run/berth/ipam"
            })
        );
        assert_eq!(plugins[1]["capabilities"], json!({"portMappings": true}));
        let quiet = network_conflist(&network(false, None), Path::new("/x"), false);
        assert_eq!(quiet["plugins"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn internal_network_has_no_masquerade_nor_default_route_and_honours_ip_range() {
        let list = network_conflist(&network(true, Some("10.77.5.0/24")), Path::new("/x"), false);
        let bridge = &list["plugins"][0];
        assert_eq!(bridge["ipMasq"], false);
        assert_eq!(bridge["ipam"]["routes"], json!([]));
        let range = &bridge["ipam"]["ranges"][0][0];
        assert_eq!(range["rangeStart"], "10.77.5.1");
        assert_eq!(range["rangeEnd"], "10.77.5.254");
    }

    #[test]
    fn runtime_config_uses_portmap_keys() {
        let ports = [PortMapping {
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
        }];
        assert_eq!(
            runtime_config(&ports),
            json!({"portMappings": [{"hostPort": 8080, "containerPort": 80,
                                     "protocol": "tcp", "hostIP": "127.0.0.1"}]})
        );
    }
}
