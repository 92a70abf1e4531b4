//! Generates the bindings of this guest's own schema, `kv.capnp`, at build time — what a guest
//! author with an interface of their own does (needs the `capnp` compiler: `make deps`). cell's
//! own bindings come precompiled with the SDK, so guests without a schema need no compiler.

fn main() {
    println!("cargo::rerun-if-changed=kv.capnp");
    if let Err(e) = capnpc::CompilerCommand::new().file("kv.capnp").run() {
        eprintln!("compiling kv.capnp (is `capnp` installed? `make deps`): {e}");
        std::process::exit(1);
    }
}
