//! Generates the `ctxkit.demo.v1.Work` service from `proto/work.proto` with
//! protox, a protobuf compiler in Rust: the build needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/work.proto");
    let descriptors = protox::compile(["work.proto"], ["proto"])?;
    tonic_prost_build::configure().compile_fds(descriptors)?;
    Ok(())
}
