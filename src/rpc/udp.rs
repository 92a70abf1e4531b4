//! `UdpSocket`: a bound UDP socket as a capability.
//!
//! Receiving: a task owned by the socket reads datagrams as they arrive into a queue of at most
//! [`UDP_RECV_QUEUE`](crate::limits::UDP_RECV_QUEUE) datagrams (each at most [`UDP_MAX_DATAGRAM`] bytes, stored at its real
//! size); a datagram arriving when the queue is full is dropped and counted (`dropped()`). So a
//! socket nobody reads from holds a bounded amount of memory, and the kernel buffer never fills
//! up behind a slow guest. The task ends when the socket is closed (its last capability dropped).
//!
//! Sending: every destination is checked against the policy of the `Network` the socket was
//! bound through (and audited) before the datagram leaves.

use std::net::SocketAddr;
use std::rc::Rc;

use capnp::capability::Rc as CapRc;

use crate::cell_capnp::udp_socket;
use crate::limits::UDP_MAX_DATAGRAM;
use crate::net::policy::parse_ip;
use crate::net::policy::NetOp;
use crate::net::socket::UdpInner;
use crate::rpc::conn::Conn;
use crate::rpc::fail::failed;
use cell_proto::Reason;

/// The server of one `UdpSocket` capability.
pub(crate) struct UdpSocketServer {
    pub(crate) inner: Rc<UdpInner>,
    net: Conn,
}

impl UdpSocketServer {
    pub(crate) fn new(inner: Rc<UdpInner>, net: Conn) -> Self {
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
            return Err(crate::rpc::network::denied(&decision, self.net.pid()));
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
