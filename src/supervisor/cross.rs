//! Children on other shards (`cell run --shards N`): a child's store, RPC system and
//! capability servers live on the shard it was placed on, for its whole life; its parent's
//! shard keeps a *shadow* of it.
//!
//! Data flow of a spawn placed elsewhere: the parent's shard checks the limits, lends the
//! fuel and picks the pid as for a local child, then sends a [`Crossing`] (all `Send`: the
//! compiled component, the spec with the grants that can cross, the limits, the tree, the
//! parent's room and fuel gauge) through the target shard's queue. There the child is
//! started as any child is (`Supervisor::start`, with the parent's room above its seat, so
//! `max-procs` counts it in every ancestor), and answers what its shadow is made of: its
//! captured stderr and plain stdio pipes (`Arc`, thread-safe), its fuel and memory gauges,
//! and two relay channels. Back home the shadow joins the table under the parent: the
//! cascade reaches it like any child, `Process.wait/kill/stderr/stdin/stdout` work on it as
//! on a local handle, `Process.service` links to the child's bootstrap over an in-memory
//! Cap'n Proto connection made on first use.
//!
//! Ownership: shard-local (`Rc`) — the shadow handle (parent's shard), the real handle and
//! everything the process owns (child's shard). Crossing shards: [`Crossing`], [`Arrived`],
//! the relay oneshots, the link's duplex pipe. The tree (`Arc<Tree>`), rooms
//! (`Arc<Room>`), fuel gauges and pipes are shared by both sides.
//!
//! What crosses: an Executor, a Network, directories, components, other guests' services
//! (each over a service link of its own, served on the parent's shard through its proxy) and
//! sockets (a duplicate descriptor registered with the child's shard's reactor, holding a
//! permit of its own from the issuer's `max-sockets`). A child granted proxied components,
//! remotes or the terminal stays on its parent's shard (those are bound to that shard's
//! connections), as does one whose socket cannot be duplicated right now (a read in
//! progress, no room in `max-sockets`): exactly the same semantics, only where it runs
//! differs.
//!
//! Bounds: one shadow per child (within `max-procs`), two relay tasks per crossed child, one
//! service link per crossed child whose service is asked for (`links.rs`; the
//! calls on it are bounded by the callers' call gates).

use std::cell::Cell;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::oneshot;

use super::links::{import_service, link_bounds, service_across, spawn_links};
use super::links::{ExportedService, ServiceLink};
use super::{Placement, Supervisor};
use crate::engine::LoadedComponent;
use crate::grants::{GrantedDir, Grants};
use crate::handle::{HandleParts, PlainStdio, ProcessHandle, ProcessInfo};
use crate::limits::{FuelGauge, Limits, MemoryGauge};
use crate::net::policy::NetPolicy;
use crate::net::socket::SendSocket;
use crate::room::Room;
use crate::shard::{Shard, Shards};
use crate::spec::{ProcessSpec, SpawnError, StderrMode, StdioMode};
use crate::status::{ExitStatus, KilledBy};
use crate::stderr::CapturedStderr;
use crate::table::{Admit, Pid};
use crate::tree::Tree;

/// The other shards of a sharded `cell run`, which one this supervisor is, and how it
/// places children.
pub(crate) struct Peers {
    pub index: usize,
    pub shards: Shards<Supervisor>,
    pub placement: ChildPlacement,
    /// Children placed so far (for [`ChildPlacement::Spread`]).
    placed: Cell<usize>,
}

/// Where a new child goes (`cell run --placement`). The variants' doc lines are what
/// `cell run --help` shows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ChildPlacement {
    /// The least loaded shard, unless its parent's is within a margin of it: a lone child
    /// or one spawned after another stays with its parent, children that live on spread
    // (`shard::place_from` from the parent's shard; load = live processes + placements in
    // flight)
    #[default]
    Load,
    /// Always another shard than its parent's, round-robin (to test, or to measure the hop)
    Spread,
}

impl Peers {
    /// The shard the next child of a process of this one goes to.
    fn next(&self) -> usize {
        let n = self.shards.len();
        match self.placement {
            ChildPlacement::Load => crate::shard::place_from(&self.shards, self.index),
            ChildPlacement::Spread if n > 1 => {
                let k = self.placed.get();
                self.placed.set(k.wrapping_add(1));
                (self.index + 1 + k % (n - 1)) % n
            }
            ChildPlacement::Spread => self.index,
        }
    }
}

/// A spec whose every part can cross threads (see the module docs for what can).
struct CrossSpec {
    name: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    cwd: Option<String>,
    stderr: StderrMode,
    stdio: StdioMode,
    executor: bool,
    network: Option<NetPolicy>,
    dirs: Vec<GrantedDir>,
    components: Vec<Arc<LoadedComponent>>,
    services: Vec<ExportedService>,
    sockets: Vec<SendSocket>,
}

