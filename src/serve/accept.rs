//! Accepting client connections and spreading them over the shards.
//!
//! Listeners live on shard 0. Each accepted connection first takes a client slot (a
//! [`SharedBudget`] of [`MAX_CLIENTS`] over every shard, taken before anything else is done
//! for it, a TLS handshake included), then goes to the least loaded shard
//! ([`crate::shard::least_loaded`]: processes there, plus jobs placed and not started, plus
//! connections living there): the socket leaves shard 0's reactor as a std socket, crosses in
//! a command, and is registered with the target shard's reactor, where its TLS handshake,
//! login and whole RPC connection run. A connection's jobs start on its own shard unless
//! another is less loaded (`Daemon.run`, `daemon.rs`), so with many clients most jobs never
//! cross a thread.
//!
//! With `--client-ca` the handshake verifies the client's certificate; the connection is then
//! served as the [`Peer`] its names make it (`identity.rs`): that identity, and its ceiling
//! in the target shard's own copy of the ceilings. Every such connection, accepted or
//! refused, is a line of the audit log.
//!
//! Ownership: what crosses to the target shard is `Send` — the std socket, the slot, the
//! shard's [`Placed`] count, the token (`Arc<str>`) and the TLS acceptor. Bounds: at most
//! [`MAX_CLIENTS`] connections (so hand-offs) in progress at once; a hand-off waits while
//! the target's queue is full, on its own task, never in the accept loop.

use std::rc::Rc;
use std::sync::Arc;

use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::budget::{SharedBudget, SharedTaken};
use crate::limits::MAX_CLIENTS;
use crate::serve::identity::{self, Peer};
use crate::serve::shards::ShardCore;
use crate::serve::{connect, ClientTerms, DaemonCore};
use crate::shard::{least_loaded, Placed};
use crate::tls;

/// What a client connection holds for its whole life: its slot among [`MAX_CLIENTS`] and its
/// place in its shard's load.
pub(crate) struct ClientSlot {
    _slot: SharedTaken,
    _placed: Placed,
}

/// A TCP listener's terms: every client must show `token`, over TLS when `tls` is set, with
/// a certificate of the client CA when `mutual` (the acceptor then verifies it).
#[derive(Clone)]
pub(crate) struct TcpTerms {
    pub token: Option<Arc<str>>,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub mutual: bool,
}

/// An accepted socket on its way to a shard.
enum Accepted {
    Unix(std::os::unix::net::UnixStream),
    Tcp(std::net::TcpStream, TcpTerms),
}

/// Takes a client slot, or `None` (logged) when [`MAX_CLIENTS`] are connected.
fn client_slot(clients: &SharedBudget) -> Option<SharedTaken> {
    let slot = clients.take(1);
    if slot.is_none() {
        tracing::warn!("{MAX_CLIENTS} clients connected: refusing another");
    }
    slot
}

