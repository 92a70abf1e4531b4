//! The `Kv` interface of the guest services example (`kv.capnp`, this guest's own schema),
//! shared by the service (`kv-service`), its clients (`kv-client`) and the pid0 wiring them
//! together (`kv-pid0`).

/// Bindings generated from `kv.capnp` by `build.rs`.
#[allow(
    clippy::all,
    missing_docs,
    unused,
    unreachable_pub,
    unsafe_op_in_unsafe_fn
)]
pub mod kv_capnp {
    include!(concat!(env!("OUT_DIR"), "/kv_capnp.rs"));
}
