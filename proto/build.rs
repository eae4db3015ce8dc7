//! Compiles the `.proto` contracts under `proto/` with `protox` (pure Rust, no system `protoc`),
//! writes the encoded `FileDescriptorSet` to `$OUT_DIR/ovasabi_descriptor.bin` (for gRPC server
//! reflection) and generates the prost messages and tonic clients/servers from it.

use std::path::PathBuf;

use prost::Message as _;

/// Root of the proto import path, relative to this crate.
const PROTO_ROOT: &str = "proto";

/// Every contract file, relative to [`PROTO_ROOT`].
const PROTO_FILES: &[&str] = &[
    "common/metadata.proto",
    "user/v0/user.proto",
    "admin/v0/admin.proto",
    "security/v0/security.proto",
    "campaign/v0/campaign.proto",
    "content/v0/content.proto",
    "broadcast/v0/broadcast.proto",
    "localization/v0/localization.proto",
    "babel/v0/babel.proto",
    "notification/v0/notification.proto",
    "scheduler/v0/scheduler.proto",
    "talent/v0/talent.proto",
    "commerce/v0/commerce.proto",
    "referral/v0/referral.proto",
    "nexus/v0/nexus.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO_ROOT}");
    for file in PROTO_FILES {
        println!("cargo:rerun-if-changed={PROTO_ROOT}/{file}");
    }

    let fds = protox::compile(PROTO_FILES, [PROTO_ROOT])?;

    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out_dir.join("ovasabi_descriptor.bin"), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
