//! berthd: the Berth supervisor daemon's library.
//!
//! Local services (content, metadata, images, snapshots, diff, leases, GC,
//! registry) live in their own modules with plain Rust interfaces; the gRPC
//! layer (`grpc`) and, later, the Docker API are thin adapters over them.
//! See docs/berthd.md for the layout and the metadata schema.
#![forbid(unsafe_code)]

pub mod build;
pub mod config;
pub mod content;
pub mod diff;
pub mod docker;
pub mod error;
pub mod events;
pub mod gc;
pub mod grpc;
pub mod logs;
pub mod metadata;
pub mod network;
pub mod oci;
pub mod registry;
pub mod runtime;
pub mod snapshots;
pub mod transfer;
pub mod unpack;

pub use error::{Error, ErrorKind, Result};
