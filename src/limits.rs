//! Resource limits: what one process may use, how a child's limits derive from its parent's,
//! and the fixed bounds on every host-side queue and buffer.
//!
//! Invariant: a child's limits are never larger than its parent's ([`Limits::for_child`]), so a
//! whole tree is bounded by what the operator gave pid0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use thiserror::Error;

/// Capacity of each stdio pipe between a guest and the host (bytes in flight per direction).
pub const PIPE_CAPACITY: usize = 64 * 1024;
/// Largest single `ByteStream.read` the host answers, whatever the caller asks for.
pub(crate) const MAX_READ_CHUNK: usize = 64 * 1024;
/// Largest partial line kept when forwarding a child's stderr; longer lines are split.
pub(crate) const STDERR_LINE_MAX: usize = 4 * 1024;
/// How many distinct compiled components stay cached in memory.
pub(crate) const COMPONENT_CACHE_ENTRIES: usize = 64;
/// Epoch tick: how often a running guest yields to its siblings and checks for kills.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How many ended processes the run report lists; later ones are only counted.
pub(crate) const PROCESS_HISTORY: usize = 10_000;
/// Bytes the listed ended processes may take in the host (names and trap messages included);
/// past it, ended processes are only counted.
pub(crate) const PROCESS_HISTORY_BYTES: usize = 4 << 20;

/// Ended processes kept for one daemon job's report (and their bytes): many jobs live side by
/// side, so each keeps less than a `cell run` (at most `--max-jobs` × 128 KiB in all).
pub(crate) const JOB_HISTORY: usize = 1_000;
/// See [`JOB_HISTORY`].
pub(crate) const JOB_HISTORY_BYTES: usize = 128 << 10;

