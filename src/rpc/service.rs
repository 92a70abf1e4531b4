//! Guest services: the capability a guest serves on its own connection (its bootstrap), as
//! other guests call it — always through a host-side [`ServiceProxy`], never handed over raw.
//!
//! The proxy is what makes a service safe to share: each call enters the **caller's** call
//! gate (a caller cannot have more calls in progress than its `max-outstanding-calls`, and a
//! service that never answers holds only the caller's own slots), its params and results are
//! copied between the two connections (each message bounded by the sending side's
//! `max-message-size` and held under its connection's flow bounds), and a call fails with
//! `dead: …` once the serving process has ended (checked before each call, and when a call in
//! progress fails). Issued per connection: a process can grant only a service it holds (from
//! `Process.service` or `Session.services`), and each grant is re-issued on the receiver's
//! connection, so calls count against whoever makes them.
//!
//! Capabilities *inside* a service call's params or results (a service passing a callback) are
//! forwarded by capnp-rpc itself, bounded by the connections' flow bounds.

use std::ops::Deref;
use std::rc::Rc;

use capnp::any_pointer;
use capnp::capability::{
    DispatchCallResult, FromClientHook, FromServer, Params, Promise, Results, Server,
};
use capnp::private::capability::ClientHook;
use cell_proto::Reason;

use crate::grants::{GuestService, ServiceOwner};
use crate::handle::ProcessHandle;
use crate::rpc::fail::failed;
use crate::rpc::gate::CallGate;
use crate::rpc::host::Host;

/// Who makes a proxy's calls: the call gate they enter (a process's connection, or a daemon
/// client's) and the host that says whether a serving process still runs.
#[derive(Clone)]
pub(crate) struct Caller {
    pub gate: CallGate,
    pub host: Rc<dyn Host>,
}

/// The host's stand-in for one guest service, issued on the connection of the process (or
/// daemon client) that holds it (`caller`).
pub(crate) struct ServiceProxy {
    service: GuestService,
    caller: Caller,
}

impl ServiceProxy {
    pub(crate) fn new(service: GuestService, caller: Caller) -> Self {
        ServiceProxy { service, caller }
    }

    /// The service behind this capability.
    pub(crate) fn service(&self) -> &GuestService {
        &self.service
    }

    /// `dead: …` unless the serving process (or client connection) still runs.
    pub(crate) fn ensure_serving(&self) -> Result<(), capnp::Error> {
        match &self.service.owner {
            ServiceOwner::Process(pid) => self
                .caller
                .host
                .ensure_running(*pid)
                .map_err(|e| failed(e.reason(), e)),
            _ if (self.service.gone)() => Err(self.ended()),
            ServiceOwner::Client(_) | ServiceOwner::Remote { .. } | ServiceOwner::OtherShard(_) => {
                Ok(())
            }
        }
    }

    fn ended(&self) -> capnp::Error {
        failed(Reason::Dead, format!("{} has ended", self.service.owner))
    }

    /// Resolves when the serving process ends; a client's connection ending fails the call
    /// in progress by itself (capnp-rpc's `disconnected`).
    fn serving_ended(&self) -> futures::future::LocalBoxFuture<'static, ()> {
        match &self.service.owner {
            ServiceOwner::Process(pid) => self.caller.host.ended(*pid),
            ServiceOwner::Client(_) | ServiceOwner::Remote { .. } | ServiceOwner::OtherShard(_) => {
                Box::pin(std::future::pending())
            }
        }
    }

    /// What a failed call means to the caller: the service's own error, or `dead`/`unsupported`
    /// when the serving process ended or serves nothing.
    fn call_error(&self, e: capnp::Error) -> capnp::Error {
        if let Err(dead) = self.ensure_serving() {
            return dead;
        }
        if (self.service.gone)() || e.kind == capnp::ErrorKind::Disconnected {
            return self.ended();
        }
        if e.extra.contains("no bootstrap capability") {
            return failed(
                Reason::Unsupported,
                format!("{} serves no capability", self.service.owner),
            );
        }
        e
    }

    async fn forward(
        self: Rc<Self>,
        interface_id: u64,
        method_id: u16,
        params: Params<any_pointer::Owned>,
        mut results: Results<any_pointer::Owned>,
    ) -> Result<(), capnp::Error> {
        let _call = self.caller.gate.enter()?;
        self.ensure_serving()?;
        let mut request = self
            .service
            .target
            .new_call::<any_pointer::Owned, any_pointer::Owned>(interface_id, method_id, None);
        {
            let content = params.get()?;
            request.get().set_as(content)?;
        }
        // The caller's message is released before waiting for the service.
        drop(params);
        // A service that ends mid-call fails the call now, whatever its connection does.
        let ended = self.serving_ended();
        let call = request.send().promise;
        let response = match futures::future::select(call, ended).await {
            futures::future::Either::Left((r, _)) => r.map_err(|e| self.call_error(e))?,
            futures::future::Either::Right(((), _)) => return Err(self.ended()),
        };
        let content = response.get()?;
        results.get().set_as(content)?;
        Ok(())
    }
}

