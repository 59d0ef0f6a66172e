//! Generates the Rust code for the gRPC contracts in the workspace's `proto/` directory.
//!
//! The .proto files are parsed by `protox` (pure Rust), so no `protoc` binary is needed.

use std::path::PathBuf;

/// The contracts compiled into this crate, relative to the `proto/` directory.
const PROTOS: &[&str] = &["hsm/v1/hsm.proto", "deviceplugin/v1beta1/api.proto"];

/// Messages whose derived `Debug` would print secret values or PINs; the crate implements a
/// redacting `Debug` for them instead.
const REDACTED_DEBUG: &[&str] = &[".hsm.v1.SecretData", ".hsm.v1.ChangePINRequest"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_dir = manifest_dir.join("../../proto");

    println!("cargo:rerun-if-changed={}", proto_dir.display());
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", proto_dir.join(proto).display());
    }

    let fds = protox::compile(PROTOS, [&proto_dir])?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_debug(REDACTED_DEBUG.iter().copied())
        // Sorted maps: deterministic encoding, `Debug` and iteration (checksums sort keys).
        .btree_map(".hsm.v1")
        .compile_fds(fds)?;
    Ok(())
}
