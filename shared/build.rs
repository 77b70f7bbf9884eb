//! Compiles the protobuf definitions under `proto/` with the protoc binary vendored as a
//! build dependency, so a fresh machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().codec_path("crate::proto::codec::IngestCodec").compile_with_config(
        config,
        &["proto/crosscheck/ingest/v1/ingest.proto"],
        &["proto"],
    )?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
