//! OCI runtime specs for containers, built the way containerd's client
//! builds them: containerd's Linux defaults ([`defaults`]), then the
//! image's config (environment, working directory, user, entrypoint and
//! command), then the caller's options, and last the default seccomp
//! profile ([`seccomp`]) for the final capability set.
//!
//! ```no_run
//! # fn main() -> berthd::Result<()> {
//! use berthd::oci::{SpecBuilder, UserDb};
//! let image_config = oci_spec::image::Config::default();
//! let users = UserDb::from_rootfs(std::path::Path::new("/mnt/rootfs"))?;
//! let spec = SpecBuilder::new("default", "web")?
//!     .image_config(&image_config, &users)?
//!     .args(vec!["sh".into(), "-c".into(), "echo hi".into()])
//!     .env(&["DEBUG=1".to_string()])?
//!     .memory_limit(64 << 20)?
//!     .cpus(0.5)?
//!     .build()?;
//! let bytes = berthd::oci::to_json(&spec)?; // Any { SPEC_TYPE_URL, bytes }
//! # Ok(()) }
//! ```
//!
//! Nothing here talks to a daemon or reads more than the user databases
//! the caller hands over: the CLI (`berthctl run`) and the Docker API
//! share it.

pub mod defaults;
pub mod mounts;
pub mod seccomp;
pub mod user;

#[cfg(test)]
mod tests;

use oci_spec::runtime::{LinuxMemory, LinuxNamespaceType, Mount, Spec};

pub use defaults::{default_spec, DEFAULT_CAPABILITIES};
pub use mounts::parse_mount;
pub use seccomp::{default_profile, Target, TargetArch};
pub use user::{ResolvedUser, UserDb};

use crate::{Error, Result};

/// The type URL containerd gives a container's spec in its `Any` (the
/// value is the spec's JSON).
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// The CFS period for `cpus` (100 ms, in microseconds), as ctr uses.
pub const CFS_PERIOD_US: u64 = 100_000;

/// The smallest CFS quota the kernel takes (1 ms).
const MIN_CFS_QUOTA_US: i64 = 1_000;

/// The spec's JSON, as stored in a container record.
pub fn to_json(spec: &Spec) -> Result<Vec<u8>> {
    serde_json::to_vec(spec).map_err(|e| Error::internal(format!("encoding the spec: {e}")))
}

/// The CFS quota and period that give `cpus` CPUs' worth of time.
pub fn cfs_quota(cpus: f64) -> Result<(i64, u64)> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err(Error::invalid(format!(
            "cpus {cpus}: must be a positive number"
        )));
    }
    let quota = (cpus * CFS_PERIOD_US as f64).round();
    if quota < MIN_CFS_QUOTA_US as f64 || quota > i64::MAX as f64 {
        return Err(Error::invalid(format!(
            "cpus {cpus}: out of range (at least 0.01)"
        )));
    }
    Ok((quota as i64, CFS_PERIOD_US))
}

/// `KEY=VALUE` entries set over `env`: a key already there is replaced in
/// place, a new one appended; a bare `KEY` (no `=`) removes the key.
pub fn merge_env(env: &mut Vec<String>, overrides: &[String]) {
    for entry in overrides {
        let key = entry.split_once('=').map_or(entry.as_str(), |(k, _)| k);
        let same_key = |existing: &String| {
            existing
                .split_once('=')
                .map_or(existing.as_str(), |(k, _)| k)
                == key
        };
        if !entry.contains('=') {
            env.retain(|existing| !same_key(existing));
        } else if let Some(slot) = env.iter_mut().find(|e| same_key(e)) {
            slot.clone_from(entry);
        } else {
            env.push(entry.clone());
        }
    }
}

/// Checks one `KEY=VALUE` environment entry (the key must not be empty).
pub fn check_env(var: &str) -> Result<()> {
    match var.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(()),
        _ => Err(Error::invalid(format!(
            "environment variable {var:?}: expected KEY=VALUE"
        ))),
    }
}

/// Builds one container's spec, step by step (see the module docs).
#[derive(Debug, Clone)]
pub struct SpecBuilder {
    spec: Spec,
    seccomp: bool,
    target: Target,
}

impl SpecBuilder {
    /// containerd's defaults for container `id` in `namespace`.
    pub fn new(namespace: &str, id: &str) -> Result<SpecBuilder> {
        Ok(SpecBuilder {
            spec: default_spec(namespace, id)?,
            seccomp: true,
            target: Target::host(),
        })
    }

    fn process(&mut self) -> &mut oci_spec::runtime::Process {
        self.spec.process_mut().get_or_insert_with(Default::default)
    }

    fn env_mut(&mut self) -> &mut Vec<String> {
        self.process().env_mut().get_or_insert_with(Vec::new)
    }

    /// Applies an image's config: its `Env` over the default `PATH`, its
    /// `WorkingDir`, its `Entrypoint` + `Cmd` as arguments, and its `User`
    /// resolved in `users` (the image's `/etc/passwd` and `/etc/group`),
    /// with the groups that list the user as additional groups.
    pub fn image_config(
        mut self,
        config: &oci_spec::image::Config,
        users: &UserDb,
    ) -> Result<SpecBuilder> {
        if let Some(env) = config.env() {
            merge_env(self.env_mut(), env);
        }
        if let Some(dir) = config.working_dir().as_deref().filter(|d| !d.is_empty()) {
            self.process().set_cwd(dir.into());
        }
        let args: Vec<String> = config
            .entrypoint()
            .iter()
            .flatten()
            .chain(config.cmd().iter().flatten())
            .cloned()
            .collect();
        self.process().set_args(Some(args));
        let resolved = users.resolve(config.user().as_deref().unwrap_or(""))?;
        Ok(self.user(resolved))
    }

