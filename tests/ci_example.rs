//! The README's CI example ("Using cell from CI") works as written: its `run:` script is taken
//! from the README, run by bash with the real `cell` first on PATH and jq reading the report,
//! for a component that succeeds, one that fails, and one that cannot start (the report says
//! why in every case).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn readme_script() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let section = readme
        .split("## Using cell from CI")
        .nth(1)
        .expect("the README has a CI section");
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a yaml block");
    let mut lines = block
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("run: |"));
    lines.next();
    let body: Vec<&str> = lines.take_while(|l| l.starts_with("    ")).collect();
    assert!(
        !body.is_empty(),
        "no run: script in the README's CI example"
    );
    body.iter().map(|l| &l[4..]).collect::<Vec<_>>().join("\n")
}

/// A command component whose `run` returns success, whatever its arguments.
fn succeeding_component() -> Vec<u8> {
    wat::parse_str(
        r#"(component
            (core module $m (func (export "run") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $f (result (result)) (canon lift (core func $i "run")))
            (instance $cli (export "run" (func $f)))
            (export "wasi:cli/run@0.2.0" (instance $cli)))"#,
    )
    .expect("wat")
}

/// Runs the README's script in a fresh directory holding `app` as `app.wasm` (none: missing).
fn run_script(app: Option<&[u8]>) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    for sub in ["fixtures", "out", "bin", "cache"] {
        std::fs::create_dir(dir.path().join(sub)).expect("dir");
    }
    if let Some(bytes) = app {
        std::fs::write(dir.path().join("app.wasm"), bytes).expect("app");
    }
    let cell = PathBuf::from(env!("CARGO_BIN_EXE_cell"));
    std::os::unix::fs::symlink(&cell, dir.path().join("bin/cell")).expect("symlink");
    let path = std::env::join_paths(std::iter::once(dir.path().join("bin")).chain(
        std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()),
    ))
    .expect("PATH");
    let out = Command::new("bash")
        .arg("-c")
        .arg(readme_script())
        .current_dir(dir.path())
        .env("PATH", path)
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .env_remove("RUST_LOG")
        .output()
        .expect("bash");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

#[test]
fn the_readme_ci_example_runs_as_written() {
    let (code, stdout) = run_script(Some(&succeeding_component()));
    assert_eq!(code, Some(0), "{stdout}");
    assert!(
        stdout.lines().any(|l| l.starts_with("pid0: exited 0 in ")),
        "{stdout}"
    );
    assert!(stdout.trim_end().ends_with("ok"), "{stdout}");

    // An ordinary program that fails on `--check`: exit 1, and the report says so.
    let hello = std::fs::read(common::guest("hello")).expect("hello");
    let (code, stdout) = run_script(Some(&hello));
    assert_eq!(code, Some(1), "{stdout}");
    assert!(stdout.contains("pid0: exited 1 in "), "{stdout}");
    assert!(
        stdout.contains("::error::the component failed with exit code 1"),
        "{stdout}"
    );

    // No component at all: 127, and still a report with the reason.
    let (code, stdout) = run_script(None);
    assert_eq!(code, Some(1), "{stdout}");
    assert!(
        stdout.contains("pid0: not-started cannot read app.wasm"),
        "{stdout}"
    );
    assert!(
        stdout.contains("could not start the component (exit 127)"),
        "{stdout}"
    );
}
