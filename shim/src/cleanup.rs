//! `delete`: containerd runs this when a shim died (or never came up) to
//! clean up after it: force-delete the container in the runtime, unmount
//! the rootfs, remove the dead shim's socket, and print a protobuf
//! DeleteResponse (killed: status 137) on stdout.

use crate::flags::Flags;
use crate::options::Options;
use anyhow::{Context, Result};
use containerd_shim_protos::api::DeleteResponse;
use containerd_shim_protos::protobuf::{Message, MessageField};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::SystemTime;

pub fn run(flags: &Flags) -> Result<()> {
    flags.require_identity()?;
    let bundle = if flags.bundle.is_empty() {
        std::env::current_dir().context("finding the bundle (working directory)")?
    } else {
        PathBuf::from(&flags.bundle)
    };
    let options = Options::load(&bundle)?;
    let status = Command::new(options.binary())
        .arg("--root")
        .arg(options.runtime_root(&flags.namespace))
        .arg("--log")
        .arg(bundle.join("log.json"))
        .args(["--log-format", "json", "delete", "--force", &flags.id])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if let Ok(status) = status {
        if !status.success() {
            // Usually: the runtime never created it, or it is already gone.
            eprintln!(
                "containerd-shim-berth-v2: {} delete --force {}: {status}",
                options.binary(),
                flags.id
            );
        }
    }
    crate::rootfs::unmount_all(&bundle.join("rootfs")).map_err(|e| anyhow::anyhow!("{e}"))?;
    if !flags.address.is_empty() {
        let socket = crate::start::socket_path(&flags.address, &flags.namespace, &flags.id);
        if std::os::unix::net::UnixStream::connect(&socket).is_err() {
            let _ = std::fs::remove_file(&socket);
        }
    }
    let response = DeleteResponse {
        pid: 0,
        exit_status: 128 + libc::SIGKILL as u32,
        exited_at: MessageField::some(crate::events::timestamp(SystemTime::now())),
        ..Default::default()
    };
    let bytes = response
        .write_to_bytes()
        .context("encoding the DeleteResponse")?;
    let mut out = std::io::stdout();
    out.write_all(&bytes)
        .context("writing the DeleteResponse")?;
    out.flush().context("writing the DeleteResponse")
}
