//! Generates the bus envelopes from `proto/bus.proto` with prost.
//!
//! `protoc` comes from the `protoc-bin-vendored` crate, so no system install is needed; set
//! `PROTOC` to use another one (Debian's `protobuf-compiler` 3.21 gives the same output).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &["proto/bus.proto"];
    for p in PROTOS {
        // prost-build does not say this itself.
        println!("cargo:rerun-if-changed={p}");
    }
    println!("cargo:rerun-if-env-changed=PROTOC");
    let mut config = prost_build::Config::new();
    if std::env::var_os("PROTOC").is_none() {
        config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    }
    // `bytes` fields as `Bytes`: a received packet is sliced out of the NATS payload, not copied.
    config.bytes(["."]);
    config.compile_protos(PROTOS, &["proto"])?;
    Ok(())
}
