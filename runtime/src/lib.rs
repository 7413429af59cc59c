//! `berth_runtime`: the library behind the `berth` OCI runtime.
//!
//! The binary (`src/bin/berth`) only parses flags and calls into this crate.
//! Modules are split by concern; all `unsafe` lives in [`sys`].
//!
//! Process model (see docs/runtime.md): `berth create` validates the bundle,
//! reserves the id, builds the cgroup, then clones the container's init
//! straight into its new namespaces (no re-exec). The two talk over a typed
//! sync channel ([`channel`]) until init waits to be started; `berth start`
//! releases it through the exec fifo; init then drops privileges and execs.

#![deny(unsafe_code)]

pub mod capabilities;
pub mod cgroups;
pub mod channel;
pub mod container;
pub mod criu;
pub mod default_spec;
pub mod error;
pub mod features;
pub mod hooks;
pub mod init;
pub mod namespaces;
pub mod process;
pub mod process_info;
pub mod rootfs;
pub mod seccomp;
pub mod spawn;
pub mod spec;
pub mod state;
pub mod sys;
pub mod terminal;
pub mod userns;

pub use error::{Error, ErrorKind, Result};
