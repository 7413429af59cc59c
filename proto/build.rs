//! Generates the tonic servers and clients for every .proto under protos/,
//! with the protoc shipped by protoc-bin-vendored (no system protoc needed).

use std::io;
use std::path::{Path, PathBuf};

fn main() -> io::Result<()> {
    let root = PathBuf::from("protos");
    let mut protos = Vec::new();
    collect_protos(&root, &mut protos)?;
    protos.sort();

    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;
    let well_known = protoc_bin_vendored::include_path().map_err(io::Error::other)?;
    let out_dir = PathBuf::from(
        std::env::var_os("OUT_DIR")
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "cargo did not set OUT_DIR"))?,
    );

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    // `impl prost::Name` on every message: events are packed into Any under
    // their full proto name, as containerd does.
    config.enable_type_names();

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .include_file("protocol.rs")
        .file_descriptor_set_path(out_dir.join("descriptor_set.bin"))
        .compile_with_config(config, &protos, &[root, well_known])?;

    println!("cargo:rerun-if-changed=protos");
    Ok(())
}

/// Every `.proto` file below `dir`, depth first.
fn collect_protos(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect_protos(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}
