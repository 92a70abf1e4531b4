//! The hostile-guest suite: every way a guest can misbehave ends with the specific status,
//! while the host survives and a sibling echo loop completes all its calls.
//!
//! Each case runs the real `cell` on `hostile-pid0 <case>` (guests/hostile-pid0), which checks
//! the status from inside the tree; here we check the run as a whole (exit code, the guest's
//! `ok:` lines, the host's own log of how each process ended) and the host's memory.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cache_dir, cell, finish, guest, Finished, RUN_TIMEOUT};

/// Runs `cell run [flags] hostile-pid0.wasm <case> [args]` with the host logging how every
/// process ended, and asserts that every check inside passed.
fn case(flags: &[&str], args: &[&str]) -> Finished {
    let mut cmd = cell();
    cmd.env("RUST_LOG", "cell::proc=info")
        .arg("run")
        .arg("--cache-dir")
        .arg(cache_dir())
        .args(flags)
        .arg(guest("hostile-pid0"))
        .args(args);
    let out = finish(cmd);
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

/// The host's log lines saying how processes ended, e.g. `status=killed by cascade …`.
fn ended_with(out: &Finished, status: &str) -> usize {
    out.stderr
        .lines()
        .filter(|l| l.contains("process ended") && l.contains(status))
        .count()
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
    assert_eq!(ended_with(&out, "killed by cascade"), 1, "{}", out.stderr);
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
    case(
        &["--max-outstanding-calls", "16"],
        &["flood", "--limit", "16"],
    )
    .assert_stderr_has("ok: flood past max-outstanding-calls: exited with code 0")
    .assert_stderr_has("refused");
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
    assert_eq!(ended_with(&out, "killed by cascade"), 9, "{}", out.stderr);
}

#[test]
fn parent_exit_terminates_its_children() {
    let out = case(&[], &["parent-exits"]);
    out.assert_stderr_has("ok: parent exited with children running: exited with code 0");
    assert_eq!(ended_with(&out, "killed by cascade"), 3, "{}", out.stderr);
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
    let mut cmd = cell();
    cmd.arg("run")
        .arg("--cache-dir")
        .arg(cache_dir())
        .args(flags)
        .arg(guest("hostile"))
        .arg(mode);
    finish(cmd)
}

#[test]
fn pid0_timeout_exits_124() {
    pid0(&["--timeout", "300ms"], "spin")
        .assert_code(124)
        .assert_stderr_has("cell: pid0 timed out");
}

#[test]
fn pid0_out_of_memory_exits_134() {
    pid0(&["--max-memory", "16M"], "membomb")
        .assert_code(134)
        .assert_stderr_has("cell: pid0 out of memory");
}

#[test]
fn pid0_out_of_fuel_exits_134() {
    pid0(&["--fuel", "50000000"], "spin")
        .assert_code(134)
        .assert_stderr_has("cell: pid0 out of fuel");
}

#[test]
fn pid0_trap_exits_134() {
    pid0(&[], "stack-overflow")
        .assert_code(134)
        .assert_stderr_has("cell: pid0 trapped");
}

#[test]
fn pid0_protocol_violation_exits_134() {
    pid0(&[], "huge-segment")
        .assert_code(134)
        .assert_stderr_has("cell: pid0 protocol violation");
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
/// exit code and the whole stderr.
fn stop_with(signal: &str) -> (Option<i32>, String) {
    let mut child = cell()
        .env("RUST_LOG", "cell::proc=info")
        .arg("run")
        .arg("--cache-dir")
        .arg(cache_dir())
        .arg(guest("hostile-pid0"))
        .arg("operator")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cell");
    let _watchdog = common::Watchdog::arm(child.id());
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut log = String::new();
    // Ready once pid0 says so and block-wait's child runs (forwarded stderr may come later).
    for line in lines.by_ref() {
        let line = line.unwrap();
        log.push_str(&line);
        log.push('\n');
        if log.contains("operator: ready") && log.contains("block-wait: waiting on pid") {
            break;
        }
    }
    assert!(log.contains("operator: ready"), "never ready:\n{log}");
    let sent = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(sent.success());
    let reader = std::thread::spawn(move || {
        let mut rest = String::new();
        for line in lines.map_while(Result::ok) {
            rest.push_str(&line);
            rest.push('\n');
        }
        rest
    });
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            panic!("cell did not stop after SIG{signal}:\n{log}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    log.push_str(&reader.join().unwrap());
    (status.code(), log)
}

#[test]
fn sigterm_tears_the_tree_down_and_exits_143() {
    let (code, log) = stop_with("TERM");
    assert_eq!(code, Some(143), "{log}");
    assert!(log.contains("cell: stopped by signal 15"), "{log}");
    // pid0, the sibling, 3 spinners, block-wait and its sleeping child.
    let by_operator = log
        .lines()
        .filter(|l| l.contains("process ended") && l.contains("killed by the operator"))
        .count();
    assert_eq!(by_operator, 7, "{log}");
}

#[test]
fn sigint_exits_130() {
    let (code, log) = stop_with("INT");
    assert_eq!(code, Some(130), "{log}");
    assert!(log.contains("killed by the operator"), "{log}");
}

// ---------------------------------------------------------------------------------------------
// Host memory.

/// The bound on `cell`'s peak resident memory in the flood cases. A debug `cell` running a
/// handful of guests peaks around 30-40 MiB; each case would take it far beyond this bound if
/// the host buffered what the guest throws at it.
const PEAK_RSS_BOUND_KIB: u64 = 64 * 1024;

/// Runs a case like [`case`] while sampling `cell`'s VmHWM (peak RSS) from /proc.
fn with_peak_rss(flags: &[&str], args: &[&str]) -> (Finished, u64) {
    let mut cmd = cell();
    cmd.arg("run")
        .arg("--cache-dir")
        .arg(cache_dir())
        .args(flags)
        .arg(guest("hostile-pid0"))
        .args(args);
    let (out, peak) = common::finish_with_peak_rss(cmd);
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
