//! bench-spawner: a spawning child for the shard rows of `make bench` (`bench-pid0
//! spawner-children`): `N INFLIGHT` — N spawn → exit of bench-nop through one Component,
//! INFLIGHT at a time, then exit 0 (its parent times the whole fan-out).

use anyhow::{ensure, Context as _};
use cell_guest::StderrMode;

static NOP: &[u8] = cell_testkit::embed!("bench-nop");

fn main() {
    cell_guest::run(|caps| async move {
        let arg = |i: usize| -> anyhow::Result<usize> {
            let text = std::env::args()
                .nth(i)
                .context("bench-spawner N INFLIGHT")?;
            text.parse().with_context(|| format!("bad number {text:?}"))
        };
        let (n, inflight) = (arg(1)?, arg(2)?.max(1));
        let nop = caps.executor().await?.load(NOP).await?;
        let one = || async {
            let child = nop
                .spawn()
                .name("bench-nop")
                .stderr(StderrMode::Discard)
                .start()
                .await?;
            let status = child.wait().await?;
            ensure!(status.success(), "bench-nop {status}");
            anyhow::Ok(())
        };
        cell_testkit::in_flight(n, inflight, one).await?;
        Ok(())
    })
}
