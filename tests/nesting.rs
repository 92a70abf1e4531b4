//! Spawning through the Executor: nesting, pipelining, the compile cache, and bad children that
//! must not disturb their parent or siblings. Each test runs the `scenarios` guest as pid0,
//! which checks from inside and reports `ok:`/`fail:` lines.

mod common;

use common::*;

/// Asserts a scenario passed every check and printed each expected `ok:` fragment.
fn passes(args: &[&str], expected: &[&str]) -> Finished {
    let out = Cell::run("scenarios").args(args).finish();
    out.assert_code(0);
    assert!(!out.stderr.contains("fail:"), "{}", out.stderr);
    for e in expected {
        out.assert_stderr_has(e);
    }
    out
}

#[test]
fn three_levels_of_nesting_with_echo_at_every_level() {
    let out = passes(
        &["nested"],
        &["ok: relay (pid 1, depth 1) -> child-echo (depth 2) -> child-leaf (depth 3)"],
    );
    // Every level made its own calls over its own stdio.
    out.assert_stderr_has("[pid 1] relay")
        .assert_stderr_has("[pid 2] echo: 2 concurrent echoes answered correctly")
        .assert_stderr_has("[pid 3] leaf pid=3 depth=3 parent=2");
}

#[test]
fn hundred_pipelined_echo_calls_are_all_answered() {
    passes(
        &["pipelined"],
        &["ok: 100 echo calls sent before any was awaited: 100 answered correctly"],
    );
}

#[test]
fn spawning_the_same_child_fifty_times_compiles_it_once() {
    let out = Cell::run("scenarios")
        .args(&["spawn-many", "50"])
        .env("RUST_LOG", "cell::engine=info")
        .finish();
    out.assert_code(0)
        .assert_stderr_has("ok: spawned child-leaf 50 times sequentially: 50 exited with code 0");
    // pid0 itself and child-leaf: two components, each compiled exactly once.
    let compiles = out.stderr_lines_with("compiled component");
    assert_eq!(compiles.len(), 2, "{}", out.stderr);
}

#[test]
fn bad_bytes_and_core_modules_are_refused_to_the_caller() {
    passes(
        &["bad-wasm"],
        &[
            "bad-wasm: not a WebAssembly binary",
            "bad-wasm: this is a core wasm module, not a component",
            "ok: after the refused spawns, a good spawn still works",
        ],
    );
}

#[test]
fn a_trapping_child_is_reported_and_pid0_carries_on() {
    passes(
        &["trap"],
        &[
            "trapped: wasm trap: wasm `unreachable` instruction executed",
            "ok: pid0 carries on after the trap",
        ],
    );
}

#[test]
fn a_child_writing_garbage_is_terminated_and_its_sibling_is_fine() {
    passes(
        &["garbage"],
        &[
            "protocol violation:",
            "ok: its sibling child-leaf pid 2: exited with code 0",
        ],
    );
}

#[test]
fn a_child_that_never_speaks_rpc_just_exits() {
    passes(&["silent"], &["(never speaks RPC): exited with code 5"]);
}

#[test]
fn captured_stderr_is_readable_by_the_parent() {
    let out = passes(
        &["stderr-capture"],
        &["ok: captured stderr contains \"leaf\""],
    );
    // Captured output goes to the parent, not to the terminal.
    assert!(!out.stderr.contains("[pid 1] leaf"), "{}", out.stderr);
}

/// `Executor.load` once and spawn many; the component's hash is its bytes' SHA-256; granted to a
/// child without an Executor, it lets that child spawn exactly that program, as its own
/// children.
#[test]
fn a_loaded_component_spawns_many_and_can_be_granted() {
    use sha2::Digest as _;
    let out = passes(
        &["components"],
        &[
            "ok: spawned child-leaf 20 times from one component: 20 exited with code 0",
            "ok: loading the same bytes again gives the same hash",
            "ok: a child holding only the component spawned from it: exited with code 0",
            "ok: loading garbage is refused: ",
            "the next load is refused: ",
            "a process holds at most 64 components",
            "ok: components dropped free their slots",
            "ok: loading more than max-wasm-size is refused: ",
            "exceeds max-wasm-size 33554432",
        ],
    );
    let bytes = std::fs::read(guest("child-leaf")).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    out.assert_stderr_has(&format!("ok: component hash {sha}"))
        .assert_stderr_has(&format!("spawned {sha} 3 times, no executor"));
    out.assert_stderr_has("bad-wasm: not a WebAssembly binary");
}