/// Events the daemon's event ring holds for subscribers that fall behind (each at most a few
/// KiB: its strings are bounded); older ones are lost, and counted, per subscriber.
pub(crate) const EVENT_RING: usize = 1024;
/// How long `cell` waits for its own blocking threads (a compile nobody waits for any more, a
/// guest's file operation stuck on a FIFO) once the run has ended, before it exits anyway.
pub const EXIT_GRACE: Duration = Duration::from_secs(1);
/// How long the host waits for killed processes to unwind when the run ends.
pub(crate) const TEARDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest single `TcpStream.write` the host accepts; a guest writes more in several calls.
pub(crate) const NET_MAX_WRITE: usize = 1 << 20;
/// Bytes of one process's TCP writes and UDP sends that may wait in the host at once for a slow
/// peer; more fail with `limit: max in-flight bytes …`.
pub(crate) const NET_MAX_IN_FLIGHT: usize = 4 << 20;
/// Datagrams a `UdpSocket` keeps for its guest; more arriving while it is full are dropped and
/// counted. With [`UDP_MAX_DATAGRAM`], at most 4 MiB per socket.
pub(crate) const UDP_RECV_QUEUE: usize = 64;
/// Largest UDP datagram sent or received (the IPv4 maximum payload, rounded up).
pub(crate) const UDP_MAX_DATAGRAM: usize = 64 * 1024;
/// Largest listen backlog a guest may ask for.
pub(crate) const MAX_LISTEN_BACKLOG: u32 = 1024;
/// Addresses of one resolved host name the host considers (and audits) per connect.
pub(crate) const MAX_RESOLVED_ADDRS: usize = 16;
/// Bytes of argv and environment one spawn request may carry (all strings together); the host
/// keeps them for the child's whole life. More fail with `limit: …`.
pub(crate) const MAX_ARGV_ENV_BYTES: usize = 256 << 10;
/// Strings (arguments plus variables) one spawn request may carry.
pub(crate) const MAX_ARGV_ENV_ENTRIES: usize = 4096;
/// WASI resources (streams, pollables, sockets, files, …) one process may hold at once. Each
/// costs the host a table entry and the object behind it; wasmtime's default is far larger.
pub(crate) const MAX_RESOURCES: usize = 4096;
/// `Component` capabilities one process may hold at once. Each keeps a compiled component
/// alive in the host (past the compile cache's LRU), so a guest loading ever more distinct
/// programs would otherwise make the host hold all of them.
pub(crate) const MAX_COMPONENTS_HELD: usize = 64;
/// `Directory` capabilities one process may hold at once: each holds an open descriptor of
/// the host's (a subtree opened by `Directory.open` is a new one).
pub(crate) const MAX_DIRS_HELD: usize = 64;
/// `Job` capabilities one daemon client may hold at once (each keeps its job's report).
pub(crate) const MAX_JOBS_HELD: usize = 256;
/// `Daemon.events` subscriptions one daemon client may hold at once.
pub(crate) const MAX_SUBSCRIPTIONS: usize = 8;
/// Client connections a daemon serves at once (TLS handshakes and logins in progress
/// included); more are closed as they arrive.
pub(crate) const MAX_CLIENTS: usize = 1024;
/// How long a TCP client has to log in before its connection is closed.
pub(crate) const LOGIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Core instances, linear memories and tables one store may create. Each linear memory
/// reserves `MEMORY_RESERVATION` of address space however small it is, so the address space a
/// run reserves is at most `live processes × MAX_MEMORIES × MEMORY_RESERVATION` (see
/// [`MAX_PROCS_CEILING`]).
pub(crate) const MAX_INSTANCES: usize = 64;
/// See [`MAX_INSTANCES`].
pub(crate) const MAX_MEMORIES: usize = 2;
/// See [`MAX_INSTANCES`].
pub(crate) const MAX_TABLES: usize = 64;
/// Address space wasmtime reserves per linear memory on 64-bit hosts (4 GiB plus its 32 MiB
/// guard), however small the memory.
pub(crate) const MEMORY_RESERVATION: u64 = (4 << 30) + (32 << 20);
/// The address space all the memories of a run may reserve: 96 TiB of x86-64's 128 TiB user
/// address space, leaving the rest to the host itself.
pub(crate) const ADDRESS_SPACE_BUDGET: u64 = 96 << 40;
/// The largest `--max-procs`: as many processes as [`ADDRESS_SPACE_BUDGET`] holds at
/// [`MAX_MEMORIES`] memories each (12,192).
pub(crate) const MAX_PROCS_CEILING: u32 =
    (ADDRESS_SPACE_BUDGET / (MAX_MEMORIES as u64 * MEMORY_RESERVATION)) as u32;
/// Fuel a running guest is handed at a time when fuel is metered: lending fuel to a child (see
/// [`FuelGauge`]) takes effect within one slice of the parent's own execution. Kept small:
/// 100 M made fairness under `--fuel` ~1.0x (the epoch slice, not wasmtime's plain fuel yield,
/// then ended a spinner's turn) but let a tree overspend by up to a slice
/// (`tests/escape.rs` `fuel_bounds_the_whole_tree`: 1.076 G used under `--fuel 1G`).
pub(crate) const FUEL_SLICE: u64 = 1_000_000;
/// How long one connection attempt of `Network.connect` may take.
pub(crate) const NET_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest an outgoing `wasi:http` request may take to connect (TCP and TLS), whatever its
/// `request-options` ask: wasmtime's own default is 600 s.
pub(crate) const HTTP_CONNECT_TIMEOUT: Duration = NET_CONNECT_TIMEOUT;
/// The longest an outgoing `wasi:http` request may wait for its response head.
pub(crate) const HTTP_FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(60);
/// The longest a response body may go without a byte.
pub(crate) const HTTP_BETWEEN_BYTES_TIMEOUT: Duration = Duration::from_secs(60);
/// Bytes of header fields one `wasi:http` `fields` resource may hold (wasmtime: 128 KiB).
pub(crate) const HTTP_FIELD_BYTES: usize = 64 << 10;
/// The largest write to an outgoing body (wasmtime: 1 MiB); one more may wait in its channel.
pub(crate) const HTTP_BODY_CHUNK_BYTES: usize = 64 << 10;
/// How far hyper may read a response ahead of the guest (hyper's default: ~400 KiB).
pub(crate) const HTTP_READ_BUF_BYTES: usize = 64 << 10;
/// Response headers a server may send (hyper's default: 100); also the most a client of
/// `cell serve --http` may send.
pub(crate) const HTTP_MAX_HEADERS: usize = 100;
/// How long one `cell serve --http` request's handler may run, body included, when no
/// `--timeout` is given.
pub(crate) const HTTP_HANDLER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a client of `cell serve --http` may take to send a request head.
pub(crate) const HTTP_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Client connections one `cell serve --http` front keeps open at once; more are closed.
pub(crate) const MAX_HTTP_CONNECTIONS: usize = 1024;
/// Requests one front runs at once unless `--http-max-concurrency` says otherwise.
pub(crate) const HTTP_MAX_CONCURRENCY: usize = 64;

