//! The hostile-guest suite: every way a guest can misbehave ends with the specific status,
//! while the host survives and a sibling echo loop completes all its calls.
//!
//! Each case runs the real `cell` on `hostile-pid0 <case>` (guests/hostile-pid0), which checks
//! the status from inside the tree; here we check the run as a whole (exit code, the guest's
//! `ok:` lines, the host's own log of how each process ended) and the host's memory.

mod common;

use common::{Cell, Finished};
use serde_json::Value;

/// Runs `cell run --report R [flags] hostile-pid0.wasm <case> [args]` and asserts that every
/// check inside passed.
fn case(flags: &[&str], args: &[&str]) -> Finished {
    let out = Cell::run("hostile-pid0")
        .flags(flags)
        .args(args)
        .report()
        .finish();
    out.assert_code(0)
        .assert_stderr_has("ok: sibling echo loop completed all its calls: exited with code 0")
        .assert_stderr_has(", 0 failed");
    assert!(
        out.stderr_lines_with("fail:").is_empty(),
        "failed checks:\n{}",
        out.stderr
    );
    out
}

/// How many processes of the run ended killed by `by` (`parent`, `cascade`, `operator`),
/// from the report.
fn killed_by(out: &Finished, by: &str) -> usize {
    out.count_status("killed", Value::from(by))
}

#[test]
fn infinite_loop_times_out() {
    case(&[], &["spin"]).assert_stderr_has("ok: spin: timed out: timed out");
}

#[test]
fn kill_works_while_spinning() {
    case(&[], &["kill-spin"]).assert_stderr_has("killed by its parent");
}

#[test]
fn kill_works_while_blocked_in_poll() {
    case(&[], &["kill-sleep"]).assert_stderr_has("killed by its parent");
}

#[test]
fn kill_during_a_blocking_rpc_call_takes_the_subtree() {
    let out = case(&[], &["kill-blocked"]);
    out.assert_stderr_has("ok: child blocked in Process.wait killed: killed by its parent");
    // Its sleeping child went with it.
    assert_eq!(killed_by(&out, "cascade"), 1, "{}", out.stderr);
}

#[test]
fn memory_bomb_is_out_of_memory() {
    case(&[], &["membomb"]).assert_stderr_has("ok: membomb: out of memory");
}

#[test]
fn fuel_runs_out() {
    case(&["--fuel", "100000000000"], &["fuel"])
        .assert_stderr_has("ok: spin with fuel: out of fuel");
}

#[test]
fn stack_overflow_traps() {
    case(&[], &["stack-overflow"]).assert_stderr_has("trapped: wasm trap: call stack exhausted");
}

#[test]
fn garbage_on_stdout_is_a_protocol_violation() {
    case(&[], &["garbage"]).assert_stderr_has("protocol violation: message framing claims");
}

#[test]
fn message_over_the_limit_is_a_protocol_violation() {
    case(
        &["--max-message-size", "1M"],
        &["big-message", "--bytes", "2000000"],
    )
    .assert_stderr_has("exceeds max-message-size 1048576");
}

#[test]
fn huge_segment_claim_is_refused_without_allocating() {
    // The claimed 4 GiB would take the host far past the memory bound below if allocated.
    let (out, peak) = with_peak_rss(&[], &["huge-segment"]);
    out.assert_stderr_has("message of 4294967296 bytes exceeds max-message-size");
    assert_rss_bounded(peak, &out);
}

#[test]
fn call_flood_past_the_outstanding_limit_is_refused_not_fatal() {
    let out = case(
        &["--max-outstanding-calls", "16"],
        &["flood", "--limit", "16"],
    );
    out.assert_stderr_has("ok: flood past max-outstanding-calls: exited with code 0");
    // "flood: 500 waits: A accepted, R refused, 0 other …": some refused with `limit`, the
    // rest answered, nothing else.
    let line = out.stderr_lines_with("flood: 500 waits: ");
    let counts: Vec<u64> = line
        .first()
        .unwrap_or_else(|| panic!("no flood line:\n{}", out.stderr))
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [_, calls, accepted, refused, other, ..] = counts[..] else {
        panic!("unexpected flood line {line:?}");
    };
    assert_eq!((calls, other), (500, 0), "{line:?}");
    assert!(
        refused > 0 && accepted >= 16 && accepted + refused == 500,
        "{line:?}"
    );
}

