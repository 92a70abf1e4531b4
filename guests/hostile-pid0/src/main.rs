//! hostile-pid0: the test pid0 of the hostile-guest suite (`tests/hostile.rs`).
//!
//! `hostile-pid0 <case> [flags]` starts a well-behaved sibling (`hostile echo-loop`) and then
//! one misbehaving child, checks the child's exact status, then checks that the sibling
//! completed all its echoes. Each check is reported on stderr as `ok: …` / `fail: …`, then
//! `--- N passed, M failed`; exit 0 iff nothing failed.
//!
//! Cases and the status each must produce:
//! - `spin` timed out · `kill-spin` / `kill-sleep` / `kill-blocked` killed by the parent ·
//!   `membomb` out of memory · `fuel` out of fuel (run cell with `--fuel`) ·
//!   `stack-overflow` trapped · `garbage`, `big-message` (run cell with a message limit below
//!   `--bytes`), `huge-segment` protocol violation · `stderr-flood` timed out, capture at most
//!   `--capture` bytes · `no-read-stdin`, `slow-read-stdin` timed out · `flood --limit L` (cell's
//!   `--max-outstanding-calls`), `spawn-invalid-loop`, `forkbomb`, `parent-exits` exited with code 0 ·
//!   `dead-caps` a killed child's wait and captured stderr still answer (EOF), never hang ·
//!   `operator` starts spinning children, logs `operator: ready` and waits to be stopped.

use std::time::Duration;

use anyhow::{Context as _, Result};
use cell_guest::{log, Caps, ExitStatus, KilledBy, Process, SpawnBuilder, StderrMode};
use cell_testkit::Report;

static HOSTILE: &[u8] = cell_testkit::embed!("hostile");
static HOSTILE_PARENT: &[u8] = cell_testkit::embed!("hostile-parent");
static CHILD_GARBAGE: &[u8] = cell_testkit::embed!("child-garbage");

/// No wait may take longer than this: a hang is reported as a failure.
const WAIT: Duration = Duration::from_secs(60);
/// Deadline given to the children that are meant to time out.
const SHORT: Duration = Duration::from_millis(300);

fn main() {
    cell_guest::run(|caps| async move {
        let case = std::env::args().nth(1).unwrap_or_default();
        let mut report = Report::default();
        let sibling_count: u32 = if case == "operator" { 1_000_000 } else { 100 };
        let sibling = hostile(&caps, "echo-loop")
            .args(["--count", &sibling_count.to_string()])
            .grant_executor(true)
            .name("sibling")
            .start()
            .await
            .context("starting the sibling")?;
        if let Err(e) = run_case(&caps, &case, &mut report).await {
            report.check(false, format!("{case}: {e:#}"));
        }
        let status = wait(&sibling).await?;
        report.check(
            status.success(),
            format!("sibling echo loop completed all its calls: {status}"),
        );
        report.finish()
    })
}

fn hostile<'a>(caps: &Caps, mode: &str) -> SpawnBuilder<'a> {
    caps.spawn(HOSTILE)
        .name(format!("hostile-{mode}"))
        .arg(mode)
        .stderr(StderrMode::Forward)
}

fn hostile_parent<'a>(caps: &Caps, mode: &str) -> SpawnBuilder<'a> {
    caps.spawn(HOSTILE_PARENT)
        .name(format!("hostile-parent-{mode}"))
        .arg(mode)
        .grant_executor(true)
        .stderr(StderrMode::Forward)
}

async fn wait(p: &Process) -> Result<ExitStatus> {
    cell_guest::timeout(WAIT, p.wait())
        .await
        .with_context(|| format!("waiting for pid {}", p.pid()))?
}

/// Waits for `p` and checks its status with `expected`.
async fn expect(
    report: &mut Report,
    p: &Process,
    what: &str,
    expected: impl Fn(&ExitStatus) -> bool,
) -> Result<ExitStatus> {
    let status = wait(p).await?;
    report.check(expected(&status), format!("{what}: {status}"));
    Ok(status)
}