/// Checks that `handle` is an RPC guest still running, before its service is handed out
/// (`Process.service`, `Job.service`); `what` names it in errors ("process", "job").
///
/// # Errors
/// `not-plain: …` for a plain program; `dead: …` once it has ended.
pub(crate) fn ensure_serves(handle: &ProcessHandle, what: &str) -> Result<(), capnp::Error> {
    if handle.plain.is_some() {
        return Err(failed(
            Reason::NotPlain,
            format!(
                "{what} {} is a plain program: it serves no capability",
                handle.pid
            ),
        ));
    }
    if handle.status().is_some() {
        return Err(dead(handle, what));
    }
    Ok(())
}

/// What `handle` serves (its bootstrap on its connection), as a service to proxy.
///
/// # Errors
/// `dead: …` when its connection is gone.
pub(crate) fn served_by(handle: &ProcessHandle, what: &str) -> Result<GuestService, capnp::Error> {
    let (target, gone) = handle
        .service
        .as_ref()
        .and_then(|f| f())
        .ok_or_else(|| dead(handle, what))?;
    Ok(GuestService {
        name: String::new(),
        target,
        owner: ServiceOwner::Process(handle.pid),
        gone,
    })
}

fn dead(handle: &ProcessHandle, what: &str) -> capnp::Error {
    failed(Reason::Dead, format!("{what} {} has exited", handle.pid))
}

/// The client type of a [`ServiceProxy`]: an untyped capability (the caller casts it).
pub(crate) struct ProxyClient {
    pub(crate) client: capnp::capability::Client,
}

impl FromClientHook for ProxyClient {
    fn new(hook: Box<dyn ClientHook>) -> Self {
        ProxyClient {
            client: capnp::capability::Client::new(hook),
        }
    }

    fn into_client_hook(self) -> Box<dyn ClientHook> {
        self.client.hook
    }

    fn as_client_hook(&self) -> &dyn ClientHook {
        &*self.client.hook
    }
}

/// Dispatches every call, whatever its interface, to [`ServiceProxy::forward`].
#[derive(Clone)]
pub(crate) struct ProxyDispatch(Rc<ServiceProxy>);

impl Deref for ProxyDispatch {
    type Target = ServiceProxy;

    fn deref(&self) -> &ServiceProxy {
        &self.0
    }
}

impl FromServer<ServiceProxy> for ProxyClient {
    type Dispatch = ProxyDispatch;

    fn from_server(s: Rc<ServiceProxy>) -> ProxyDispatch {
        ProxyDispatch(s)
    }
}

impl Server for ProxyDispatch {
    fn dispatch_call(
        self,
        interface_id: u64,
        method_id: u16,
        params: Params<any_pointer::Owned>,
        results: Results<any_pointer::Owned>,
    ) -> DispatchCallResult {
        let call = self.0.forward(interface_id, method_id, params, results);
        DispatchCallResult::new(Promise::from_future(call), false)
    }

    fn as_ptr(&self) -> usize {
        Rc::as_ptr(&self.0) as usize
    }
}
