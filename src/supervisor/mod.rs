//! The supervisor: starts processes, runs each on its shard's single-threaded runtime, and
//! ends them — by themselves, by kill, by deadline, by protocol violation or by cascade.
//!
//! Threading: a supervisor and everything it runs live on one current-thread tokio runtime
//! inside a `LocalSet` (`Rc`/`RefCell`, no locks): one per shard. A child placed on another
//! shard (`cross.rs`) is run by that shard's supervisor; only `Send` parts cross. Wasmtime's
//! async stdio streams would hop threads on a multi-threaded runtime, which a spike measured
//! at ~10x slower per call. Compilation is the one thing pushed to a blocking thread. Guests yield every epoch tick, so one spinning guest cannot
//! starve the others.
//!
//! Ownership: the table owns a `ProcessHandle` per live process; each process's task owns its
//! `Store` and its RPC system; capabilities own only handles. When a process's task ends, its
//! store and RPC connection are dropped, its children are killed (cascade), and its entry is
//! reaped once its subtree is gone.

mod cross;
mod host;
mod links;
mod ps;
mod shared;
mod stdio;
mod task;

pub(crate) use cross::ChildPlacement;
use ps::status_word;
pub(crate) use ps::{Counts, PsEntry};
pub(crate) use shared::{ShardPlace, SharedParts};

use stdio::GuestStdio;
use task::ProcessTask;

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{oneshot, watch};
use tracing::Instrument;
use wasmtime::Store;

use crate::engine::{CellEngine, LoadedComponent};
use crate::events::{EventBus, EventKind};
use crate::handle::{HandleParts, PlainStdio, ProcessHandle, ProcessInfo};
use crate::hoststdio::HostStdio;
use crate::limits::{LimitError, LimitRequest, Limits};
use crate::net::audit::Audit;
use crate::net::count::SocketTally;
use crate::process::{build_store, fuel_gauge, memory_gauge, StoreSpec, Usage};
use crate::rpc;
use crate::spec::{Code, ProcessSpec, SpawnError, StdioMode};
use crate::state::ProcState;
use crate::status::{ExitStatus, KilledBy};
use crate::table::{Admit, Pid, ProcessTable};
use crate::tree::{ProcessSummary, Tree};

#[derive(Clone)]
pub struct Supervisor(Rc<Inner>);

struct Inner {
    engine: Arc<CellEngine>,
    table: RefCell<ProcessTable>,
    /// The number of table entries, for waiting until a tree is gone.
    live: watch::Sender<usize>,
    /// The same number, readable from other shards (where to place new work).
    load: Arc<AtomicUsize>,
    /// Where every process's network decisions are recorded.
    audit: Audit,
    /// Every spawn, exit and denial, for `Daemon.events`.
    events: EventBus,
    /// Spawns and exits so far (for `--metrics`).
    counts: RefCell<Counts>,
    /// The host's own stdin/stdout, lent to a plain pid0 or through `Session.terminal`.
    host_stdio: HostStdio,
    /// `--resolve NAME=IP`: names answered without a query.
    pinned: RefCell<Arc<HashMap<String, IpAddr>>>,
    /// The other shards of a sharded `cell run`, where children may be placed (unset: every
    /// child on this shard, as for a daemon, whose jobs' trees stay whole on one shard).
    peers: std::cell::OnceCell<cross::Peers>,
    /// Which shard this is (0 for a single-threaded run).
    shard: u32,
}

impl Supervisor {
    /// Answers these names itself (`--resolve`), for every process of the run.
    pub fn with_pinned_names(self, names: HashMap<String, IpAddr>) -> Self {
        *self.0.pinned.borrow_mut() = Arc::new(names);
        self
    }

    /// The network audit sink of this run.
    pub fn audit(&self) -> &Audit {
        &self.0.audit
    }

    /// Every spawn, exit and denial of every process.
    pub(crate) fn events(&self) -> &EventBus {
        &self.0.events
    }

