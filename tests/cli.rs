//! The `cell` command for terminals and CI: plain mode parity with `wasmtime run`, grants from
//! the command line, the terminal capability, a plain child driven through ByteStreams, the run
//! report, `cell inspect`, `cell compile` and the compile cache, exit codes and help.

mod common;

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};

use common::{cell, finish, guest, read_json, Cell, Finished};
use serde_json::Value;

/// `cell run --plain [flags] hello.wasm ARGS`.
fn hello(flags: &[&str], args: &[&str]) -> Cell {
    Cell::run("hello").flag("--plain").flags(flags).args(args)
}

// ---------------------------------------------------------------------------------------------
// Plain mode: parity with `wasmtime run`.

#[test]
fn plain_passes_args_exactly() {
    let f = hello(&[], &["args", "a b", "--flag", ""]).finish();
    f.assert_code(0);
    assert_eq!(
        f.stdout,
        "argv[0]=hello.wasm\nargv[1]=args\nargv[2]=a b\nargv[3]=--flag\nargv[4]=\n"
    );
}

/// Everything after the wasm path is the guest's, as with `wasmtime run`: cell's own flags
/// there (`--help`, `--version`, `--timeout`, `-v`, `--env`) reach the guest untouched.
#[test]
fn arguments_after_the_wasm_are_the_guests_even_cells_own_flags() {
    for flag in [
        &["--help"][..],
        &["--version"],
        &["--timeout", "1s", "x"],
        &["-v"],
        &["-vv", "--plain"],
        &["--env", "X=1"],
        &["--", "--help"], // a `--` after the guest's first argument is the guest's too
    ] {
        let f = hello(&[], &[&["args"], flag].concat()).finish();
        f.assert_code(0);
        let mut want = String::from("argv[0]=hello.wasm\nargv[1]=args\n");
        for (i, a) in flag.iter().enumerate() {
            want.push_str(&format!("argv[{}]={a}\n", i + 2));
        }
        assert_eq!(f.stdout, want, "hello args {flag:?}");
        assert!(f.stderr.is_empty(), "cell said something: {}", f.stderr);
    }
    // A `--` right after the wasm path separates cell's arguments from the guest's, as before.
    let f = hello(&[], &["--", "args", "--help"]).finish();
    f.assert_code(0);
    assert_eq!(
        f.stdout,
        "argv[0]=hello.wasm\nargv[1]=args\nargv[2]=--help\n"
    );
    // Right after the wasm path too: the guest sees its first argument, cell never parses it
    // (scenarios reports an unknown scenario name with exit code 2).
    for first in ["--help", "--version", "--timeout", "-v", "--env", "--plain"] {
        Cell::run("scenarios")
            .args(&[first, "1s"])
            .finish()
            .assert_code(2)
            .assert_stderr_has(&format!("unknown scenario \"{first}\""));
    }
    // The same for a cell guest: pid0's argv, not cell's help.
    Cell::run("scenarios")
        .args(&["argv", "--help", "--version"])
        .finish()
        .assert_code(0)
        .assert_stderr_has(r#"argv: ["--help", "--version"]"#);
}

#[test]
fn version_names_the_embedded_wasmtime() {
    let mut cmd = cell();
    cmd.arg("--version");
    let f = finish(cmd);
    f.assert_code(0);
    assert!(
        f.stdout.starts_with("cell ") && f.stdout.contains("(wasmtime 48."),
        "{}",
        f.stdout
    );
}

/// The mode follows the file: an ordinary WASI program runs as one without `--plain` (its
/// stdout and stdin are the terminal's), a cell guest is refused with `--plain`, and a cell
/// guest that prints to stdout is told so.
#[test]
fn the_mode_follows_the_file() {
    // hello is an ordinary program: no --plain needed, its stdout arrives, -v says why.
    let f = Cell::run("hello").args(&["args", "x"]).flag("-v").finish();
    f.assert_code(0).assert_stderr_has(
        "is not a cell guest (no cell-guest marker): running it as an ordinary WASI program",
    );
    assert_eq!(f.stdout, "argv[0]=hello.wasm\nargv[1]=args\nargv[2]=x\n");
    // A stdin filter without --plain reads its stdin instead of hanging.
    let f = Cell::run("upper").stdin("quiet\n").finish();
    f.assert_code(0);
    assert_eq!(f.stdout, "QUIET\n");
    // A cell guest with --plain: refused in one line, nothing written to stdout.
    let f = Cell::run("child-silent").flag("--plain").report().finish();
    f.assert_code(125)
        .assert_stderr_has("is a cell guest (built with cell-guest)")
        .assert_stderr_has("run it without --plain");
    assert_eq!(f.stdout, "");
    assert_eq!(f.report()["pid0"]["status"], "not-started");
    // --rpc forces RPC mode for a program without the marker (it never speaks RPC here).
    let f = Cell::run("hello")
        .flag("--rpc")
        .args(&["exit", "3"])
        .report()
        .finish();
    f.assert_code(3);
    assert_eq!(f.report()["mode"], "rpc");
    assert_eq!(f.stdout, "", "its stdout is the RPC channel");
    // A cell guest that println!s is told what it did.
    let f = Cell::run("hostile").arg("println").finish();
    f.assert_code(134).assert_stderr_has(
        "cell: pid0 protocol violation: wrote text (\"hello fr\"…) to stdout, which is its RPC channel; a cell guest logs with stderr",
    );
}

/// A trap caused by a failing host call names the cause, not "error while executing at wasm
/// backtrace:"; the backtrace stays under -v.
#[test]
fn a_traps_one_line_carries_its_root_cause() {
    let f = Cell::run("hostile").arg("pollables").report().finish();
    f.assert_code(134)
        .assert_stderr_has("cell: pid0 trapped: resource table has no free keys");
    assert!(!f.stderr.contains("error while executing"), "{}", f.stderr);
    let detail = f.report()["pid0"]["detail"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        detail.contains("resource table has no free keys"),
        "{detail}"
    );
    let f = Cell::run("hostile").arg("pollables").flag("-v").finish();
    f.assert_stderr_has("error while executing at wasm backtrace");
}

/// wasmtime parity: `--argv0`, `--env NAME` (copy from the host), `--cwd`.
#[test]
fn argv0_env_inherit_form_and_cwd() {
    let f = hello(&["--argv0", "tool"], &["args", "x"]).finish();
    f.assert_code(0);
    assert_eq!(f.stdout, "argv[0]=tool\nargv[1]=args\nargv[2]=x\n");
    let f = hello(
        &[
            "--env",
            "CELL_T_SET",
            "--env",
            "CELL_T_UNSET",
            "--env",
            "B=2",
        ],
        &["env"],
    )
    .env("CELL_T_SET", "from-host")
    .env_remove("CELL_T_UNSET")
    .finish();
    f.assert_code(0);
    assert_eq!(f.stdout, "B=2\nCELL_T_SET=from-host\n");
    let dir = tempfile::tempdir().unwrap();
    let map = format!("{}::/data", dir.path().display());
    let f = hello(&["--dir", &map, "--cwd", "/data"], &["cwd"]).finish();
    f.assert_code(0);
    assert_eq!(f.stdout, "initial-cwd=/data\n");
    let f = hello(&[], &["cwd"]).finish();
    assert_eq!(f.stdout, "initial-cwd=none\n");
}

#[test]
fn plain_env_is_only_what_is_granted() {
    let f = hello(
        &[
            "--env",
            "MODE=ci",
            "--env-inherit",
            "CELL_TEST_INHERITED",
            "--env-inherit",
            "CELL_TEST_UNSET",
            "--env-inherit",
            "CELL_TEST_OVERRIDDEN",
            "--env",
            "CELL_TEST_OVERRIDDEN=from-flag",
        ],
        &["env"],
    )
    .env("CELL_TEST_INHERITED", "yes")
    .env("CELL_TEST_OVERRIDDEN", "from-host")
    .env("CELL_TEST_LEAK", "must-not-appear")
    .env_remove("CELL_TEST_UNSET")
    .finish();
    f.assert_code(0);
    assert_eq!(
        f.stdout,
        "CELL_TEST_INHERITED=yes\nCELL_TEST_OVERRIDDEN=from-flag\nMODE=ci\n"
    );

    let f = hello(&[], &["env"])
        .env("CELL_TEST_LEAK", "must-not-appear")
        .finish();
    f.assert_code(0);
    assert_eq!(f.stdout, "", "nothing from the host environment leaks");
}

#[test]
fn plain_reads_a_read_only_preopen() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "hello from the host\n").unwrap();
    let map = format!("{}::/data", dir.path().display());
    let f = hello(&["--dir", &map], &["read", "/data/a.txt"]).finish();
    f.assert_code(0);
    assert_eq!(f.stdout, "hello from the host\n");
}

