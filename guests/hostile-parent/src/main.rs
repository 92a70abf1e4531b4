//! hostile-parent: the misbehaviours that need children (`hostile-parent <mode> [flags]`),
//! built on the `hostile` guest it embeds. Needs an Executor grant.
//!
//! - `block-wait`: waits forever on `Process.wait` of a sleeping child, i.e. blocked in a host
//!   call with an RPC call outstanding (→ killed; the child goes with it, killed by cascade).
//! - `parent-exits --children K`: starts K spinning children, then exits 0 (they are killed by
//!   cascade).
//! - `forkbomb --max-procs N`: spawns sleepers (granted Executors) in concurrent waves until
//!   refused; exits 0 iff exactly N-1 were started and every later spawn was refused with
//!   "limit: max-procs", else 3.
//! - `flood --calls N --limit L`: pipelines N `Process.wait` calls on a sleeping child (which
//!   times out after 300 ms); exits 0 iff at most L were accepted (all then answered "timed
//!   out"), the rest refused with "limit: max-outstanding-calls", and the connection still
//!   works afterwards, else 3.

use std::time::Duration;

use anyhow::{Context as _, Result};
use cell_guest::{log, Caps, ExitStatus, Process, Reason, StderrMode};

static HOSTILE: &[u8] = cell_testkit::embed!("hostile");

fn main() {
    cell_guest::run(|caps| async move {
        let mode = std::env::args().nth(1).unwrap_or_default();
        let ok = match mode.as_str() {
            "block-wait" => block_wait(&caps).await?,
            "parent-exits" => parent_exits(&caps).await?,
            "forkbomb" => forkbomb(&caps).await?,
            "flood" => flood(&caps).await?,
            other => {
                log!("hostile-parent: unknown mode {other:?}");
                cell_guest::exit(2)
            }
        };
        if !ok {
            cell_guest::exit(3);
        }
        Ok(())
    })
}

async fn spawn_hostile(caps: &Caps, mode: &str) -> Result<Process> {
    caps.spawn(HOSTILE)
        .name(format!("hostile-{mode}"))
        .arg(mode)
        .stderr(StderrMode::Forward)
        .start()
        .await
}

async fn block_wait(caps: &Caps) -> Result<bool> {
    let child = spawn_hostile(caps, "sleep").await?;
    log!("block-wait: waiting on pid {}", child.pid());
    let status = child.wait().await?;
    log!("block-wait: wait returned {status}?");
    Ok(false)
}

async fn parent_exits(caps: &Caps) -> Result<bool> {
    let k: u32 = cell_guest::arg("--children")?.unwrap_or(3);
    for _ in 0..k {
        let child = spawn_hostile(caps, "spin").await?;
        log!("parent-exits: started spinning child pid {}", child.pid());
    }
    log!("parent-exits: exiting with {k} children running");
    cell_guest::exit(0)
}

async fn forkbomb(caps: &Caps) -> Result<bool> {
    let max: u32 = cell_guest::arg("--max-procs")?.context("--max-procs N")?;
    const WAVE: usize = 4;
    let mut alive = Vec::new();
    let mut refused = Vec::new();
    // Keep spawning in concurrent waves until a whole wave is refused, then one more wave.
    let mut refused_waves = 0;
    while refused_waves < 2 {
        let wave = (0..WAVE).map(|_| {
            caps.spawn(HOSTILE)
                .name("bomb")
                .arg("sleep")
                .grant_executor(true)
                .stderr(StderrMode::Discard)
                .start()
        });
        let mut any_ok = false;
        for r in futures::future::join_all(wave).await {
            match r {
                Ok(p) => {
                    any_ok = true;
                    alive.push(p);
                }
                Err(e) => refused.push((cell_guest::reason(&e), format!("{e:#}"))),
            }
        }
        if !any_ok {
            refused_waves += 1;
        }
    }
    let all_limit = refused
        .iter()
        .all(|(reason, text)| *reason == Some(Reason::Limit) && text.contains("max-procs"));
    log!(
        "forkbomb: {} started, {} refused; first refusal: {}",
        alive.len(),
        refused.len(),
        refused
            .first()
            .map(|(_, text)| text.as_str())
            .unwrap_or("none")
    );
    Ok(alive.len() as u32 == max - 1 && all_limit)
}

async fn flood(caps: &Caps) -> Result<bool> {
    let calls: usize = cell_guest::arg("--calls")?.unwrap_or(500);
    let limit: usize = cell_guest::arg("--limit")?.context("--limit L")?;
    let child = caps
        .spawn(HOSTILE)
        .name("flood-target")
        .arg("sleep")
        .timeout(Duration::from_millis(300))
        .start()
        .await?;
    // All sent before any is awaited: the host sees them back to back.
    let waits: Vec<_> = (0..calls)
        .map(|_| child.client().wait_request().send().promise)
        .collect();
    let mut accepted = 0;
    let mut refused = 0;
    let mut other = Vec::new();
    for r in futures::future::join_all(waits).await {
        match r {
            Ok(resp) => {
                let which = resp.get().and_then(|r| r.get_status()).map(|s| s.which());
                if matches!(
                    which,
                    Ok(Ok(cell_guest::cell_capnp::exit_status::Which::TimedOut(())))
                ) {
                    accepted += 1;
                } else {
                    other.push("a wait answered something other than timed out".to_string());
                }
            }
            Err(e) if cell_testkit::cell_error(&e).reason == Reason::Limit => refused += 1,
            Err(e) => other.push(e.to_string()),
        }
    }
    let status = child.wait().await?;
    let caps_work = caps.info().await.is_ok();
    log!(
        "flood: {calls} waits: {accepted} accepted, {refused} refused, {} other {:?}; child {status}; connection works: {caps_work}",
        other.len(),
        other.first()
    );
    Ok(accepted >= 1
        && accepted <= limit
        && refused + accepted == calls
        && status == ExitStatus::TimedOut
        && caps_work)
}
