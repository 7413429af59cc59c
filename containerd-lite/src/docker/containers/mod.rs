//! Docker containers: created from an image with docker's configuration,
//! run as containerd tasks in the `moby` namespace through berthd's own
//! runtime manager, their output kept in a json-file log by
//! `berth-logger`, their state and restart policy kept by berthd across
//! restarts.
//!
//! - [`record`]: what is kept about one container, on disk.
//! - [`registry`]: every container; lookup by ID, name or prefix; names.
//! - [`names`]: generated names.
//! - [`stdin`]: the fifo a container's stdin comes through.
//! - [`stats`] and [`top`]: a running container's usage and processes.

pub mod api;
pub mod create;
pub mod lifecycle;
pub mod mounts;
pub mod names;
pub mod ports;
pub mod record;
pub mod registry;
pub mod remove;
pub mod spec;
pub mod stats;
pub mod stdin;
pub mod top;
pub mod view;
pub mod volumes;

pub use record::{MountKind, MountPoint, Record, State, Status};
pub use registry::{Container, Registry};
