//! berthd's configuration: a TOML file shaped like containerd's, overridden
//! by the command-line flags containerd takes.
//!
//! ```toml
//! root = "/var/lib/berth"        # persistent data (content, metadata, snapshots)
//! state = "/run/berth"           # runtime state, gone at reboot
//!
//! [grpc]
//! address = "/run/berth/berthd.sock"
//!
//! [debug]
//! level = "info"                 # error, warn, info, debug, trace
//!
//! [docker]
//! address = "/run/berth/docker.sock"   # "" serves no Docker API
//! cgroup_parent = "/moby"        # containers' cgroups: <parent>/<id> (dockerd's --cgroup-parent)
//!
//! [network]
//! bridge = "berth0"              # the default network's bridge device
//! subnet = "172.31.0.0/16"       # its subnet (default: the first free one)
//!
//! [runtimes."io.containerd.kata.v2"]     # any runtime name a container asks for
//! shim = "containerd-shim-kata-v2"       # the shim serving it (on PATH, or a path)
//! ```
//!
//! Without a `[runtimes]` entry, `io.containerd.runc.v2` and
//! `io.containerd.berth.v2` go to `containerd-shim-berth-v2`, and any other
//! `io.containerd.NAME.vN` to `containerd-shim-NAME-vN` on PATH.
//!
//! Every key is optional; unknown keys are refused so a typo is not
//! silently ignored.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// Where berthd looks for its configuration when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/berth/berthd.toml";
pub const DEFAULT_ROOT: &str = "/var/lib/berth";
pub const DEFAULT_STATE: &str = "/run/berth";
pub const DEFAULT_ADDRESS: &str = "/run/berth/berthd.sock";
pub const DEFAULT_DOCKER_ADDRESS: &str = "/run/berth/docker.sock";
pub const DEFAULT_LOG_LEVEL: &str = "info";
/// The cgroup Docker containers' cgroups go under unless configured.
pub const DEFAULT_DOCKER_CGROUP_PARENT: &str = "/moby";

/// The settled configuration the daemon runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub root: PathBuf,
    pub state: PathBuf,
    /// The gRPC socket; the ttrpc socket for shims is this plus `.ttrpc`.
    pub address: PathBuf,
    /// The Docker API socket; `None` serves no Docker API.
    pub docker_address: Option<PathBuf>,
    /// The cgroup Docker containers' cgroups go under (`<parent>/<id>`)
    /// unless a container names its own; absolute, "" for the root.
    pub docker_cgroup_parent: String,
    pub log_level: String,
    /// Runtime name -> shim binary, over the defaults (see the module doc).
    pub runtimes: BTreeMap<String, String>,
    /// The default network's bridge device.
    pub network_bridge: String,
    /// The default network's subnet; `None` picks the first free one.
    pub network_subnet: Option<ipnet::Ipv4Net>,
}

/// The default network's bridge device unless configured.
pub const DEFAULT_BRIDGE: &str = "berth0";

impl Default for Config {
    fn default() -> Self {
        Config {
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            address: DEFAULT_ADDRESS.into(),
            docker_address: Some(DEFAULT_DOCKER_ADDRESS.into()),
            docker_cgroup_parent: DEFAULT_DOCKER_CGROUP_PARENT.into(),
            log_level: DEFAULT_LOG_LEVEL.into(),
            runtimes: BTreeMap::new(),
            network_bridge: DEFAULT_BRIDGE.into(),
            network_subnet: None,
        }
    }
}

/// What the command line may override; `None` keeps the file's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub address: Option<PathBuf>,
    pub docker_address: Option<PathBuf>,
    pub log_level: Option<String>,
}

