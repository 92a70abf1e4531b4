//! relay: one more level in the process tree, for the `nested` scenario.
//!
//! It logs its pid and depth, echoes, then spawns the `child-echo` it embeds with `--depth 1`
//! and an Executor grant (so the chain continues to a `child-leaf`), and waits for it to
//! exit(0). `--expect-depth D` / `--expect-parent P` check where it sits.

use anyhow::Context as _;
use cell_guest::{log, StderrMode};
use cell_testkit::tree::{self, ExpectChildOf as _};

static CHILD_ECHO: &[u8] = cell_testkit::embed!("child-echo");

fn main() {
    cell_guest::run(|caps| async move {
        let info = caps.info().await?;
        log!(
            "relay pid={} depth={} parent={}",
            info.pid,
            info.depth,
            info.parent
        );
        tree::check_placement("relay", &info)?;

        let executor = caps
            .executor()
            .await
            .context("relay: needs an Executor grant")?;
        let message = format!("relay {} checking in", info.pid);
        tree::echo_pair(&executor, "relay", &message, "relay again").await?;
        log!("relay: echo ok");

        let child = executor
            .spawn(CHILD_ECHO)
            .name("child-echo")
            .args(["--depth", "1"])
            .expect_child_of(&info)
            .grant_executor(true)
            .stderr(StderrMode::Forward)
            .start()
            .await?;
        tree::wait_success("relay", "child-echo", &child).await
    })
}