    /// Runs the process as `user`.
    pub fn user(mut self, user: ResolvedUser) -> SpecBuilder {
        let spec_user = self.process().user_mut();
        spec_user.set_uid(user.uid);
        spec_user.set_gid(user.gid);
        spec_user.set_additional_gids(Some(user.additional_gids));
        self
    }

    /// Replaces the arguments (the image's entrypoint and command alike,
    /// as `ctr run IMAGE ID ARGS...` does).
    pub fn args(mut self, args: Vec<String>) -> SpecBuilder {
        self.process().set_args(Some(args));
        self
    }

    /// Sets environment variables (`KEY=VALUE`) over the image's.
    pub fn env(mut self, vars: &[String]) -> Result<SpecBuilder> {
        for var in vars {
            check_env(var)?;
        }
        merge_env(self.env_mut(), vars);
        Ok(self)
    }

    /// Adds a mount after the default ones.
    pub fn mount(mut self, mount: Mount) -> SpecBuilder {
        self.spec
            .mounts_mut()
            .get_or_insert_with(Vec::new)
            .push(mount);
        self
    }

    fn resources(&mut self) -> &mut oci_spec::runtime::LinuxResources {
        self.spec
            .linux_mut()
            .get_or_insert_with(Default::default)
            .resources_mut()
            .get_or_insert_with(Default::default)
    }

    /// Limits memory to `bytes`.
    pub fn memory_limit(mut self, bytes: u64) -> Result<SpecBuilder> {
        let limit = i64::try_from(bytes)
            .ok()
            .filter(|b| *b > 0)
            .ok_or_else(|| Error::invalid(format!("memory limit {bytes}: out of range")))?;
        let mut memory = LinuxMemory::default();
        memory.set_limit(Some(limit));
        self.resources().set_memory(Some(memory));
        Ok(self)
    }

    /// Limits CPU time to `cpus` CPUs (CFS quota over a 100 ms period).
    pub fn cpus(mut self, cpus: f64) -> Result<SpecBuilder> {
        let (quota, period) = cfs_quota(cpus)?;
        let resources = self.resources();
        let mut cpu = resources.cpu().clone().unwrap_or_default();
        cpu.set_quota(Some(quota)).set_period(Some(period));
        resources.set_cpu(Some(cpu));
        Ok(self)
    }

    /// Shares the host's network: no network namespace, the host's
    /// `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname` bound read-only,
    /// `HOSTNAME` set to the host's name (as `ctr run --net-host` does).
    pub fn host_network(mut self, hostname: &str) -> Result<SpecBuilder> {
        if let Some(linux) = self.spec.linux_mut() {
            if let Some(namespaces) = linux.namespaces_mut() {
                namespaces.retain(|ns| ns.typ() != LinuxNamespaceType::Network);
            }
        }
        for file in ["/etc/hosts", "/etc/resolv.conf", "/etc/hostname"] {
            self = self.mount(mounts::readonly_bind(file, file)?);
        }
        merge_env(self.env_mut(), &[format!("HOSTNAME={hostname}")]);
        Ok(self)
    }

    /// Gives the process a terminal (and `TERM=xterm`, as containerd does).
    pub fn terminal(mut self, on: bool) -> SpecBuilder {
        self.process().set_terminal(Some(on));
        if on {
            merge_env(self.env_mut(), &["TERM=xterm".to_owned()]);
        }
        self
    }

    /// The container's cgroup, instead of `/<namespace>/<id>`.
    pub fn cgroups_path(mut self, path: String) -> SpecBuilder {
        if let Some(linux) = self.spec.linux_mut() {
            linux.set_cgroups_path(Some(path.into()));
        }
        self
    }

    /// Whether the process may gain privileges (set-id binaries, file
    /// capabilities); containerd's default is no.
    pub fn no_new_privileges(mut self, on: bool) -> SpecBuilder {
        self.process().set_no_new_privileges(Some(on));
        self
    }

    /// Whether to apply the default seccomp profile (the default), and for
    /// which machine (the host by default).
    pub fn seccomp(mut self, on: bool, target: Target) -> SpecBuilder {
        self.seccomp = on;
        self.target = target;
        self
    }

    /// Changes the spec directly, for what no step above covers (the
    /// Docker frontend's host config). Changes to the bounding
    /// capabilities are seen by the seccomp profile [`build`] adds.
    ///
    /// [`build`]: SpecBuilder::build
    pub fn edit(mut self, change: impl FnOnce(&mut Spec)) -> SpecBuilder {
        change(&mut self.spec);
        self
    }

    /// The finished spec. Fails when there is nothing to run.
    pub fn build(mut self) -> Result<Spec> {
        let has_args = self
            .process()
            .args()
            .as_ref()
            .is_some_and(|args| !args.is_empty());
        if !has_args {
            return Err(Error::invalid(
                "no command: the image has no entrypoint or command and none was given",
            ));
        }
        if self.seccomp {
            let bounding = self
                .process()
                .capabilities()
                .as_ref()
                .and_then(|caps| caps.bounding().clone())
                .unwrap_or_default();
            let profile = default_profile(&bounding, &self.target);
            self.spec
                .linux_mut()
                .get_or_insert_with(Default::default)
                .set_seccomp(Some(profile));
        }
        Ok(self.spec)
    }
}