/// The limits one process runs under.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Bytes of linear memory and tables, all of the store's together.
    pub max_memory: u64,
    /// Wall-clock time from start; `None` = no deadline.
    pub timeout: Option<Duration>,
    /// CPU fuel; `None` = not metered.
    pub fuel: Option<u64>,
    /// Live processes in this process's subtree, itself included.
    pub max_procs: u32,
    /// How many levels may still be spawned below this process (0 = it may not spawn).
    pub max_depth: u32,
    /// Largest component `Executor.spawn` accepts from this process.
    pub max_wasm_bytes: u64,
    /// Largest Cap'n Proto message this process may send (its RPC traversal limit).
    pub max_message_bytes: u64,
    /// RPC calls from this process that may be in progress at once.
    pub max_outstanding_calls: u32,
    /// Bytes of stderr kept for a child spawned with `stderr = capture`.
    pub stderr_capture_bytes: u64,
    /// Sockets this process may hold open through RPC at once (streams, listeners, UDP).
    pub max_sockets: u32,
}

impl Default for Limits {
    /// The operator's defaults for pid0 (each overridable on the command line).
    fn default() -> Self {
        Limits {
            max_memory: 1 << 30,
            timeout: None,
            fuel: None,
            max_procs: 1024,
            max_depth: 16,
            max_wasm_bytes: 32 << 20,
            max_message_bytes: 64 << 20,
            max_outstanding_calls: 1024,
            stderr_capture_bytes: 64 << 10,
            max_sockets: 64,
        }
    }
}

/// Limits a parent asks for on behalf of a child; `None` = the same as the parent's. The wire
/// crate's type: the SDK writes it, the executor reads it.
pub use cell_proto::LimitRequest;

/// A spawn refused because of a limit.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum LimitError {
    #[error("max-depth reached: process may not spawn children")]
    Depth,
    #[error("max-procs {limit} reached in the subtree of pid {pid}")]
    Procs { pid: u32, limit: u32 },
    #[error("wasm of {size} bytes exceeds max-wasm-size {limit}")]
    WasmSize { size: u64, limit: u64 },
}

impl Limits {
    /// The limits of a new child: the parent's, narrowed by `req`, one level down.
    ///
    /// # Errors
    /// [`LimitError::Depth`] when the parent may not spawn at all.
    pub fn for_child(&self, req: &LimitRequest) -> Result<Limits, LimitError> {
        if self.max_depth == 0 {
            return Err(LimitError::Depth);
        }
        let narrow = |parent: u64, asked: Option<u64>| asked.map_or(parent, |a| a.min(parent));
        Ok(Limits {
            max_memory: narrow(self.max_memory, req.max_memory),
            timeout: min_opt(self.timeout, req.timeout),
            fuel: self.fuel.map(|f| narrow(f, req.fuel)),
            max_procs: narrow(
                u64::from(self.max_procs.saturating_sub(1)),
                req.max_procs.map(u64::from),
            ) as u32,
            max_depth: narrow(u64::from(self.max_depth - 1), req.max_depth.map(u64::from)) as u32,
            ..self.clone()
        })
    }
}

