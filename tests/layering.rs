//! The host's import graph against the layering written in PLAN.md ("Layers"): a module may
//! import modules of its own layer or of layers below it, never above. Every module under
//! `src/` must be listed, so a new module cannot slip in unplaced. Also: no file under `src/`
//! is longer than 600 lines before its tests.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const MAX_LINES: usize = 600;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The layers from PLAN.md's fenced `layers` block, top first: module name → layer index.
fn layers() -> BTreeMap<String, usize> {
    let plan = std::fs::read_to_string(root().join("PLAN.md")).expect("PLAN.md");
    let block = plan
        .split("```layers\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("PLAN.md has a ```layers block");
    let mut map = BTreeMap::new();
    for (i, line) in block.lines().filter(|l| !l.trim().is_empty()).enumerate() {
        let modules = line.split('#').next().unwrap_or("");
        for module in modules.split_whitespace() {
            assert!(
                map.insert(module.to_string(), i).is_none(),
                "{module} is listed twice in PLAN.md's layers"
            );
        }
    }
    map
}

/// Every `.rs` file under `dir`.
fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module a file belongs to, as PLAN.md names it: `rpc/conn`, `net/socket`, `engine`;
/// `cli/*` and `net/policy/*` are one module each.
fn module_of(file: &Path) -> String {
    let rel = file
        .strip_prefix(root().join("src"))
        .expect("under src")
        .with_extension("");
    let mut name = rel.to_string_lossy().replace('\\', "/");
    if let Some(dir) = name.strip_suffix("/mod") {
        name = dir.to_string();
    }
    for group in ["cli", "net/policy"] {
        if name == group || name.starts_with(&format!("{group}/")) {
            return group.to_string();
        }
    }
    name
}

/// The module path of a file's parent (`src/net/socket.rs` → `net`), for `super::` paths;
/// `None` at the top (`src/engine.rs`, whose `super` is the crate root).
fn parent_path(file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root().join("src")).ok()?;
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.pop();
    (!parts.is_empty()).then(|| parts.join("::"))
}

/// The module a `crate::…` path names: the longest listed prefix (`crate::net::socket::X` is
/// `net/socket`, `crate::engine::CellEngine` is `engine`).
fn target_of(path: &str, layers: &BTreeMap<String, usize>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("/"))
        .find(|m| layers.contains_key(m))
}

/// The paths after `prefix` (`crate::`, `super::`) a source file uses, comments left out;
/// `use crate::{a::b, c}` gives `a::b` and `c`.
fn imports(text: &str, prefix: &str) -> Vec<String> {
    let code: String = text
        .lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n");
    let mut out = Vec::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find(prefix) {
        // `super::` inside `crate::a::super::`-like text cannot occur; `self::super` can not
        // either, so a plain search is enough.
        rest = &rest[i + prefix.len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let item = item.trim().trim_start_matches("self::");
                if !item.is_empty() {
                    out.push(path_prefix(item));
                }
            }
            continue;
        }
        out.push(path_prefix(rest));
    }
    out
}

/// `a::b::C;…` → `a::b::C` (identifier characters and `::` only).
fn path_prefix(s: &str) -> String {
    let end = s
        .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(s.len());
    s[..end].trim_end_matches(':').to_string()
}

#[test]
fn no_module_imports_a_module_above_it() {
    let layers = layers();
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let from = module_of(file);
        if from == "lib" {
            continue; // the facade re-exports; it is above everything
        }
        let Some(&from_layer) = layers.get(&from) else {
            violations.push(format!(
                "{from} ({}) is not in PLAN.md's layers",
                file.display()
            ));
            continue;
        };
        let text = std::fs::read_to_string(file).expect("source");
        // Tests may import anything; the layering is about the code they test.
        let text = text.split("#[cfg(test)]").next().unwrap_or("");
        let mut paths = imports(text, "crate::");
        // `super::x` in `src/net/socket.rs` is `crate::net::x`.
        if let Some(parent) = parent_path(file) {
            paths.extend(
                imports(text, "super::")
                    .into_iter()
                    .filter(|p| !p.is_empty())
                    .map(|p| format!("{parent}::{p}")),
            );
        }
        for path in paths {
            if path == "cell_capnp" || path.starts_with("cell_capnp::") {
                continue; // the wire crate's bindings, re-exported
            }
            let Some(to) = target_of(&path, &layers) else {
                violations.push(format!("{from} uses crate::{path}, which is in no layer"));
                continue;
            };
            if to != from && layers[&to] < from_layer {
                violations.push(format!(
                    "{from} (layer {from_layer}) imports {to} (layer {}, above it)",
                    layers[&to]
                ));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert!(
        violations.is_empty(),
        "layering violations:\n{}",
        violations.join("\n")
    );
}

#[test]
fn every_listed_module_exists() {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    let modules: std::collections::BTreeSet<String> = files.iter().map(|f| module_of(f)).collect();
    let missing: Vec<String> = layers()
        .into_keys()
        .filter(|m| !modules.contains(m))
        .collect();
    assert!(
        missing.is_empty(),
        "PLAN.md lists modules that do not exist: {missing:?}"
    );
}

#[test]
fn no_source_file_is_longer_than_600_lines_before_its_tests() {
    let mut files = Vec::new();
    sources(&root().join("src"), &mut files);
    let mut long = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        let code = text
            .lines()
            .take_while(|l| !l.starts_with("#[cfg(test)]"))
            .count();
        if code > MAX_LINES {
            long.push(format!("{}: {code} lines", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "files over {MAX_LINES} lines:\n{}",
        long.join("\n")
    );
}

#[test]
fn the_import_scanner_reads_grouped_and_nested_paths() {
    let found = imports(
        "use crate::{a::b, c};\n// crate::ignored\nlet x = crate::d::e(1);",
        "crate::",
    );
    assert_eq!(found, ["a::b", "c", "d::e"]);
}