#[test]
fn plain_write_is_refused_on_a_read_only_dir() {
    let dir = tempfile::tempdir().unwrap();
    let map = format!("{}::/data", dir.path().display());
    let f = hello(&["--dir", &map], &["write", "/data/new.txt"]).finish();
    f.assert_code(1)
        .assert_stderr_has("error: write /data/new.txt");
    assert!(!dir.path().join("new.txt").exists());
}

#[test]
fn plain_write_is_allowed_on_a_read_write_dir() {
    let dir = tempfile::tempdir().unwrap();
    let map = format!("{}::/out", dir.path().display());
    let f = hello(&["--dir-rw", &map], &["write", "/out/new.txt"]).finish();
    f.assert_code(0);
    assert_eq!(f.stdout, "wrote /out/new.txt\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("new.txt")).unwrap(),
        "written"
    );
}

#[test]
fn plain_sees_no_host_files_without_a_grant() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("secret.txt"), "secret").unwrap();
    let path = dir.path().join("secret.txt");
    let f = hello(&[], &["read", path.to_str().unwrap()]).finish();
    f.assert_code(1).assert_stderr_has("error: read");
    assert!(!f.stdout.contains("secret"));
}

#[test]
fn plain_exit_codes_are_exact() {
    for code in [0, 3, 42, 255] {
        let f = hello(&[], &["exit", &code.to_string()]).finish();
        f.assert_code(code);
    }
}

