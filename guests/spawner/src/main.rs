//! spawner: a child that holds no Executor, only the components its parent granted it
//! (`Session.components`). It spawns each of them `--count N` times (default 3) with
//! `--no-echo --expect-parent <its own pid>`, requires every child to exit 0, and checks that it
//! cannot spawn anything else (`Session.executor` is not granted). `--children-parent P`
//! expects P as the children's parent instead: a component granted across nodes is spawned
//! where it is, as a child of the process that granted it (P, on the other machine).

use anyhow::{ensure, Context as _};
use cell_guest::{log, Reason};

fn main() {
    cell_guest::run(|caps| async move {
        let info = caps.info().await?;
        let count = cell_guest::arg::<u32>("--count")?.unwrap_or(3);
        let parent = cell_guest::arg::<u32>("--children-parent")?.unwrap_or(info.pid);
        let executor = caps.executor().await;
        ensure!(
            cell_guest_reason(&executor) == Some(Reason::NotGranted),
            "spawner: an Executor was granted"
        );
        let components = caps.components().await?;
        ensure!(!components.is_empty(), "spawner: no components granted");
        for component in &components {
            let hash = component.hash().await?;
            for _ in 0..count {
                let child = component
                    .spawn()
                    .name("leaf")
                    .args(["--no-echo", "--expect-parent", &parent.to_string()])
                    .start()
                    .await
                    .context("spawner: spawning from a component")?;
                let status = child.wait().await?;
                ensure!(status.success(), "spawner: child ended {status}");
            }
            log!(
                "spawner: pid {} spawned {hash} {count} times, no executor",
                info.pid
            );
        }
        Ok(())
    })
}

fn cell_guest_reason<T>(r: &anyhow::Result<T>) -> Option<Reason> {
    r.as_ref().err().and_then(cell_guest::reason)
}
