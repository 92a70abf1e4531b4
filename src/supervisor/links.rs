//! Service links between shards (`cell run --shards N`): an in-memory Cap'n Proto connection
//! (a `tokio::io::duplex` pipe, [`LINK_BUFFER`] each way) between two shards, one per
//! capability that crosses — a service granted to a child on another shard, or a crossed
//! child's own service asked for by `Process.service` on its shadow. The serving end always
//! serves through its own shard's `ServiceProxy`, which knows first when the serving process
//! has ended (so calls it breaks fail `dead` there).
//!
//! Ownership: each end is a local task of its shard (`Rc`); only the pipe's far end crosses.
//! Bounds: one link per crossing capability, within `max-procs` × the 64 services of a spawn
//! request; each ends with the child it was made for or with the service (nothing of it
//! outlives either); calls on it are bounded by their callers' call gates, and the serving
//! end reads with the child's message and call bounds.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use super::Supervisor;
use crate::grants::{GuestService, ServiceOwner};
use crate::handle::{ProcessHandle, ServiceFn};
use crate::limits::Limits;
use crate::rpc::service::{Caller, ProxyClient, ServiceProxy};
use crate::rpc::{Link, LinkBounds};
use crate::shard::Shard;
use crate::table::Pid;

/// Bytes buffered each way on a service link between two shards.
const LINK_BUFFER: usize = 64 * 1024;

/// A guest service granted to a child on another shard: the far end of a service link whose
/// near end serves it (through the parent shard's proxy of it) on the parent's shard.
pub(super) struct ExportedService {
    name: String,
    owner: ServiceOwner,
    far: tokio::io::DuplexStream,
    /// The largest answer the child's side reads: the serving process's own message bound
    /// (its connection's framing check already held each answer to it), else the child's.
    max_message_bytes: u64,
}

/// The client side of a service link on the child's shard: its RPC system, and the flag
/// its `GuestService` reads to know the service has gone.
pub(super) struct ServiceLink {
    system: RpcSystem<Side>,
    gone: Rc<Cell<bool>>,
}

/// On the child's shard: the granted service over its link.
pub(super) fn import_service(e: ExportedService) -> (GuestService, ServiceLink) {
    let (read, write) = tokio::io::split(e.far);
    let mut options = capnp::message::ReaderOptions::new();
    options.traversal_limit_in_words(Some(
        usize::try_from(e.max_message_bytes / 8).unwrap_or(usize::MAX),
    ));
    let network =
        twoparty::VatNetwork::new(read.compat(), write.compat_write(), Side::Client, options);
    let mut system = RpcSystem::new(Box::new(network), None);
    let target = system.bootstrap(Side::Server);
    let gone = Rc::new(Cell::new(false));
    let flag = gone.clone();
    let owner = match e.owner {
        ServiceOwner::Process(pid) => ServiceOwner::OtherShard(pid),
        other => other,
    };
    let service = GuestService {
        name: e.name,
        target,
        owner,
        gone: Rc::new(move || flag.get()),
    };
    (service, ServiceLink { system, gone })
}

/// Runs a child's service links until each ends (its service is gone) or the child does:
/// nothing of a link outlives the child it was made for.
pub(super) fn spawn_links(links: Vec<ServiceLink>, child: &Rc<ProcessHandle>) {
    for link in links {
        let child = child.clone();
        tokio::task::spawn_local(async move {
            tokio::select! {
                r = link.system => if let Err(e) = r {
                    tracing::debug!("service link ended: {e}");
                },
                _ = child.wait() => {}
            }
            link.gone.set(true);
        });
    }
}

impl Supervisor {
    /// On the parent's shard: serves `service` on the near end of a new service link, through
    /// this shard's proxy of it (so a call reaching a process that ended fails with `dead`
    /// here), until the serving process ends or the child's side closes the link.
    pub(super) fn export_service(
        &self,
        service: GuestService,
        bounds: LinkBounds,
    ) -> ExportedService {
        let (near, far) = tokio::io::duplex(LINK_BUFFER);
        let (read, write) = tokio::io::split(near);
        let link = Link::new(read.compat(), write.compat_write(), bounds);
        let caller = Caller {
            gate: link.gate(),
            host: Rc::new(self.clone()),
        };
        let (name, owner) = (service.name.clone(), service.owner.clone());
        let served = match owner {
            ServiceOwner::Process(pid) => self
                .0
                .table
                .borrow()
                .get(pid)
                .map(|e| e.limits.max_message_bytes),
            _ => None,
        };
        let max_message_bytes = served.unwrap_or(0).max(bounds.max_message_bytes);
        let ended = match owner {
            ServiceOwner::Process(pid) => crate::rpc::host::Host::ended(self, pid),
            _ => Box::pin(std::future::pending()),
        };
        serve_proxied(link, ServiceProxy::new(service, caller), ended);
        ExportedService {
            name,
            owner,
            far,
            max_message_bytes,
        }
    }