/// Whether everything `spec` grants can cross to another shard (else it stays home).
fn crossable(spec: &ProcessSpec) -> bool {
    let g = &spec.grants;
    !(g.terminal
        || !g.proxied_components.is_empty()
        || !g.remotes.is_empty()
        || spec.stdio == StdioMode::Host
        || spec.stderr == StderrMode::Inherit)
}

impl CrossSpec {
    /// The `Send` form of a [`crossable`] spec; its services are exported by `home` (the
    /// parent's shard), each over a link of its own bounded by the child's `limits`.
    fn export(
        home: &Supervisor,
        spec: ProcessSpec,
        sockets: Vec<SendSocket>,
        limits: &Limits,
    ) -> Self {
        let ProcessSpec {
            name,
            args,
            env,
            grants,
            stderr,
            stdio,
            cwd,
        } = spec;
        let services = grants
            .services
            .into_iter()
            .map(|service| home.export_service(service, link_bounds(limits)))
            .collect();
        CrossSpec {
            name,
            args,
            env,
            cwd,
            stderr,
            stdio,
            executor: grants.executor,
            network: grants.network,
            dirs: grants.dirs,
            components: grants.components,
            services,
            sockets,
        }
    }

    /// The spec on the child's shard, and the service links it must keep running for the
    /// child's life (see [`spawn_links`]).
    ///
    /// # Errors
    /// A socket's descriptor cannot join this shard's reactor.
    fn into_spec(self) -> Result<(ProcessSpec, Vec<ServiceLink>), SpawnError> {
        let sockets = self
            .sockets
            .into_iter()
            .map(SendSocket::into_grant)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| SpawnError::Grant(format!("a granted socket: {e}")))?;
        let (services, links) = self.services.into_iter().map(import_service).unzip();
        let spec = ProcessSpec {
            name: self.name,
            args: self.args,
            env: self.env,
            cwd: self.cwd,
            stderr: self.stderr,
            stdio: self.stdio,
            grants: Grants {
                executor: self.executor,
                network: self.network,
                dirs: self.dirs,
                components: self.components,
                services,
                sockets,
                ..Grants::default()
            },
        };
        Ok((spec, links))
    }
}

/// A child on its way to another shard.
struct Crossing {
    pid: Pid,
    parent: Pid,
    depth: u32,
    tree: Arc<Tree>,
    above: Option<Arc<Room>>,
    lender: Option<FuelGauge>,
    component: Arc<LoadedComponent>,
    spec: CrossSpec,
    limits: Limits,
}

/// What a crossed child's shard answers once it is instantiated: what its shadow is made of.
struct Arrived {
    stderr: Option<CapturedStderr>,
    plain: Option<PlainStdio>,
    fuel: Option<FuelGauge>,
    memory: MemoryGauge,
    /// Whether it is an RPC guest (it may serve a capability).
    rpc: bool,
    /// Its largest message (the service link's bound).
    max_message_bytes: u64,
    /// The first kill of the shadow, relayed to the child.
    kill: oneshot::Sender<KilledBy>,
    /// The child's status, once it has ended.
    status: oneshot::Receiver<ExitStatus>,
}

impl Supervisor {
    /// Makes this supervisor shard `index` of `shards`, placing children on the others.
    pub(crate) fn with_peers(
        self,
        index: usize,
        shards: Shards<Supervisor>,
        placement: ChildPlacement,
    ) -> Self {
        let _ = self.0.peers.set(Peers {
            index,
            shards,
            placement,
            placed: Cell::new(0),
        });
        self
    }

    /// The shard a new child of a process of this shard goes to, when not this one (by
    /// `--placement`), and only when everything it is granted can cross; with it, the
    /// duplicates of the sockets it is granted (a child whose sockets cannot be duplicated
    /// now stays home).
    pub(super) fn elsewhere(
        &self,
        spec: &ProcessSpec,
    ) -> Option<(Shard<Supervisor>, Vec<SendSocket>)> {
        let peers = self.0.peers.get()?;
        let to = peers.next();
        if to == peers.index || !crossable(spec) {
            return None;
        }
        let sockets = spec
            .grants
            .sockets
            .iter()
            .map(crate::net::socket::SocketGrant::to_send)
            .collect::<Option<Vec<_>>>()?;
        Some((peers.shards.get(to)?.clone(), sockets))
    }

