//! Fails when `proto/src/cell_capnp.rs` is not what `capnp/cell.capnp` generates (run
//! `make proto` and commit the result). Also checks the schema compiles with `capnp compile`
//! using only the annotation files under `capnp/` (Go's among them).

#[test]
fn checked_in_bindings_match_the_schema() {
    let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("proto-gen");
    let fresh = cell_proto_gen::generate(&scratch).unwrap_or_else(|e| panic!("{e}"));
    let old = std::fs::read_to_string(cell_proto_gen::checked_in()).unwrap_or_default();
    assert!(
        old == fresh,
        "proto/src/cell_capnp.rs is stale: run `make proto` and commit the result"
    );
}