    /// Spawns and exits so far.
    pub(crate) fn counts(&self) -> Counts {
        self.0.counts.borrow().clone()
    }

    /// The host's own stdin/stdout (for a plain pid0 and the terminal capability).
    pub fn host_stdio(&self) -> &HostStdio {
        &self.0.host_stdio
    }

    pub fn engine(&self) -> &CellEngine {
        &self.0.engine
    }

    /// A fresh pid for a store the supervisor does not run itself (one `cell serve --http`
    /// request): its audit lines and log lines carry it. Pids come from the table's one sequence.
    pub(crate) fn reserve_pid(&self) -> Pid {
        self.0.table.borrow_mut().next_pid()
    }

    /// `--resolve NAME=IP`, as every store of the run gets it.
    pub(crate) fn pinned_names(&self) -> Arc<HashMap<String, IpAddr>> {
        self.0.pinned.borrow().clone()
    }

    /// Facts about a live (possibly exited but not reaped) process.
    pub fn info(&self, pid: Pid) -> Option<ProcessInfo> {
        self.0
            .table
            .borrow()
            .get(pid)
            .map(|e| e.handle.info.clone())
    }

    /// Fails with [`SpawnError::Dead`] unless `pid` is running: capabilities die with their
    /// process.
    pub fn ensure_running(&self, pid: Pid) -> Result<(), SpawnError> {
        match self.0.table.borrow().running(pid) {
            Some(_) => Ok(()),
            None => Err(SpawnError::Dead(pid)),
        }
    }

    /// Starts the root of a new tree (`cell run`'s pid0, a daemon's job or service) from a
    /// loaded component, recording into `tree`. Resolves once it is instantiated.
    ///
    /// # Errors
    /// [`SpawnError::Instantiate`] when the component cannot be instantiated.
    pub(crate) async fn spawn_root(
        &self,
        component: Arc<LoadedComponent>,
        spec: ProcessSpec,
        limits: Limits,
        tree: Arc<Tree>,
    ) -> Result<Rc<ProcessHandle>, SpawnError> {
        let at = Placement {
            pid: None,
            parent: None,
            depth: 0,
            tree,
            above: None,
            lender: None,
        };
        self.start(at, component, spec, limits).await
    }

    /// Starts a child of `parent`, with limits derived from the parent's. Resolves once the child
    /// is instantiated.
    ///
    /// # Errors
    /// The parent is not running, a limit refuses the spawn, or the bytes cannot be loaded or
    /// instantiated.
    pub async fn spawn_child(
        &self,
        parent: Pid,
        code: Code,
        spec: ProcessSpec,
        request: &LimitRequest,
    ) -> Result<Rc<ProcessHandle>, SpawnError> {
        let component = match code {
            Code::Bytes(wasm) => {
                self.child_limits(parent, request, wasm.len())?;
                self.0.engine.load(wasm).await?
            }
            Code::Loaded(component) => component,
        };
        // The parent may have ended, or its subtree filled up, while the code compiled.
        let (mut limits, depth) = self.child_limits(parent, request, component.size)?;
        // The child's fuel is lent from the parent's (see `FuelGauge`): what it asked for, or
        // half of what the parent has left.
        let lender = self.fuel_gauge(parent);
        if let (Some(want), Some(gauge)) = (limits.fuel, &lender) {
            let want = if request.fuel.is_some() {
                want
            } else {
                gauge.get() / 2
            };
            limits.fuel = Some(gauge.lend(want));
        }
        let lent = limits.fuel;
        let Some(tree) = self
            .0
            .table
            .borrow()
            .get(parent)
            .map(|e| e.handle.tree.clone())
        else {
            return Err(SpawnError::Dead(parent));
        };
        let at = Placement {
            pid: None,
            parent: Some(parent),
            depth,
            tree,
            above: None,
            lender: lender.clone(),
        };
        let started = match self.elsewhere(&spec) {
            Some((to, sockets)) => {
                self.start_elsewhere(to, at, component, (spec, sockets), limits)
                    .await
            }
            None => self.start(at, component, spec, limits).await,
        };
        // A child whose store could not be built, or who found its ancestors' rooms full,
        // never ran; one that failed to instantiate ran and was repaid by `finish`, like every
        // process that ends.
        if let (Err(SpawnError::Grant(_) | SpawnError::Limit(_)), Some(fuel), Some(gauge)) =
            (&started, lent, &lender)
        {
            gauge.repay(fuel);
        }
        started
    }

