//! bench-echo: a busy child for the shard rows of `make bench` (`bench-pid0 busy-children`):
//! `N INFLIGHT` — N `Executor.echo` calls of 16 B keeping INFLIGHT in flight on its own
//! connection, then exit 0 (its parent times the whole fan-out).

use anyhow::{ensure, Context as _};

fn main() {
    cell_guest::run(|caps| async move {
        let arg = |i: usize| -> anyhow::Result<usize> {
            let text = std::env::args().nth(i).context("bench-echo N INFLIGHT")?;
            text.parse().with_context(|| format!("bad number {text:?}"))
        };
        let (n, inflight) = (arg(1)?, arg(2)?.max(1));
        let executor = caps.executor().await?;
        cell_testkit::in_flight(n, inflight, || async {
            let reply = executor.echo("0123456789abcdef").await?;
            ensure!(reply.len() == 16, "bench-echo: a short reply");
            Ok(())
        })
        .await?;
        Ok(())
    })
}