/// A process's fuel as the host sees it: what it has, and what it lent to its children.
///
/// Fuel is **lent**, so a whole tree never uses more than pid0's `--fuel`:
/// - a child spawned with an explicit fuel limit is lent that much up front (at most what the
///   parent has left);
/// - a child spawned without one is lent half of what its parent has left (so the parent keeps
///   running, and later siblings still get some);
/// - whatever a child did not use is given back when it ends.
///
/// (Drawing from the parent as a child runs was measured and dropped: the store's fuel can only
/// be topped up from its epoch callback, and a tight loop burns a 100 M draw within a tick or
/// two, so a child would run out while its parent had plenty.)
///
/// A store's fuel can only be changed through the store, which its task owns while the guest
/// runs, so lending and repaying are recorded here and [`FuelGauge::settle`]d by the store
/// itself on each epoch tick (see `process::build_store`). A parent may therefore run on
/// fuel it lent for at most one [`EPOCH_TICK`] of execution plus one [`FUEL_SLICE`]; it never
/// lends more than it was last seen to have, minus what it already lent. Shared (`Arc`) because
/// the store's epoch callback must be `Send`.
#[derive(Clone, Debug)]
pub struct FuelGauge(Arc<Gauge>);

#[derive(Debug)]
struct Gauge {
    /// The store's fuel when last settled.
    left: AtomicU64,
    /// Lent to children since the last settlement.
    lent: AtomicU64,
    /// Given back by ended children since the last settlement.
    repaid: AtomicU64,
    /// The fuel it started with.
    received: u64,
}

impl FuelGauge {
    /// The gauge of a process that starts with `fuel`.
    pub fn new(fuel: u64) -> Self {
        FuelGauge(Arc::new(Gauge {
            left: AtomicU64::new(fuel),
            lent: AtomicU64::new(0),
            repaid: AtomicU64::new(0),
            received: fuel,
        }))
    }

    /// The fuel this process may still use or lend.
    pub fn get(&self) -> u64 {
        let g = &self.0;
        (g.left.load(Ordering::Relaxed) + g.repaid.load(Ordering::Relaxed))
            .saturating_sub(g.lent.load(Ordering::Relaxed))
    }

    /// Takes up to `want` for a child; returns what was lent (0 when nothing is left).
    pub fn lend(&self, want: u64) -> u64 {
        let give = want.min(self.get());
        self.0.lent.fetch_add(give, Ordering::Relaxed);
        give
    }

    /// Gives back fuel a child did not use (or a spawn that failed did not take).
    pub fn repay(&self, fuel: u64) {
        self.0.repaid.fetch_add(fuel, Ordering::Relaxed);
    }

    /// Fuel used by this process and not given back by its children: what it started with
    /// minus `left`.
    pub fn used(&self, left: u64) -> u64 {
        self.0.received.saturating_sub(left)
    }

    /// Called by the store with the fuel it has: applies what was lent and repaid since the
    /// last call and returns the fuel the store must now have.
    pub fn settle(&self, store_fuel: u64) -> u64 {
        let g = &self.0;
        let lent = g.lent.swap(0, Ordering::Relaxed);
        let repaid = g.repaid.swap(0, Ordering::Relaxed);
        let now = (store_fuel + repaid).saturating_sub(lent);
        g.left.store(now, Ordering::Relaxed);
        now
    }
}

/// The smaller of two optional bounds, where `None` means unbounded.
fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// The store limiter: caps all memories and tables of one store together, and remembers whether
/// the cap was hit so a trap that follows can be reported as "out of memory".
///
/// Growth past the cap is refused the wasm way (`memory.grow` returns -1), so a guest that
/// handles allocation failure keeps running; most guests abort, which traps.
pub(crate) struct MemoryLimiter {
    limit: usize,
    used: usize,
    /// `used`, readable from outside the store (`Daemon.ps`).
    gauge: MemoryGauge,
    /// The largest `used` has been (for the run report).
    peak: usize,
    hit: bool,
}