    /// Loads `wasm` for `owner` (`Executor.load`): checked against its `max-wasm-size` before
    /// anything is compiled, and its owner must still run once it is.
    ///
    /// # Errors
    /// The owner is not running, the bytes are too large, or they cannot be loaded.
    pub async fn load(
        &self,
        owner: Pid,
        wasm: Arc<[u8]>,
    ) -> Result<Arc<LoadedComponent>, SpawnError> {
        {
            let table = self.0.table.borrow();
            let entry = table.running(owner).ok_or(SpawnError::Dead(owner))?;
            let size = wasm.len() as u64;
            if size > entry.limits.max_wasm_bytes {
                return Err(LimitError::WasmSize {
                    size,
                    limit: entry.limits.max_wasm_bytes,
                }
                .into());
            }
        }
        let component = self.0.engine.load(wasm).await?;
        self.ensure_running(owner)?;
        Ok(component)
    }

    /// The fuel gauge of `pid`, if it runs metered.
    fn fuel_gauge(&self, pid: Pid) -> Option<crate::limits::FuelGauge> {
        self.0.table.borrow().get(pid)?.handle.fuel.clone()
    }

    fn child_limits(
        &self,
        parent: Pid,
        request: &LimitRequest,
        wasm_len: usize,
    ) -> Result<(Limits, u32), SpawnError> {
        let table = self.0.table.borrow();
        let entry = table.running(parent).ok_or(SpawnError::Dead(parent))?;
        let size = wasm_len as u64;
        if size > entry.limits.max_wasm_bytes {
            return Err(LimitError::WasmSize {
                size,
                limit: entry.limits.max_wasm_bytes,
            }
            .into());
        }
        let limits = entry.limits.for_child(request)?;
        table.check_room(parent)?;
        Ok((limits, entry.handle.info.depth + 1))
    }

    /// Registers a process, starts its task, and waits until it is instantiated. The steps:
    /// make its stdio, build its store, wire its RPC connection (or plain stdio), register its
    /// handle, launch its task.
    async fn start(
        &self,
        at: Placement,
        component: Arc<LoadedComponent>,
        spec: ProcessSpec,
        limits: Limits,
    ) -> Result<Rc<ProcessHandle>, SpawnError> {
        let pid = match at.pid {
            Some(pid) => pid,
            None => self.0.table.borrow_mut().next_pid(),
        };
        let info = ProcessInfo {
            pid,
            parent: at.parent,
            name: spec.name.clone(),
            depth: at.depth,
            hash: Some(component.hash),
        };
        let audit = self
            .0
            .audit
            .for_tree(at.tree.decisions(), at.tree.client().cloned());
        let stdio = self.stdio_for(pid, &spec, &limits, &at.tree);
        let sockets = SocketTally::new(limits.max_sockets);
        let store = self.store_for(pid, &spec, &limits, stdio.guest, sockets.clone(), &audit)?;
        let (connection, plain) = self.wire(pid, &spec, &limits, stdio.host, sockets, audit);
        let parts = HandleParts {
            stderr: stdio.captured,
            plain,
            fuel: fuel_gauge(&store),
            service: connection.as_ref().map(rpc::Connection::service_fn),
            tree: Some(at.tree.clone()),
            memory: memory_gauge(&store),
        };
        let handle = Rc::new(ProcessHandle::with(info, parts));
        let timeout = limits.timeout;
        self.0.table.borrow_mut().insert(Admit {
            handle: handle.clone(),
            limits,
            above: at.above,
            lender: at.lender,
            shadow: false,
        })?;
        at.tree.entered(pid);
        self.publish_live();
        let started = self
            .launch(handle, component, store, connection, timeout)
            .await?;
        self.0.counts.borrow_mut().spawns += 1;
        self.0.events.publish(
            pid,
            EventKind::Spawn {
                parent: at.parent,
                name: started.info.name.clone(),
                sha256: started.info.hash.map(|h| h.to_string()),
            },
        );
        Ok(started)
    }

