//! `cell run` end to end: the demo, exit codes, and one-line errors for files that cannot run.

mod common;

use common::*;

#[test]
fn demo_pid0_tells_its_story_and_exits_zero() {
    let out = Cell::run("pid0").finish();
    out.assert_code(0)
        .assert_stderr_has("pid0: hello! I am pid 0")
        .assert_stderr_has("[pid 2] leaf pid=2 depth=2 parent=1")
        .assert_stderr_has("not-granted: executor")
        .assert_stderr_has("pid0: bye!");
    assert!(
        out.stdout.is_empty(),
        "pid0's stdout is its RPC channel, not the terminal"
    );
}

#[test]
fn pid0_exit_code_is_cell_exit_code() {
    for code in ["0", "3", "42", "255"] {
        let out = Cell::run("scenarios")
            .args(&["exit", code])
            .report()
            .finish();
        out.assert_code(code.parse().unwrap());
        let want: i64 = code.parse().unwrap();
        assert_eq!(out.pid0_status(), ("exited".into(), want.into()));
    }
}

#[test]
fn args_reach_pid0_exactly() {
    // Empty, spaced and dash-led arguments arrive as given, in order.
    Cell::run("scenarios")
        .args(&["argv", "a b", "", "-x", "--flag=1"])
        .finish()
        .assert_code(0)
        .assert_stderr_has(r#"argv: ["a b", "", "-x", "--flag=1"]"#);
}

#[test]
fn an_unknown_scenario_is_pid0s_own_usage_error() {
    // The scenario name is pid0's argv[1]; an unknown one is pid0's own usage error (code 2).
    Cell::run("scenarios")
        .arg("no-such-scenario")
        .finish()
        .assert_code(2)
        .assert_stderr_has("unknown scenario \"no-such-scenario\"");
}

fn assert_one_line_error(out: &Finished, code: i32, needle: &str) {
    out.assert_code(code).assert_stderr_has(needle);
    assert_eq!(
        out.stderr.trim_end().lines().count(),
        1,
        "a host error is one line; stderr:\n{}",
        out.stderr
    );
    assert!(out.stderr.starts_with("cell: "), "{}", out.stderr);
}

#[test]
fn missing_file_is_one_line_and_exit_127() {
    let out = Cell::run_path("/nonexistent/missing.wasm").finish();
    assert_one_line_error(&out, 127, "cannot read /nonexistent/missing.wasm");
}

#[test]
fn non_wasm_file_is_one_line_and_exit_126() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notes.wasm");
    std::fs::write(&path, "this is text, not wasm").unwrap();
    let out = Cell::run_path(&path).finish();
    assert_one_line_error(&out, 126, "not a WebAssembly binary");
}

#[test]
fn core_module_is_one_line_and_exit_126() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("core.wasm");
    std::fs::write(&path, wat::parse_str("(module)").unwrap()).unwrap();
    let out = Cell::run_path(&path).finish();
    assert_one_line_error(&out, 126, "core wasm module, not a component");
}

#[test]
fn missing_import_is_named_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keyvalue.wasm");
    let component = r#"(component
        (import "wasi:keyvalue/store@0.2.0" (instance))
    )"#;
    std::fs::write(&path, wat::parse_str(component).unwrap()).unwrap();
    let out = Cell::run_path(&path).finish();
    assert_one_line_error(
        &out,
        126,
        "component imports `wasi:keyvalue/store@0.2.0`, which cell does not provide",
    );
}

#[test]
fn component_without_run_export_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("library.wasm");
    std::fs::write(&path, wat::parse_str("(component)").unwrap()).unwrap();
    let out = Cell::run_path(&path).finish();
    assert_one_line_error(&out, 126, "not a command (it must export wasi:cli/run)");
}

#[test]
fn bad_flag_is_a_usage_error_125() {
    let mut cmd = cell();
    cmd.args(["run", "--no-such-flag", "x.wasm"]);
    let out = finish(cmd);
    out.assert_code(125).assert_stderr_has("--no-such-flag");
}

#[test]
fn help_exits_zero() {
    let mut cmd = cell();
    cmd.arg("--help");
    let out = finish(cmd);
    out.assert_code(0);
    assert!(out.stdout.contains("run"), "{}", out.stdout);
}