#[test]
fn plain_stdin_flows_to_stdout() {
    // Several times the host's pipe capacity, so the stdin thread meets backpressure.
    let input: Vec<u8> = (0..300_000u32)
        .map(|i| b"0123456789abcdef\n"[(i % 17) as usize])
        .collect();
    let f = hello(&[], &["cat"]).stdin(input.clone()).finish();
    f.assert_code(0);
    assert_eq!(f.stdout.len(), input.len());
    assert!(f.stdout.as_bytes() == input.as_slice());
}

/// stdin redirected from a directory is a failed read for the guest, not end of input.
#[test]
fn stdin_from_a_directory_is_a_read_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = hello(&[], &["cat"]).command();
    cmd.stdin(std::fs::File::open(dir.path()).unwrap())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let out = cmd.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stdin: "),
        "the guest saw a read error: {stderr}"
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn plain_has_clocks_and_random() {
    let f = hello(&[], &["clock"]).finish();
    f.assert_code(0);
    let secs: u64 = f
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("unix-seconds="))
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs > 1_600_000_000, "wall clock is real: {secs}");
    assert!(f.stdout.contains("monotonic-ok"));

    let f = hello(&[], &["random"]).finish();
    f.assert_code(0);
    let lines: Vec<&str> = f.stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    assert_ne!(lines[0], lines[1], "random numbers differ");
}

#[test]
fn plain_trap_is_one_line_and_134() {
    let f = hello(&[], &["trap"]).finish();
    f.assert_code(134);
    let cell_lines = f.stderr_lines_with("cell:");
    assert_eq!(cell_lines.len(), 1, "stderr:\n{}", f.stderr);
    assert!(cell_lines[0].starts_with("cell: pid0 trapped: "));
    assert!(cell_lines[0].contains("unreachable"));
    assert_eq!(f.stderr.lines().count(), 1, "no backtrace:\n{}", f.stderr);

    // With -v the whole story is logged (still on stderr only).
    let f = hello(&["-v"], &["trap"]).finish();
    f.assert_code(134).assert_stderr_has("guest failed");
    assert_eq!(f.stdout, "");
}

#[test]
fn host_logs_never_mix_with_guest_output() {
    let f = hello(&["-vv"], &["args", "x"]).finish();
    f.assert_code(0);
    assert_eq!(f.stdout, "argv[0]=hello.wasm\nargv[1]=args\nargv[2]=x\n");
    assert!(f.stderr.contains("INFO") || f.stderr.contains("DEBUG"));
}

// ---------------------------------------------------------------------------------------------
// A plain child driven through ByteStreams; the terminal capability.

#[test]
fn plain_child_filters_text_through_bytestreams() {
    let f = Cell::run("pipe-pid0").finish();
    f.assert_code(0)
        .assert_stderr_has("ok: short text through upper")
        .assert_stderr_has("ok: large payload through upper")
        .assert_stderr_has("--- 2 passed, 0 failed");
}

