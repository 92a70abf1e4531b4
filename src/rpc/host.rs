//! [`Host`]: the little the capability servers need from whoever runs processes — spawn a
//! child, say whether a process still runs and who it is, lend the host's own stdio. The
//! supervisor implements it; the servers never see the supervisor itself, so `rpc` sits below
//! `supervisor` in the layering (PLAN.md) and can be driven by anything that implements this
//! (a daemon, a test double).

use std::rc::Rc;
use std::sync::Arc;

use futures::future::LocalBoxFuture;

use crate::engine::LoadedComponent;
use crate::handle::Pid;
use crate::handle::{ProcessHandle, ProcessInfo};
use crate::hoststdio::HostStdio;
use crate::limits::LimitRequest;
use crate::spec::{Code, ProcessSpec, SpawnError};

/// What the capability servers of every connection call on the host.
///
/// Everything here runs on the one supervisor thread; the futures are `!Send`.
pub trait Host {
    /// Starts a child of `parent` from `code`; resolves once it is instantiated (bytes may be
    /// compiled first, on a blocking thread, bounded by the engine's compile semaphore).
    fn spawn_child(
        &self,
        parent: Pid,
        code: Code,
        spec: ProcessSpec,
        limits: LimitRequest,
    ) -> LocalBoxFuture<'static, Result<Rc<ProcessHandle>, SpawnError>>;

    /// Loads (compiles, or finds in the caches) `wasm` for `owner`, within its `max-wasm-size`.
    fn load(
        &self,
        owner: Pid,
        wasm: Arc<[u8]>,
    ) -> LocalBoxFuture<'static, Result<Arc<LoadedComponent>, SpawnError>>;

    /// Fails with [`SpawnError::Dead`] unless `pid` is running.
    fn ensure_running(&self, pid: Pid) -> Result<(), SpawnError>;

    /// Facts about a live (possibly exited but not reaped) process.
    fn info(&self, pid: Pid) -> Option<ProcessInfo>;

    /// The host's own stdin/stdout (for `Session.terminal`).
    fn host_stdio(&self) -> &HostStdio;

    /// Resolves once `pid` has ended (at once if it is not running). The default never
    /// resolves: for hosts whose processes do not end on their own.
    fn ended(&self, _pid: Pid) -> LocalBoxFuture<'static, ()> {
        Box::pin(std::future::pending())
    }

    /// The address the operator pinned for `name` (`--resolve NAME=IP`), answered without
    /// any DNS query. `None`: resolve it normally.
    fn pinned(&self, _name: &str) -> Option<std::net::IpAddr> {
        None
    }
}
