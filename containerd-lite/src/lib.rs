//! berthd: the Berth supervisor daemon's library.
//!
//! Local services (content, metadata, images, snapshots, diff, leases, GC,
//! registry) live in their own modules with plain Rust interfaces; the gRPC
//! layer (`grpc`) and, later, the Docker API are thin adapters over them.
//! See docs/berthd.md for the layout and the metadata schema.
#![forbid(unsafe_code)]

pub mod diff;
pub mod error;
pub mod snapshots;
pub mod unpack;

pub use error::{Error, ErrorKind, Result};
