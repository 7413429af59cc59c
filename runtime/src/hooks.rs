//! OCI hooks.
