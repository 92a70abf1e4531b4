//! `cell inspect X.wasm`: what a component imports and exports, whether it is a cell (RPC)
//! guest, whether cell can run it, its size and hash. Nothing is instantiated or run.
//!
//! "Is it a cell guest?" is a heuristic, stated once here: a cell guest is a component that
//! imports `wasi:cli/stdin` and `wasi:cli/stdout` (its RPC channel) and was built with the
//! `cell-guest` SDK, which embeds the custom section `cell-guest` holding [`SDK_MARKER`] (the
//! id of the capnp schema it speaks). A guest written without the SDK is reported as plain; an
//! ordinary program that embeds a cell guest's wasm as data would be reported as a guest.

use serde::Serialize;
use wasmtime::component::types::ComponentItem;

use crate::engine::{is_provided, missing_import, CellEngine, ContentHash, LoadError};

/// The bytes the `cell-guest` SDK embeds in every guest (defined once, in `cell-proto`).
pub(crate) use cell_proto::SDK_MARKER;

/// One import or export.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Item {
    /// The full name, with its version (`wasi:cli/stdin@0.2.6`).
    pub name: String,
    /// `instance`, `func`, `type`, `resource`, `module`, `component` or `core-func`.
    pub kind: &'static str,
    /// For an import: whether cell provides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub provided: Option<bool>,
}

/// What `cell inspect` reports (also its `--json` output).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Inspection {
    pub file: String,
    pub size: u64,
    pub sha256: String,
    /// Exports `wasi:cli/run` (a command: what `cell run` runs).
    pub command: bool,
    /// Looks like a cell guest (see the module documentation); otherwise run it with `--plain`.
    pub rpc_guest: bool,
    /// The first import cell does not provide, if any: cell cannot run the component.
    pub missing_import: Option<String>,
    pub imports: Vec<Item>,
    pub exports: Vec<Item>,
}

/// Inspects `bytes` (read from `file`), compiling them through `engine` (and so warming its
/// disk cache).
///
/// # Errors
/// The bytes are not a component (not wasm, a core module, invalid).
pub(crate) fn inspect(
    engine: &CellEngine,
    file: &str,
    bytes: &[u8],
) -> Result<Inspection, LoadError> {
    let component = engine.compile_blocking(bytes)?;
    let wt = engine.engine();
    let ty = component.component_type();
    let imports: Vec<Item> = ty
        .imports(wt)
        .map(|(name, item)| Item {
            name: name.to_string(),
            kind: kind(&item.ty),
            provided: Some(matches!(item.ty, ComponentItem::Type(_)) || is_provided(name)),
        })
        .collect();
    let exports: Vec<Item> = ty
        .exports(wt)
        .map(|(name, item)| Item {
            name: name.to_string(),
            kind: kind(&item.ty),
            provided: None,
        })
        .collect();
    let imports_interface = |iface: &str| {
        imports
            .iter()
            .any(|i| i.name.starts_with(iface) && i.kind == "instance")
    };
    let rpc_guest = imports_interface("wasi:cli/stdin@")
        && imports_interface("wasi:cli/stdout@")
        && contains(bytes, &SDK_MARKER);
    Ok(Inspection {
        file: file.to_string(),
        size: bytes.len() as u64,
        sha256: ContentHash::of(bytes).to_string(),
        command: exports
            .iter()
            .any(|e| e.name.starts_with("wasi:cli/run@0.2.")),
        rpc_guest,
        missing_import: missing_import(wt, &component),
        imports,
        exports,
    })
}

fn kind(item: &ComponentItem) -> &'static str {
    match item {
        ComponentItem::ComponentFunc(_) => "func",
        ComponentItem::CoreFunc(_) => "core-func",
        ComponentItem::Module(_) => "module",
        ComponentItem::Component(_) => "component",
        ComponentItem::ComponentInstance(_) => "instance",
        ComponentItem::Type(_) => "type",
        ComponentItem::Resource(_) => "resource",
    }
}

/// Whether `bytes` were built with the `cell-guest` SDK (they carry its marker): `cell run`
/// runs such a component as a cell guest (RPC on its stdio), anything else as a plain program.
pub(crate) fn has_sdk_marker(bytes: &[u8]) -> bool {
    contains(bytes, &SDK_MARKER)
}

/// A SIMD substring search (`memchr::memmem`): the daemon asks this of every job's bytes, and
/// a window-by-window comparison cost ~a third of a small job's start.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

impl Inspection {
    /// The human-readable form.
    pub(crate) fn to_text(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let _ = writeln!(s, "file:     {}", self.file);
        let _ = writeln!(s, "size:     {} bytes", self.size);
        let _ = writeln!(s, "sha256:   {}", self.sha256);
        let what = match (self.command, self.rpc_guest) {
            (true, true) => "cell guest (RPC over stdin/stdout): run with `cell run`",
            (true, false) => "plain WASI command: run with `cell run --plain`",
            (false, _) => "not a command (no wasi:cli/run export): cell cannot run it",
        };
        let _ = writeln!(s, "kind:     {what}");
        match &self.missing_import {
            Some(name) => {
                let _ = writeln!(s, "runs:     no, cell does not provide `{name}`");
            }
            None if self.command => {
                let _ = writeln!(s, "runs:     yes, cell provides every import");
            }
            None => {}
        }
        let _ = writeln!(s, "imports:  {}", self.imports.len());
        for i in &self.imports {
            let mark = if i.provided == Some(false) {
                "  (not provided)"
            } else {
                ""
            };
            let _ = writeln!(s, "  {:<10} {}{mark}", i.kind, i.name);
        }
        let _ = writeln!(s, "exports:  {}", self.exports.len());
        for e in &self.exports {
            let _ = writeln!(s, "  {:<10} {}", e.kind, e.name);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_marker_is_found_anywhere_and_only_whole() {
        let marker = SDK_MARKER.to_vec();
        let mut bytes = vec![0u8; 100_000];
        assert!(!has_sdk_marker(&bytes));
        for at in [0, 4321, bytes.len() - marker.len()] {
            let mut b = bytes.clone();
            b[at..at + marker.len()].copy_from_slice(&marker);
            assert!(has_sdk_marker(&b), "at {at}");
        }
        // A prefix of it at the very end is not it.
        let cut = bytes.len() - marker.len() + 1;
        bytes[cut..].copy_from_slice(&marker[..marker.len() - 1]);
        assert!(!has_sdk_marker(&bytes));
        assert!(!has_sdk_marker(&marker[1..]));
    }
}
