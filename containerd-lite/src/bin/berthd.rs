//! `berthd`: content store, images, snapshots, containers and tasks behind
//! containerd's gRPC API. Not implemented yet; see the berthd issues.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("berthd: not implemented yet");
    std::process::exit(1);
}
