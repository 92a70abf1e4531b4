//! stress-pid0: the root of the process-tree stress (`cell_testkit::stress`, run by
//! `tests/shards.rs`): `cell run --net listen=127.0.0.1:0 --net connect=127.0.0.1:1-65535
//! stress-pid0.wasm [--rounds R] [--depth D] [--actions N] [--seed S]`. It loads the four
//! components (stress-node, child-leaf, bench-idle, inetd-echo) and runs R rounds of a node's
//! work itself, each with its own seed, then logs `stress: done, R rounds`. With
//! `--share-socket K` it instead hands one accepted connection to K idle children at once
//! (`stress::share_socket`).

use anyhow::Context as _;
use cell_testkit::embed;
use cell_testkit::stress::{self, Kinds, Plan};

fn main() {
    cell_guest::run(|caps| async move {
        let info = caps.info().await?;
        let executor = caps.executor().await?;
        let network = caps.network().await.context("stress-pid0 needs --net")?;
        let kinds = Kinds {
            node: executor.load(embed!("stress-node")).await?,
            leaf: executor.load(embed!("child-leaf")).await?,
            idle: executor.load(embed!("bench-idle")).await?,
            echo: executor.load(embed!("inetd-echo")).await?,
        };
        if let Some(k) = cell_guest::arg::<u32>("--share-socket")? {
            return stress::share_socket(&kinds, &network, k).await;
        }
        let rounds: u32 = cell_guest::arg("--rounds")?.unwrap_or(4);
        let plan = Plan::from_args()?;
        for round in 0..rounds {
            let seed = plan.seed.wrapping_add(u64::from(round) * 7919);
            stress::node(info.pid, &kinds, &network, Plan { seed, ..plan }).await?;
        }
        cell_guest::log!("stress: done, {rounds} rounds");
        Ok(())
    })
}
