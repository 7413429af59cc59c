//! `berth features`.
