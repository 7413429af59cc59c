use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use berth_runtime::container::{self, ExecOptions};
use oci_spec::runtime::{Capabilities, Capability, LinuxCapabilities, Process};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A JSON process description (OCI `process`), instead of the command.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a terminal.
    #[arg(short, long)]
    pub tty: bool,
    /// Unix socket that receives the pty master.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Do not wait for the process.
    #[arg(short, long)]
    pub detach: bool,
    /// Write the process's pid to this file.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Add or override an environment variable (KEY=VALUE).
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// UID[:GID] to run as.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Additional group ids.
    #[arg(short = 'g', long = "additional-gids")]
    pub additional_gids: Vec<u32>,
    /// Add a capability (e.g. CAP_NET_ADMIN).
    #[arg(short, long)]
    pub cap: Vec<String>,
    /// Set no_new_privs for the process.
    #[arg(long)]
    pub no_new_privs: bool,
    /// Pass this many extra descriptors (from 3 up) to the process.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: u32,
    /// Exec even if the container is paused.
    #[arg(long)]
    pub ignore_paused: bool,
    /// Put the process in a sub-cgroup of the container's:
    /// [CONTROLLER[,CONTROLLER...]:]PATH (repeatable).
    #[arg(long = "cgroup")]
    pub cgroups: Vec<String>,
    /// Accepted for runc compatibility (no LSM support): must be empty.
    #[arg(long, hide = true)]
    pub process_label: Option<String>,
    /// Accepted for runc compatibility (no LSM support): must be empty.
    #[arg(long, hide = true)]
    pub apparmor: Option<String>,
    /// The container id.
    pub id: String,
    /// The command and its arguments (when --process is not given).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

pub fn run(root: &Path, args: &Args) -> anyhow::Result<u8> {
    let store = super::store(root)?;
    let process = build_process(root, args)?;
    let opts = ExecOptions {
        process,
        console_socket: args.console_socket.clone(),
        pid_file: args.pid_file.clone(),
        detach: args.detach,
        preserve_fds: args.preserve_fds,
        ignore_paused: args.ignore_paused,
        cgroups: args.cgroups.clone(),
    };
    let code = container::exec(&store, &args.id, &opts)?;
    Ok(u8::try_from(code).unwrap_or(255))
}

/// The process to run: `--process FILE`, or the container's own process
/// with the command and overrides from the command line.
fn build_process(root: &Path, args: &Args) -> anyhow::Result<Process> {
    for (flag, value) in [
        ("--process-label", &args.process_label),
        ("--apparmor", &args.apparmor),
    ] {
        if value.as_deref().is_some_and(|v| !v.is_empty()) {
            bail!("{flag}: berth has no LSM support");
        }
    }
    let mut process = match &args.process {
        Some(path) => {
            let text =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            let mut value: serde_json::Value = serde_json::from_slice(&text)
                .with_context(|| format!("{}: invalid JSON", path.display()))?;
            // As runc: a process without user or cwd runs as root in "/".
            if let Some(obj) = value.as_object_mut() {
                obj.entry("user")
                    .or_insert_with(|| serde_json::json!({"uid": 0, "gid": 0}));
                obj.entry("cwd").or_insert_with(|| serde_json::json!("/"));
                if let Some(caps) = obj.get_mut("capabilities") {
                    berth_runtime::capabilities::drop_unknown_names(caps);
                }
            }
            serde_path_to_error::deserialize(value)
                .map_err(|e| anyhow::anyhow!("{}: {}: {}", path.display(), e.path(), e.inner()))?
        }
        None => {
            if args.command.is_empty() {
                bail!("exec: no command given (pass one after the container id, or --process)");
            }
            let state = berth_runtime::container::spec_of(&super::store(root)?, &args.id)?;
            let mut p = state.process().clone().unwrap_or_default();
            p.set_args(Some(args.command.clone()));
            p.set_terminal(Some(args.tty));
            p
        }
    };
    if args.process.is_some() && args.tty {
        process.set_terminal(Some(true));
    }
    let mut env = process.env().clone().unwrap_or_default();
    for kv in &args.env {
        let key = kv.split('=').next().unwrap_or_default();
        env.retain(|e| e.split('=').next() != Some(key));
        env.push(kv.clone());
    }
    process.set_env(Some(env));
    if let Some(cwd) = &args.cwd {
        process.set_cwd(cwd.clone());
    }
    if let Some(user) = &args.user {
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (user.as_str(), None),
        };
        let u = process.user_mut();
        u.set_uid(
            uid.parse()
                .with_context(|| format!("--user {user:?}: uid must be a number"))?,
        );
        if let Some(g) = gid {
            u.set_gid(
                g.parse()
                    .with_context(|| format!("--user {user:?}: gid must be a number"))?,
            );
        }
    }
    if !args.additional_gids.is_empty() {
        process
            .user_mut()
            .set_additional_gids(Some(args.additional_gids.clone()));
    }
    if !args.cap.is_empty() {
        let mut caps = process.capabilities().clone().unwrap_or_default();
        for name in &args.cap {
            // An unknown name is ignored with a warning, as runc does.
            let Ok(cap) =
                serde_json::from_value::<Capability>(serde_json::Value::String(name.clone()))
            else {
                tracing::warn!("--cap {name}: unknown capability, ignored");
                continue;
            };
            let add = |set: &Option<Capabilities>| {
                let mut set = set.clone().unwrap_or_default();
                set.insert(cap);
                Some(set)
            };
            // Never the inheritable set (CVE-2022-29162): a capability in
            // it would survive into programs the process execs.
            caps = LinuxCapabilities::default()
                .set_bounding(add(caps.bounding()))
                .set_effective(add(caps.effective()))
                .set_permitted(add(caps.permitted()))
                .set_inheritable(caps.inheritable().clone())
                .set_ambient(caps.ambient().clone())
                .clone();
        }
        process.set_capabilities(Some(caps));
    }
    if args.no_new_privs {
        process.set_no_new_privileges(Some(true));
    }
    Ok(process)
}