/// The file as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    /// Accepted for containerd-style files; only version 2 is known.
    version: Option<u32>,
    root: Option<PathBuf>,
    state: Option<PathBuf>,
    #[serde(default)]
    grpc: Section,
    #[serde(default)]
    debug: DebugSection,
    #[serde(default)]
    docker: DockerSection,
    #[serde(default)]
    network: NetworkSection,
    #[serde(default)]
    runtimes: BTreeMap<String, RuntimeSection>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct NetworkSection {
    bridge: Option<String>,
    subnet: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuntimeSection {
    shim: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Section {
    address: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DockerSection {
    address: Option<PathBuf>,
    cgroup_parent: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DebugSection {
    level: Option<String>,
}

impl Config {
    /// Reads the configuration: `explicit` (from `--config`) must exist;
    /// without it, [`DEFAULT_CONFIG`] is read if present. Then applies the
    /// overrides and checks the result.
    pub fn load(explicit: Option<&Path>, overrides: Overrides) -> Result<Config> {
        let file = match explicit {
            Some(path) => read_file(path)?,
            None => match read_file(Path::new(DEFAULT_CONFIG)) {
                Err(err) if err.kind == crate::ErrorKind::NotFound => File::default(),
                other => other?,
            },
        };
        let defaults = Config::default();
        let config = Config {
            root: overrides.root.or(file.root).unwrap_or(defaults.root),
            state: overrides.state.or(file.state).unwrap_or(defaults.state),
            address: overrides
                .address
                .or(file.grpc.address)
                .unwrap_or(defaults.address),
            docker_address: match overrides.docker_address.or(file.docker.address) {
                Some(path) if path.as_os_str().is_empty() => None,
                Some(path) => Some(path),
                None => defaults.docker_address,
            },
            docker_cgroup_parent: crate::docker::containers::spec::cgroup_parent(
                &file
                    .docker
                    .cgroup_parent
                    .unwrap_or(defaults.docker_cgroup_parent),
            )
            .map_err(|err| err.context("docker.cgroup_parent"))?,
            log_level: overrides
                .log_level
                .or(file.debug.level)
                .unwrap_or(defaults.log_level),
            runtimes: file
                .runtimes
                .into_iter()
                .map(|(name, section)| (name, section.shim))
                .collect(),
            network_bridge: file.network.bridge.unwrap_or(defaults.network_bridge),
            network_subnet: match file.network.subnet {
                Some(text) => Some(
                    text.parse()
                        .map_err(|err| Error::invalid(format!("network.subnet {text:?}: {err}")))?,
                ),
                None => None,
            },
        };
        config.validate()?;
        Ok(config)
    }

    /// The ttrpc socket shims send their events to.
    pub fn ttrpc_address(&self) -> PathBuf {
        let mut path = self.address.clone().into_os_string();
        path.push(".ttrpc");
        path.into()
    }

    fn validate(&self) -> Result<()> {
        for (what, path) in [
            ("root", &self.root),
            ("state", &self.state),
            ("address", &self.address),
        ] {
            if !path.is_absolute() {
                return Err(Error::invalid(format!(
                    "{what} {}: must be an absolute path",
                    path.display()
                )));
            }
        }
        for (name, shim) in &self.runtimes {
            if name.is_empty() || shim.is_empty() {
                return Err(Error::invalid(format!(
                    "runtime {name:?}: both the name and its shim must be set (shim {shim:?})"
                )));
            }
        }
        let bridge = &self.network_bridge;
        let bridge_ok = !bridge.is_empty()
            && bridge.len() < 16
            && bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !bridge_ok {
            return Err(Error::invalid(format!(
                "network.bridge {bridge:?}: an interface name of 1-15 letters, digits, '-', '_' or '.'"
            )));
        }
        if !["error", "warn", "info", "debug", "trace"].contains(&self.log_level.as_str()) {
            return Err(Error::invalid(format!(
                "log level {:?}: must be one of error, warn, info, debug, trace",
                self.log_level
            )));
        }
        Ok(())
    }
}

fn read_file(path: &Path) -> Result<File> {
    let text = fs::read_to_string(path).map_err(|err| {
        let kind = err.kind();
        let err = Error::from(err).context(format!("config {}", path.display()));
        if kind == io::ErrorKind::NotFound {
            Error::not_found(err.message)
        } else {
            err
        }
    })?;
    let file: File = toml::from_str(&text)
        .map_err(|e| Error::invalid(format!("config {}: {e}", path.display())))?;
    if let Some(version) = file.version.filter(|v| *v != 2) {
        return Err(Error::invalid(format!(
            "config {}: version {version} is not supported (only 2)",
            path.display()
        )));
    }
    Ok(file)
}

#[cfg(test)]
impl Config {
    /// The configuration of a daemon living in `dir` (root, state and an
    /// empty config file there), serving on `address`: for tests.
    pub(crate) fn in_dir(dir: &Path, address: PathBuf) -> Config {
        let file = dir.join("berthd.toml");
        std::fs::write(&file, "").expect("test config file");
        Config::load(
            Some(&file),
            Overrides {
                root: Some(dir.join("root")),
                state: Some(dir.join("state")),
                address: Some(address),
                ..Default::default()
            },
        )
        .expect("test config")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn the_docker_cgroup_parent_is_checked_and_made_absolute() {
        let config = Config::load(Some(write("").path()), Overrides::default()).unwrap();
        assert_eq!(config.docker_cgroup_parent, "/moby");
        for (given, settled) in [("berth/ctr/", "/berth/ctr"), ("/", ""), ("//a", "/a")] {
            let file = write(&format!("[docker]\ncgroup_parent = \"{given}\"\n"));
            let config = Config::load(Some(file.path()), Overrides::default()).unwrap();
            assert_eq!(config.docker_cgroup_parent, settled, "{given}");
        }
        let file = write("[docker]\ncgroup_parent = \"/a/../b\"\n");
        let err = Config::load(Some(file.path()), Overrides::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(
            err.message.contains("docker.cgroup_parent")
                && err.message.contains("invalid cgroup parent \"/a/../b\""),
            "{}",
            err.message
        );
    }

    #[test]
    fn file_values_then_flags_win() {
        let file = write(
            r#"
            version = 2
            root = "/srv/berth"
            state = "/run/b"
            [grpc]
            address = "/run/b/b.sock"
            [debug]
            level = "debug"
            [docker]
            address = ""
            [runtimes."io.containerd.runc.v2"]
            shim = "/usr/bin/containerd-shim-runc-v2"
            "#,
        );
        let config = Config::load(Some(file.path()), Overrides::default()).unwrap();
        assert_eq!(config.root, PathBuf::from("/srv/berth"));
        assert_eq!(config.address, PathBuf::from("/run/b/b.sock"));
        assert_eq!(config.ttrpc_address(), PathBuf::from("/run/b/b.sock.ttrpc"));
        assert_eq!(config.docker_address, None);
        assert_eq!(config.log_level, "debug");
        assert_eq!(
            config.runtimes["io.containerd.runc.v2"],
            "/usr/bin/containerd-shim-runc-v2"
        );

        let config = Config::load(
            Some(file.path()),
            Overrides {
                root: Some("/tmp/r".into()),
                log_level: Some("warn".into()),
                docker_address: Some("/tmp/d.sock".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(config.root, PathBuf::from("/tmp/r"));
        assert_eq!(config.state, PathBuf::from("/run/b"));
        assert_eq!(config.log_level, "warn");
        assert_eq!(config.docker_address, Some(PathBuf::from("/tmp/d.sock")));
    }

    #[test]
    fn a_missing_explicit_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.toml");
        let err = Config::load(Some(&missing), Overrides::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::NotFound);
        assert!(err.message.contains("nope.toml"), "{}", err.message);
    }

    #[test]
    fn typos_bad_levels_and_relative_paths_are_refused() {
        let typo = write("[grpc]\naddres = \"/x\"\n");
        let err = Config::load(Some(typo.path()), Overrides::default()).unwrap_err();
        assert_eq!(err.kind, ErrorKind::InvalidArgument);
        assert!(err.message.contains("addres"), "{}", err.message);

        let empty = write("");
        for overrides in [
            Overrides {
                log_level: Some("loud".into()),
                ..Default::default()
            },
            Overrides {
                root: Some("relative".into()),
                ..Default::default()
            },
        ] {
            let err = Config::load(Some(empty.path()), overrides).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument);
        }
    }

    #[test]
    fn runtime_entries_need_a_shim() {
        for text in [
            "[runtimes.\"io.containerd.x.v2\"]\nbinary = \"/s\"\n",
            "[runtimes.\"io.containerd.x.v2\"]\n",
            "[runtimes.\"io.containerd.x.v2\"]\nshim = \"\"\n",
        ] {
            let file = write(text);
            let err = Config::load(Some(file.path()), Overrides::default()).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidArgument, "{text}");
        }
    }

    #[test]
    fn an_empty_file_gives_the_defaults() {
        let empty = write("");
        let config = Config::load(Some(empty.path()), Overrides::default()).unwrap();
        assert_eq!(config, Config::default());
    }
}