/// Bytes one table element is charged for in the memory budget.
const TABLE_ELEMENT_BYTES: usize = 8;

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        MemoryLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            gauge: MemoryGauge::default(),
            peak: 0,
            hit: false,
        }
    }

    /// Whether a growth was refused because of the cap.
    pub(crate) fn hit(&self) -> bool {
        self.hit
    }

    /// Bytes in use now (memories and tables).
    #[cfg(test)]
    pub(crate) fn used(&self) -> usize {
        self.used
    }

    /// The most bytes in use at any one time so far.
    pub(crate) fn peak(&self) -> usize {
        self.peak
    }

    /// What the store uses now, readable without the store.
    pub(crate) fn gauge(&self) -> MemoryGauge {
        self.gauge.clone()
    }

    /// Charges host memory held for the guest (the header fields of its `wasi:http` resources,
    /// see `crate::net::http::held`) against the same limit as its memories: `before` bytes
    /// become `after`. `false`, with nothing changed, when that does not fit.
    pub(crate) fn host_bytes(&mut self, before: usize, after: usize) -> bool {
        self.grow(before, after)
    }

    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if next > self.limit {
            self.hit = true;
            return false;
        }
        self.used = next;
        self.peak = self.peak.max(next);
        self.gauge
            .0
            .store(next as u64, std::sync::atomic::Ordering::Relaxed);
        true
    }
}

/// The bytes of linear memory and tables a store uses now (a mirror of its limiter's count).
#[derive(Clone, Debug, Default)]
pub(crate) struct MemoryGauge(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl MemoryGauge {
    pub(crate) fn get(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired))
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_limits_never_exceed_parent() {
        let parent = Limits {
            timeout: Some(Duration::from_secs(10)),
            ..Limits::default()
        };
        let child = parent
            .for_child(&LimitRequest {
                max_memory: Some(u64::MAX),
                timeout: Some(Duration::from_secs(60)),
                max_procs: Some(u32::MAX),
                max_depth: Some(u32::MAX),
                ..LimitRequest::default()
            })
            .unwrap();
        assert_eq!(child.max_memory, parent.max_memory);
        assert_eq!(child.timeout, parent.timeout);
        assert_eq!(child.max_procs, parent.max_procs - 1);
        assert_eq!(child.max_depth, parent.max_depth - 1);
    }

    #[test]
    fn child_may_ask_for_less() {
        let parent = Limits::default();
        let child = parent
            .for_child(&LimitRequest {
                max_memory: Some(1 << 20),
                timeout: Some(Duration::from_secs(1)),
                max_depth: Some(0),
                ..LimitRequest::default()
            })
            .unwrap();
        assert_eq!(child.max_memory, 1 << 20);
        assert_eq!(child.timeout, Some(Duration::from_secs(1)));
        assert_eq!(child.max_depth, 0);
        assert_eq!(
            child.for_child(&LimitRequest::default()),
            Err(LimitError::Depth)
        );
    }

    #[test]
    fn limiter_counts_all_memories_together() {
        let mut l = MemoryLimiter::new(100);
        assert!(l.grow(0, 60));
        assert!(!l.grow(0, 60), "second memory would exceed the shared cap");
        assert!(l.hit());
        assert!(l.grow(60, 100));
        assert_eq!(l.used(), 100);
    }

    #[test]
    fn fuel_is_lent_and_repaid() {
        let parent = FuelGauge::new(1000);
        assert_eq!(parent.lend(800), 800);
        assert_eq!(parent.get(), 200);
        assert_eq!(parent.lend(800), 200, "never more than is left");
        assert_eq!(parent.lend(1), 0);
        // The store had used 100 of its own by the next tick: 1000 - 100 - 1000 lent.
        assert_eq!(parent.settle(900), 0);
        parent.repay(500);
        assert_eq!(parent.get(), 500);
        assert_eq!(parent.settle(0), 500);
        assert_eq!(parent.get(), 500);
        assert_eq!(parent.used(500), 500);
    }
}
