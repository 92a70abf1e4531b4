//! bench-echo: a busy child for the shard rows of `make bench` (`bench-pid0 busy-children`):
//! `N INFLIGHT` — N `Executor.echo` calls of 16 B keeping INFLIGHT in flight on its own
//! connection, then exit 0 (its parent times the whole fan-out).

use anyhow::{ensure, Context as _};
use futures::stream::{FuturesUnordered, StreamExt as _};

fn main() {
    cell_guest::run(|caps| async move {
        let arg = |i: usize| -> anyhow::Result<usize> {
            let text = std::env::args().nth(i).context("bench-echo N INFLIGHT")?;
            text.parse().with_context(|| format!("bad number {text:?}"))
        };
        let (n, inflight) = (arg(1)?, arg(2)?.max(1));
        let executor = caps.executor().await?;
        let mut pending = FuturesUnordered::new();
        let (mut sent, mut done) = (0, 0);
        while done < n {
            while sent < n && pending.len() < inflight {
                pending.push(executor.echo("0123456789abcdef"));
                sent += 1;
            }
            if let Some(reply) = pending.next().await {
                ensure!(reply?.len() == 16, "bench-echo: a short reply");
                done += 1;
            }
        }
        Ok(())
    })
}