#[test]
fn tty_gives_pid0_the_terminal() {
    let f = Cell::run("tty-echo")
        .flag("--tty")
        .stdin(&b"hello terminal\nsecond line\n"[..])
        .finish();
    f.assert_code(0);
    assert_eq!(f.stdout, "tty: HELLO TERMINAL\n");
}

#[test]
fn terminal_is_not_granted_without_tty() {
    let f = Cell::run("tty-echo").finish();
    f.assert_code(1).assert_stderr_has("not-granted: terminal");
    assert_eq!(f.stdout, "");
}

#[test]
fn tty_and_plain_do_not_mix() {
    let f = hello(&["--tty"], &["args"]).finish();
    f.assert_code(125);
    // Not even when the file decides the mode: --tty is for a cell guest.
    let f = Cell::run("hello").flag("--tty").arg("args").finish();
    f.assert_code(125)
        .assert_stderr_has("is an ordinary WASI program");
}

// ---------------------------------------------------------------------------------------------
// The run report.

/// Checks the fields every report has, and pid0's entry in `processes`.
fn check_report_schema(r: &Value, exit_code: u64) {
    assert_eq!(r["schema"], "cell-report/1");
    assert!(r["wasm"].is_string());
    assert_eq!(r["sha256"].as_str().unwrap().len(), 64);
    assert!(matches!(r["mode"].as_str(), Some("rpc" | "plain")));
    assert_eq!(r["exit_code"].as_u64(), Some(exit_code));
    assert!(r["pid0"]["status"].is_string());
    assert!(r["signal"].is_null());
    assert!(r["wall_ms"].is_u64());
    assert!(r["processes_not_listed"].is_u64());
    assert!(r["compile_cache"]["enabled"].is_boolean());
    assert!(r["compile_cache"]["hits"].is_u64());
    assert!(r["compile_cache"]["misses"].is_u64());
    assert!(r["components_compiled"].is_u64());
    assert_eq!(r["network"]["allowed"].as_u64(), Some(0));
    assert_eq!(r["network"]["denied"].as_u64(), Some(0));
    let procs = r["processes"].as_array().unwrap();
    for p in procs {
        assert!(p["pid"].is_u64());
        assert!(p["parent"].is_u64() || p["parent"].is_null());
        assert!(p["name"].is_string());
        assert_eq!(p["sha256"].as_str().unwrap().len(), 64);
        assert!(p["status"]["status"].is_string());
        assert!(p["start_ms"].as_u64().unwrap() <= p["end_ms"].as_u64().unwrap());
        assert!(p["peak_memory_bytes"].as_u64().unwrap() > 0);
        assert!(p["fuel_used"].is_null() || p["fuel_used"].is_u64());
    }
    let pid0 = procs.iter().find(|p| p["pid"] == 0).expect("pid0 listed");
    assert!(pid0["parent"].is_null());
    assert_eq!(pid0["status"], r["pid0"]);
    assert_eq!(pid0["sha256"], r["sha256"]);
}

/// The fields every report has, whatever the ending.
fn check_report_envelope(r: &Value, exit_code: u64) {
    assert_eq!(r["schema"], "cell-report/1", "{r}");
    assert!(r["wasm"].is_string());
    assert_eq!(r["exit_code"].as_u64(), Some(exit_code), "{r}");
    assert!(r["pid0"]["status"].is_string(), "{r}");
    for key in [
        "sha256",
        "mode",
        "signal",
        "wall_ms",
        "processes",
        "processes_not_listed",
        "compile_cache",
        "components_compiled",
        "network",
    ] {
        assert!(r.get(key).is_some(), "the report lacks {key}: {r}");
    }
}

/// A component whose start function spins: it runs out of fuel while being instantiated.
fn spinning_start(dir: &Path) -> std::path::PathBuf {
    let wat = r#"(component
        (core module $m
            (func $spin (loop $l (br $l)))
            (start $spin)
            (func (export "run") (result i32) i32.const 0))
        (core instance $i (instantiate $m))
        (func $f (result (result)) (canon lift (core func $i "run")))
        (instance $cli (export "run" (func $f)))
        (export "wasi:cli/run@0.2.0" (instance $cli)))"#;
    let path = dir.join("spin-start.wasm");
    std::fs::write(&path, wat::parse_str(wat).expect("wat")).expect("write");
    path
}

