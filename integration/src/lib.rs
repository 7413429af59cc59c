//! Helpers for Berth's end-to-end tests.
