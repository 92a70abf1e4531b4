//! child-leaf: the simplest well-behaved cell guest.
//!
//! Logs `leaf pid=.. depth=..`, makes two concurrent echo calls to the host (it needs an
//! Executor grant for that, unless run with `--no-echo`) and exits with the code given by
//! `--exit N` (default 0). With `--expect-depth D` / `--expect-parent P` it also checks where
//! it sits in the process tree, so that a parent can verify what the host reports.

use anyhow::Context as _;
use cell_guest::log;
use cell_testkit::tree;

fn main() {
    cell_guest::run(|caps| async move {
        let info = caps.info().await?;
        log!(
            "leaf pid={} depth={} parent={}",
            info.pid,
            info.depth,
            info.parent
        );
        tree::check_placement("leaf", &info)?;
        if !std::env::args().any(|a| a == "--no-echo") {
            let executor = caps
                .executor()
                .await
                .context("leaf: echo needs an Executor grant")?;
            let a = format!("leaf {} says hello", info.pid);
            let b = format!("leaf {} says goodbye", info.pid);
            tree::echo_pair(&executor, "leaf", &a, &b).await?;
            log!("leaf: 2 concurrent echoes answered correctly");
        }
        let code = cell_guest::arg::<u8>("--exit")?.unwrap_or(0);
        cell_guest::exit(code)
    })
}