/// Every ending writes a valid report: pid0's own codes, each of cell's codes (a start failure
/// is pid0's `not-started` status with the reason), signals.
#[test]
fn every_exit_code_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "not wasm").unwrap();
    let not_started = |f: &Finished, code: i32, needle: &str| {
        f.assert_code(code);
        let r = f.report();
        check_report_envelope(r, code as u64);
        assert_eq!(r["pid0"]["status"], "not-started", "{r}");
        let detail = r["pid0"]["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(needle), "{needle:?} not in {detail:?}");
        assert!(r["sha256"].is_null());
    };
    let ran = |f: &Finished, code: i32, status: &str| {
        f.assert_code(code);
        let r = f.report();
        check_report_envelope(r, code as u64);
        assert_eq!(r["pid0"]["status"], status, "{r}");
        assert_eq!(r["sha256"].as_str().map(str::len), Some(64));
    };
    ran(&hello(&[], &["exit", "0"]).report().finish(), 0, "exited");
    ran(&hello(&[], &["exit", "7"]).report().finish(), 7, "exited");
    ran(
        &Cell::run("hostile")
            .flags(&["--timeout", "200ms"])
            .arg("spin")
            .report()
            .finish(),
        124,
        "timed-out",
    );
    ran(&hello(&[], &["trap"]).report().finish(), 134, "trapped");
    // Out of fuel while instantiating is the guest running out of fuel: 134, not 126.
    let spin = spinning_start(dir.path());
    let f = Cell::run_path(&spin)
        .flags(&["--plain", "--fuel", "1000000"])
        .report()
        .finish();
    ran(&f, 134, "out-of-fuel");
    f.assert_stderr_has("cell: pid0 out of fuel");
    // cell's own codes.
    let f = hello(&["--dir", "/definitely/not/here::/x"], &["args"])
        .report()
        .finish();
    not_started(&f, 125, "/definitely/not/here");
    let f = hello(&["--bogus-flag"], &["args"]).report().finish();
    not_started(&f, 125, "--bogus-flag");
    not_started(
        &Cell::run_path(&text).report().finish(),
        126,
        "not a WebAssembly binary",
    );
    let f = Cell::run_path(dir.path().join("missing.wasm"))
        .report()
        .finish();
    not_started(&f, 127, "cannot read");
}

#[test]
fn report_describes_a_tree() {
    let f = Cell::run("pipe-pid0").report().finish();
    f.assert_code(0);
    let r = f.report();
    check_report_schema(r, 0);
    assert_eq!(r["mode"], "rpc");
    assert_eq!(
        r["pid0"],
        serde_json::json!({"status": "exited", "detail": 0})
    );
    let procs = r["processes"].as_array().unwrap();
    let children: Vec<&Value> = procs.iter().filter(|p| p["pid"] != 0).collect();
    assert_eq!(children.len(), 2, "two upper children: {procs:?}");
    for c in children {
        assert_eq!(c["name"], "upper");
        assert_eq!(c["parent"].as_u64(), Some(0));
        assert_eq!(
            c["status"],
            serde_json::json!({"status": "exited", "detail": 0})
        );
    }
}

#[test]
fn report_in_plain_mode_has_pid0_code_and_trap() {
    let f = hello(&[], &["exit", "3"]).report().finish();
    f.assert_code(3);
    let r = f.report();
    check_report_schema(r, 3);
    assert_eq!(r["mode"], "plain");
    assert_eq!(
        r["pid0"],
        serde_json::json!({"status": "exited", "detail": 3})
    );
    assert_eq!(r["processes"].as_array().unwrap().len(), 1);

    let f = hello(&[], &["trap"]).report().finish();
    f.assert_code(134);
    let r = f.report();
    check_report_schema(r, 134);
    assert_eq!(r["pid0"]["status"], "trapped");
    assert!(r["pid0"]["detail"]
        .as_str()
        .unwrap()
        .contains("unreachable"));
}

#[test]
fn report_to_an_unwritable_place_fails_before_running() {
    let f = hello(&["--report", "/nonexistent-dir/report.json"], &["args"]).finish();
    f.assert_code(125)
        .assert_stderr_has("cannot write the report");
    assert_eq!(f.stdout, "", "pid0 did not run");
}

// ---------------------------------------------------------------------------------------------
// The compile cache and `cell compile`.

fn run_with_cache(cache: &Path, report: &Path) -> Value {
    Cell::run("hello")
        .own_cache()
        .flags(&["--plain", "--cache-dir"])
        .flag(cache)
        .flag("--report")
        .flag(report)
        .arg("args")
        .finish()
        .assert_code(0);
    read_json(report)
}