async fn kill_after(report: &mut Report, p: &Process, what: &str) -> Result<()> {
    cell_guest::sleep(Duration::from_millis(150)).await;
    cell_guest::timeout(WAIT, p.kill())
        .await
        .context("kill hung")??;
    expect(report, p, what, |s| {
        *s == ExitStatus::Killed(KilledBy::Parent)
    })
    .await?;
    Ok(())
}

async fn run_case(caps: &Caps, case: &str, report: &mut Report) -> Result<()> {
    let arg_u64 = |name: &str| cell_guest::arg::<u64>(name);
    match case {
        "spin" => {
            let p = hostile(caps, "spin").timeout(SHORT).start().await?;
            expect(report, &p, "spin: timed out", |s| {
                *s == ExitStatus::TimedOut
            })
            .await?;
        }
        "kill-spin" => {
            let p = hostile(caps, "spin").start().await?;
            kill_after(report, &p, "spinning child killed by its parent").await?;
        }
        "kill-sleep" => {
            let p = hostile(caps, "sleep").start().await?;
            kill_after(report, &p, "child blocked in poll killed by its parent").await?;
        }
        "kill-blocked" => {
            let p = hostile_parent(caps, "block-wait").start().await?;
            kill_after(report, &p, "child blocked in Process.wait killed").await?;
        }
        "membomb" => {
            let p = hostile(caps, "membomb")
                .max_memory_bytes(16 << 20)
                .start()
                .await?;
            expect(report, &p, "membomb: out of memory", |s| {
                *s == ExitStatus::OutOfMemory
            })
            .await?;
        }
        "fuel" => {
            let p = hostile(caps, "spin").fuel(20_000_000).start().await?;
            expect(report, &p, "spin with fuel: out of fuel", |s| {
                *s == ExitStatus::OutOfFuel
            })
            .await?;
        }
        "stack-overflow" => {
            let p = hostile(caps, "stack-overflow").start().await?;
            expect(report, &p, "stack overflow: trapped", |s| {
                matches!(s, ExitStatus::Trapped(_))
            })
            .await?;
        }
        "garbage" => {
            let p = caps
                .spawn(CHILD_GARBAGE)
                .name("child-garbage")
                .start()
                .await?;
            expect(report, &p, "garbage on stdout: protocol violation", |s| {
                matches!(s, ExitStatus::ProtocolViolation(_))
            })
            .await?;
        }
        "big-message" => {
            let bytes = arg_u64("--bytes")?.unwrap_or(2 << 20);
            let p = hostile(caps, "big-message")
                .args(["--bytes", &bytes.to_string()])
                .grant_executor(true)
                .start()
                .await?;
            expect(
                report,
                &p,
                "message over the limit: protocol violation",
                |s| matches!(s, ExitStatus::ProtocolViolation(_)),
            )
            .await?;
        }
        "huge-segment" => {
            let p = hostile(caps, "huge-segment").start().await?;
            expect(
                report,
                &p,
                "4 GiB segment claimed: protocol violation",
                |s| matches!(s, ExitStatus::ProtocolViolation(_)),
            )
            .await?;
        }
        "flood" => {
            let limit = arg_u64("--limit")?.context("flood needs --limit L")?;
            let p = hostile_parent(caps, "flood")
                .args(["--calls", "500", "--limit", &limit.to_string()])
                .start()
                .await?;
            expect(report, &p, "flood past max-outstanding-calls", |s| {
                s.success()
            })
            .await?;
        }
        "stderr-flood" => {
            let cap = arg_u64("--capture")?.context("stderr-flood needs --capture N")?;
            let p = hostile(caps, "stderr-flood")
                .stderr(StderrMode::Capture)
                .timeout(SHORT)
                .start()
                .await?;
            expect(report, &p, "stderr flood: timed out", |s| {
                *s == ExitStatus::TimedOut
            })
            .await?;
            let captured = cell_guest::timeout(WAIT, p.read_stderr_to_end())
                .await
                .context("reading the captured stderr hung")??;
            report.check(
                !captured.is_empty() && captured.len() as u64 <= cap,
                format!("captured {} bytes (capture limit {cap})", captured.len()),
            );
        }
        "no-read-stdin" => {
            let calls = arg_u64("--calls")?.unwrap_or(2000);
            let bytes = arg_u64("--bytes")?.unwrap_or(64 << 10);
            let p = hostile(caps, "no-read-stdin")
                .args(["--calls", &calls.to_string(), "--bytes", &bytes.to_string()])
                .grant_executor(true)
                .timeout(Duration::from_secs(1))
                .start()
                .await?;
            expect(report, &p, "never reads its stdin: timed out", |s| {
                *s == ExitStatus::TimedOut
            })
            .await?;
        }
        "slow-read-stdin" => {
            let p = hostile(caps, "slow-read-stdin")
                .args(["--calls", "200000", "--bytes", "1024"])
                .grant_executor(true)
                .timeout(Duration::from_secs(5))
                .start()
                .await?;
            expect(report, &p, "reads its stdin slowly: timed out", |s| {
                *s == ExitStatus::TimedOut
            })
            .await?;
        }
        "spawn-invalid-loop" => {
            let p = hostile(caps, "spawn-invalid-loop")
                .args(["--count", "60"])
                .grant_executor(true)
                .start()
                .await?;
            expect(report, &p, "invalid spawns in a loop all refused", |s| {
                s.success()
            })
            .await?;
        }
        "forkbomb" => {
            let p = hostile_parent(caps, "forkbomb")
                .args(["--max-procs", "10"])
                .max_procs(10)
                .start()
                .await?;
            expect(report, &p, "fork bomb stopped at max-procs 10", |s| {
                s.success()
            })
            .await?;
            // Its subtree is gone with it: pid0 can spawn again.
            let again = hostile(caps, "sleep").timeout(SHORT).start().await;
            report.check(again.is_ok(), "spawning works after the bomb ended");
            // End it now, so that only the bomb's own children die by cascade.
            if let Ok(p) = again {
                p.kill().await?;
            }
        }
        "parent-exits" => {
            let p = hostile_parent(caps, "parent-exits")
                .args(["--children", "3"])
                .start()
                .await?;
            expect(report, &p, "parent exited with children running", |s| {
                s.success()
            })
            .await?;
        }
        "dead-caps" => {
            let p = hostile(caps, "sleep")
                .stderr(StderrMode::Capture)
                .start()
                .await?;
            kill_after(report, &p, "sleeping child killed").await?;
            let again = wait(&p).await?;
            report.check(
                again == ExitStatus::Killed(KilledBy::Parent),
                format!("wait on a reaped child answers at once: {again}"),
            );
            let captured = cell_guest::timeout(WAIT, p.read_stderr_to_end())
                .await
                .context("reading a dead child's stderr hung")??;
            report.check(
                String::from_utf8_lossy(&captured).contains("sleep: sleeping"),
                format!(
                    "dead child's captured stderr reaches EOF ({} bytes)",
                    captured.len()
                ),
            );
            let kill = cell_guest::timeout(WAIT, p.kill()).await;
            report.check(
                matches!(kill, Ok(Ok(()))),
                "kill on a dead child answers at once",
            );
        }
        "operator" => {
            let mut children = Vec::new();
            for _ in 0..3 {
                children.push(hostile(caps, "spin").start().await?);
            }
            children.push(hostile_parent(caps, "block-wait").start().await?);
            log!("operator: ready");
            for c in &children {
                let s = c.wait().await?;
                log!("operator: pid {} {s}", c.pid());
            }
        }
        other => anyhow::bail!("unknown case {other:?}"),
    }
    Ok(())
}
