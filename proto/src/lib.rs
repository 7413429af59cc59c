//! Generated protocol code: the containerd gRPC services berthd serves.
//! Empty until the berthd issues fill it in.
#![forbid(unsafe_code)]