    /// Starts a child on shard `to` and enters its shadow here (see the module docs).
    pub(super) async fn start_elsewhere(
        &self,
        to: Shard<Supervisor>,
        at: Placement,
        component: Arc<LoadedComponent>,
        (spec, sockets): (ProcessSpec, Vec<SendSocket>),
        limits: Limits,
    ) -> Result<Rc<ProcessHandle>, SpawnError> {
        let parent = at.parent.ok_or(SpawnError::Dead(0))?;
        let (pid, above) = {
            let mut table = self.0.table.borrow_mut();
            (table.next_pid(), table.room_of(parent))
        };
        let info = ProcessInfo {
            pid,
            parent: Some(parent),
            name: spec.name.clone(),
            depth: at.depth,
            hash: Some(component.hash),
        };
        let crossing = Crossing {
            pid,
            parent,
            depth: at.depth,
            tree: at.tree.clone(),
            above,
            lender: at.lender,
            component,
            spec: CrossSpec::export(self, spec, sockets, &limits),
            limits: limits.clone(),
        };
        let placed = to.place();
        let arrived = to
            .call(move |sup| async move { sup.adopt(crossing).await })
            .await
            .ok_or_else(|| {
                SpawnError::Instantiate(format!("shard {} has stopped", to.index()))
            })??;
        drop(placed);
        let ended = Rc::new(Cell::new(false));
        let service = arrived
            .rpc
            .then(|| service_across(to.clone(), pid, arrived.max_message_bytes, ended.clone()));
        let parts = HandleParts {
            stderr: arrived.stderr,
            plain: arrived.plain,
            fuel: arrived.fuel,
            service,
            tree: Some(at.tree.clone()),
            memory: arrived.memory,
        };
        let shadow = Rc::new(ProcessHandle::with(info, parts));
        self.0.table.borrow_mut().insert(Admit {
            handle: shadow.clone(),
            limits,
            above: None,
            lender: None,
            shadow: true,
        })?;
        at.tree.entered(pid);
        self.publish_live();
        tokio::task::spawn_local(relay_here(
            self.clone(),
            shadow.clone(),
            arrived.kill,
            arrived.status,
            ended,
        ));
        // The parent may have ended while the child started there: the cascade it ran did
        // not see this child yet.
        if self.0.table.borrow().running(parent).is_none() {
            shadow.kill(KilledBy::Cascade);
        }
        Ok(shadow)
    }

    /// On the child's shard: starts a crossed child, and relays its status and kills.
    async fn adopt(&self, c: Crossing) -> Result<Arrived, SpawnError> {
        let at = Placement {
            pid: Some(c.pid),
            parent: Some(c.parent),
            depth: c.depth,
            tree: c.tree,
            above: c.above,
            lender: c.lender,
        };
        if self.0.table.borrow().holds(c.pid) {
            return Err(SpawnError::Instantiate(format!(
                "pid {} is still held on this shard (the pid space wrapped)",
                c.pid
            )));
        }
        let c_max = c.limits.max_message_bytes;
        let (spec, links) = c.spec.into_spec()?;
        let handle = self.start(at, c.component, spec, c.limits).await?;
        spawn_links(links, &handle);
        let (kill_tx, kill_rx) = oneshot::channel();
        let (status_tx, status_rx) = oneshot::channel();
        tokio::task::spawn_local(relay_there(handle.clone(), kill_rx, status_tx));
        Ok(Arrived {
            stderr: handle.stderr.clone(),
            plain: handle.plain.clone(),
            fuel: handle.fuel.clone(),
            memory: handle.memory.clone(),
            rpc: handle.service.is_some(),
            max_message_bytes: c_max,
            kill: kill_tx,
            status: status_rx,
        })
    }

    /// A shadow's child has ended: the shadow ends the same way, here, and is reaped like
    /// any process (the child's own bookkeeping — history, fuel, its subtree — was done on
    /// its shard).
    fn shadow_ended(&self, shadow: &ProcessHandle, status: ExitStatus) {
        self.ended_in_table(shadow, status);
    }
}

/// On the child's shard: waits for the child to end, killing it when its shadow is killed
/// (or dropped: nobody could wait for it or kill it any more), and sends its status home.
async fn relay_there(
    handle: Rc<ProcessHandle>,
    kill: oneshot::Receiver<KilledBy>,
    status: oneshot::Sender<ExitStatus>,
) {
    let ended = tokio::select! {
        s = handle.wait() => Some(s),
        by = kill => {
            handle.kill(by.unwrap_or(KilledBy::Cascade));
            None
        }
    };
    let ended = match ended {
        Some(s) => s,
        None => handle.wait().await,
    };
    let _ = status.send(ended);
}

/// On the parent's shard: relays the shadow's first kill to the child, and ends the shadow
/// when the child has ended (a child whose shard stopped counts as killed by the cascade).
async fn relay_here(
    sup: Supervisor,
    shadow: Rc<ProcessHandle>,
    kill: oneshot::Sender<KilledBy>,
    status: oneshot::Receiver<ExitStatus>,
    ended: Rc<Cell<bool>>,
) {
    tokio::pin!(status);
    let got = tokio::select! {
        s = &mut status => s,
        by = shadow.killed() => {
            let _ = kill.send(by);
            status.await
        }
    };
    ended.set(true);
    sup.shadow_ended(
        &shadow,
        got.unwrap_or(ExitStatus::Killed(KilledBy::Cascade)),
    );
}
