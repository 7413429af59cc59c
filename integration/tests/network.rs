//! berthd's network library with the real CNI plugins (Debian's
//! containernetworking-plugins), real namespaces, bridges and iptables.
//!
//! Each test keeps its state (database, namespaces, IPAM leases, name
//! files) in its own temp dir, uses subnets no other test uses and a
//! default bridge named after the test process, and checks at the end that
//! nothing is left: no netns mounts, bridges, veths, iptables rules or
//! leases.

// Test code: a panic is how it reports.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use berth_integration::leak::mounts_mentioning;
use berth_integration::{is_root, wait_until, SECS10};
use berthd::metadata::Db;
use berthd::network::{
    link, EndpointName, NetworkConfig, NetworkManager, NetworkMode, NetworkSpec, PortMapping,
    Protocol, SetupRequest, DEFAULT_NETWORK,
};
use berthd::ErrorKind;

const PLUGINS: &str = "/usr/lib/cni";

/// Tears down what a failed test set up, so a panic leaves nothing behind
/// either (a second run would otherwise meet the first one's bridges).
struct Cleanup {
    manager: Option<Arc<NetworkManager>>,
    containers: Vec<String>,
    networks: Vec<String>,
    bridges: Vec<String>,
}

impl Cleanup {
    fn new(manager: &Arc<NetworkManager>) -> Self {
        Cleanup {
            manager: Some(Arc::clone(manager)),
            containers: Vec::new(),
            networks: Vec::new(),
            bridges: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Some(manager) = self.manager.clone() else {
            return;
        };
        if !std::thread::panicking() {
            return;
        }
        let (containers, networks, bridges) = (
            self.containers.clone(),
            self.networks.clone(),
            self.bridges.clone(),
        );
        // The test's runtime is unwinding: tear down on a thread of our own.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                for id in &containers {
                    let _ = manager.teardown(id).await;
                }
                for network in &networks {
                    let _ = manager.remove_network(network).await;
                }
                for bridge in &bridges {
                    let _ = link::delete_link(bridge).await;
                }
            });
        })
        .join();
    }
}

/// A manager over a private state dir, or `None` (test skipped) when not
/// root or the plugins are missing.
fn manager(test: &str) -> Option<(tempfile::TempDir, Arc<NetworkManager>)> {
    if !is_root() {
        eprintln!("{test}: skipped, needs root");
        return None;
    }
    if !Path::new(PLUGINS).join("bridge").exists() {
        eprintln!("{test}: skipped, no CNI plugins in {PLUGINS} (containernetworking-plugins)");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path().join("metadata.redb")).unwrap();
    let manager = NetworkManager::open(db, config(dir.path(), test)).unwrap();
    Some((dir, Arc::new(manager)))
}

fn config(dir: &Path, test: &str) -> NetworkConfig {
    // Interface names are at most 15 bytes: "bt" + pid + a tag of the test.
    let tag: String = test
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(4)
        .collect();
    NetworkConfig {
        plugin_dir: PLUGINS.into(),
        default_bridge: format!("bt{}{tag}", std::process::id() % 100_000),
        ..NetworkConfig::new(dir)
    }
}

fn container_id(test: &str, n: u32) -> String {
    format!("{test}-{}-{n}", std::process::id())
}

fn request(id: &str, name: &str, mode: NetworkMode, ports: Vec<PortMapping>) -> SetupRequest {
    SetupRequest {
        endpoint: EndpointName {
            container_id: id.to_owned(),
            name: name.to_owned(),
            aliases: vec![format!("{name}-alias")],
        },
        hostname: name.to_owned(),
        mode,
        ports,
    }
}

fn user_network(name: &str, subnet: &str) -> NetworkSpec {
    NetworkSpec {
        name: format!("{name}-{}", std::process::id()),
        subnet: Some(subnet.parse().unwrap()),
        ..NetworkSpec::default()
    }
}