/// Accepts on a unix socket until the task is aborted.
pub(crate) async fn accept_unix(listener: tokio::net::UnixListener, front: Rc<DaemonCore>) {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let Some(slot) = client_slot(&front.clients) else {
                    continue;
                };
                match stream.into_std() {
                    Ok(std) => hand_off(&front, slot, Accepted::Unix(std)),
                    Err(e) => tracing::warn!("cannot hand a client connection over: {e}"),
                }
            }
            Err(e) => {
                tracing::warn!("accept on the unix socket: {e}");
                // Out of descriptors, typically: let some go before trying again.
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Accepts on a TCP socket until the task is aborted.
pub(crate) async fn accept_tcp(
    listener: tokio::net::TcpListener,
    front: Rc<DaemonCore>,
    terms: TcpTerms,
) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tracing::debug!("client from {peer}");
                let _ = stream.set_nodelay(true);
                let Some(slot) = client_slot(&front.clients) else {
                    continue;
                };
                match stream.into_std() {
                    Ok(std) => hand_off(&front, slot, Accepted::Tcp(std, terms.clone())),
                    Err(e) => tracing::warn!("cannot hand a client connection over: {e}"),
                }
            }
            Err(e) => {
                tracing::warn!("accept on tcp: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Sends the connection to the least loaded shard (counted there from now on) and serves it
/// there; on a task of its own, so a busy shard never stalls accepting.
fn hand_off(front: &DaemonCore, slot: SharedTaken, accepted: Accepted) {
    let to = least_loaded(&front.shards, front.shard);
    let Some(shard) = front.shards.get(to).cloned() else {
        return;
    };
    tracing::debug!("a client connection goes to shard {to}");
    let hold = ClientSlot {
        _slot: slot,
        _placed: shard.place(),
    };
    tokio::task::spawn_local(async move {
        let served = shard.call(move |here| async move { serve(&here, hold, accepted) });
        if served.await.is_none() {
            tracing::debug!("shard {to} has stopped: a client connection is dropped");
        }
    });
}

/// On the connection's shard: registers the socket with this thread's reactor and serves it
/// (TCP: TLS handshake and login first, on the connection's own task).
fn serve(here: &ShardCore, hold: ClientSlot, accepted: Accepted) {
    match accepted {
        Accepted::Unix(std) => match tokio::net::UnixStream::from_std(std) {
            Ok(stream) => {
                let (read, write) = stream.into_split();
                serve_halves(here, hold, (None, Peer::default()), read, write);
            }
            Err(e) => tracing::warn!("cannot serve a client connection: {e}"),
        },
        Accepted::Tcp(std, terms) => match tokio::net::TcpStream::from_std(std) {
            // The handshake runs on the connection's own task, bounded in time, so a client
            // that never finishes it holds nothing but that task and its slot.
            Ok(stream) => {
                tokio::task::spawn_local(serve_tcp(here.clone(), hold, stream, terms));
            }
            Err(e) => tracing::warn!("cannot serve a client connection: {e}"),
        },
    }
}

async fn serve_tcp(
    here: ShardCore,
    hold: ClientSlot,
    stream: tokio::net::TcpStream,
    terms: TcpTerms,
) {
    let token = terms.token.as_deref().map(Rc::<str>::from);
    let Some(acceptor) = terms.tls else {
        let (read, write) = stream.into_split();
        return serve_halves(&here, hold, (token, Peer::default()), read, write);
    };
    let from = stream.peer_addr().ok();
    let audit = here.core.sup.audit();
    match tokio::time::timeout(tls::HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => {
            let peer = if terms.mutual {
                let names = tls
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| identity::names(cert))
                    .unwrap_or_default();
                let peer = here.ceilings.peer(&names);
                if let Some(from) = from {
                    audit.connection(from, peer.identity.as_deref(), None);
                }
                peer
            } else {
                Peer::default()
            };
            let (read, write) = tokio::io::split(tls);
            serve_halves(&here, hold, (token, peer), read, write);
        }
        Ok(Err(e)) => {
            tracing::warn!("TLS handshake failed: {e}");
            if let (true, Some(from)) = (terms.mutual, from) {
                audit.connection(from, None, Some(&format!("TLS: {e}")));
            }
        }
        Err(_) => tracing::warn!("TLS handshake timed out"),
    }
}

/// Serves a connection's two halves on this shard (see [`connect`]) as `peer`, showing
/// `token` first when there is one.
fn serve_halves<R, W>(
    here: &ShardCore,
    hold: ClientSlot,
    (token, peer): (Option<Rc<str>>, Peer),
    read: R,
    write: W,
) where
    R: tokio::io::AsyncRead + Unpin + 'static,
    W: tokio::io::AsyncWrite + Unpin + 'static,
{
    let terms = ClientTerms {
        ceiling: here.ceilings.of(&peer).clone(),
        token,
        peer,
    };
    connect(hold, &here.core, terms, read.compat(), write.compat_write());
}
