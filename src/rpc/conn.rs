//! [`Conn`]: the one per-connection context every capability server holds — pid, host,
//! call gate, in-flight budget, socket tally, audit sink and the sets of issued capabilities.
//!
//! Ownership: made once per process by [`super::serve`]; every server issued on the connection
//! holds a clone. A capability handed to another process keeps the `Conn` it was issued on, so
//! calls on it count against the issuing process's bounds.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;

use capnp_rpc::CapabilityServerSet;
use cell_proto::{Grants as WireGrants, Reason, Socket as WireSocket};

use crate::budget::{Budget, ByteBudget};
use crate::cell_capnp::{
    component, directory, network, socket, tcp_listener, tcp_stream, udp_socket,
};
use crate::engine::LoadedComponent;
use crate::grants::{GrantedDir, GuestService};
use crate::handle::Pid;
use crate::hostdir::HostDir;
use crate::limits::{MAX_COMPONENTS_HELD, MAX_DIRS_HELD, NET_MAX_IN_FLIGHT};
use crate::net::audit::{Audit, Via};
use crate::net::count::{SocketPermit, SocketTally};
use crate::net::policy::{Decision, NetPolicy};
use crate::net::socket::{ListenerInner, SocketGrant, StreamInner, UdpInner};
use crate::rpc::component::ComponentServer;
use crate::rpc::directory::DirectoryServer;
use crate::rpc::fail::failed;
use crate::rpc::gate::CallGate;
use crate::rpc::host::Host;
use crate::rpc::network::NetworkServer;
use crate::rpc::service::{ProxyClient, ServiceProxy};
use crate::rpc::tcp::{TcpListenerServer, TcpStreamServer};
use crate::rpc::udp::UdpSocketServer;

/// What a [`Conn`] is made from.
pub(crate) struct ConnSpec {
    /// The process the connection belongs to.
    pub pid: Pid,
    /// Who runs processes (the supervisor).
    pub host: Rc<dyn Host>,
    /// Where its network decisions are recorded.
    pub audit: Audit,
    /// Its sockets on both paths (shared with its store's `wasi:sockets`).
    pub sockets: Arc<SocketTally>,
    /// The connection's bound on calls in progress.
    pub gate: CallGate,
}

/// How many capabilities may be issued between two sweeps of a server set's dead entries.
const SET_GC_EVERY: u32 = 256;

/// A capability server set that sweeps its dead (weak) entries now and then, so a long-running
/// process that accepts many connections does not grow the set without bound.
struct Issued<S, C: capnp::capability::FromServer<S>> {
    set: RefCell<CapabilityServerSet<S, C>>,
    since_gc: Cell<u32>,
}

impl<S, C> Issued<S, C>
where
    C: capnp::capability::FromServer<S> + capnp::capability::FromClientHook,
{
    fn new() -> Self {
        Issued {
            set: RefCell::new(CapabilityServerSet::new()),
            since_gc: Cell::new(0),
        }
    }

    fn issue(&self, server: S) -> C {
        let mut set = self.set.borrow_mut();
        let n = self.since_gc.get() + 1;
        if n >= SET_GC_EVERY {
            set.gc();
            self.since_gc.set(0);
        } else {
            self.since_gc.set(n);
        }
        set.new_client(server)
    }

    /// The server behind `client` if this connection issued it. Resolves promises first; the
    /// set is borrowed only for the synchronous lookup.
    async fn recognise(&self, client: C) -> Option<Rc<S>> {
        let resolved = capnp::capability::get_resolved_cap(client).await;
        self.set.borrow().get_local_server_of_resolved(&resolved)
    }
}

/// One process's RPC connection, as every server on it sees it: whose it is, the host that
/// runs processes, the bounds (call gate, in-flight bytes, sockets), where decisions are
/// audited, and the capabilities issued on it (so a Network, socket, Component, Directory or
/// service handed back in a spawn request is recognised). Cheap to clone; one per connection, made by [`super::serve`].
#[derive(Clone)]
pub(crate) struct Conn(Rc<ConnInner>);

struct ConnInner {
    pid: Pid,
    /// Spawns children, answers who a process is, lends the host's stdio.
    host: Rc<dyn Host>,
    /// The connection's bound on calls in progress, shared by every network cap issued here.
    gate: CallGate,
    /// Bytes of socket writes and sends waiting in the host ([`NET_MAX_IN_FLIGHT`]).
    in_flight: ByteBudget,
    audit: Audit,
    /// The process's sockets on both paths (RPC and its own `wasi:sockets`).
    sockets: Arc<SocketTally>,
    networks: Issued<NetworkServer, network::Client>,
    streams: Issued<TcpStreamServer, tcp_stream::Client>,
    listeners: Issued<TcpListenerServer, tcp_listener::Client>,
    udp: Issued<UdpSocketServer, udp_socket::Client>,
    components: Issued<ComponentServer, component::Client>,
    /// `Component` capabilities held now, bounded by [`MAX_COMPONENTS_HELD`].
    components_held: Budget,
    dirs: Issued<DirectoryServer, directory::Client>,
    /// `Directory` capabilities held now, bounded by [`MAX_DIRS_HELD`].
    dirs_held: Budget,
    services: Issued<ServiceProxy, ProxyClient>,
}

