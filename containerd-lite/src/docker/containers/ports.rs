//! Published ports: docker's `PortBindings` (`-p [ip:][host]:container[/proto]`)
//! and `PublishAllPorts` (`-P`) as the port mappings the network layer
//! publishes through CNI's portmap, with a free host port picked where none
//! was given; and the shapes `docker ps` and `docker inspect` show them in.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, TcpListener, UdpSocket};

use bollard_stubs::models::HostConfig;
use serde_json::{json, Value};

use crate::network::{PortMapping, Protocol};
use crate::{Error, Result};

/// `80/tcp` as a port and protocol (`tcp` when none is given).
fn container_port(key: &str) -> Result<(u16, Protocol)> {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let protocol = match proto {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        other => {
            return Err(Error::invalid(format!(
                "invalid proto '{other}' in port {key}: only tcp and udp are supported"
            )))
        }
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| Error::invalid(format!("invalid containerPort: {port}")))?;
    Ok((port, protocol))
}

/// A free port on `ip` for `protocol`, as the kernel hands one out.
fn free_port(ip: Ipv4Addr, protocol: Protocol) -> Result<u16> {
    let port = match protocol {
        Protocol::Tcp => TcpListener::bind((ip, 0)).and_then(|l| l.local_addr()),
        Protocol::Udp => UdpSocket::bind((ip, 0)).and_then(|s| s.local_addr()),
    }
    .map_err(|err| Error::internal(format!("finding a free port on {ip}: {err}")))?
    .port();
    Ok(port)
}

/// The mappings to publish for `host`, exposed ports `exposed` (`80/tcp`)
/// counting for `PublishAllPorts`. Host ports left empty get a free one.
pub fn mappings(host: &HostConfig, exposed: &[String]) -> Result<Vec<PortMapping>> {
    let mut wanted: BTreeMap<String, Vec<(String, String)>> = BTreeMap::new();
    for (key, bindings) in host.port_bindings.iter().flatten() {
        let entry = wanted.entry(key.clone()).or_default();
        for binding in bindings.iter().flatten() {
            entry.push((
                binding.host_ip.clone().unwrap_or_default(),
                binding.host_port.clone().unwrap_or_default(),
            ));
        }
        if entry.is_empty() {
            entry.push((String::new(), String::new()));
        }
    }
    if host.publish_all_ports == Some(true) {
        for key in exposed {
            wanted
                .entry(key.clone())
                .or_insert_with(|| vec![(String::new(), String::new())]);
        }
    }
    let mut out = Vec::new();
    for (key, bindings) in wanted {
        let (container_port, protocol) = container_port(&key)?;
        for (ip, port) in bindings {
            let host_ip: Ipv4Addr = if ip.is_empty() {
                Ipv4Addr::UNSPECIFIED
            } else {
                ip.parse().map_err(|_| {
                    Error::invalid(format!(
                        "invalid IP address in port {key}: {ip} (IPv4 only)"
                    ))
                })?
            };
            let host_port = if port.is_empty() {
                free_port(host_ip, protocol)?
            } else {
                port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    Error::invalid(format!(
                        "invalid hostPort: {port} (a single port from 1 to 65535)"
                    ))
                })?
            };
            out.push(PortMapping {
                host_ip,
                host_port,
                container_port,
                protocol,
            });
        }
    }
    Ok(out)
}

/// Checks the bindings at create time (host ports are picked at start).
pub fn check(host: &HostConfig) -> Result<()> {
    for (key, bindings) in host.port_bindings.iter().flatten() {
        container_port(key)?;
        for binding in bindings.iter().flatten() {
            if let Some(ip) = binding.host_ip.as_deref().filter(|i| !i.is_empty()) {
                ip.parse::<Ipv4Addr>().map_err(|_| {
                    Error::invalid(format!(
                        "invalid IP address in port {key}: {ip} (IPv4 only)"
                    ))
                })?;
            }
            if let Some(port) = binding.host_port.as_deref().filter(|p| !p.is_empty()) {
                port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(|| {
                    Error::invalid(format!(
                        "invalid hostPort: {port} (a single port from 1 to 65535)"
                    ))
                })?;
            }
        }
    }
    Ok(())
}

