//! child-echo: a guest that talks to the host and, with `--depth N` (N > 0), spawns a
//! grandchild.
//!
//! It logs its pid and depth, makes two concurrent echo calls (so it needs an Executor grant)
//! and checks the answers. With `--depth N`, N > 0, it spawns the `child-leaf` it embeds, grants
//! it an Executor so the leaf can echo too, and waits for it to exit(0). A guest cannot embed
//! its own bytes, so the chain below child-echo ends at the leaf: deeper trees are built with
//! `relay` (see guests/README.md). `--expect-depth D` / `--expect-parent P` check where it sits.

use anyhow::{bail, ensure, Context as _};
use cell_guest::{log, StderrMode};

static CHILD_LEAF: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm32-wasip2/release/child-leaf.wasm"
));

fn main() {
    cell_guest::run(|caps| async move {
        let info = caps.info().await?;
        log!(
            "echo pid={} depth={} parent={} grants={:?}",
            info.pid,
            info.depth,
            info.parent,
            info.grants
        );
        if let Some(depth) = cell_guest::arg::<u32>("--expect-depth")? {
            ensure!(
                info.depth == depth,
                "echo: depth is {}, expected {depth}",
                info.depth
            );
        }
        if let Some(parent) = cell_guest::arg::<u32>("--expect-parent")? {
            ensure!(
                info.parent == parent,
                "echo: parent is {}, expected {parent}",
                info.parent
            );
        }

        let executor = caps
            .executor()
            .await
            .context("echo: echo needs an Executor grant")?;
        let a = format!("ping from pid {}", info.pid);
        let b = format!("pong from pid {}", info.pid);
        let (ra, rb) = futures::try_join!(executor.echo(&a), executor.echo(&b))?;
        ensure!(ra == a && rb == b, "echo: echo mismatch: {ra:?} / {rb:?}");
        log!("echo: 2 concurrent echoes answered correctly");

        let depth = cell_guest::arg::<u32>("--depth")?.unwrap_or(0);
        if depth > 0 {
            let leaf = executor
                .spawn(CHILD_LEAF)
                .name("child-leaf")
                .args(["--expect-depth", &(info.depth + 1).to_string()])
                .args(["--expect-parent", &info.pid.to_string()])
                .grant_executor(true)
                .stderr(StderrMode::Forward)
                .start()
                .await?;
            log!("echo: spawned child-leaf as pid {}", leaf.pid());
            let status = leaf.wait().await?;
            log!("echo: child-leaf pid {}: {status}", leaf.pid());
            if !status.success() {
                bail!("echo: child-leaf pid {} {status}", leaf.pid());
            }
        }
        Ok(())
    })
}
