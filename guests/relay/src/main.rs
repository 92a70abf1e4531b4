//! relay: one more level in the process tree, for the `nested` scenario.
//!
//! It logs its pid and depth, echoes, then spawns the `child-echo` it embeds with `--depth 1`
//! and an Executor grant (so the chain continues to a `child-leaf`), and waits for it to
//! exit(0). `--expect-depth D` / `--expect-parent P` check where it sits.

use anyhow::{bail, ensure, Context as _};
use cell_guest::{log, StderrMode};

static CHILD_ECHO: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm32-wasip2/release/child-echo.wasm"
));

fn main() {
    cell_guest::run(|caps| async move {
        let info = caps.info().await?;
        log!(
            "relay pid={} depth={} parent={}",
            info.pid,
            info.depth,
            info.parent
        );
        if let Some(depth) = cell_guest::arg::<u32>("--expect-depth")? {
            ensure!(
                info.depth == depth,
                "relay: depth is {}, expected {depth}",
                info.depth
            );
        }
        if let Some(parent) = cell_guest::arg::<u32>("--expect-parent")? {
            ensure!(
                info.parent == parent,
                "relay: parent is {}, expected {parent}",
                info.parent
            );
        }

        let executor = caps
            .executor()
            .await
            .context("relay: needs an Executor grant")?;
        let message = format!("relay {} checking in", info.pid);
        let (r1, r2) = futures::try_join!(executor.echo(&message), executor.echo("relay again"))?;
        ensure!(
            r1 == message && r2 == "relay again",
            "relay: echo mismatch: {r1:?} / {r2:?}"
        );
        log!("relay: echo ok");

        let child = executor
            .spawn(CHILD_ECHO)
            .name("child-echo")
            .args(["--depth", "1"])
            .args(["--expect-depth", &(info.depth + 1).to_string()])
            .args(["--expect-parent", &info.pid.to_string()])
            .grant_executor(true)
            .stderr(StderrMode::Forward)
            .start()
            .await?;
        log!("relay: spawned child-echo as pid {}", child.pid());
        let status = child.wait().await?;
        log!("relay: child-echo pid {}: {status}", child.pid());
        if !status.success() {
            bail!("relay: child-echo pid {} {status}", child.pid());
        }
        Ok(())
    })
}
