//! Running CNI plugins as the CNI specification (1.0.0) prescribes.
//!
//! A plugin is an executable found in the plugin directory by its `type`.
//! It gets the operation and the container through the environment
//! (`CNI_COMMAND`, `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`,
//! `CNI_PATH`), its network configuration as JSON on stdin, and answers
//! with a result (ADD) or nothing (DEL, CHECK) on stdout; on failure it
//! exits non-zero with an error document `{ code, msg, details }`.
//!
//! A configuration list runs its plugins in order for ADD and CHECK, each
//! handed the previous one's result as `prevResult`, and in reverse order
//! for DEL. Keys of `runtimeConfig` reach only the plugins that declare the
//! matching capability (`portMappings` for portmap).

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde::Deserialize;
use serde_json::{Map, Value};
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::{Error, Result};

/// How long one plugin call may take.
const PLUGIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The CNI version of the configurations berthd writes.
pub const CNI_VERSION: &str = "1.0.0";

/// A CNI operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    Add,
    Del,
    Check,
}

impl CniCommand {
    /// The value of `CNI_COMMAND`.
    pub fn as_str(self) -> &'static str {
        match self {
            CniCommand::Add => "ADD",
            CniCommand::Del => "DEL",
            CniCommand::Check => "CHECK",
        }
    }
}

impl fmt::Display for CniCommand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The container side of an invocation.
#[derive(Debug, Clone, Copy)]
pub struct Invocation<'a> {
    pub container_id: &'a str,
    /// The network namespace; may no longer exist on DEL.
    pub netns: &'a Path,
    /// The interface name inside the namespace.
    pub ifname: &'a str,
}

/// The error document a plugin prints when it fails.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct PluginError {
    #[serde(default)]
    pub code: u32,
    #[serde(default)]
    pub msg: String,
    #[serde(default)]
    pub details: String,
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        write!(f, " (CNI error code {})", self.code)
    }
}

/// Turns a failed plugin's output into an error naming the plugin and the
/// operation. The error document is read from stdout (where the spec puts
/// it), else from stderr; raw text is kept when neither parses.
pub fn plugin_failure(plugin: &str, command: CniCommand, stdout: &[u8], stderr: &[u8]) -> Error {
    let parsed = serde_json::from_slice::<PluginError>(stdout)
        .or_else(|_| serde_json::from_slice::<PluginError>(stderr));
    let what = match parsed {
        Ok(error) => error.to_string(),
        Err(_) => {
            let text = if stdout.iter().any(|b| !b.is_ascii_whitespace()) {
                stdout
            } else {
                stderr
            };
            let text = String::from_utf8_lossy(text).trim().to_owned();
            if text.is_empty() {
                "failed without a message".to_owned()
            } else {
                text
            }
        }
    };
    Error::internal(format!("CNI plugin {plugin} {command}: {what}"))
}

/// Runs plugins from one directory.
#[derive(Debug, Clone)]
pub struct CniRunner {
    plugin_dir: PathBuf,
}

impl CniRunner {
    /// Plugins are looked up in `plugin_dir` (Debian's: `/usr/lib/cni`).
    pub fn new(plugin_dir: impl Into<PathBuf>) -> Self {
        CniRunner {
            plugin_dir: plugin_dir.into(),
        }
    }

