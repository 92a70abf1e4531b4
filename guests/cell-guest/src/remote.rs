//! Remote nodes: other machines' `cell serve` daemons the operator granted pid0
//! (`cell run --remote NAME=tls://HOST:PORT`). Each is an [`Executor`] whose children run on
//! that node — spawn, wait, kill, stderr, stdin and stdout as for a local child — within the
//! node's ceiling. A child whose node or link is lost ends `killed: link-lost`
//! ([`crate::KilledBy::LinkLost`]). A Network granted to it is narrowed by the node's ceiling;
//! directories, sockets, components and services are refused (`bad-grant`).

use anyhow::{Context as _, Result};

use crate::caps::{Caps, Executor};

/// A remote node under the name the operator gave it.
#[derive(Clone)]
pub struct Remote {
    /// The `NAME` of `--remote NAME=tls://HOST:PORT`.
    pub name: String,
    /// Spawns children on that node.
    pub executor: Executor,
}

impl Caps {
    /// The remote nodes this process was granted, in the order the operator gave them
    /// (empty for every process but a pid0 started with `--remote`).
    pub async fn remotes(&self) -> Result<Vec<Remote>> {
        let response = self
            .session()
            .remotes_request()
            .send()
            .promise
            .await
            .context("session.remotes")?;
        let list = response.get()?.get_remotes()?;
        list.iter()
            .map(|entry| {
                Ok(Remote {
                    name: entry.get_name()?.to_string()?,
                    executor: Executor::new(entry.get_executor()?),
                })
            })
            .collect()
    }

    /// The remote node named `name`; fails if the operator granted none by that name.
    pub async fn remote(&self, name: &str) -> Result<Executor> {
        self.remotes()
            .await?
            .into_iter()
            .find(|r| r.name == name)
            .map(|r| r.executor)
            .with_context(|| {
                format!("no remote node named {name:?} (cell run --remote {name}=tls://HOST:PORT)")
            })
    }
}
