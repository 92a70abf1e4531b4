//! Typed wrappers over the network capabilities: `Network`, `TcpStream`, `TcpListener`,
//! `UdpSocket`. Get the [`Network`] of this process with `caps.network().await?`.
//!
//! Rules ([`Rule`], the wire crate's `NetRule`) are parsed and checked by the same grammar the
//! host uses for `--net`: `Rule::connect("127.0.0.1", 8080)?`, `Rule::parse("udp=[::1]:*")?`.
//!
//! Host errors keep their reason word: a request the policy refuses fails with
//! `denied: deny connect 10.0.0.1:80: …`; a name with no name rule with
//! `denied: no rule allows name lookups`.

use std::io;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use anyhow::{Context as _, Result};
use cell_proto::{read_rules, write_rules, Socket};
use futures::io::{AsyncRead, AsyncWrite};

use crate::caps::ByteStream;
use crate::cell_capnp::{byte_stream, network, tcp_listener, tcp_stream, udp_socket};
use crate::io::AsyncStream;

pub use cell_proto::{NetOp, NetRule as Rule, PortRange, RuleParseError};

/// The most rules [`Network::policy`] reads back (the host's own bound is lower).
const MAX_POLICY_RULES: usize = 4096;

/// A `Network` capability: connect, listen, bind UDP, restrict, introspect.
#[derive(Clone)]
pub struct Network {
    client: network::Client,
}

impl Network {
    /// Wraps a raw client (e.g. from `caps.network()`).
    pub fn new(client: network::Client) -> Self {
        Network { client }
    }

    /// The raw capability, e.g. for `SpawnBuilder::grant_network`.
    pub fn client(&self) -> &network::Client {
        &self.client
    }

    /// Opens a TCP connection to `host` (an IP address or a name) and `port`.
    pub async fn connect(&self, host: &str, port: u16) -> Result<TcpStream> {
        let mut request = self.client.connect_request();
        request.get().set_host(host);
        request.get().set_port(port);
        let response = request
            .send()
            .promise
            .await
            .with_context(|| format!("network.connect {host}:{port}"))?;
        let client = response.get().and_then(|r| r.get_stream())?;
        Ok(TcpStream::new(client))
    }

    /// Listens on `address:port` (port 0: the OS picks).
    pub async fn listen(&self, address: &str, port: u16, backlog: u32) -> Result<TcpListener> {
        let mut request = self.client.listen_request();
        request.get().set_address(address);
        request.get().set_port(port);
        request.get().set_backlog(backlog);
        let response = request
            .send()
            .promise
            .await
            .with_context(|| format!("network.listen {address}:{port}"))?;
        let client = response.get().and_then(|r| r.get_listener())?;
        Ok(TcpListener { client })
    }

    /// Binds a UDP socket to `address:port`.
    pub async fn bind_udp(&self, address: &str, port: u16) -> Result<UdpSocket> {
        let mut request = self.client.bind_udp_request();
        request.get().set_address(address);
        request.get().set_port(port);
        let response = request
            .send()
            .promise
            .await
            .with_context(|| format!("network.bindUdp {address}:{port}"))?;
        let client = response.get().and_then(|r| r.get_socket())?;
        Ok(UdpSocket { client })
    }

    /// A Network allowing only what both this one and `rules` allow (never more).
    pub async fn restrict(&self, rules: &[Rule]) -> Result<Network> {
        let mut request = self.client.restrict_request();
        write_rules(rules, request.get().init_policy()).context("network.restrict")?;
        let response = request.send().promise.await.context("network.restrict")?;
        let client = response.get().and_then(|r| r.get_network())?;
        Ok(Network { client })
    }

    /// The effective policy of this capability.
    pub async fn policy(&self) -> Result<Vec<Rule>> {
        let response = self
            .client
            .policy_request()
            .send()
            .promise
            .await
            .context("network.policy")?;
        let policy = response.get()?.get_policy()?;
        read_rules(policy, MAX_POLICY_RULES).context("network.policy")
    }
}

/// An open TCP connection: call-per-operation through [`TcpStream::bytes`], or as a
/// `futures::io::AsyncRead + AsyncWrite` (`read_to_end`, `write_all`, `copy`, …; `close` shuts
/// down the write half). A clone shares the connection but not the in-flight reads and writes
/// of `AsyncRead`/`AsyncWrite`.
pub struct TcpStream {
    client: tcp_stream::Client,
    bytes: ByteStream,
    io: AsyncStream,
}

impl Clone for TcpStream {
    fn clone(&self) -> Self {
        TcpStream::new(self.client.clone())
    }
}

