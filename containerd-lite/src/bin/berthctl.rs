//! `berthctl`: a ctr-style debug client for berthd. Filled in with berthd.
#![forbid(unsafe_code)]

fn main() {
    eprintln!("berthctl: not implemented yet");
    std::process::exit(1);
}