    /// The process's store: its WASI context built from its spec, grants and limits.
    fn store_for(
        &self,
        pid: Pid,
        spec: &ProcessSpec,
        limits: &Limits,
        stdio: GuestStdio,
        sockets: Arc<SocketTally>,
        audit: &Audit,
    ) -> Result<Store<ProcState>, SpawnError> {
        let mut argv = vec![spec.name.clone()];
        argv.extend(spec.args.iter().cloned());
        build_store(
            &self.0.engine,
            StoreSpec {
                argv,
                env: spec.env.clone(),
                stdin: stdio.stdin,
                stdout: stdio.stdout,
                stderr: stdio.stderr,
                dirs: spec.grants.dirs.clone(),
                cwd: spec.cwd.clone(),
                limits: limits.clone(),
                pid,
                network: spec.grants.network.clone(),
                audit: audit.clone(),
                sockets,
                pinned_names: self.0.pinned.borrow().clone(),
            },
        )
        .map_err(|e| SpawnError::Grant(format!("{e:#}")))
    }

    /// What the host end of the process's stdio becomes: its RPC connection (a cell guest),
    /// ByteStreams on its `Process` (plain), or nothing (the host's own stdio).
    fn wire(
        &self,
        pid: Pid,
        spec: &ProcessSpec,
        limits: &Limits,
        host: PlainStdio,
        sockets: Arc<SocketTally>,
        audit: Audit,
    ) -> (Option<rpc::Connection>, Option<PlainStdio>) {
        match spec.stdio {
            StdioMode::Rpc => {
                let connection = rpc::serve(
                    rpc::ServeSpec {
                        host: Rc::new(self.clone()),
                        pid,
                        grants: spec.grants.clone(),
                        audit,
                        sockets,
                    },
                    rpc::Transport {
                        from_guest: host.stdout.into_host(),
                        to_guest: host.stdin.into_host(),
                        max_message_bytes: limits.max_message_bytes,
                        max_outstanding_calls: limits.max_outstanding_calls,
                    },
                );
                (Some(connection), None)
            }
            StdioMode::Plain => (None, Some(host)),
            StdioMode::Host => (None, None),
        }
    }

    /// Spawns the process's task and waits until it is instantiated.
    async fn launch(
        &self,
        handle: Rc<ProcessHandle>,
        component: Arc<LoadedComponent>,
        store: Store<ProcState>,
        connection: Option<rpc::Connection>,
        timeout: Option<Duration>,
    ) -> Result<Rc<ProcessHandle>, SpawnError> {
        let (started_tx, started_rx) = oneshot::channel();
        let span = tracing::info_span!("proc", pid = handle.pid, name = %handle.info.name);
        let turn = store.data().turn.clone();
        let task = ProcessTask {
            sup: self.clone(),
            handle: handle.clone(),
            component,
            store,
            connection,
            timeout,
            started: started_tx,
        };
        tokio::task::spawn_local(crate::sched::Scheduled::new(
            task.run().instrument(span),
            turn,
        ));
        match started_rx.await {
            Ok(Ok(())) => Ok(handle),
            Ok(Err(failure)) => Err(failure),
            Err(_) => Err(SpawnError::Instantiate("process task ended early".into())),
        }
    }

