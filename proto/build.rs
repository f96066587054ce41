//! Generates the bus envelopes from `proto/bus.proto` with prost, and, with the `grpc` feature,
//! the broker's gRPC service from `proto/admin.proto` with tonic (server and client), plus the
//! file descriptor set that gRPC reflection serves, and serde impls of the admin messages in the
//! proto3 canonical JSON mapping (`pbjson-build`), which the broker's HTTP API speaks.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate, so no system install is needed; set
//! `PROTOC` to use another one (Debian's `protobuf-compiler` 3.21 gives the same output).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &["proto/bus.proto", "proto/admin.proto"];
    for p in PROTOS {
        // prost-build does not say this itself.
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    let config = || -> Result<prost_build::Config, Box<dyn std::error::Error>> {
        let mut config = prost_build::Config::new();
        if std::env::var_os("PROTOC").is_none() {
            config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
        }
        // `bytes` fields as `Bytes`: a received packet is sliced out of the NATS payload, not
        // copied.
        config.bytes(["."]);
        Ok(config)
    };
    config()?.compile_protos(&["proto/bus.proto"], &["proto"])?;
    #[cfg(feature = "grpc")]
    {
        let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
        tonic_prost_build::configure()
            .file_descriptor_set_path(out.join("admin_descriptor.bin"))
            .compile_with_config(config()?, &["proto/admin.proto"], &["proto"])?;
        // The HTTP API's JSON shapes, generated from the same descriptors: they cannot drift
        // from the proto.
        let descriptors = std::fs::read(out.join("admin_descriptor.bin"))?;
        pbjson_build::Builder::new()
            .register_descriptors(&descriptors)?
            .build(&[".switchboard.admin.v1"])?;
    }
    Ok(())
}