    /// On the child's shard: serves `pid`'s bootstrap on one end of a service link (the
    /// stream is dropped, so the other side sees a disconnect, when it serves nothing now).
    fn serve_service(&self, pid: Pid, far: tokio::io::DuplexStream) {
        let found = {
            let table = self.0.table.borrow();
            table.running(pid).and_then(|e| {
                let target = e.handle.service.as_ref().and_then(|f| f())?;
                Some((e.handle.clone(), target, link_bounds(&e.limits)))
            })
        };
        let Some((handle, target, bounds)) = found else {
            return;
        };
        let (read, write) = tokio::io::split(far);
        let link = Link::new(read.compat(), write.compat_write(), bounds);
        // Served through this shard's proxy of it, which knows first when the child ends (a
        // call it breaks fails with `dead` here, before the shadow has heard of it).
        let caller = Caller {
            gate: link.gate(),
            host: Rc::new(self.clone()),
        };
        let service = GuestService {
            name: String::new(),
            target: target.0,
            owner: ServiceOwner::Process(pid),
            gone: target.1,
        };
        // The link ends with the child (its end of the pipe dropped, the shadow's side sees
        // the disconnect): nothing of it outlives the process it reaches.
        serve_proxied(link, ServiceProxy::new(service, caller), async move {
            handle.wait().await;
        });
    }
}

/// Serves `proxy` on `link` as a local task until the link ends or `until` resolves (then
/// the link's end is dropped and the other side sees the disconnect).
fn serve_proxied(
    link: Link,
    proxy: ServiceProxy,
    until: impl std::future::Future<Output = ()> + 'static,
) {
    let proxy: ProxyClient = capnp_rpc::new_client(proxy);
    let system = link.serve(proxy.client);
    tokio::task::spawn_local(async move {
        tokio::select! {
            r = system => if let Err(e) = r {
                tracing::debug!("service link ended: {e}");
            },
            () = until => {}
        }
    });
}

/// A service link's bounds: the child's own message and call bounds.
pub(super) fn link_bounds(limits: &Limits) -> LinkBounds {
    LinkBounds {
        max_message_bytes: limits.max_message_bytes,
        max_outstanding_calls: limits.max_outstanding_calls,
    }
}

/// `Process.service` of a crossed child: on first use, a Cap'n Proto connection over an
/// in-memory pipe to the child's shard, which serves the child's bootstrap on it; the
/// connection lives as long as the shadow's handle.
pub(super) fn service_across(
    to: Shard<Supervisor>,
    pid: Pid,
    max_message_bytes: u64,
    ended: Rc<Cell<bool>>,
) -> ServiceFn {
    let cached: RefCell<Option<capnp::capability::Client>> = RefCell::default();
    let gone: Rc<dyn Fn() -> bool> = Rc::new(move || ended.get());
    Box::new(move || {
        if gone() {
            return None;
        }
        let mut cached = cached.borrow_mut();
        if cached.is_none() {
            let (near, far) = tokio::io::duplex(LINK_BUFFER);
            let shard = to.clone();
            tokio::task::spawn_local(async move {
                let _ = shard
                    .call(move |sup| async move { sup.serve_service(pid, far) })
                    .await;
            });
            let (read, write) = tokio::io::split(near);
            let mut options = capnp::message::ReaderOptions::new();
            options.traversal_limit_in_words(Some(
                usize::try_from(max_message_bytes / 8).unwrap_or(usize::MAX),
            ));
            let network = twoparty::VatNetwork::new(
                read.compat(),
                write.compat_write(),
                Side::Client,
                options,
            );
            let mut system = RpcSystem::new(Box::new(network), None);
            *cached = Some(system.bootstrap(Side::Server));
            tokio::task::spawn_local(async move {
                if let Err(e) = system.await {
                    tracing::debug!("service link ended: {e}");
                }
            });
        }
        Some((cached.clone()?, gone.clone()))
    })
}