    /// Records that a process ended, terminates its children, and reaps what can be reaped.
    pub(super) fn finish(&self, handle: &ProcessHandle, status: ExitStatus, usage: Usage) {
        tracing::info!(target: "cell::proc", pid = handle.pid, %status, "process ended");
        // What the process did not use goes back to the parent it was lent from.
        let lender = self
            .0
            .table
            .borrow()
            .get(handle.pid)
            .and_then(|e| e.lender.clone());
        if let (Some(left), Some(gauge)) = (usage.fuel_left, lender) {
            gauge.repay(left);
        }
        self.record(handle, &status, usage);
        *self
            .0
            .counts
            .borrow_mut()
            .exits
            .entry(status_word(&status))
            .or_default() += 1;
        self.0
            .events
            .publish(handle.pid, EventKind::Exit(status.clone()));
        self.ended_in_table(handle, status);
    }

    /// Sets the final status of `handle`, terminates its children (cascade) and reaps what
    /// can be reaped: the table's side of an ending, for a process or a shadow alike.
    fn ended_in_table(&self, handle: &ProcessHandle, status: ExitStatus) {
        handle.set_status(status);
        let orphans = self.0.table.borrow_mut().mark_exited(handle.pid);
        for child in orphans {
            child.kill(KilledBy::Cascade);
        }
        let reaped = self.0.table.borrow_mut().reap(handle.pid);
        for gone in reaped {
            gone.tree.left();
        }
        self.publish_live();
    }

    /// Keeps the final facts of an ended process for the run report.
    fn record(&self, handle: &ProcessHandle, status: &ExitStatus, usage: Usage) {
        let tree = &handle.tree;
        let stats = tree.history();
        let summary = ProcessSummary {
            pid: handle.pid,
            parent: handle.parent,
            name: handle.info.name.clone(),
            sha256: handle.info.hash.map(|h| h.to_string()),
            status: status.clone(),
            start_ms: stats.ms_since_start(handle.started),
            end_ms: stats.ms_since_start(std::time::Instant::now()),
            peak_memory_bytes: usage.peak_memory,
            fuel_used: usage.fuel_used,
            shard: self.0.shard,
        };
        drop(stats);
        tree.record(summary);
    }

    fn publish_live(&self) {
        let n = self.0.table.borrow().len();
        self.0.load.store(n, Ordering::Relaxed);
        self.0.live.send_replace(n);
    }

    /// Kills every running process (e.g. on SIGINT) with the given reason.
    pub fn kill_all(&self, by: KilledBy) {
        let running = self.0.table.borrow().running_handles();
        for h in running {
            h.kill(by);
        }
    }

    /// Asks `pid` to stop (and so its subtree); `None` when it is not running.
    pub(crate) fn kill(&self, pid: Pid, by: KilledBy) -> Option<Rc<ProcessHandle>> {
        let handle = self.0.table.borrow().running(pid)?.handle.clone();
        handle.kill(by);
        Some(handle)
    }

    /// Waits until every process has been reaped, or `grace` has passed.
    /// Returns whether the table is empty.
    pub async fn wait_all_reaped(&self, grace: Duration) -> bool {
        let mut rx = self.0.live.subscribe();
        let emptied = tokio::time::timeout(grace, rx.wait_for(|n| *n == 0)).await;
        emptied.is_ok()
    }
}

/// Where a new process goes: under which parent, at what depth, in which tree, counted in
/// which room, on whose fuel.
struct Placement {
    /// Its pid, when its parent's shard chose it (else this table's next).
    pid: Option<Pid>,
    parent: Option<Pid>,
    depth: u32,
    tree: Arc<Tree>,
    /// The parent's room when the parent is on another shard (else found in the table).
    above: Option<Arc<crate::room::Room>>,
    /// The gauge its fuel was lent from (its parent's).
    lender: Option<crate::limits::FuelGauge>,
}
