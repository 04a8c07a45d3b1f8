//! Compiles `proto/dataprocessor/v1/*.proto` with protox (pure Rust: no system protoc on a
//! fresh machine) and writes the descriptor set, with comments, for server reflection.

use std::path::PathBuf;

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Read at run time: a build script compiled in another checkout (a shared target
    // directory) must still find this checkout's files.
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?)
        .join("../../proto")
        .canonicalize()?;
    let files = [
        "dataprocessor/v1/common.proto",
        "dataprocessor/v1/tasks.proto",
        "dataprocessor/v1/scheduler.proto",
        "dataprocessor/v1/workers.proto",
    ];
    let fds = protox::Compiler::new([&root])?
        .include_source_info(true)
        .include_imports(true)
        .open_files(files)?
        .file_descriptor_set();
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("dataprocessor_descriptor.bin"),
        fds.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Methods a service does not implement yet answer UNIMPLEMENTED.
        .generate_default_stubs(true)
        .compile_fds(fds)?;
    // Relative to this package: checkouts sharing a target directory share this build
    // script's output (cargo hashes workspace paths relative to the workspace), and an
    // absolute path would make each watch the other's files.
    println!("cargo:rerun-if-changed=../../proto");
    Ok(())
}
