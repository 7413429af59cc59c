//! Control groups: a [`CgroupManager`] trait with v1 and v2 implementations.
