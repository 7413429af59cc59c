//! `berth_runtime`: the library behind the `berth` OCI runtime.
//!
//! The binary (`src/bin/berth`) only parses flags and calls into this crate.
//! Modules are split by concern; all `unsafe` lives in [`sys`].

pub mod cgroups;
pub mod default_spec;
pub mod features;
pub mod hooks;