/// The capabilities of a spawn request's grants, resolved to the host objects behind them.
pub(crate) struct ResolvedGrants {
    pub(crate) network: Option<NetPolicy>,
    pub(crate) sockets: Vec<SocketGrant>,
    pub(crate) components: Vec<Arc<LoadedComponent>>,
    pub(crate) dirs: Vec<GrantedDir>,
    pub(crate) services: Vec<GuestService>,
}

impl Conn {
    /// The context of process `pid`'s connection, whose sockets are counted in `sockets`.
    pub(crate) fn new(spec: ConnSpec) -> Self {
        let ConnSpec {
            pid,
            host,
            audit,
            sockets,
            gate,
        } = spec;
        Conn(Rc::new(ConnInner {
            pid,
            host,
            gate,
            in_flight: ByteBudget::new(NET_MAX_IN_FLIGHT),
            audit,
            sockets,
            networks: Issued::new(),
            streams: Issued::new(),
            listeners: Issued::new(),
            udp: Issued::new(),
            components: Issued::new(),
            components_held: Budget::new(MAX_COMPONENTS_HELD),
            dirs: Issued::new(),
            dirs_held: Budget::new(MAX_DIRS_HELD),
            services: Issued::new(),
        }))
    }

    /// The process this context belongs to.
    pub(crate) fn pid(&self) -> Pid {
        self.0.pid
    }

    /// The host running this connection's process.
    pub(crate) fn host(&self) -> &dyn Host {
        &*self.0.host
    }

    /// Fails with `dead: …` unless this connection's process still runs: capabilities die
    /// with their process.
    pub(crate) fn ensure_running(&self) -> Result<(), capnp::Error> {
        self.0
            .host
            .ensure_running(self.0.pid)
            .map_err(|e| failed(e.reason(), e))
    }

    /// The call gate of the connection this context belongs to.
    pub(crate) fn gate(&self) -> &CallGate {
        &self.0.gate
    }

    /// The process's budget of bytes waiting to be sent.
    pub(crate) fn in_flight(&self) -> &ByteBudget {
        &self.0.in_flight
    }

    /// The audit sink.
    pub(crate) fn audit(&self) -> &Audit {
        &self.0.audit
    }

    /// Records a policy decision made for this process over RPC.
    pub(crate) fn record(&self, decision: &Decision) {
        self.0.audit.decision(self.0.pid, Via::Rpc, decision);
    }

    /// A slot for one more open socket.
    pub(crate) fn acquire_socket(&self) -> Result<SocketPermit, capnp::Error> {
        self.0
            .sockets
            .acquire()
            .map_err(|e| failed(Reason::Limit, e))
    }

    /// A new `Network` capability with `policy`, recognisable by this connection.
    pub(crate) fn network(&self, policy: NetPolicy) -> network::Client {
        self.0
            .networks
            .issue(NetworkServer::new(Rc::new(policy), self.clone()))
    }

    /// A `TcpStream` capability for an open stream.
    pub(crate) fn stream(&self, inner: Rc<StreamInner>) -> tcp_stream::Client {
        self.0
            .streams
            .issue(TcpStreamServer::new(inner, self.clone()))
    }

    /// A `TcpListener` capability for an open listener; its accepted streams are issued here.
    pub(crate) fn listener(&self, inner: Rc<ListenerInner>) -> tcp_listener::Client {
        self.0
            .listeners
            .issue(TcpListenerServer::new(inner, self.clone()))
    }

    /// A `UdpSocket` capability for a bound socket.
    pub(crate) fn udp(&self, inner: Rc<UdpInner>) -> udp_socket::Client {
        self.0.udp.issue(UdpSocketServer::new(inner, self.clone()))
    }

    /// A `Component` capability for a loaded component: spawning from it starts children of
    /// this connection's process.
    ///
    /// # Errors
    /// `limit: …` when the process already holds [`MAX_COMPONENTS_HELD`] components (a
    /// capability it drops frees its slot).
    pub(crate) fn component(
        &self,
        component: Arc<LoadedComponent>,
    ) -> Result<component::Client, capnp::Error> {
        let slot = self.0.components_held.take(1).ok_or_else(|| {
            failed(
                Reason::Limit,
                format!("a process holds at most {MAX_COMPONENTS_HELD} components"),
            )
        })?;
        Ok(self
            .0
            .components
            .issue(ComponentServer::new(component, self.clone(), slot)))
    }