#[test]
fn second_run_hits_the_compile_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let report = dir.path().join("r.json");
    let first = run_with_cache(&cache, &report);
    assert_eq!(first["compile_cache"]["enabled"], true);
    assert_eq!(first["compile_cache"]["hits"].as_u64(), Some(0));
    assert!(first["compile_cache"]["misses"].as_u64().unwrap() >= 1);
    let second = run_with_cache(&cache, &report);
    assert!(second["compile_cache"]["hits"].as_u64().unwrap() >= 1);
    assert_eq!(
        second["compile_cache"]["misses"].as_u64(),
        Some(0),
        "nothing compiled"
    );
}

#[test]
fn no_cache_disables_the_disk_cache() {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("r.json");
    Cell::run("hello")
        .own_cache()
        .env("XDG_CACHE_HOME", dir.path().join("xdg"))
        .flags(&["--plain", "--no-cache", "--report"])
        .flag(&report)
        .finish()
        .assert_code(0);
    let r = read_json(&report);
    assert_eq!(
        r["compile_cache"],
        serde_json::json!({"enabled": false, "hits": 0, "misses": 0})
    );
    assert!(!dir.path().join("xdg").exists(), "no cache written");
}

/// A default cache that cannot be made (here: its parent is a file) is not fatal: one warning,
/// then the run goes on without a disk cache. An explicit --cache-dir that cannot be used is.
#[test]
fn an_unusable_default_cache_warns_once_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("file");
    std::fs::write(&not_a_dir, "x").unwrap();
    let f = Cell::run("hello")
        .own_cache()
        .env("XDG_CACHE_HOME", &not_a_dir)
        .args(&["exit", "0"])
        .report()
        .finish();
    f.assert_code(0);
    assert_eq!(f.stderr_lines_with("warning:").len(), 1, "{}", f.stderr);
    f.assert_stderr_has("running without the compile cache");
    assert_eq!(f.report()["compile_cache"]["enabled"], false);
    let f = Cell::run("hello")
        .own_cache()
        .flag("--cache-dir")
        .flag(not_a_dir.join("cell"))
        .args(&["exit", "0"])
        .finish();
    f.assert_code(125);
}

#[test]
fn compile_warms_the_cache() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let compile = || {
        let mut cmd = cell();
        cmd.arg("compile")
            .arg("--cache-dir")
            .arg(&cache)
            .arg(guest("hello"));
        finish(cmd)
    };
    let f = compile();
    f.assert_code(0);
    assert!(f.stdout.starts_with("compiled "), "{}", f.stdout);
    let f = compile();
    f.assert_code(0);
    assert!(f.stdout.starts_with("cached "), "{}", f.stdout);

    let r = run_with_cache(&cache, &dir.path().join("r.json"));
    assert!(r["compile_cache"]["hits"].as_u64().unwrap() >= 1);
    assert_eq!(r["compile_cache"]["misses"].as_u64(), Some(0));
}

#[test]
fn compile_rejects_what_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    let mut cmd = cell();
    cmd.arg("compile")
        .arg("--cache-dir")
        .arg(dir.path())
        .arg(&core);
    finish(cmd)
        .assert_code(126)
        .assert_stderr_has("not a component");
    let mut cmd = cell();
    cmd.arg("compile")
        .arg("--cache-dir")
        .arg(dir.path())
        .arg(dir.path().join("missing.wasm"));
    finish(cmd).assert_code(127);
}

// ---------------------------------------------------------------------------------------------
// `cell inspect`.

#[test]
fn inspect_tells_plain_programs_from_cell_guests() {
    let mut cmd = cell();
    cmd.arg("inspect").arg("--no-cache").arg(guest("hello"));
    let f = finish(cmd);
    f.assert_code(0);
    assert!(f.stdout.contains("plain WASI command"), "{}", f.stdout);
    assert!(f.stdout.contains("wasi:cli/run@0.2"));
    assert!(f.stdout.contains("wasi:filesystem/preopens@0.2"));

    let mut cmd = cell();
    cmd.arg("inspect").arg("--no-cache").arg(guest("tty-echo"));
    let f = finish(cmd);
    f.assert_code(0);
    assert!(f.stdout.contains("cell guest"), "{}", f.stdout);
}

