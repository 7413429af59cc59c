//! `start`: containerd runs this in the bundle directory and reads its
//! output (stdout and stderr together) as the shim's address. It binds the
//! socket, starts the serving shim in the background with the socket as its
//! stdin, records the address in the bundle and prints `unix://...`.
//! Synchronous: no async runtime exists yet, so spawning is plain fork+exec.

use crate::flags::Flags;
use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The shim's socket: `<dir of containerd's socket>/s/<sha256(address/ns/id)>`
/// (containerd's default layout keeps these in /run/containerd/s). Short and
/// unique per containerd, namespace and container.
pub fn socket_path(address: &str, namespace: &str, id: &str) -> PathBuf {
    let address = address.strip_prefix("unix://").unwrap_or(address);
    let digest = Sha256::digest(format!("{address}/{namespace}/{id}").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let dir = Path::new(address)
        .parent()
        .unwrap_or(Path::new("/run/containerd"));
    dir.join("s").join(hex)
}

pub fn run(flags: &Flags) -> Result<()> {
    flags.require_identity()?;
    if flags.address.is_empty() {
        bail!("-address (containerd's socket) is required for start");
    }
    let bundle = std::env::current_dir().context("finding the bundle (working directory)")?;
    let options = read_start_options();
    let socket = socket_path(&flags.address, &flags.namespace, &flags.id);
    let address = format!("unix://{}", socket.display());

    // A shim already serving this container (containerd retrying): reuse it.
    if UnixStream::connect(&socket).is_ok() {
        write_address(&bundle, &address)?;
        print!("{address}");
        return Ok(());
    }
    match std::fs::remove_file(&socket) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(e).with_context(|| format!("removing stale socket {}", socket.display()))
        }
    }
    if let Some(dir) = socket.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let listener =
        UnixListener::bind(&socket).with_context(|| format!("binding {}", socket.display()))?;
    let started = (|| -> Result<u32> {
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("chmod {}", socket.display()))?;
        let exe = std::env::current_exe().context("finding the shim binary")?;
        let child = Command::new(exe)
            .args(flags.serve_args())
            .current_dir(&bundle)
            .stdin(Stdio::from(OwnedFd::from(listener)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Out of containerd's process group: its signals are not ours.
            .process_group(0)
            .spawn()
            .context("starting the serving shim")?;
        Ok(child.id())
    })();
    let pid = match started {
        Ok(pid) => pid,
        Err(e) => {
            let _ = std::fs::remove_file(&socket);
            return Err(e);
        }
    };
    if !options.shim_cgroup.is_empty() {
        if let Err(e) = join_cgroup(&options.shim_cgroup, pid) {
            eprintln!(
                "containerd-shim-berth-v2: warning: shim cgroup {}: {e:#}",
                options.shim_cgroup
            );
        }
    }
    write_address(&bundle, &address)?;
    print!("{address}");
    std::io::stdout().flush().context("writing the address")?;
    Ok(())
}

/// containerd passes the runtime options on stdin, as a marshalled `Any`
/// (`containerd.runc.v1.Options`); only `shim_cgroup` matters here.
fn read_start_options() -> crate::options::Options {
    use containerd_shim_protos::protobuf::Message;
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return Default::default();
    }
    let mut data = Vec::new();
    let _ = std::io::stdin().take(1 << 20).read_to_end(&mut data);
    if data.is_empty() {
        return Default::default();
    }
    containerd_shim_protos::protobuf::well_known_types::any::Any::parse_from_bytes(&data)
        .ok()
        .and_then(|any| crate::options::Options::from_any(Some(&any)).ok())
        .unwrap_or_default()
}

fn join_cgroup(path: &str, pid: u32) -> Result<()> {
    let manager = berth_runtime::cgroups::new_manager(Some(path), "shim")?;
    manager.create()?;
    manager.add_task(pid as i32)?;
    Ok(())
}

fn write_address(bundle: &Path, address: &str) -> Result<()> {
    let tmp = bundle.join(".address.tmp");
    std::fs::write(&tmp, address).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, bundle.join("address"))
        .with_context(|| format!("writing {}/address", bundle.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_paths_are_short_and_distinct() {
        let a = socket_path("/run/containerd/containerd.sock", "default", "c1");
        let b = socket_path("/run/containerd/containerd.sock", "other", "c1");
        assert!(a.starts_with("/run/containerd/s/"));
        assert_ne!(a, b);
        assert_eq!(a.file_name().unwrap().len(), 64);
        assert_eq!(
            socket_path("unix:///tmp/x/c.sock", "n", "i")
                .parent()
                .unwrap(),
            Path::new("/tmp/x/s")
        );
    }
}
