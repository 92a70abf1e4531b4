//! Fails when a checked-in binding (`proto/src/cell_capnp.rs`, the example guests' schemas) is
//! not what its schema generates (run `make proto` and commit the result). Also checks the
//! schemas compile with `capnp compile` using only the annotation files next to them (Go's
//! among them, under `capnp/`).

#[test]
fn checked_in_bindings_match_the_schema() {
    for schema in cell_proto_gen::SCHEMAS {
        let scratch = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join("proto-gen")
            .join(schema.file);
        let fresh = cell_proto_gen::generate(schema, &scratch).unwrap_or_else(|e| panic!("{e}"));
        let old = std::fs::read_to_string(cell_proto_gen::checked_in(schema)).unwrap_or_default();
        assert!(
            old == fresh,
            "{} is stale: run `make proto` and commit the result",
            schema.out
        );
    }
}