#[test]
fn inspect_json() {
    use sha2::Digest as _;
    for (name, rpc) in [("hello", false), ("upper", false), ("pipe-pid0", true)] {
        let path = guest(name);
        let mut cmd = cell();
        cmd.args(["inspect", "--json", "--no-cache"]).arg(&path);
        let f = finish(cmd);
        f.assert_code(0);
        let v: Value = serde_json::from_str(&f.stdout).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(v["size"].as_u64(), Some(bytes.len() as u64));
        assert_eq!(
            v["sha256"].as_str().unwrap(),
            hex::encode(sha2::Sha256::digest(&bytes))
        );
        assert_eq!(v["rpc_guest"], rpc, "{name}");
        assert_eq!(v["command"], true);
        assert!(v["missing_import"].is_null());
        let names = |key: &str| -> Vec<String> {
            v[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert!(names("imports")
            .iter()
            .any(|n| n.starts_with("wasi:cli/stdin@0.2.")));
        assert!(names("exports")
            .iter()
            .any(|n| n.starts_with("wasi:cli/run@0.2.")));
    }
}

#[test]
fn inspect_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.wasm");
    std::fs::write(&text, "not wasm at all").unwrap();
    let mut cmd = cell();
    cmd.args(["inspect", "--no-cache"]).arg(&text);
    let f = finish(cmd);
    f.assert_code(126)
        .assert_stderr_has("not a WebAssembly binary");
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);

    let mut cmd = cell();
    cmd.args(["inspect", "--no-cache"])
        .arg(dir.path().join("missing.wasm"));
    let f = finish(cmd);
    f.assert_code(127).assert_stderr_has("cannot read");
    assert_eq!(f.stderr.lines().count(), 1, "{}", f.stderr);
}

// ---------------------------------------------------------------------------------------------
// Exit codes of `cell` itself (124 and 137 are produced by the limits tests).

#[test]
fn exit_code_125_for_a_bad_flag() {
    let mut cmd = cell();
    cmd.args(["run", "--no-such-flag"]).arg(guest("hello"));
    finish(cmd).assert_code(125);
    // (`--env NAME` alone is the inherit form now; an empty name is still a usage error.)
    let mut cmd = cell();
    cmd.args(["run", "--env", "=value"]).arg(guest("hello"));
    finish(cmd).assert_code(125);
}

#[test]
fn exit_code_125_for_a_missing_dir() {
    let f = hello(&["--dir", "/definitely/not/here::/x"], &["args"]).finish();
    f.assert_code(125).assert_stderr_has("/definitely/not/here");
}

/// `cell run --no-cache ARGS hello.wasm args` as an unprivileged user: `setpriv` to nobody
/// when the tests run as root (root can read every directory), else as is. The binary and the
/// wasm are copied into `dir` (world-readable), since the checkout may not be.
fn as_unprivileged(dir: &Path, args: &[String]) -> Finished {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = dir.join("cell");
    let wasm = dir.join("hello.wasm");
    if !bin.exists() {
        std::fs::copy(env!("CARGO_BIN_EXE_cell"), &bin).unwrap();
        std::fs::copy(guest("hello"), &wasm).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&wasm, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let mut cmd = if unsafe_euid() == 0 {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(&bin);
        c
    } else {
        Command::new(&bin)
    };
    cmd.env_remove("RUST_LOG")
        .args(["run", "--no-cache"])
        .args(args)
        .arg(&wasm)
        .arg("args");
    finish(cmd)
}

fn unsafe_euid() -> u32 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        })
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A directory cell cannot read (or, for --dir-rw, write) is refused up front, naming it.
#[test]
fn a_dir_cell_cannot_use_is_refused_up_front() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    // World-traversable parent, so only the grant itself is out of reach.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let closed = dir.path().join("closed");
    let read_only = dir.path().join("read-only");
    std::fs::create_dir(&closed).unwrap();
    std::fs::create_dir(&read_only).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();
    std::fs::set_permissions(&read_only, std::fs::Permissions::from_mode(0o555)).unwrap();
    let run = |flag: &str, path: &Path| {
        as_unprivileged(
            dir.path(),
            &[flag.to_string(), format!("{}::/d", path.display())],
        )
    };
    run("--dir", &closed)
        .assert_code(125)
        .assert_stderr_has(&format!(
            "{}: cell cannot read this directory",
            closed.display()
        ));
    run("--dir-rw", &read_only)
        .assert_code(125)
        .assert_stderr_has("cell cannot write this directory (--dir-rw)");
    // Readable is enough for --dir.
    run("--dir", &read_only).assert_code(0);
}

