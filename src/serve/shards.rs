//! The daemon over shards (`cell serve --shards N`): every shard holds a [`ShardCore`] — its
//! own supervisor, process table and copy of the ceiling — and a job's whole tree lives on
//! the shard it was placed on.
//!
//! Data flow: listeners are on shard 0, which hands each new client connection to the least
//! loaded shard (`accept.rs`); the connection lives there. `Daemon.run` starts the job on the
//! connection's own shard unless another is clearly lighter ([`crate::shard::place_from`]);
//! then the connection forwards the call over a *shard link*: an in-memory Cap'n Proto
//! connection (a `tokio::io::duplex` pipe) to a `Daemon` served on that shard for this one
//! client connection. The `Job` it answers is the other shard's own capability, proxied by
//! capnp, so wait, kill, stderr, stdin, stdout and report behave exactly as for a local job;
//! calls on it stay single-threaded on the job's shard. `ps`, `kill` and `--metrics` ask
//! every shard ([`crate::shard::Shard::call`]); events need nothing: every shard publishes to
//! the run's one bus.
//!
//! Ownership: `ShardCore` is shard-local (`Rc`). A client connection owns its links (one per
//! shard it used): when it ends, they end, and each shard's side kills the jobs the client
//! started `attached`, as on its own shard. Bounds: per link, [`LINK_BUFFER`] each way and the
//! same message and call bounds as the client's own connection; a client may hold
//! [`crate::limits::MAX_JOBS_HELD`] jobs on each shard; `max-jobs` counts over every shard
//! ([`crate::budget::SharedBudget`]).

use std::rc::Rc;

use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use cell_proto::Reason;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use std::sync::Arc;

use crate::cell_capnp::{component, daemon, job_request};
use crate::engine::LoadedComponent;
use crate::rpc::fail::failed;
use crate::rpc::{Link, LinkBounds};
use crate::serve::ceiling::Ceiling;
use crate::serve::daemon::{self as front, ClientState, DaemonServer};
use crate::serve::identity::{Ceilings, Peer};
use crate::serve::DaemonCore;
use crate::shard::Shard;
use crate::status::KilledBy;
use crate::supervisor::{Counts, PsEntry};
use crate::table::{Pid, PidPlan};

/// Bytes buffered in each direction of a shard link (the writer waits beyond it).
const LINK_BUFFER: usize = 64 * 1024;

/// One shard's share of the daemon.
#[derive(Clone)]
pub(crate) struct ShardCore {
    pub core: Rc<DaemonCore>,
    /// This shard's copies of the ceilings (the daemon's and the `--ceiling` ones).
    pub ceilings: Rc<Ceilings>,
}

impl ShardCore {
    /// The daemon's own ceiling (the flags'), for clients without a certificate, services
    /// and `--http` fronts.
    pub(crate) fn ceiling(&self) -> &Rc<Ceiling> {
        &self.ceilings.default
    }
}

