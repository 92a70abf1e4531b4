//! Generates `proto/src/cell_capnp.rs` from `capnp/cell.capnp`.
//!
//! Needs the `capnp` compiler (`make deps` installs it). Only maintainers need this: the
//! generated file is checked in, so building the host, a guest or a client needs only cargo.

use std::path::{Path, PathBuf};

/// The repository's root (this crate lives in `proto/gen`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The checked-in bindings.
pub fn checked_in() -> PathBuf {
    repo_root().join("proto/src/cell_capnp.rs")
}

/// What the schema generates now, using `scratch` as the output directory.
///
/// # Errors
/// The schema does not compile, or `capnp` is not installed.
pub fn generate(scratch: &Path) -> Result<String, String> {
    let schema_dir = repo_root().join("capnp");
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    capnpc::CompilerCommand::new()
        .src_prefix(&schema_dir)
        .import_path(&schema_dir)
        .file(schema_dir.join("cell.capnp"))
        .output_path(scratch)
        .run()
        .map_err(|e| format!("capnp compile failed (is `capnp` installed? `make deps`): {e}"))?;
    let path = scratch.join("cell_capnp.rs");
    std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))
}
