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
pub const MAX_READ_CHUNK: usize = 64 * 1024;
/// Largest partial line kept when forwarding a child's stderr; longer lines are split.
pub const STDERR_LINE_MAX: usize = 4 * 1024;
/// How many distinct compiled components stay cached in memory.
pub const COMPONENT_CACHE_ENTRIES: usize = 64;
/// Epoch tick: how often a running guest yields to its siblings and checks for kills.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How many ended processes the run report lists; later ones are only counted.
pub const PROCESS_HISTORY: usize = 10_000;
/// How long the host waits for killed processes to unwind when the run ends.
pub const TEARDOWN_GRACE: Duration = Duration::from_secs(5);
/// Largest single `TcpStream.write` the host accepts; a guest writes more in several calls.
pub const NET_MAX_WRITE: usize = 1 << 20;
/// Bytes of one process's TCP writes and UDP sends that may wait in the host at once for a slow
/// peer; more fail with `limit: max in-flight bytes …`.
pub const NET_MAX_IN_FLIGHT: usize = 4 << 20;
/// Datagrams a `UdpSocket` keeps for its guest; more arriving while it is full are dropped and
/// counted. With [`UDP_MAX_DATAGRAM`], at most 4 MiB per socket.
pub const UDP_RECV_QUEUE: usize = 64;
/// Largest UDP datagram sent or received (the IPv4 maximum payload, rounded up).
pub const UDP_MAX_DATAGRAM: usize = 64 * 1024;
/// Largest listen backlog a guest may ask for.
pub const MAX_LISTEN_BACKLOG: u32 = 1024;
/// Addresses of one resolved host name the host considers (and audits) per connect.
pub const MAX_RESOLVED_ADDRS: usize = 16;
/// How long one connection attempt of `Network.connect` may take.
pub const NET_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Limits a parent asks for on behalf of a child; `None` = the same as the parent's.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitRequest {
    pub max_memory: Option<u64>,
    pub timeout: Option<Duration>,
    pub fuel: Option<u64>,
    pub max_procs: Option<u32>,
    pub max_depth: Option<u32>,
}

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

impl Limits {
    /// Narrows a child's fuel to what its parent has left (`remaining`, from its
    /// [`FuelGauge`]), so a child never receives more than its parent holds at spawn time.
    pub fn clamp_fuel(mut self, remaining: Option<u64>) -> Limits {
        self.fuel = min_opt(self.fuel, remaining.filter(|_| self.fuel.is_some()));
        self
    }
}

/// The fuel a running process has left, as last seen by the host.
///
/// A store's fuel can only be read through the store, which its task owns while the guest
/// runs; so the store publishes it here on every epoch tick (see `process::build_store`). The
/// value is therefore at most one [`EPOCH_TICK`] of execution stale — a child is clamped to
/// what its parent held at most one tick before the spawn, never to more than the parent's
/// configured fuel. Shared (`Arc`) because the store's epoch callback must be `Send`.
#[derive(Clone, Debug)]
pub struct FuelGauge(Arc<AtomicU64>);

impl FuelGauge {
    pub fn new(fuel: u64) -> Self {
        FuelGauge(Arc::new(AtomicU64::new(fuel)))
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, fuel: u64) {
        self.0.store(fuel, Ordering::Relaxed)
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
pub struct MemoryLimiter {
    limit: usize,
    used: usize,
    /// The largest `used` has been (for the run report).
    peak: usize,
    hit: bool,
}

/// Bytes one table element is charged for in the memory budget.
const TABLE_ELEMENT_BYTES: usize = 8;

impl MemoryLimiter {
    pub fn new(limit: u64) -> Self {
        MemoryLimiter {
            limit: usize::try_from(limit).unwrap_or(usize::MAX),
            used: 0,
            peak: 0,
            hit: false,
        }
    }

    /// Whether a growth was refused because of the cap.
    pub fn hit(&self) -> bool {
        self.hit
    }

    /// Bytes in use now (memories and tables).
    pub fn used(&self) -> usize {
        self.used
    }

    /// The most bytes in use at any one time so far.
    pub fn peak(&self) -> usize {
        self.peak
    }

    fn grow(&mut self, current: usize, desired: usize) -> bool {
        let next = self.used.saturating_sub(current).saturating_add(desired);
        if next > self.limit {
            self.hit = true;
            return false;
        }
        self.used = next;
        self.peak = self.peak.max(next);
        true
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
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
    fn child_fuel_is_clamped_to_what_the_parent_has_left() {
        let parent = Limits {
            fuel: Some(1000),
            ..Limits::default()
        };
        let req = LimitRequest {
            fuel: Some(800),
            ..LimitRequest::default()
        };
        let child = parent.for_child(&req).unwrap().clamp_fuel(Some(300));
        assert_eq!(child.fuel, Some(300));
        let child = parent.for_child(&req).unwrap().clamp_fuel(Some(900));
        assert_eq!(child.fuel, Some(800));
        // Without metering there is nothing to clamp: a request for fuel is ignored.
        let unmetered = Limits::default().for_child(&req).unwrap().clamp_fuel(None);
        assert_eq!(unmetered.fuel, None);
    }
}
