//! `cell serve --remote NAME=tls://HOST:PORT`: other machines' daemons this daemon's jobs may
//! spawn on. A job asks for them by name (`JobRequest.remotes`, `cell exec --remote NAME`);
//! its client's ceiling must list the name; pid0 then finds them in `Session.remotes`, as
//! under `cell run --remote`.
//!
//! Ownership and bounds: one pool per shard (shard-local, `Rc`), so a link and every job
//! using it live on one thread. A node is connected the first time a job on the shard asks
//! for it — not at boot, so a node that is down does not stop the daemon, and a shard that
//! never needs it holds no connection — and again for the next job after its link is lost
//! (the jobs that held the lost link see `killed: link-lost`, as under `cell run`). The pool
//! holds at most one link per `--remote` per shard; two jobs asking at once may both connect
//! and the later link is kept (the earlier lives on while its job holds it), so links are
//! bounded by `--remote`s × shards plus job starts in flight (≤ `--max-jobs`). Every link is
//! bounded as `cell run`'s are (`remote.rs`; at most `MAX_REMOTE_CHILDREN` children each,
//! shared by the shard's jobs).

use std::cell::RefCell;
use std::rc::Rc;

use cell_proto::{CellError, Reason};

use crate::remote::{RemoteLink, RemoteSpec, RemoteTls};

/// The daemon's remote nodes, as one shard links to them.
pub(crate) struct RemotePool {
    specs: Vec<RemoteSpec>,
    tls: Option<RemoteTls>,
    /// The live (or lost) link of each spec, by index; `None` until first asked for.
    links: RefCell<Vec<Option<Rc<RemoteLink>>>>,
}

impl RemotePool {
    /// A pool of `specs`, none connected yet. `tls` is set whenever `specs` is not empty.
    pub(crate) fn new(specs: Vec<RemoteSpec>, tls: Option<RemoteTls>) -> Self {
        let links = RefCell::new(vec![None; specs.len()]);
        RemotePool { specs, tls, links }
    }

    /// The link to the node `name`: the pool's, if it is still up; else a new one (within
    /// the link's connect timeout).
    ///
    /// # Errors
    /// `bad-request` for a name that is not one of the daemon's `--remote`s (the ceiling
    /// check comes first, so this is a daemon without it); `connect-failed` when the node
    /// cannot be reached or refuses this daemon's certificate.
    pub(crate) async fn link(&self, name: &str) -> Result<Rc<RemoteLink>, CellError> {
        let index = self
            .specs
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| {
                CellError::new(
                    Reason::BadRequest,
                    format!("this daemon has no remote {name:?}"),
                )
            })?;
        if let Some(link) = &self.links.borrow()[index] {
            if !link.is_lost() {
                return Ok(link.clone());
            }
        }
        let tls = self.tls.as_ref().ok_or_else(|| {
            CellError::new(
                Reason::BadRequest,
                "this daemon has no --remote-cert to show its remotes",
            )
        })?;
        let link = RemoteLink::connect(&self.specs[index], tls)
            .await
            .map_err(|e| CellError::new(Reason::ConnectFailed, format!("{e:#}")))?;
        self.links.borrow_mut()[index] = Some(link.clone());
        Ok(link)
    }
}
