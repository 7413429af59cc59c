//! `containerd-shim-berth-v2`: containerd's per-container supervisor.
//!
//! containerd runs the binary three ways (flags Go-style, single dash):
//! - `... start`: start a serving shim in the background and print its
//!   ttrpc address (`unix://...`) — see [`start`];
//! - `... delete`: clean up after a shim that died — see [`cleanup`];
//! - no action: serve `containerd.task.v2.Task` on the socket inherited from
//!   `start` — see [`serve`].
//!
//! The shim drives the OCI runtime binary (berth by default, or runc/crun via
//! the runc options' `BinaryName`) through the runc command-line contract. It
//! never forks without exec: commands are spawned with `std::process`.
#![forbid(unsafe_code)]

mod cleanup;
mod container;
mod error;
mod events;
mod flags;
mod log;
mod metrics;
mod oom;
mod options;
mod process;
mod reaper;
mod rootfs;
mod runtime;
mod serve;
mod service;
mod start;
mod stdio;

use std::process::ExitCode;

fn main() -> ExitCode {
    let flags = match flags::Flags::parse(std::env::args().skip(1)) {
        Ok(flags) => flags,
        Err(err) => {
            eprintln!("containerd-shim-berth-v2: {err}");
            return ExitCode::from(2);
        }
    };
    if flags.version {
        println!("containerd-shim-berth-v2:");
        println!("  Version: {}", env!("CARGO_PKG_VERSION"));
        println!("  Task API: containerd.task.v2");
        return ExitCode::SUCCESS;
    }
    let result = match flags.action {
        flags::Action::Start => start::run(&flags),
        flags::Action::Delete => cleanup::run(&flags),
        flags::Action::Serve => serve::run(&flags),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // containerd reads stdout and stderr of `start` together: keep
            // errors on stderr and one line long.
            eprintln!("containerd-shim-berth-v2: {err:#}");
            ExitCode::FAILURE
        }
    }
}
