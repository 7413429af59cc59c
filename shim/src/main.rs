//! `containerd-shim-berth-v2`: the per-container supervisor speaking containerd's
//! shim v2 task API. Not implemented yet; see the shim issue.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("containerd-shim-berth-v2: not implemented yet");
    std::process::exit(1);
}
