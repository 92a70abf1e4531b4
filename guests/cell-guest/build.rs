//! Compiles the cell schema (shared with the host) into Rust bindings in OUT_DIR.

fn main() {
    println!("cargo:rerun-if-changed=../../capnp/cell.capnp");
    if let Err(e) = capnpc::CompilerCommand::new()
        .src_prefix("../../capnp")
        .file("../../capnp/cell.capnp")
        .run()
    {
        panic!("compiling ../../capnp/cell.capnp (is `capnp` on PATH?): {e}");
    }
}
