//! stress-node: one node of the process-tree stress (`cell_testkit::stress`): granted the
//! stress's four components and a loopback Network by its parent, it runs its share of random
//! spawns, kills, waits and socket hand-offs and exits 0 only if every child's status matched.

use anyhow::Context as _;
use cell_testkit::stress::{self, Kinds, Plan};

fn main() {
    cell_guest::run(|caps| async move {
        let info = caps.info().await?;
        let kinds = Kinds::from_grants(caps.components().await?)?;
        let network = caps.network().await.context("stress-node: no Network")?;
        stress::node(info.pid, &kinds, &network, Plan::from_args()?).await
    })
}