#[test]
fn stderr_flood_keeps_host_memory_bounded() {
    let (out, peak) = with_peak_rss(
        &["--stderr-capture", "32K"],
        &["stderr-flood", "--capture", "32768"],
    );
    out.assert_stderr_has("ok: stderr flood: timed out")
        .assert_stderr_has("(capture limit 32768)");
    assert_rss_bounded(peak, &out);
}

#[test]
fn guest_that_never_reads_its_stdin_cannot_grow_the_host() {
    // 2000 pipelined echoes of 64 KiB (128 MiB of replies) that are never read.
    let (out, peak) = with_peak_rss(&[], &["no-read-stdin"]);
    out.assert_stderr_has("ok: never reads its stdin: timed out");
    assert_rss_bounded(peak, &out);
}

#[test]
fn guest_that_reads_its_replies_slowly_cannot_grow_the_host() {
    // 200,000 pipelined echoes of 1 KiB (200 MiB of replies), read a few hundred bytes at a
    // time: the host stops reading calls while more than `rpc::flow::UNSENT_MAX` of replies wait.
    let (out, peak) = with_peak_rss(&[], &["slow-read-stdin"]);
    out.assert_stderr_has("ok: reads its stdin slowly: timed out");
    assert_rss_bounded(peak, &out);
}

#[test]
fn invalid_spawns_in_a_loop_are_refused() {
    case(&[], &["spawn-invalid-loop"]).assert_stderr_has("all 60 invalid blobs refused");
}

#[test]
fn fork_bomb_stays_bounded() {
    let out = case(&[], &["forkbomb"]);
    out.assert_stderr_has("forkbomb: 9 started")
        .assert_stderr_has("limit: max-procs 10 reached")
        .assert_stderr_has("ok: spawning works after the bomb ended");
    // The bomb's 9 sleepers were killed with it when it exited.
    assert_eq!(killed_by(&out, "cascade"), 9, "{}", out.stderr);
}

#[test]
fn parent_exit_terminates_its_children() {
    let out = case(&[], &["parent-exits"]);
    out.assert_stderr_has("ok: parent exited with children running: exited with code 0");
    assert_eq!(killed_by(&out, "cascade"), 3, "{}", out.stderr);
}

#[test]
fn capabilities_of_a_dead_process_answer_never_hang() {
    case(&[], &["dead-caps"])
        .assert_stderr_has("ok: wait on a reaped child answers at once")
        .assert_stderr_has("ok: dead child's captured stderr reaches EOF")
        .assert_stderr_has("ok: kill on a dead child answers at once");
}

// ---------------------------------------------------------------------------------------------
// pid0 itself: each status maps to cell's exit code.

fn pid0(flags: &[&str], mode: &str) -> Finished {
    Cell::run("hostile")
        .flags(flags)
        .arg(mode)
        .report()
        .finish()
}

/// pid0's status in the report of `out`.
fn pid0_is(out: &Finished, status: &str) {
    assert_eq!(out.pid0_status().0, status, "{}", out.stderr);
}

#[test]
fn pid0_timeout_exits_124() {
    let out = pid0(&["--timeout", "300ms"], "spin");
    out.assert_code(124)
        .assert_stderr_has("cell: pid0 timed out");
    pid0_is(&out, "timed-out");
}

#[test]
fn pid0_out_of_memory_exits_134() {
    let out = pid0(&["--max-memory", "16M"], "membomb");
    out.assert_code(134)
        .assert_stderr_has("cell: pid0 out of memory");
    pid0_is(&out, "out-of-memory");
}