    /// Runs one plugin with a complete network configuration; the parsed
    /// stdout for ADD, `Value::Null` otherwise.
    pub async fn exec(
        &self,
        command: CniCommand,
        invocation: &Invocation<'_>,
        config: &Value,
    ) -> Result<Value> {
        let plugin = config
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::invalid("CNI configuration without a \"type\""))?;
        if plugin.is_empty() || plugin.contains('/') || plugin.starts_with('.') {
            return Err(Error::invalid(format!(
                "CNI plugin type {plugin:?}: not a plain file name"
            )));
        }
        let binary = self.plugin_dir.join(plugin);
        let stdin = serde_json::to_vec(config)
            .map_err(|err| Error::internal(format!("CNI plugin {plugin}: encode config: {err}")))?;
        let mut child = Command::new(&binary)
            .env("CNI_COMMAND", command.as_str())
            .env("CNI_CONTAINERID", invocation.container_id)
            .env("CNI_NETNS", invocation.netns)
            .env("CNI_IFNAME", invocation.ifname)
            .env("CNI_PATH", &self.plugin_dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|err| {
                Error::from(err).context(format!("run CNI plugin {}", binary.display()))
            })?;
        if let Some(mut pipe) = child.stdin.take() {
            pipe.write_all(&stdin).await.map_err(|err| {
                Error::from(err).context(format!("CNI plugin {plugin}: write config"))
            })?;
        }
        // A plugin stuck (on the xtables lock, say) must not hold every
        // network operation behind it: it is killed when the wait is dropped.
        let output = tokio::time::timeout(PLUGIN_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| {
                Error::unavailable(format!(
                    "CNI plugin {plugin} ({}): no answer after {} s",
                    command.as_str(),
                    PLUGIN_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|err| Error::from(err).context(format!("CNI plugin {plugin}: wait")))?;
        if !output.status.success() {
            return Err(plugin_failure(
                plugin,
                command,
                &output.stdout,
                &output.stderr,
            ));
        }
        if command != CniCommand::Add {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&output.stdout).map_err(|err| {
            Error::internal(format!(
                "CNI plugin {plugin} {command}: result is not JSON ({err}): {}",
                String::from_utf8_lossy(&output.stdout).trim()
            ))
        })
    }

    /// ADD over a configuration list: each plugin in order, each given the
    /// previous result. Returns the last result. On failure, the plugins
    /// already added are deleted again (best effort) so nothing is left.
    pub async fn add_list(
        &self,
        list: &Value,
        invocation: &Invocation<'_>,
        runtime_config: &Value,
    ) -> Result<Value> {
        let plugins = plugins_of(list)?;
        let mut previous: Option<Value> = None;
        for (done, plugin) in plugins.iter().enumerate() {
            let config = plugin_config(list, plugin, previous.as_ref(), runtime_config)?;
            match self.exec(CniCommand::Add, invocation, &config).await {
                Ok(result) => previous = Some(result),
                Err(err) => {
                    // Undo in reverse; the ADD error is what the caller needs.
                    for added in plugins[..=done].iter().rev() {
                        if let Ok(config) =
                            plugin_config(list, added, previous.as_ref(), runtime_config)
                        {
                            let _ = self.exec(CniCommand::Del, invocation, &config).await;
                        }
                    }
                    return Err(err);
                }
            }
        }
        previous.ok_or_else(|| Error::invalid("CNI configuration list without plugins"))
    }

    /// DEL over a configuration list, in reverse order, each plugin given
    /// the ADD result. Every plugin runs even if one fails; the first
    /// failure is returned.
    pub async fn del_list(
        &self,
        list: &Value,
        invocation: &Invocation<'_>,
        runtime_config: &Value,
        add_result: Option<&Value>,
    ) -> Result<()> {
        let mut first_error = None;
        for plugin in plugins_of(list)?.iter().rev() {
            let config = plugin_config(list, plugin, add_result, runtime_config)?;
            if let Err(err) = self.exec(CniCommand::Del, invocation, &config).await {
                first_error.get_or_insert(err);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// CHECK over a configuration list, in order, each plugin given the ADD
    /// result: fails when the container's networking is not as ADD left it.
    pub async fn check_list(
        &self,
        list: &Value,
        invocation: &Invocation<'_>,
        runtime_config: &Value,
        add_result: &Value,
    ) -> Result<()> {
        for plugin in plugins_of(list)? {
            let config = plugin_config(list, plugin, Some(add_result), runtime_config)?;
            self.exec(CniCommand::Check, invocation, &config).await?;
        }
        Ok(())
    }
}

fn plugins_of(list: &Value) -> Result<&Vec<Value>> {
    list.get("plugins")
        .and_then(Value::as_array)
        .ok_or_else(|| Error::invalid("CNI configuration list without a \"plugins\" array"))
}

/// The configuration one plugin of a list is run with: its own object plus
/// the list's `name` and `cniVersion`, the previous result, and the
/// `runtimeConfig` keys it declared capabilities for.
pub fn plugin_config(
    list: &Value,
    plugin: &Value,
    previous: Option<&Value>,
    runtime_config: &Value,
) -> Result<Value> {
    let mut config: Map<String, Value> = plugin
        .as_object()
        .cloned()
        .ok_or_else(|| Error::invalid("CNI plugin configuration is not an object"))?;
    for key in ["name", "cniVersion"] {
        if let Some(value) = list.get(key) {
            config.insert(key.to_owned(), value.clone());
        }
    }
    if let Some(previous) = previous {
        config.insert("prevResult".to_owned(), previous.clone());
    }
    let capabilities = plugin.get("capabilities").and_then(Value::as_object);
    let granted: Map<String, Value> = runtime_config
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(key, _)| {
            capabilities
                .and_then(|caps| caps.get(key.as_str()))
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    if !granted.is_empty() {
        config.insert("runtimeConfig".to_owned(), Value::Object(granted));
    }
    Ok(Value::Object(config))
}

/// The parts of an ADD result berthd keeps: the container interface's
/// address, prefix, gateway and MAC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddResult {
    pub ip: std::net::Ipv4Addr,
    pub prefix_len: u8,
    pub gateway: Option<std::net::Ipv4Addr>,
    pub mac: String,
}

#[derive(Deserialize)]
struct ResultDoc {
    #[serde(default)]
    interfaces: Vec<InterfaceDoc>,
    #[serde(default)]
    ips: Vec<IpDoc>,
}

#[derive(Deserialize)]
struct InterfaceDoc {
    name: String,
    #[serde(default)]
    mac: String,
    #[serde(default)]
    sandbox: String,
}

#[derive(Deserialize)]
struct IpDoc {
    address: String,
    #[serde(default)]
    gateway: Option<std::net::IpAddr>,
    #[serde(default)]
    interface: Option<usize>,
}

/// Reads the IPv4 address given to `ifname` inside the container from a
/// CNI 1.0 result.
pub fn parse_add_result(result: &Value, ifname: &str) -> Result<AddResult> {
    let doc: ResultDoc = serde_json::from_value(result.clone())
        .map_err(|err| Error::internal(format!("CNI result: unexpected shape: {err}")))?;
    let index = doc
        .interfaces
        .iter()
        .position(|i| i.name == ifname && !i.sandbox.is_empty());
    let mac = index
        .and_then(|i| doc.interfaces.get(i))
        .map(|i| i.mac.clone())
        .unwrap_or_default();
    for ip in &doc.ips {
        if index.is_some() && ip.interface.is_some() && ip.interface != index {
            continue;
        }
        let Ok(net) = ip.address.parse::<ipnet::IpNet>() else {
            return Err(Error::internal(format!(
                "CNI result: address {:?} is not CIDR notation",
                ip.address
            )));
        };
        if let ipnet::IpNet::V4(net) = net {
            let gateway = match ip.gateway {
                Some(std::net::IpAddr::V4(gateway)) => Some(gateway),
                _ => None,
            };
            return Ok(AddResult {
                ip: net.addr(),
                prefix_len: net.prefix_len(),
                gateway,
                mac,
            });
        }
    }
    Err(Error::internal(format!(
        "CNI result: no IPv4 address for interface {ifname}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn plugin_error_surfaces_message_details_and_code() {
        let stdout = br#"{"cniVersion":"1.0.0","code":11,"msg":"failed to allocate for range 0","details":"no IP addresses available in range set: 10.1.0.1-10.1.0.2"}"#;
        let err = plugin_failure("host-local", CniCommand::Add, stdout, b"");
        assert_eq!(
            err.message,
            "CNI plugin host-local ADD: failed to allocate for range 0: no IP addresses \
             available in range set: 10.1.0.1-10.1.0.2 (CNI error code 11)"
        );
        let err = plugin_failure("bridge", CniCommand::Del, b"", b"panic: boom\n");
        assert_eq!(err.message, "CNI plugin bridge DEL: panic: boom");
        let err = plugin_failure("bridge", CniCommand::Check, b"", b"");
        assert!(err.message.ends_with("failed without a message"), "{err}");
    }

    #[test]
    fn plugin_config_merges_list_previous_and_granted_capabilities() {
        let list = json!({"cniVersion": "1.0.0", "name": "n1", "plugins": []});
        let portmap = json!({"type": "portmap", "capabilities": {"portMappings": true}});
        let bridge = json!({"type": "bridge"});
        let runtime = json!({"portMappings": [{"hostPort": 8080}], "bandwidth": {}});
        let previous = json!({"cniVersion": "1.0.0", "ips": []});
        let config = plugin_config(&list, &portmap, Some(&previous), &runtime).unwrap();
        assert_eq!(config["name"], "n1");
        assert_eq!(config["cniVersion"], "1.0.0");
        assert_eq!(config["prevResult"], previous);
        assert_eq!(
            config["runtimeConfig"],
            json!({"portMappings": [{"hostPort": 8080}]})
        );
        let config = plugin_config(&list, &bridge, None, &runtime).unwrap();
        assert!(config.get("runtimeConfig").is_none());
        assert!(config.get("prevResult").is_none());
    }

    #[test]
    fn add_result_gives_the_sandbox_interface_address() {
        let result = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "br-0123", "mac": "aa:aa:aa:aa:aa:aa"},
                {"name": "veth1", "mac": "bb:bb:bb:bb:bb:bb"},
                {"name": "eth0", "mac": "02:42:ac:11:00:02", "sandbox": "/run/netns/x"}
            ],
            "ips": [{"interface": 2, "address": "10.88.0.5/16", "gateway": "10.88.0.1"}]
        });
        let parsed = parse_add_result(&result, "eth0").unwrap();
        assert_eq!(parsed.ip, std::net::Ipv4Addr::new(10, 88, 0, 5));
        assert_eq!(parsed.prefix_len, 16);
        assert_eq!(parsed.gateway, Some(std::net::Ipv4Addr::new(10, 88, 0, 1)));
        assert_eq!(parsed.mac, "02:42:ac:11:00:02");
        let err = parse_add_result(&json!({"ips": []}), "eth0").unwrap_err();
        assert!(err.message.contains("no IPv4 address"), "{err}");
    }
}
