// Compiles proto/hongbao/v1/*.proto with protox (pure Rust), so no system protoc is needed.
fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["hongbao/v1/api.proto", "hongbao/v1/cluster.proto", "hongbao/v1/raft.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={}", root.join(f).display());
    }
    let fds = protox::compile(files, [&root]).expect("proto files compile");
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .compile_fds(fds)
        .expect("generate gRPC code");
}
