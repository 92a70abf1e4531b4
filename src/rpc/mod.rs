//! The host side of each guest's RPC connection: one two-party capnp-rpc system per process,
//! over that process's stdio pipes, bootstrapping a [`session::SessionServer`].
//!
//! One file per capability server. Servers reach the supervisor only through its public
//! methods; the supervisor reaches this module only through [`serve`].

pub(crate) mod component;
pub(crate) mod conn;
pub(crate) mod directory;
pub(crate) mod executor;
pub(crate) mod fail;
pub(crate) mod flow;
pub(crate) mod framing;
pub(crate) mod gate;
pub(crate) mod host;
pub(crate) mod network;
pub(crate) mod process;
pub(crate) mod remote;
pub(crate) mod remote_child;
pub(crate) mod service;
pub(crate) mod session;
pub(crate) mod stream;
pub(crate) mod tcp;
pub(crate) mod udp;

use gate::CallGate;

use std::future::Future as _;

use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};

use crate::grants::Grants;
use crate::handle::Pid;
use crate::net::audit::Audit;
use crate::net::count::SocketTally;
use crate::rpc::conn::{Conn, ConnSpec};
use crate::rpc::host::Host;
use crate::transport::{HostReader, HostWriter};

/// The host ends of a guest's stdio, and the bound on what may arrive through them.
pub struct Transport {
    /// The guest's stdout.
    pub from_guest: HostReader,
    /// The guest's stdin.
    pub to_guest: HostWriter,
    /// Largest message accepted from the guest (capnp traversal limit).
    pub max_message_bytes: u64,
    /// Calls from the guest that may be in progress at once (see [`CallGate`]).
    pub max_outstanding_calls: u32,
}

/// A guest's RPC connection, ready to run. Owned by the guest's process task and dropped with
/// it, which drops every capability the guest held.
pub struct Connection {
    /// Shared (weakly) with [`Connection::service_fn`], which asks the guest for its bootstrap
    /// on first use; owned here, so it goes when the process's task drops the connection.
    system: std::rc::Rc<std::cell::RefCell<RpcSystem<Side>>>,
    violation: framing::Violation,
}

impl Connection {
    /// Where the first protocol violation on this connection is recorded, as soon as it is
    /// seen (before the RPC system has finished shutting down).
    pub fn violation(&self) -> framing::Violation {
        self.violation.clone()
    }

    /// Serves the connection until it ends. An error means the guest broke the protocol.
    pub async fn run(self) -> Result<(), capnp::Error> {
        let this = self;
        std::future::poll_fn(|cx| {
            match this.system.try_borrow_mut() {
                Ok(mut s) => std::pin::Pin::new(&mut *s).poll(cx),
                // Only `service_fn` borrows it, never while it is being polled: poll again.
                Err(_) => {
                    cx.waker().wake_by_ref();
                    std::task::Poll::Pending
                }
            }
        })
        .await
    }

    /// How to get the capability the guest serves (its bootstrap, asked for once, on first
    /// use): `None` once the connection is gone.
    pub fn service_fn(&self) -> crate::handle::ServiceFn {
        let system = std::rc::Rc::downgrade(&self.system);
        let cached: std::cell::RefCell<Option<capnp::capability::Client>> = Default::default();
        let gone = self.gone_fn();
        Box::new(move || {
            let system = system.upgrade()?;
            let mut cached = cached.borrow_mut();
            if cached.is_none() {
                let mut system = system.try_borrow_mut().ok()?;
                *cached = Some(system.bootstrap(Side::Client));
            }
            Some((cached.clone()?, gone.clone()))
        })
    }

    /// Whether this connection is over (dropped, or broken by the guest) — known as soon as a
    /// violation is seen, before the process has been reaped.
    fn gone_fn(&self) -> std::rc::Rc<dyn Fn() -> bool> {
        let system = std::rc::Rc::downgrade(&self.system);
        let violation = self.violation.clone();
        std::rc::Rc::new(move || system.strong_count() == 0 || violation.borrow().is_some())
    }
}