/// Runs `args` inside the namespace at `netns`; (success, stdout + stderr).
fn in_netns(netns: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("nsenter")
        .arg(format!("--net={}", netns.display()))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Runs `script` in the namespace at `netns` with `hosts` bind-mounted on
/// /etc/hosts in a private mount namespace, as the container will see it.
fn with_hosts_file(netns: &Path, hosts: &Path, script: &str) -> (bool, String) {
    let script = format!("mount --bind {} /etc/hosts && {script}", hosts.display());
    in_netns(netns, &["unshare", "--mount", "sh", "-c", &script])
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn iptables_lines_mentioning(needles: &[String]) -> Vec<String> {
    let out = Command::new("iptables-save").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|line| needles.iter().any(|n| line.contains(n.as_str())))
        .map(str::to_owned)
        .collect()
}

fn links_of(bridge: &str) -> String {
    let out = Command::new("ip")
        .args(["-o", "link", "show", "master", bridge])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn lease_files(ipam: &Path) -> Vec<PathBuf> {
    walkdir(ipam)
        .into_iter()
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.parse::<Ipv4Addr>().is_ok())
        })
        .collect()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(walkdir(&path));
            }
            out.push(path);
        }
    }
    out
}

/// What must be gone once a test has torn everything down.
fn assert_nothing_left(state: &Path, bridges: &[&str], needles: &[String]) {
    let mounts = mounts_mentioning(&state.to_string_lossy());
    assert!(mounts.is_empty(), "netns mounts left: {mounts:?}");
    for bridge in bridges {
        assert!(!link::link_exists(bridge), "bridge {bridge} left");
    }
    let rules = iptables_lines_mentioning(needles);
    assert!(rules.is_empty(), "iptables rules left: {rules:#?}");
    let leases = lease_files(&state.join("network/ipam"));
    assert!(leases.is_empty(), "IPAM leases left: {leases:?}");
}

struct Httpd(Child);

impl Drop for Httpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_on_a_user_network_talk_by_ip_and_name_and_publish_ports() {
    let Some((dir, manager)) = manager("talk") else {
        return;
    };
    let network = manager
        .create_network(&user_network("talk", "10.213.1.0/24"))
        .await
        .unwrap();
    let (a, b) = (container_id("talk", 1), container_id("talk", 2));
    let mut cleanup = Cleanup::new(&manager);
    cleanup.containers = vec![a.clone(), b.clone()];
    cleanup.networks.push(network.id.clone());
    let host_port = free_port();
    let published = PortMapping {
        host_ip: Ipv4Addr::LOCALHOST,
        host_port,
        container_port: 8080,
        protocol: Protocol::Tcp,
    };
    let mode = NetworkMode::Network(network.name.clone());
    let net_a = manager
        .setup(&request(&a, "alpha", mode.clone(), vec![published]))
        .await
        .unwrap();
    let net_b = manager
        .setup(&request(&b, "beta", mode.clone(), vec![]))
        .await
        .unwrap();
    let (ns_a, ns_b) = (net_a.netns.clone().unwrap(), net_b.netns.clone().unwrap());
    let (ip_a, ip_b) = (net_a.attachments[0].ip, net_b.attachments[0].ip);
    assert!(network.subnet.contains(&ip_a) && network.subnet.contains(&ip_b));
    assert_ne!(ip_a, ip_b);
    assert_eq!(net_a.attachments[0].ifname, "eth0");
    assert_eq!(net_a.attachments[0].gateway, Ipv4Addr::new(10, 213, 1, 1));
    assert_eq!(
        net_a.attachments[0].mac.len(),
        17,
        "{:?}",
        net_a.attachments[0]
    );
    manager.check(&a, &network.name).await.unwrap();
    manager.check(&b, &network.name).await.unwrap();
    assert_eq!(manager.attachments(&a).unwrap(), net_a.attachments);

    // By address.
    let (ok, out) = in_netns(&ns_a, &["busybox", "ping", "-c1", "-W2", &ip_b.to_string()]);
    assert!(ok, "alpha cannot ping beta at {ip_b}: {out}");
    let (ok, out) = in_netns(&ns_b, &["busybox", "ping", "-c1", "-W2", &ip_a.to_string()]);
    assert!(ok, "beta cannot ping alpha at {ip_a}: {out}");

