//! child-leaf: the simplest well-behaved cell guest.
//!
//! Logs `leaf pid=.. depth=..`, makes two concurrent echo calls to the host (it needs an
//! Executor grant for that, unless run with `--no-echo`) and exits with the code given by
//! `--exit N` (default 0). With `--expect-depth D` / `--expect-parent P` it also checks where
//! it sits in the process tree, so that a parent can verify what the host reports.

use anyhow::{ensure, Context as _};
use cell_guest::log;

fn main() {
    cell_guest::run(|caps| async move {
        let info = caps.info().await?;
        log!(
            "leaf pid={} depth={} parent={}",
            info.pid,
            info.depth,
            info.parent
        );
        if let Some(depth) = cell_guest::arg::<u32>("--expect-depth")? {
            ensure!(
                info.depth == depth,
                "leaf: depth is {}, expected {depth}",
                info.depth
            );
        }
        if let Some(parent) = cell_guest::arg::<u32>("--expect-parent")? {
            ensure!(
                info.parent == parent,
                "leaf: parent is {}, expected {parent}",
                info.parent
            );
        }
        if !std::env::args().any(|a| a == "--no-echo") {
            let executor = caps
                .executor()
                .await
                .context("leaf: echo needs an Executor grant")?;
            let a = format!("leaf {} says hello", info.pid);
            let b = format!("leaf {} says goodbye", info.pid);
            let (ra, rb) = futures::try_join!(executor.echo(&a), executor.echo(&b))?;
            ensure!(ra == a && rb == b, "leaf: echo mismatch: {ra:?} / {rb:?}");
            log!("leaf: 2 concurrent echoes answered correctly");
        }
        let code = cell_guest::arg::<u8>("--exit")?.unwrap_or(0);
        cell_guest::exit(code)
    })
}