    /// A `Directory` capability for `dir`, held by this connection's process.
    ///
    /// # Errors
    /// `limit: …` when the process already holds [`MAX_DIRS_HELD`] directories.
    pub(crate) fn directory(&self, dir: HostDir) -> Result<directory::Client, capnp::Error> {
        let slot = self.0.dirs_held.take(1).ok_or_else(|| {
            failed(
                Reason::Limit,
                format!("a process holds at most {MAX_DIRS_HELD} directories"),
            )
        })?;
        Ok(self
            .0
            .dirs
            .issue(DirectoryServer::new(dir, self.clone(), slot)))
    }

    /// A proxy for `service`, held by this connection's process: its calls count against this
    /// connection's bounds (see [`crate::rpc::service`]).
    pub(crate) fn service(&self, service: GuestService) -> capnp::capability::Client {
        self.0
            .services
            .issue(ServiceProxy::new(service, self.caller()))
            .client
    }

    /// This connection's process as the maker of proxied calls.
    pub(crate) fn caller(&self) -> crate::rpc::service::Caller {
        crate::rpc::service::Caller {
            gate: self.0.gate.clone(),
            host: self.0.host.clone(),
        }
    }

    /// The capability for a socket handed to this process.
    pub(crate) fn socket_client(&self, grant: &SocketGrant, mut out: socket::Builder<'_>) {
        match grant {
            SocketGrant::TcpStream(s) => out.set_tcp_stream(self.stream(s.clone())),
            SocketGrant::TcpListener(l) => out.set_tcp_listener(self.listener(l.clone())),
            SocketGrant::UdpSocket(u) => out.set_udp_socket(self.udp(u.clone())),
        }
    }

    /// The capabilities of a spawn request, resolved: the policy of the granted `Network`
    /// (which must be one this connection issued), the granted sockets and components
    /// (likewise).
    ///
    /// # Errors
    /// `bad-grant: …` for a capability this host did not issue to this process.
    pub(crate) async fn resolve_grants(
        &self,
        request: WireGrants,
    ) -> Result<ResolvedGrants, capnp::Error> {
        let network = match request.network {
            None => None,
            Some(client) => {
                let server =
                    self.0.networks.recognise(client).await.ok_or_else(|| {
                        failed(Reason::BadGrant, "not a Network issued by this host")
                    })?;
                Some(NetPolicy::clone(server.policy()))
            }
        };
        let mut sockets = Vec::with_capacity(request.sockets.len());
        for socket in request.sockets {
            let grant = match socket {
                WireSocket::TcpStream(c) => self
                    .0
                    .streams
                    .recognise(c)
                    .await
                    .map(|s| SocketGrant::TcpStream(s.inner.clone())),
                WireSocket::TcpListener(c) => self
                    .0
                    .listeners
                    .recognise(c)
                    .await
                    .map(|l| SocketGrant::TcpListener(l.inner.clone())),
                WireSocket::UdpSocket(c) => self
                    .0
                    .udp
                    .recognise(c)
                    .await
                    .map(|u| SocketGrant::UdpSocket(u.inner.clone())),
            };
            sockets.push(
                grant
                    .ok_or_else(|| failed(Reason::BadGrant, "not a socket issued by this host"))?,
            );
        }
        let mut components = Vec::with_capacity(request.components.len());
        for client in request.components {
            let server =
                self.0.components.recognise(client).await.ok_or_else(|| {
                    failed(Reason::BadGrant, "not a Component issued by this host")
                })?;
            components.push(server.component().clone());
        }
        let mut dirs = Vec::with_capacity(request.dirs.len());
        for grant in request.dirs {
            let guest = check_guest_path(&grant.path)?;
            let server =
                self.0.dirs.recognise(grant.dir).await.ok_or_else(|| {
                    failed(Reason::BadGrant, "not a Directory issued by this host")
                })?;
            dirs.push(GrantedDir {
                guest,
                dir: server.dir().clone(),
            });
        }
        let mut services = Vec::with_capacity(request.services.len());
        for grant in request.services {
            let client = ProxyClient {
                client: grant.service,
            };
            let server = self.0.services.recognise(client).await.ok_or_else(|| {
                failed(
                    Reason::BadGrant,
                    "not a service this process holds (from Process.service or Session.services)",
                )
            })?;
            // A service never outlives its process: one already gone cannot be passed on.
            server.ensure_serving()?;
            services.push(GuestService {
                name: grant.name,
                ..server.service().clone()
            });
        }
        Ok(ResolvedGrants {
            network,
            sockets,
            components,
            dirs,
            services,
        })
    }
}

/// The guest path a granted directory appears under: non-empty, no NUL, no `..`.
fn check_guest_path(path: &str) -> Result<String, capnp::Error> {
    let bad = path.is_empty()
        || path.contains('\0')
        || std::path::Path::new(path)
            .components()
            .any(|c| c == std::path::Component::ParentDir);
    if bad {
        return Err(failed(
            Reason::BadRequest,
            format!(
                "{:?} cannot be a directory's guest path (non-empty, no '..')",
                crate::text::guest_text(path)
            ),
        ));
    }
    Ok(path.to_string())
}
