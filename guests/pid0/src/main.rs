//! pid0: the demo guest that `make run` starts. It tells on stderr what it does and why.
//!
//! pid0 is the root of the process tree. It can do nothing but compute, except through the
//! capabilities the operator granted it. The story: who am I, talk to the host, start a child
//! with an Executor of its own (which starts a grandchild), then start the very same child
//! *without* that grant and watch it be refused.

use std::time::Duration;

use anyhow::{bail, Context as _};
use cell_guest::{log, Caps, ExitStatus, StderrMode};

/// The child we start, built before us and embedded in our own wasm.
static CHILD_ECHO: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm32-wasip2/release/child-echo.wasm"
));

fn main() {
    cell_guest::run(demo)
}

async fn demo(caps: Caps) -> anyhow::Result<()> {
    let info = caps.info().await?;
    log!(
        "pid0: hello! I am pid {} at depth {} of the process tree.",
        info.pid,
        info.depth
    );
    log!("pid0: I talk to the host over Cap'n Proto RPC on my stdin/stdout; stderr (this text) is my log.");
    log!(
        "pid0: beyond computing, I can only use what I was granted: {:?}.",
        info.grants
    );

    let executor = caps
        .executor()
        .await
        .context("pid0 needs the executor grant to run this demo")?;
    let reply = executor.echo("hello, host").await?;
    log!("pid0: I said \"hello, host\" to my Executor and it echoed {reply:?}.");

    log!("");
    log!(
        "pid0: now I start child-echo ({} KiB of wasm embedded in me) with an Executor of its own",
        CHILD_ECHO.len() / 1024
    );
    log!("pid0: and `--depth 1`, so that it starts a grandchild of mine in turn.");
    log!("pid0: their stderr is forwarded by the host, prefixed with their pid.");
    let child = executor
        .spawn(CHILD_ECHO)
        .name("child-echo")
        .args(["--depth", "1"])
        .grant_executor(true)
        .stderr(StderrMode::Forward)
        .start()
        .await?;
    log!("pid0: child-echo is pid {}; waiting for it...", child.pid());
    let status = child.wait().await?;
    log!("pid0: child-echo (pid {}) ended: {status}.", child.pid());
    if !status.success() {
        bail!("child-echo pid {} {status}", child.pid());
    }

    log!("");
    log!("pid0: the same program again, but this time I grant it nothing.");
    log!("pid0: it has no Executor, so its very first echo is refused by the host:");
    let child = executor
        .spawn(CHILD_ECHO)
        .name("child-echo-ungranted")
        .stderr(StderrMode::Forward)
        .start()
        .await?;
    let status = cell_guest::timeout(Duration::from_secs(60), child.wait()).await??;
    log!(
        "pid0: child-echo-ungranted (pid {}) ended: {status}.",
        child.pid()
    );
    if status != ExitStatus::Exited(1) {
        bail!("child-echo without an Executor grant: expected exited with code 1, got {status}");
    }

    log!("");
    log!("pid0: that's the whole idea of cell: authority is a capability you are handed, never ambient.");
    log!("pid0: bye!");
    Ok(())
}