/// `NetworkSettings.Ports`: `{"80/tcp": [{"HostIp", "HostPort"}]}`.
pub fn inspect_ports(published: &[PortMapping], exposed: &[String]) -> Value {
    let mut ports: BTreeMap<String, Value> = exposed
        .iter()
        .map(|key| (key.clone(), Value::Null))
        .collect();
    for mapping in published {
        let key = format!("{}/{}", mapping.container_port, mapping.protocol.as_str());
        let entry = ports.entry(key).or_insert(Value::Null);
        if entry.is_null() {
            *entry = json!([]);
        }
        if let Some(list) = entry.as_array_mut() {
            list.push(json!({
                "HostIp": mapping.host_ip.to_string(),
                "HostPort": mapping.host_port.to_string(),
            }));
        }
    }
    json!(ports)
}

/// `Ports` in `docker ps`: published ones with their host side, exposed
/// ones without.
pub fn summary_ports(published: &[PortMapping], exposed: &[String]) -> Value {
    let mut out: Vec<Value> = published
        .iter()
        .map(|m| {
            json!({
                "IP": m.host_ip.to_string(),
                "PrivatePort": m.container_port,
                "PublicPort": m.host_port,
                "Type": m.protocol.as_str(),
            })
        })
        .collect();
    for key in exposed {
        if let Ok((port, protocol)) = container_port(key) {
            let shown = published
                .iter()
                .any(|m| m.container_port == port && m.protocol == protocol);
            if !shown {
                out.push(json!({ "PrivatePort": port, "Type": protocol.as_str() }));
            }
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bollard_stubs::models::PortBinding;
    use std::collections::HashMap;

    fn host(bindings: &[(&str, &str, &str)], all: bool) -> HostConfig {
        let mut map: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
        for (key, ip, port) in bindings {
            map.entry((*key).to_owned())
                .or_insert_with(|| Some(Vec::new()))
                .as_mut()
                .unwrap()
                .push(PortBinding {
                    host_ip: Some((*ip).to_owned()),
                    host_port: Some((*port).to_owned()),
                });
        }
        HostConfig {
            port_bindings: Some(map),
            publish_all_ports: Some(all),
            ..Default::default()
        }
    }

    #[test]
    fn bindings_become_mappings_with_free_ports_where_none_is_given() {
        let mapped = mappings(
            &host(
                &[("80/tcp", "127.0.0.1", "8080"), ("53/udp", "", "")],
                false,
            ),
            &[],
        )
        .unwrap();
        assert_eq!(mapped.len(), 2);
        let udp = mapped.iter().find(|m| m.protocol == Protocol::Udp).unwrap();
        assert_eq!(udp.container_port, 53);
        assert_eq!(udp.host_ip, Ipv4Addr::UNSPECIFIED);
        assert_ne!(udp.host_port, 0);
        let tcp = mapped.iter().find(|m| m.protocol == Protocol::Tcp).unwrap();
        assert_eq!((tcp.host_port, tcp.container_port), (8080, 80));
        assert_eq!(tcp.host_ip, Ipv4Addr::LOCALHOST);

        let all = mappings(&host(&[], true), &["9000/tcp".to_owned()]).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].container_port, 9000);
    }

    #[test]
    fn bad_bindings_are_named() {
        for (key, ip, port, named) in [
            ("80/sctp", "", "80", "sctp"),
            ("0/tcp", "", "80", "containerPort"),
            ("80/tcp", "::1", "80", "IPv4 only"),
            ("80/tcp", "", "70000", "hostPort"),
            ("80/tcp", "", "8000-8010", "hostPort"),
        ] {
            let err = check(&host(&[(key, ip, port)], false)).unwrap_err();
            assert!(err.message.contains(named), "{key} {ip} {port}: {err}");
        }
    }

    #[test]
    fn inspect_and_ps_show_published_and_exposed_ports() {
        let published = [PortMapping {
            host_ip: Ipv4Addr::UNSPECIFIED,
            host_port: 8080,
            container_port: 80,
            protocol: Protocol::Tcp,
        }];
        let exposed = ["80/tcp".to_owned(), "443/tcp".to_owned()];
        let shown = inspect_ports(&published, &exposed);
        assert_eq!(shown["80/tcp"][0]["HostPort"], "8080");
        assert!(shown["443/tcp"].is_null());
        let listed = summary_ports(&published, &exposed);
        assert_eq!(listed.as_array().unwrap().len(), 2);
        assert_eq!(listed[0]["PublicPort"], 8080);
    }
}
