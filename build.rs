//! Generates the Rust bindings for `capnp/cell.capnp`.

fn main() {
    println!("cargo:rerun-if-changed=capnp/cell.capnp");
    if let Err(e) = capnpc::CompilerCommand::new()
        .src_prefix("capnp")
        .file("capnp/cell.capnp")
        .run()
    {
        // The `capnp` compiler is a system tool; `make` installs it (apt-get install capnproto).
        panic!("compiling capnp/cell.capnp failed: {e}\n(is the `capnp` tool installed? `make deps` installs it)");
    }
}
