//! `TcpStream` and `TcpListener`: open TCP sockets as capabilities.
//!
//! The socket itself (`net::socket::{StreamInner, ListenerInner}`) is shared by every process it was handed
//! to (see `SocketGrant`) and closed when the last capability to it is dropped — at the latest
//! when the last holder exits, because a process's capabilities live in its RPC connection,
//! which is dropped when it ends. Each open socket holds one slot of the budget of the process
//! that opened (or accepted) it.
//!
//! Bounds: a read returns at most [`MAX_READ_CHUNK`](crate::limits::MAX_READ_CHUNK) bytes
//! (see `rpc::stream::read_size`); a write carries at most
//! [`NET_MAX_WRITE`](crate::limits::NET_MAX_WRITE) bytes and resolves only once the kernel took them (backpressure). Calls on
//! one stream are served one at a time per direction; writes queued behind a slow peer hold
//! their bytes against the process's in-flight budget (`NET_MAX_IN_FLIGHT`), so pipelining
//! writes cannot park unbounded data in the host.

use std::rc::Rc;

use capnp::capability::Rc as CapRc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cell_capnp::{byte_stream, tcp_listener, tcp_stream};
use crate::net::socket::{ListenerInner, StreamInner};
use crate::rpc::conn::Conn;
use crate::rpc::fail::failed;
use cell_proto::Reason;

/// The server of one `TcpStream` capability.
pub(crate) struct TcpStreamServer {
    pub(crate) inner: Rc<StreamInner>,
    /// The connection this stream was issued on: its call gate, and its budget of bytes
    /// waiting to be written.
    conn: Conn,
}

impl TcpStreamServer {
    pub(crate) fn new(inner: Rc<StreamInner>, conn: Conn) -> Self {
        TcpStreamServer { inner, conn }
    }
}

impl byte_stream::Server for TcpStreamServer {
    async fn read(
        self: CapRc<Self>,
        params: byte_stream::ReadParams,
        mut results: byte_stream::ReadResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let max = crate::rpc::stream::read_size(params.get()?.get_max_bytes());
        drop(params);
        let mut reader = self.inner.reader.lock().await;
        // Wait for the guest to take its replies before making another one of up to `max`.
        self.conn.gate().reply_room().await;
        let mut buf = vec![0u8; max];
        let n = reader
            .read(&mut buf)
            .await
            .map_err(|e| failed(Reason::Io, e))?;
        results.get().set_data(&buf[..n]);
        Ok(())
    }

    async fn write(
        self: CapRc<Self>,
        params: byte_stream::WriteParams,
        _: byte_stream::WriteResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let data = params.get()?.get_data()?;
        crate::rpc::stream::check_write_size(data.len())?;
        let _bytes = self.conn.in_flight().reserve(data.len())?;
        // The call's message stays held while the write waits: it is charged to the
        // connection by `rpc::flow`, and its bytes to the in-flight budget above.
        let mut writer = self.inner.writer.lock().await;
        let writer = writer
            .as_mut()
            .ok_or_else(|| failed(Reason::Closed, "closed"))?;
        writer
            .write_all(data)
            .await
            .map_err(|e| failed(Reason::Closed, e))
    }

    async fn close(
        self: CapRc<Self>,
        _: byte_stream::CloseParams,
        _: byte_stream::CloseResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let mut writer = self.inner.writer.lock().await;
        let writer = writer
            .as_mut()
            .ok_or_else(|| failed(Reason::Closed, "closed"))?;
        writer.shutdown().await.map_err(|e| failed(Reason::Io, e))
    }
}

impl tcp_stream::Server for TcpStreamServer {
    async fn local_address(
        self: CapRc<Self>,
        _: tcp_stream::LocalAddressParams,
        mut results: tcp_stream::LocalAddressResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        results
            .get()
            .set_address(self.inner.local.to_string().as_str());
        Ok(())
    }

    async fn peer_address(
        self: CapRc<Self>,
        _: tcp_stream::PeerAddressParams,
        mut results: tcp_stream::PeerAddressResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        results
            .get()
            .set_address(self.inner.peer.to_string().as_str());
        Ok(())
    }
}

/// The server of one `TcpListener` capability; accepted streams count against, and are issued
/// in, the connection of the process holding this capability.
pub(crate) struct TcpListenerServer {
    pub(crate) inner: Rc<ListenerInner>,
    net: Conn,
}

impl TcpListenerServer {
    pub(crate) fn new(inner: Rc<ListenerInner>, net: Conn) -> Self {
        TcpListenerServer { inner, net }
    }
}

impl tcp_listener::Server for TcpListenerServer {
    async fn accept(
        self: CapRc<Self>,
        _: tcp_listener::AcceptParams,
        mut results: tcp_listener::AcceptResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        let (stream, peer) = self
            .inner
            .listener
            .accept()
            .await
            .map_err(|e| failed(Reason::Io, e))?;
        // Over budget: the connection is closed (dropped) and the caller told why.
        let permit = self.net.acquire_socket()?;
        let inner = StreamInner::new(stream, permit).map_err(|e| failed(Reason::Io, e))?;
        tracing::debug!(target: "cell::audit", pid = self.net.pid(), "accept {peer} on {}", self.inner.local);
        let mut r = results.get();
        r.set_stream(self.net.stream(Rc::new(inner)));
        r.set_peer(peer.to_string().as_str());
        Ok(())
    }

    async fn local_address(
        self: CapRc<Self>,
        _: tcp_listener::LocalAddressParams,
        mut results: tcp_listener::LocalAddressResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        results
            .get()
            .set_address(self.inner.local.to_string().as_str());
        Ok(())
    }
}
