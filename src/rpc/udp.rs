//! `UdpSocket`: a bound UDP socket as a capability.
//!
//! Receiving: a task owned by the socket reads datagrams as they arrive into a queue of at most
//! [`UDP_RECV_QUEUE`] datagrams (each at most [`UDP_MAX_DATAGRAM`] bytes, stored at its real
//! size); a datagram arriving when the queue is full is dropped and counted (`dropped()`). So a
//! socket nobody reads from holds a bounded amount of memory, and the kernel buffer never fills
//! up behind a slow guest. The task ends when the socket is closed (its last capability dropped).
//!
//! Sending: every destination is checked against the policy of the `Network` the socket was
//! bound through (and audited) before the datagram leaves.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;

use capnp::capability::Rc as CapRc;
use tokio::net::UdpSocket;
use tokio::sync::Notify;

use crate::cell_capnp::udp_socket;
use crate::limits::{UDP_MAX_DATAGRAM, UDP_RECV_QUEUE};
use crate::net::policy::{NetOp, NetPolicy};
use crate::rpc::failed;
use crate::rpc::network::{parse_ip, NetCaps, SocketPermit};
use cell_proto::Reason;

/// Datagrams received but not yet read by the guest.
#[derive(Default)]
struct RecvQueue {
    datagrams: RefCell<VecDeque<(SocketAddr, Vec<u8>)>>,
    dropped: Cell<u64>,
    /// Set when the reading task stopped on an error, which `recv` then reports.
    error: RefCell<Option<String>>,
    ready: Notify,
}

impl RecvQueue {
    fn push(&self, from: SocketAddr, data: &[u8]) {
        let mut q = self.datagrams.borrow_mut();
        if q.len() >= UDP_RECV_QUEUE {
            self.dropped.set(self.dropped.get() + 1);
            return;
        }
        q.push_back((from, data.to_vec()));
        drop(q);
        self.ready.notify_one();
    }
}

/// A bound UDP socket and its receive queue.
pub struct UdpInner {
    socket: Rc<UdpSocket>,
    queue: Rc<RecvQueue>,
    policy: Rc<NetPolicy>,
    pub(crate) local: SocketAddr,
    reader: tokio::task::JoinHandle<()>,
    _permit: SocketPermit,
}

impl Drop for UdpInner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl UdpInner {
    /// Binds `addr` (the policy was checked by the caller) and starts the receiving task.
    ///
    /// # Errors
    /// The bind failed.
    pub async fn bind(
        addr: SocketAddr,
        policy: Rc<NetPolicy>,
        permit: SocketPermit,
    ) -> std::io::Result<Rc<Self>> {
        let socket = Rc::new(crate::net::bind::udp_socket(addr)?);
        let local = socket.local_addr()?;
        let queue = Rc::new(RecvQueue::default());
        let reader = tokio::task::spawn_local(receive(socket.clone(), queue.clone()));
        Ok(Rc::new(UdpInner {
            socket,
            queue,
            policy,
            local,
            reader,
            _permit: permit,
        }))
    }
}

/// Moves datagrams from the kernel into the bounded queue until the socket fails or the task
/// is aborted (when the socket is dropped).
async fn receive(socket: Rc<UdpSocket>, queue: Rc<RecvQueue>) {
    let mut buf = vec![0u8; UDP_MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => queue.push(from, &buf[..n]),
            Err(e) => {
                *queue.error.borrow_mut() = Some(e.to_string());
                queue.ready.notify_waiters();
                queue.ready.notify_one();
                return;
            }
        }
    }
}

/// The server of one `UdpSocket` capability.
pub struct UdpSocketServer {
    pub(crate) inner: Rc<UdpInner>,
    net: NetCaps,
}

impl UdpSocketServer {
    pub fn new(inner: Rc<UdpInner>, net: NetCaps) -> Self {
        UdpSocketServer { inner, net }
    }
}

impl udp_socket::Server for UdpSocketServer {
    async fn send(
        self: CapRc<Self>,
        params: udp_socket::SendParams,
        _: udp_socket::SendResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        let p = params.get()?;
        let host = p.get_host()?.to_str()?;
        let ip = parse_ip(host).ok_or_else(|| {
            failed(
                Reason::BadAddress,
                format!("{host:?} is not an IP address (UDP sends take addresses, not names)"),
            )
        })?;
        let port = p.get_port();
        let data = p.get_data()?;
        if data.len() > UDP_MAX_DATAGRAM {
            return Err(failed(
                Reason::Limit,
                format!(
                    "datagram of {} bytes exceeds {UDP_MAX_DATAGRAM}",
                    data.len()
                ),
            ));
        }
        let decision = self.inner.policy.allows_destination(NetOp::Udp, ip, port);
        self.net.record(&decision);
        if !decision.allowed {
            return Err(failed(Reason::Denied, decision));
        }
        let _bytes = self.net.in_flight().reserve(data.len())?;
        self.inner
            .socket
            .send_to(data, SocketAddr::new(ip, port))
            .await
            .map_err(|e| failed(Reason::Io, e))?;
        Ok(())
    }

    async fn recv(
        self: CapRc<Self>,
        _: udp_socket::RecvParams,
        mut results: udp_socket::RecvResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        let queue = &self.inner.queue;
        let (from, data) = loop {
            if let Some(d) = queue.datagrams.borrow_mut().pop_front() {
                break d;
            }
            if let Some(e) = queue.error.borrow().as_ref() {
                return Err(failed(Reason::Io, e));
            }
            queue.ready.notified().await;
        };
        let mut r = results.get();
        r.set_host(from.ip().to_string().as_str());
        r.set_port(from.port());
        r.set_data(&data);
        Ok(())
    }

    async fn local_address(
        self: CapRc<Self>,
        _: udp_socket::LocalAddressParams,
        mut results: udp_socket::LocalAddressResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        results
            .get()
            .set_address(self.inner.local.to_string().as_str());
        Ok(())
    }

    async fn dropped(
        self: CapRc<Self>,
        _: udp_socket::DroppedParams,
        mut results: udp_socket::DroppedResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        results.get().set_count(self.inner.queue.dropped.get());
        Ok(())
    }
}
