//! Generates the checked-in Cap'n Proto bindings: `proto/src/cell_capnp.rs` from
//! `capnp/cell.capnp`, and the example guests' own schemas ([`SCHEMAS`]).
//!
//! Needs the `capnp` compiler (`make deps` installs it). Only maintainers need this: the
//! generated file is checked in, so building the host, a guest or a client needs only cargo.

use std::path::{Path, PathBuf};

/// The repository's root (this crate lives in `proto/gen`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// One schema and where its bindings are checked in (paths relative to the repository).
pub struct Schema {
    /// The directory holding the schema (also its import path).
    pub dir: &'static str,
    /// The schema file's name in `dir`.
    pub file: &'static str,
    /// The checked-in bindings.
    pub out: &'static str,
}

/// Every schema with checked-in bindings.
pub const SCHEMAS: &[Schema] = &[
    Schema {
        dir: "capnp",
        file: "cell.capnp",
        out: "proto/src/cell_capnp.rs",
    },
    Schema {
        dir: "guests/kv-service",
        file: "kv.capnp",
        out: "guests/kv-service/src/kv_capnp.rs",
    },
];

/// The checked-in bindings of `schema`.
pub fn checked_in(schema: &Schema) -> PathBuf {
    repo_root().join(schema.out)
}

/// What `schema` generates now, using `scratch` as the output directory.
///
/// # Errors
/// The schema does not compile, or `capnp` is not installed.
pub fn generate(schema: &Schema, scratch: &Path) -> Result<String, String> {
    let schema_dir = repo_root().join(schema.dir);
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    capnpc::CompilerCommand::new()
        .src_prefix(&schema_dir)
        .import_path(&schema_dir)
        .file(schema_dir.join(schema.file))
        .output_path(scratch)
        .run()
        .map_err(|e| format!("capnp compile failed (is `capnp` installed? `make deps`): {e}"))?;
    let stem = schema.file.trim_end_matches(".capnp");
    let path = scratch.join(format!("{stem}_capnp.rs"));
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}
