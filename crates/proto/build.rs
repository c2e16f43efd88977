// Compiles proto/hongbao/v1/*.proto with protox (pure Rust), so no system protoc is needed.
fn main() {
    // Read at run time, not with env!(): a build-script binary cached in a shared target dir may
    // have been compiled in another checkout of the repository.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let root = std::path::Path::new(&manifest_dir).join("../../proto");
    let files = ["hongbao/v1/api.proto", "hongbao/v1/cluster.proto", "hongbao/v1/raft.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root]).expect("proto files compile");
    // The same descriptors, encoded, for server reflection (`FILE_DESCRIPTOR_SET`).
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("hongbao_descriptor.bin"), prost::Message::encode_to_vec(&fds)).expect("write the descriptor set");
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(fds).expect("generate gRPC code");
}