/// Whose connection [`serve`] builds, and with what.
pub struct ServeSpec {
    /// Who runs processes (the supervisor).
    pub host: std::rc::Rc<dyn Host>,
    /// The process the connection belongs to.
    pub pid: Pid,
    /// What its `Session` hands out.
    pub grants: Grants,
    /// Where its network decisions are recorded.
    pub audit: Audit,
    /// Its sockets on both paths (shared with its store's `wasi:sockets`).
    pub sockets: std::sync::Arc<SocketTally>,
}

/// Builds the RPC connection of a process over `transport`, bootstrapping its `Session`.
pub fn serve(spec: ServeSpec, transport: Transport) -> Connection {
    let ServeSpec {
        host,
        pid,
        grants,
        audit,
        sockets,
    } = spec;
    // A guest's replies wait in its stdin pipe: read its stdout only while that has room.
    let from_guest = transport.from_guest.paced_by(&transport.to_guest);
    let link = Link::new(
        from_guest,
        transport.to_guest,
        LinkBounds {
            max_message_bytes: transport.max_message_bytes,
            max_outstanding_calls: transport.max_outstanding_calls,
        },
    );
    let conn = Conn::new(ConnSpec {
        pid,
        host,
        audit,
        sockets,
        gate: link.gate(),
    });
    let session: crate::cell_capnp::session::Client =
        capnp_rpc::new_client(session::SessionServer::new(conn, grants));
    let violation = link.violation.clone();
    Connection {
        system: std::rc::Rc::new(std::cell::RefCell::new(link.serve(session.client))),
        violation,
    }
}

/// The bounds of one connection.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LinkBounds {
    /// Largest message accepted from the peer (capnp traversal limit and framing check).
    pub(crate) max_message_bytes: u64,
    /// Calls from the peer that may be in progress at once (see [`CallGate`]).
    pub(crate) max_outstanding_calls: u32,
}

/// One server-side two-party connection over a byte stream, with the bounds every peer of
/// cell's gets — a guest over its stdio, a daemon's client over a socket: each message's
/// framing checked before capnp allocates it, call messages and unsent replies charged by
/// [`flow`] (the host stops reading while too much waits), and a [`CallGate`] that every
/// server issued on it enters.
pub(crate) struct Link {
    network: flow::FlowNetwork<
        twoparty::VatNetwork<framing::CheckedReader<Box<dyn futures::io::AsyncRead + Unpin>>>,
    >,
    gate: CallGate,
    violation: framing::Violation,
}

impl Link {
    /// A connection reading `from_peer` and writing `to_peer` within `bounds`.
    pub(crate) fn new(
        from_peer: impl futures::io::AsyncRead + Unpin + 'static,
        to_peer: impl futures::io::AsyncWrite + Unpin + 'static,
        bounds: LinkBounds,
    ) -> Self {
        let mut options = ReaderOptions::new();
        options
            .traversal_limit_in_words(Some(
                usize::try_from(bounds.max_message_bytes / 8).unwrap_or(usize::MAX),
            ))
            .nesting_limit(64);
        let violation = framing::Violation::default();
        let flow = std::rc::Rc::new(flow::Flow::default());
        let reader: Box<dyn futures::io::AsyncRead + Unpin> = Box::new(from_peer);
        let from_peer = framing::CheckedReader::new(
            reader,
            framing::FramingCheck::new(bounds.max_message_bytes).with_flow(flow.clone()),
            violation.clone(),
        );
        let to_peer = flow::CountingWriter::new(to_peer, flow.clone());
        let network = flow::FlowNetwork::new(
            twoparty::VatNetwork::new(from_peer, to_peer, Side::Server, options),
            flow.clone(),
        );
        Link {
            network,
            gate: CallGate::with_flow(bounds.max_outstanding_calls, flow),
            violation,
        }
    }

    /// The call bound every server issued on this connection must enter.
    pub(crate) fn gate(&self) -> CallGate {
        self.gate.clone()
    }

    /// The RPC system serving `bootstrap` on this connection.
    pub(crate) fn serve(self, bootstrap: capnp::capability::Client) -> RpcSystem<Side> {
        RpcSystem::new(Box::new(self.network), Some(bootstrap))
    }
}