/// A client connection's link to one other shard; dropping it closes the link.
pub(crate) struct ShardLink {
    daemon: daemon::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ShardLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The bounds of a link (and of a client connection): a whole component fits in one call.
pub(crate) fn link_bounds(limits: &crate::limits::Limits) -> LinkBounds {
    LinkBounds {
        max_message_bytes: limits.max_wasm_bytes.saturating_add(1 << 20),
        max_outstanding_calls: limits.max_outstanding_calls,
    }
}

/// The `Daemon` of shard `to` for this client connection, linking to it on first use.
///
/// # Errors
/// `dead: …` when that shard has stopped (the daemon is shutting down).
pub(crate) async fn link_to(
    client: &ClientState,
    to: usize,
) -> Result<daemon::Client, capnp::Error> {
    if let Some(link) = client.links.borrow().get(&to) {
        return Ok(link.daemon.clone());
    }
    let stopped = || failed(Reason::Dead, format!("shard {to} has stopped"));
    let shard = client.daemon.shards.get(to).ok_or_else(stopped)?.clone();
    let bounds = link_bounds(&client.ceiling.limits);
    let (near, far) = tokio::io::duplex(LINK_BUFFER);
    let peer = client.peer.clone();
    shard
        .call(move |shard| async move { serve_link(&shard, far, bounds, peer) })
        .await
        .ok_or_else(stopped)?;
    // Another call of this client may have linked meanwhile: keep one link (this one's far
    // side ends as soon as `near` is dropped).
    if let Some(link) = client.links.borrow().get(&to) {
        return Ok(link.daemon.clone());
    }
    let (read, write) = tokio::io::split(near);
    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(Some(
        usize::try_from(bounds.max_message_bytes / 8).unwrap_or(usize::MAX),
    ));
    let network =
        twoparty::VatNetwork::new(read.compat(), write.compat_write(), Side::Client, options);
    let mut system = RpcSystem::new(Box::new(network), None);
    let daemon = daemon::Client {
        client: system.bootstrap(Side::Server),
    };
    let task = tokio::task::spawn_local(async move {
        if let Err(e) = system.await {
            tracing::debug!("shard link ended: {e}");
        }
    });
    let link = ShardLink {
        daemon: daemon.clone(),
        task,
    };
    client.links.borrow_mut().insert(to, link);
    Ok(daemon)
}

/// Serves a link's far end on this shard: a `Daemon` for one client connection of the
/// front, which starts jobs here and nowhere else. When the link ends, the jobs it started
/// `attached` are killed. The client is the same peer there: the same identity, and that
/// shard's copy of the same ceiling.
fn serve_link(shard: &ShardCore, far: tokio::io::DuplexStream, bounds: LinkBounds, peer: Peer) {
    let (read, write) = tokio::io::split(far);
    let link = Link::new(read.compat(), write.compat_write(), bounds);
    let ceiling = shard.ceilings.of(&peer).clone();
    let client = Rc::new(ClientState::for_link(
        shard.core.clone(),
        ceiling,
        link.gate(),
        peer,
    ));
    let daemon: daemon::Client = capnp_rpc::new_client(DaemonServer::new(client.clone()));
    let system = link.serve(daemon.client);
    tokio::task::spawn_local(async move {
        if let Err(e) = system.await {
            tracing::debug!("shard link ended: {e}");
        }
        client.detach_all();
    });
}

/// Runs the job `params` asks for on shard `to`, through this connection's link to it: the
/// answer is that shard's own `Job`, proxied. A `Component` is checked to be this
/// connection's here; the other shard finds it by its hash.
pub(crate) async fn forward(
    client: &ClientState,
    to: usize,
    params: daemon::RunParams,
    mut results: daemon::RunResults,
) -> Result<(), capnp::Error> {
    let request = params.get()?.get_request()?;
    // Held until the other shard has answered: the component stays live meanwhile.
    let _component = match request.get_code().which()? {
        job_request::code::Component(cap) => Some(front::own_component(client, cap?).await?),
        _ => None,
    };
    let remote = link_to(client, to).await?;
    let mut call = remote.run_request();
    call.get().set_request(request)?;
    drop(params);
    let answer = call.send().promise.await?;
    results.get().set_job(answer.get()?.get_job()?);
    Ok(())
}

/// On a shard link: the front's `Component` (checked there), found live by its hash.
pub(crate) async fn linked_component(
    client: &ClientState,
    cap: component::Client,
) -> Result<(Arc<LoadedComponent>, bool), capnp::Error> {
    let answer = cap.hash_request().send().promise.await?;
    let text = answer.get()?.get_sha256()?.to_str().unwrap_or_default();
    let gone = || failed(Reason::Dead, "the component is no longer loaded");
    let hash = crate::engine::ContentHash::parse(text).ok_or_else(gone)?;
    let loaded = client
        .daemon
        .sup
        .engine()
        .find_live(&hash)
        .ok_or_else(gone)?;
    let sdk_guest = crate::inspect::has_sdk_marker(loaded.bytes());
    Ok((loaded, sdk_guest))
}

/// One shard's rows of `Daemon.ps`, with its index.
pub(crate) struct ShardRows {
    pub shard: usize,
    pub rows: Vec<PsEntry>,
    pub counts: Counts,
}

/// Every shard's processes and counts (a stopped shard has none).
pub(crate) async fn gather(core: &DaemonCore) -> Vec<ShardRows> {
    let asks = core.shards.iter().map(|shard| {
        let index = shard.index();
        shard.call(move |shard| async move {
            ShardRows {
                shard: index,
                rows: shard.core.sup.ps(),
                counts: shard.core.sup.counts(),
            }
        })
    });
    futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Kills `pid` (and its subtree) on the shard that owns it, and waits until it has ended;
/// `false` when no such process runs.
pub(crate) async fn kill(core: &DaemonCore, pid: Pid) -> bool {
    let owner = PidPlan::shard_of(pid, core.shards.len());
    let Some(shard) = core.shards.get(owner) else {
        return false;
    };
    let ended = shard.call(move |shard| async move {
        match shard.core.sup.kill(pid, KilledBy::Operator) {
            Some(handle) => {
                handle.wait().await;
                true
            }
            None => false,
        }
    });
    ended.await.unwrap_or(false)
}

/// Stops every job on every shard ("killed by the operator") and waits at most `grace` for
/// each shard's table to empty; whether they all did.
pub(crate) async fn stop_all(shards: &[Shard<ShardCore>], grace: std::time::Duration) -> bool {
    let stops = shards.iter().map(|shard| {
        shard.call(move |shard| async move {
            let sup = &shard.core.sup;
            sup.kill_all(KilledBy::Operator);
            sup.wait_all_reaped(grace).await
        })
    });
    futures::future::join_all(stops)
        .await
        .into_iter()
        .all(|emptied| emptied.unwrap_or(true))
}