#[test]
fn pid0_out_of_fuel_exits_134() {
    let out = pid0(&["--fuel", "50000000"], "spin");
    out.assert_code(134)
        .assert_stderr_has("cell: pid0 out of fuel");
    pid0_is(&out, "out-of-fuel");
}

#[test]
fn pid0_trap_exits_134() {
    let out = pid0(&[], "stack-overflow");
    out.assert_code(134).assert_stderr_has("cell: pid0 trapped");
    pid0_is(&out, "trapped");
}

#[test]
fn pid0_protocol_violation_exits_134() {
    let out = pid0(&[], "huge-segment");
    out.assert_code(134)
        .assert_stderr_has("cell: pid0 protocol violation");
    pid0_is(&out, "protocol-violation");
}

#[test]
fn bad_limit_values_are_usage_errors() {
    let out = pid0(&["--max-memory", "12Q"], "spin");
    out.assert_code(125).assert_stderr_has(
        "invalid value '12Q' for '--max-memory <BYTES>': unknown unit \"Q\" (use K, M, G, KiB, MiB, GiB)",
    );
    pid0(&["--timeout", "30"], "spin")
        .assert_code(125)
        .assert_stderr_has("missing unit");
    pid0(&["--max-procs", "many"], "spin").assert_code(125);
}

// ---------------------------------------------------------------------------------------------
// Signals to cell itself.

/// Starts `hostile-pid0 operator` (spinning children, a child blocked in Process.wait, the
/// sibling echo loop), waits for it to be ready, sends `signal` with kill(1), and returns the
/// finished run (with its report).
fn stop_with(signal: &str) -> Finished {
    let mut run = Cell::run("hostile-pid0").arg("operator").report().spawn();
    // Ready once pid0 says so and block-wait's child runs (forwarded stderr may come later).
    let (mut ready, mut waiting) = (false, false);
    run.wait_until(|line| {
        ready |= line.contains("operator: ready");
        waiting |= line.contains("block-wait: waiting on pid");
        (ready && waiting).then_some(())
    });
    run.signal(signal);
    run.finish()
}

#[test]
fn sigterm_tears_the_tree_down_and_exits_143() {
    let out = stop_with("TERM");
    out.assert_code(143)
        .assert_stderr_has("cell: stopped by signal 15");
    // pid0, the sibling, 3 spinners, block-wait and its sleeping child.
    assert_eq!(killed_by(&out, "operator"), 7, "{}", out.stderr);
    assert_eq!(out.pid0_status(), ("killed".into(), "operator".into()));
    assert_eq!(out.report()["signal"], 15);
}

#[test]
fn sigint_exits_130() {
    let out = stop_with("INT");
    out.assert_code(130);
    assert_eq!(out.pid0_status(), ("killed".into(), "operator".into()));
    assert_eq!(out.report()["signal"], 2);
}

// ---------------------------------------------------------------------------------------------
// Host memory.

/// The bound on `cell`'s peak resident memory in the flood cases. A debug `cell` running a
/// handful of guests peaks around 30-40 MiB; each case would take it far beyond this bound if
/// the host buffered what the guest throws at it.
const PEAK_RSS_BOUND_KIB: u64 = 64 * 1024;

/// Runs a case like [`case`] while sampling `cell`'s VmHWM (peak RSS) from /proc.
fn with_peak_rss(flags: &[&str], args: &[&str]) -> (Finished, u64) {
    let (out, peak) = Cell::run("hostile-pid0")
        .flags(flags)
        .args(args)
        .finish_with_peak_rss();
    out.assert_code(0)
        .assert_stderr_has("ok: sibling echo loop completed all its calls: exited with code 0");
    (out, peak)
}

fn assert_rss_bounded(peak_kib: u64, out: &Finished) {
    assert!(
        peak_kib < PEAK_RSS_BOUND_KIB,
        "cell peaked at {peak_kib} KiB (bound {PEAK_RSS_BOUND_KIB} KiB); stderr:\n{}",
        out.stderr
    );
}