impl TcpStream {
    /// Wraps a raw client (e.g. from `caps.sockets()`).
    pub fn new(client: tcp_stream::Client) -> Self {
        let bytes: byte_stream::Client =
            capnp::capability::FromClientHook::new(client.client.hook.add_ref());
        TcpStream {
            client,
            io: AsyncStream::new(bytes.clone()),
            bytes: ByteStream::new(bytes),
        }
    }

    /// The raw capability, e.g. for `SpawnBuilder::grant_socket`.
    pub fn client(&self) -> &tcp_stream::Client {
        &self.client
    }

    /// The stream as a [`ByteStream`] (read, write, close = shutdown of the write half).
    pub fn bytes(&self) -> &ByteStream {
        &self.bytes
    }

    /// `ip:port` of this end.
    pub async fn local_address(&self) -> Result<String> {
        let r = self.client.local_address_request().send().promise.await?;
        Ok(r.get()?.get_address()?.to_string()?)
    }

    /// `ip:port` of the other end.
    pub async fn peer_address(&self) -> Result<String> {
        let r = self.client.peer_address_request().send().promise.await?;
        Ok(r.get()?.get_address()?.to_string()?)
    }
}

/// A listening TCP socket.
#[derive(Clone)]
pub struct TcpListener {
    client: tcp_listener::Client,
}

impl TcpListener {
    /// Wraps a raw client.
    pub fn new(client: tcp_listener::Client) -> Self {
        TcpListener { client }
    }

    /// The raw capability.
    pub fn client(&self) -> &tcp_listener::Client {
        &self.client
    }

    /// Waits for a connection: the stream and the peer's `ip:port`.
    pub async fn accept(&self) -> Result<(TcpStream, String)> {
        let r = self
            .client
            .accept_request()
            .send()
            .promise
            .await
            .context("listener.accept")?;
        let r = r.get()?;
        Ok((TcpStream::new(r.get_stream()?), r.get_peer()?.to_string()?))
    }

    /// `ip:port` it listens on.
    pub async fn local_address(&self) -> Result<String> {
        let r = self.client.local_address_request().send().promise.await?;
        Ok(r.get()?.get_address()?.to_string()?)
    }
}

/// A bound UDP socket.
#[derive(Clone)]
pub struct UdpSocket {
    client: udp_socket::Client,
}

impl UdpSocket {
    /// The raw capability.
    pub fn client(&self) -> &udp_socket::Client {
        &self.client
    }

    /// Sends one datagram to `host:port` (an IP address).
    pub async fn send(&self, host: &str, port: u16, data: &[u8]) -> Result<()> {
        let mut request = self.client.send_request();
        request.get().set_host(host);
        request.get().set_port(port);
        request.get().set_data(data);
        request
            .send()
            .promise
            .await
            .with_context(|| format!("udp.send {host}:{port}"))?;
        Ok(())
    }

    /// Waits for a datagram: (from address, from port, data).
    pub async fn recv(&self) -> Result<(String, u16, Vec<u8>)> {
        let r = self
            .client
            .recv_request()
            .send()
            .promise
            .await
            .context("udp.recv")?;
        let r = r.get()?;
        Ok((
            r.get_host()?.to_string()?,
            r.get_port(),
            r.get_data()?.to_vec(),
        ))
    }

    /// `ip:port` it is bound to.
    pub async fn local_address(&self) -> Result<String> {
        let r = self.client.local_address_request().send().promise.await?;
        Ok(r.get()?.get_address()?.to_string()?)
    }

    /// Datagrams dropped because the host's receive queue was full.
    pub async fn dropped(&self) -> Result<u64> {
        let r = self.client.dropped_request().send().promise.await?;
        Ok(r.get()?.get_count())
    }
}

impl AsyncRead for TcpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_read(cx, buf)
    }
}

impl AsyncWrite for TcpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut TaskContext<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_close(cx)
    }
}

/// Sockets can be handed to a child as they are (`SpawnBuilder::grant_socket(stream)`).
impl From<TcpStream> for Socket {
    fn from(s: TcpStream) -> Self {
        Socket::TcpStream(s.client)
    }
}

impl From<&TcpStream> for Socket {
    fn from(s: &TcpStream) -> Self {
        Socket::TcpStream(s.client.clone())
    }
}

impl From<TcpListener> for Socket {
    fn from(l: TcpListener) -> Self {
        Socket::TcpListener(l.client)
    }
}

impl From<&TcpListener> for Socket {
    fn from(l: &TcpListener) -> Self {
        Socket::TcpListener(l.client.clone())
    }
}

impl From<UdpSocket> for Socket {
    fn from(u: UdpSocket) -> Self {
        Socket::UdpSocket(u.client)
    }
}

impl From<&UdpSocket> for Socket {
    fn from(u: &UdpSocket) -> Self {
        Socket::UdpSocket(u.client.clone())
    }
}