    // By name, through the hosts files the containers will have.
    let hosts_a = std::fs::read_to_string(&net_a.files.hosts).unwrap();
    assert!(
        hosts_a.contains(&format!("{ip_a}\talpha alpha-alias\n")),
        "{hosts_a}"
    );
    assert!(
        hosts_a.contains(&format!("{ip_b}\tbeta beta-alias\n")),
        "{hosts_a}"
    );
    let (ok, out) = with_hosts_file(&ns_a, &net_a.files.hosts, "busybox ping -c1 -W2 beta-alias");
    assert!(ok, "alpha cannot ping beta-alias by name: {out}");
    assert!(out.contains(&ip_b.to_string()), "{out}");
    let (ok, out) = with_hosts_file(&ns_b, &net_b.files.hosts, "busybox ping -c1 -W2 alpha");
    assert!(ok, "beta cannot ping alpha by name: {out}");
    assert_eq!(
        std::fs::read_to_string(&net_a.files.hostname).unwrap(),
        "alpha\n"
    );
    let resolv = std::fs::read_to_string(&net_a.files.resolv_conf).unwrap();
    assert!(resolv.contains("nameserver "), "{resolv}");
    assert!(!resolv.contains("nameserver 127."), "{resolv}");

    // A published port: host 127.0.0.1:<port> -> httpd in alpha on 8080.
    let www = dir.path().join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("index.html"), "hello from alpha\n").unwrap();
    let _httpd = Httpd(
        Command::new("nsenter")
            .arg(format!("--net={}", ns_a.display()))
            .args(["busybox", "httpd", "-f", "-p", "8080", "-h"])
            .arg(&www)
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let mut response = None;
    assert!(
        wait_until(SECS10, || {
            response = http_get(host_port, "/index.html");
            response.is_some()
        }),
        "nothing answered on 127.0.0.1:{host_port}"
    );
    let response = response.unwrap();
    assert!(response.contains("hello from alpha"), "{response}");

    // In use: refused, as docker's 409.
    let err = manager.remove_network(&network.name).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::FailedPrecondition);
    assert!(err.message.contains("has active endpoints"), "{err}");

    // beta leaves: alpha's hosts file no longer lists it, in place.
    let inode =
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&net_a.files.hosts).unwrap());
    manager.detach(&b, &network.name).await.unwrap();
    manager.detach(&b, &network.name).await.unwrap();
    let err = manager.check(&b, &network.name).await.unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");
    let hosts_a = std::fs::read_to_string(&net_a.files.hosts).unwrap();
    assert!(!hosts_a.contains("beta"), "{hosts_a}");
    assert_eq!(
        std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&net_a.files.hosts).unwrap()),
        inode,
        "hosts file replaced instead of rewritten in place"
    );
    let (ok, _) = in_netns(&ns_a, &["busybox", "ping", "-c1", "-W1", &ip_b.to_string()]);
    assert!(!ok, "beta still reachable after detach");

    drop(_httpd);
    manager.teardown(&a).await.unwrap();
    manager.teardown(&b).await.unwrap();
    manager.teardown(&a).await.unwrap();
    assert!(
        links_of(&network.bridge).trim().is_empty(),
        "veths left on {}",
        network.bridge
    );
    manager.remove_network(&network.name).await.unwrap();
    assert_nothing_left(
        dir.path(),
        &[&network.bridge],
        &[
            network.subnet.to_string(),
            a.clone(),
            b.clone(),
            format!("--dport {host_port}"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn none_mode_has_only_loopback_and_container_mode_joins_it() {
    let Some((dir, manager)) = manager("none") else {
        return;
    };
    let (owner, joiner) = (container_id("none", 1), container_id("none", 2));
    let mut cleanup = Cleanup::new(&manager);
    cleanup.containers = vec![owner.clone(), joiner.clone(), container_id("none", 3)];
    let net = manager
        .setup(&request(&owner, "lonely", NetworkMode::None, vec![]))
        .await
        .unwrap();
    let netns = net.netns.clone().unwrap();
    assert!(net.attachments.is_empty());
    let (ok, links) = in_netns(&netns, &["ip", "-o", "link"]);
    assert!(ok, "{links}");
    assert_eq!(links.lines().count(), 1, "only lo expected: {links}");
    assert!(
        links.contains("lo:") && links.contains("UP"),
        "lo must be up: {links}"
    );
    let (ok, out) = in_netns(&netns, &["busybox", "ping", "-c1", "-W2", "127.0.0.1"]);
    assert!(ok, "{out}");
    let hosts = std::fs::read_to_string(&net.files.hosts).unwrap();
    assert!(hosts.starts_with("127.0.0.1\tlocalhost\n"), "{hosts}");

    let joined = manager
        .setup(&request(
            &joiner,
            "guest",
            format!("container:{owner}").parse().unwrap(),
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(joined.netns.as_deref(), Some(netns.as_path()));
    assert_eq!(joined.files, net.files);
    let err = manager
        .setup(&request(
            "orphan",
            "o",
            NetworkMode::Container("missing".into()),
            vec![],
        ))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::NotFound, "{err}");

    // The joiner's teardown leaves the owner's namespace alone.
    manager.teardown(&joiner).await.unwrap();
    assert!(netns.exists());
    manager.teardown(&owner).await.unwrap();
    assert!(!netns.exists());

    let host = manager
        .setup(&request(
            &container_id("none", 3),
            "h",
            NetworkMode::Host,
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(host.netns, None);
    manager.teardown(&container_id("none", 3)).await.unwrap();
    assert_nothing_left(dir.path(), &[], &[owner, joiner]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_subnets_are_refused_and_the_default_network_comes_on_first_use() {
    let Some((dir, manager)) = manager("dflt") else {
        return;
    };
    let mut cleanup = Cleanup::new(&manager);
    cleanup
        .bridges
        .push(config(dir.path(), "dflt").default_bridge);
    let first = manager
        .create_network(&user_network("ovl", "10.213.3.0/24"))
        .await
        .unwrap();
    cleanup.networks.push(first.id.clone());
    let err = manager
        .create_network(&user_network("ovl2", "10.213.3.128/25"))
        .await
        .unwrap_err();
    assert_eq!(err.kind, ErrorKind::AlreadyExists);
    assert!(
        err.message.contains("overlaps subnet 10.213.3.0/24"),
        "{err}"
    );
    manager.remove_network(&first.id).await.unwrap();

    assert!(manager
        .networks()
        .unwrap()
        .iter()
        .all(|n| n.name != DEFAULT_NETWORK));
    let id = container_id("dflt", 1);
    cleanup.containers.push(id.clone());
    let net = manager
        .setup(&request(&id, "plain", NetworkMode::default(), vec![]))
        .await
        .unwrap();
    let default = manager.network(DEFAULT_NETWORK).await.unwrap();
    assert_eq!(default.bridge, config(dir.path(), "dflt").default_bridge);
    assert_eq!(default.id.len(), 64);
    let attachment = &net.attachments[0];
    assert_eq!(attachment.network_name, DEFAULT_NETWORK);
    assert!(default.subnet.contains(&attachment.ip));
    let (ok, out) = in_netns(
        net.netns.as_ref().unwrap(),
        &[
            "busybox",
            "ping",
            "-c1",
            "-W2",
            &default.gateway.to_string(),
        ],
    );
    assert!(ok, "gateway {} unreachable: {out}", default.gateway);

    manager.teardown(&id).await.unwrap();
    // The default network is never removed by berthd; the test drops its
    // bridge and its rules.
    link::delete_link(&default.bridge).await.unwrap();
    berthd::network::firewall::remove_rules(&default).await;
    assert_nothing_left(
        dir.path(),
        &[&default.bridge, &first.bridge],
        &[default.subnet.to_string(), id],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cleanup_after_a_restart_releases_what_vanished_containers_held() {
    let Some((dir, manager)) = manager("gone") else {
        return;
    };
    let network = manager
        .create_network(&user_network("gone", "10.213.4.0/24"))
        .await
        .unwrap();
    let (kept, vanished) = (container_id("gone", 1), container_id("gone", 2));
    let mut cleanup = Cleanup::new(&manager);
    cleanup.containers = vec![kept.clone(), vanished.clone()];
    cleanup.networks.push(network.id.clone());
    let mode = NetworkMode::Network(network.name.clone());
    let kept_net = manager
        .setup(&request(&kept, "kept", mode.clone(), vec![]))
        .await
        .unwrap();
    let port = free_port();
    let vanished_net = manager
        .setup(&request(
            &vanished,
            "vanished",
            mode,
            vec![PortMapping {
                host_ip: Ipv4Addr::UNSPECIFIED,
                host_port: port,
                container_port: 80,
                protocol: Protocol::Tcp,
            }],
        ))
        .await
        .unwrap();
    // A lease nobody holds, as a crash between ADD and the record leaves.
    let stray = dir
        .path()
        .join("network/ipam")
        .join(&network.id)
        .join("10.213.4.200");
    std::fs::write(&stray, format!("{}\r\neth0", container_id("gone", 9))).unwrap();

    // berthd restarts: a new manager over the same state.
    cleanup.manager = None;
    drop(manager);
    let db = Db::open(dir.path().join("metadata.redb")).unwrap();
    let manager = Arc::new(NetworkManager::open(db, config(dir.path(), "gone")).unwrap());
    cleanup.manager = Some(Arc::clone(&manager));
    let live: HashSet<String> = [kept.clone()].into();
    let cleaned = manager.cleanup(&live).await.unwrap();
    assert_eq!(cleaned, std::slice::from_ref(&vanished));
    assert!(!stray.exists(), "stale lease kept");
    assert!(!vanished_net.netns.unwrap().exists());
    assert!(!vanished_net.files.hosts.exists());
    assert!(iptables_lines_mentioning(std::slice::from_ref(&vanished)).is_empty());
    let hosts = std::fs::read_to_string(&kept_net.files.hosts).unwrap();
    assert!(!hosts.contains("vanished"), "{hosts}");
    assert_eq!(manager.endpoints(&network).unwrap().len(), 1);

    manager.teardown(&kept).await.unwrap();
    manager.remove_network(&network.id).await.unwrap();
    assert_nothing_left(
        dir.path(),
        &[&network.bridge],
        &[
            network.subnet.to_string(),
            kept,
            vanished,
            format!("--dport {port}"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_failure_surfaces_its_message_and_leaves_nothing() {
    let Some((dir, manager)) = manager("full") else {
        return;
    };
    // A /30 has two host addresses: the gateway's and one container's.
    let network = manager
        .create_network(&user_network("full", "10.213.5.0/30"))
        .await
        .unwrap();
    let (first, second) = (container_id("full", 1), container_id("full", 2));
    let mut cleanup = Cleanup::new(&manager);
    cleanup.containers = vec![first.clone(), second.clone()];
    cleanup.networks.push(network.id.clone());
    let mode = NetworkMode::Network(network.name.clone());
    manager
        .setup(&request(&first, "first", mode.clone(), vec![]))
        .await
        .unwrap();
    let err = manager
        .setup(&request(&second, "second", mode, vec![]))
        .await
        .unwrap_err();
    assert!(
        err.message.contains("no IP addresses available"),
        "host-local's message must reach the caller: {err}"
    );
    assert!(err.message.contains(&second), "{err}");
    let netns = manager.netns().path(&second).unwrap();
    assert!(!netns.exists(), "the failed container's netns is left");
    assert!(!manager.name_files(&second).unwrap().hosts.exists());
    assert_eq!(manager.endpoints(&network).unwrap().len(), 1);

    manager.teardown(&first).await.unwrap();
    manager.remove_network(&network.name).await.unwrap();
    assert_nothing_left(
        dir.path(),
        &[&network.bridge],
        &[network.subnet.to_string(), first, second],
    );
}
