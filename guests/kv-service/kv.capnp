# A key-value store served by one guest and called by others (cell's guest services example).
# The guest's own schema: cell knows nothing about it and proxies its calls untyped.
# Rust bindings are generated at build time by `build.rs` (needs `capnp`: `make deps`).

@0xd6a3c6f0b1e24a71;

interface Kv {
  get @0 (key :Text) -> (value :Text, found :Bool);
  put @1 (key :Text, value :Text) -> ();
  len @2 () -> (count :UInt32);
}
