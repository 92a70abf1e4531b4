//! child-echo: a guest that talks to the host and, with `--depth N` (N > 0), spawns a
//! grandchild.
//!
//! It logs its pid and depth, makes two concurrent echo calls (so it needs an Executor grant)
//! and checks the answers. With `--depth N`, N > 0, it spawns the `child-leaf` it embeds, grants
//! it an Executor so the leaf can echo too, and waits for it to exit(0). A guest cannot embed
//! its own bytes, so the chain below child-echo ends at the leaf: deeper trees are built with
//! `relay` (see guests/README.md). `--expect-depth D` / `--expect-parent P` check where it sits.

use anyhow::Context as _;
use cell_guest::{log, StderrMode};
use cell_testkit::tree::{self, ExpectChildOf as _};

static CHILD_LEAF: &[u8] = cell_testkit::embed!("child-leaf");

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
        tree::check_placement("echo", &info)?;

        let executor = caps
            .executor()
            .await
            .context("echo: echo needs an Executor grant")?;
        let a = format!("ping from pid {}", info.pid);
        let b = format!("pong from pid {}", info.pid);
        tree::echo_pair(&executor, "echo", &a, &b).await?;
        log!("echo: 2 concurrent echoes answered correctly");

        let depth = cell_guest::arg::<u32>("--depth")?.unwrap_or(0);
        if depth > 0 {
            let leaf = executor
                .spawn(CHILD_LEAF)
                .name("child-leaf")
                .expect_child_of(&info)
                .grant_executor(true)
                .stderr(StderrMode::Forward)
                .start()
                .await?;
            tree::wait_success("echo", "child-leaf", &leaf).await?;
        }
        Ok(())
    })
}