#[test]
fn exit_code_126_for_what_is_not_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let core = dir.path().join("core.wasm");
    std::fs::write(&core, b"\0asm\x01\0\0\0").unwrap();
    for plain in [false, true] {
        let run = Cell::run_path(&core).own_cache().flag("--no-cache");
        let run = if plain { run.flag("--plain") } else { run };
        run.finish()
            .assert_code(126)
            .assert_stderr_has("core wasm module");
    }
    let text = dir.path().join("x.wasm");
    std::fs::write(&text, "hello").unwrap();
    Cell::run_path(&text).finish().assert_code(126);
}

#[test]
fn exit_code_127_for_a_missing_file() {
    let f = Cell::run_path("/definitely/not/here.wasm").finish();
    f.assert_code(127).assert_stderr_has("cannot read");
}

#[test]
fn exit_code_134_for_a_trap_and_pid0_codes_pass_through() {
    hello(&[], &["trap"]).finish().assert_code(134);
    // An RPC pid0's own code, exactly.
    Cell::run("child-silent")
        .args(&["3"])
        .finish()
        .assert_code(3);
    Cell::run("child-silent")
        .args(&["0"])
        .finish()
        .assert_code(0);
}

/// Starts `hello cat` in plain mode, waits until it echoed a line (so cell is serving it and
/// its signal handlers are installed), sends `signal`, and returns how cell ended.
fn stopped_by(signal: &str) -> Finished {
    use std::io::{BufRead as _, BufReader, Read as _};
    let mut child = hello(&[], &["cat"])
        .command()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cell");
    let _watchdog = common::Watchdog::arm(child.id());
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ping\n").unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ping\n");
    let status = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    drop(stdin);
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    Finished::new(code, String::new(), stderr)
}

#[test]
fn exit_codes_130_and_143_for_signals_to_cell() {
    stopped_by("-INT")
        .assert_code(130)
        .assert_stderr_has("cell: stopped by signal 2");
    stopped_by("-TERM")
        .assert_code(143)
        .assert_stderr_has("cell: stopped by signal 15");
}

// ---------------------------------------------------------------------------------------------
// Help.

/// Every flag the README's tables name is a flag of `cell run`, and every exit code the
/// README lists is in `cell run --help`.
#[test]
fn the_readme_tables_match_the_binary() {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let mut cmd = cell();
    cmd.args(["run", "--help"]);
    let help = finish(cmd).stdout;
    let mut flags = Vec::new();
    // The wasmtime mapping table names wasmtime's flags in its first column: not cell's.
    let mut in_wasmtime_table = false;
    for line in readme.lines() {
        if line.starts_with('#') {
            in_wasmtime_table = line.contains("`wasmtime run` flags and cell's");
        }
        if in_wasmtime_table || !line.starts_with("| `--") {
            continue;
        }
        let flag: String = line[3..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        flags.push(flag);
    }
    assert!(
        flags.len() >= 15,
        "too few flags found in the README: {flags:?}"
    );
    for flag in &flags {
        let listed = [" ", "\n", "=", ","]
            .iter()
            .any(|end| help.contains(&format!("{flag}{end}")));
        assert!(listed, "README names {flag}, which `cell run --help` lacks");
    }
    for code in ["124", "125", "126", "127", "134", "137", "130", "143"] {
        assert!(
            readme.contains(&format!("| {code} ")),
            "README lacks exit code {code}"
        );
        assert!(
            help.contains(code),
            "`cell run --help` lacks exit code {code}"
        );
    }
}

#[test]
fn help_reads_well() {
    let help = |args: &[&str]| {
        let mut cmd = cell();
        cmd.args(args);
        let f = finish(cmd);
        f.assert_code(0);
        f.stdout
    };
    let top = help(&["--help"]);
    for word in ["run", "inspect", "compile", "Examples"] {
        assert!(top.contains(word), "cell --help lacks {word}:\n{top}");
    }
    let run = help(&["run", "--help"]);
    for word in [
        "--plain",
        "--dir <HOST[::GUEST]>",
        "--dir-rw",
        "--env-inherit <KEY>",
        "--tty",
        "--report <FILE>",
        "Exit status",
        "125",
        "126",
        "127",
        "134",
    ] {
        assert!(run.contains(word), "cell run --help lacks {word}:\n{run}");
    }
    assert!(help(&["inspect", "--help"]).contains("--json"));
    assert!(help(&["compile", "--help"]).contains("--cache-dir"));
    assert!(help(&["--version"]).starts_with("cell "));
}
