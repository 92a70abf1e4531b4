//! The `Kv` interface of the guest services example (`kv.capnp`, this guest's own schema),
//! shared by the service (`kv-service`), its clients (`kv-client`) and the pid0 wiring them
//! together (`kv-pid0`).

/// Bindings generated from `kv.capnp` (see `make proto`): checked in exactly as generated.
#[rustfmt::skip]
#[allow(clippy::all, missing_docs, unused, unreachable_pub, unsafe_op_in_unsafe_fn)]
pub mod kv_capnp;
