//! The process-tree guests (child-echo, child-leaf, relay): a parent tells its child where the
//! host should have placed it, the child checks, and each parent exits 0 only if its child did.
//! Every message starts with the guest's short name (`who`), as the tests expect.

use anyhow::{bail, ensure, Result};
use cell_guest::{log, Executor, Info, Process, SpawnBuilder};

/// Checks `info` against `--expect-depth D` and `--expect-parent P` on our command line (each
/// only if given): fails with `<who>: depth is X, expected D` / `<who>: parent is X, expected P`.
pub fn check_placement(who: &str, info: &Info) -> Result<()> {
    if let Some(depth) = cell_guest::arg::<u32>("--expect-depth")? {
        ensure!(
            info.depth == depth,
            "{who}: depth is {}, expected {depth}",
            info.depth
        );
    }
    if let Some(parent) = cell_guest::arg::<u32>("--expect-parent")? {
        ensure!(
            info.parent == parent,
            "{who}: parent is {}, expected {parent}",
            info.parent
        );
    }
    Ok(())
}

/// The other side of [`check_placement`], for the parent's spawn builder.
pub trait ExpectChildOf {
    /// Passes `--expect-depth`/`--expect-parent` so that the child checks it is a direct child
    /// of the process `parent` describes.
    fn expect_child_of(self, parent: &Info) -> Self;
}

impl ExpectChildOf for SpawnBuilder<'_> {
    fn expect_child_of(self, parent: &Info) -> Self {
        self.args(["--expect-depth", &(parent.depth + 1).to_string()])
            .args(["--expect-parent", &parent.pid.to_string()])
    }
}

/// Sends `a` and `b` as two concurrent echo calls and checks both come back unchanged; fails
/// with `<who>: echo mismatch: "…" / "…"`.
pub async fn echo_pair(executor: &Executor, who: &str, a: &str, b: &str) -> Result<()> {
    let (ra, rb) = futures::try_join!(executor.echo(a), executor.echo(b))?;
    ensure!(ra == a && rb == b, "{who}: echo mismatch: {ra:?} / {rb:?}");
    Ok(())
}

/// Logs that `child` (called `name`) was spawned, waits for it, logs its status and fails
/// unless it exited 0. No deadline of its own: the pid0 at the top of the tree bounds its waits.
pub async fn wait_success(who: &str, name: &str, child: &Process) -> Result<()> {
    let pid = child.pid();
    log!("{who}: spawned {name} as pid {pid}");
    let status = child.wait().await?;
    log!("{who}: {name} pid {pid}: {status}");
    if !status.success() {
        bail!("{who}: {name} pid {pid} {status}");
    }
    Ok(())
}
