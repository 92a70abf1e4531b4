//! The supervisor as the [`Host`] of the capability servers.

use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use futures::future::LocalBoxFuture;

use super::Supervisor;
use crate::engine::LoadedComponent;
use crate::handle::{ProcessHandle, ProcessInfo};
use crate::hoststdio::HostStdio;
use crate::limits::LimitRequest;
use crate::rpc::host::Host;
use crate::spec::{Code, ProcessSpec, SpawnError};
use crate::table::Pid;

/// The capability servers reach the supervisor only through [`Host`].
impl Host for Supervisor {
    fn spawn_child(
        &self,
        parent: Pid,
        code: Code,
        spec: ProcessSpec,
        limits: LimitRequest,
    ) -> LocalBoxFuture<'static, Result<Rc<ProcessHandle>, SpawnError>> {
        let sup = self.clone();
        Box::pin(async move { sup.spawn_child(parent, code, spec, &limits).await })
    }

    fn load(
        &self,
        owner: Pid,
        wasm: Arc<[u8]>,
    ) -> LocalBoxFuture<'static, Result<Arc<LoadedComponent>, SpawnError>> {
        let sup = self.clone();
        Box::pin(async move { Supervisor::load(&sup, owner, wasm).await })
    }

    fn ended(&self, pid: Pid) -> LocalBoxFuture<'static, ()> {
        let handle = self.0.table.borrow().running(pid).map(|e| e.handle.clone());
        Box::pin(async move {
            if let Some(handle) = handle {
                handle.wait().await;
            }
        })
    }

    fn ensure_running(&self, pid: Pid) -> Result<(), SpawnError> {
        Supervisor::ensure_running(self, pid)
    }

    fn info(&self, pid: Pid) -> Option<ProcessInfo> {
        Supervisor::info(self, pid)
    }

    fn host_stdio(&self) -> &HostStdio {
        Supervisor::host_stdio(self)
    }

    fn pinned(&self, name: &str) -> Option<IpAddr> {
        self.0.pinned.borrow().get(name).copied()
    }
}
