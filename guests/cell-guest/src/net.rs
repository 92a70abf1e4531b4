//! Typed wrappers over the network capabilities: `Network`, `TcpStream`, `TcpListener`,
//! `UdpSocket`. Get a [`Network`] with `Network::new(caps.network().await?)`.
//!
//! Host errors keep their reason word: a request the policy refuses fails with
//! `denied: deny connect 10.0.0.1:80: …`; a name with no name rule with
//! `denied: no rule allows name lookups`.

use anyhow::{anyhow, Context as _, Result};

use crate::caps::ByteStream;
use crate::cell_capnp::{byte_stream, network, tcp_listener, tcp_stream, udp_socket, NetOp};

/// A `Network` capability: connect, listen, bind UDP, restrict, introspect.
#[derive(Clone)]
pub struct Network {
    client: network::Client,
}

/// One rule of a policy as the wire carries it (see `NetRule` in cell.capnp).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub op: NetOp,
    /// A CIDR, an IP address (IPv6 without brackets) or a DNS name.
    pub host: String,
    pub port_low: u16,
    pub port_high: u16,
}

impl Rule {
    /// Parses the `--net` syntax, e.g. `connect=127.0.0.1:8080`, `connect=[::1]:1-1024`,
    /// `udp=127.0.0.1:*`. Only splits the rule; the host validates it.
    pub fn parse(s: &str) -> Result<Rule> {
        let (op, rest) = s
            .split_once('=')
            .ok_or_else(|| anyhow!("{s}: missing '='"))?;
        let op = match op {
            "connect" => NetOp::Connect,
            "listen" => NetOp::Listen,
            "udp" => NetOp::Udp,
            other => return Err(anyhow!("{s}: unknown operation {other}")),
        };
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| anyhow!("{s}: missing port"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let (port_low, port_high) = match port {
            "*" => (0, u16::MAX),
            p => match p.split_once('-') {
                Some((a, b)) => (a.parse()?, b.parse()?),
                None => (p.parse()?, p.parse()?),
            },
        };
        Ok(Rule {
            op,
            host,
            port_low,
            port_high,
        })
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let op = match self.op {
            NetOp::Connect => "connect",
            NetOp::Listen => "listen",
            NetOp::Udp => "udp",
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port_low == self.port_high {
            write!(f, "{op}={host}:{}", self.port_low)
        } else {
            write!(f, "{op}={host}:{}-{}", self.port_low, self.port_high)
        }
    }
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
        {
            let mut list = request
                .get()
                .init_policy()
                .init_rules(u32::try_from(rules.len())?);
            for (i, rule) in rules.iter().enumerate() {
                let mut r = list.reborrow().get(i as u32);
                r.set_op(rule.op);
                r.set_host(rule.host.as_str());
                r.set_port_low(rule.port_low);
                r.set_port_high(rule.port_high);
            }
        }
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
        let rules = response.get()?.get_policy()?.get_rules()?;
        rules
            .iter()
            .map(|r| {
                Ok(Rule {
                    op: r.get_op()?,
                    host: r.get_host()?.to_string()?,
                    port_low: r.get_port_low(),
                    port_high: r.get_port_high(),
                })
            })
            .collect()
    }
}

/// An open TCP connection; its byte-stream side is [`TcpStream::bytes`].
#[derive(Clone)]
pub struct TcpStream {
    client: tcp_stream::Client,
    bytes: ByteStream,
}

impl TcpStream {
    /// Wraps a raw client (e.g. from `caps.sockets()`).
    pub fn new(client: tcp_stream::Client) -> Self {
        let bytes: byte_stream::Client =
            capnp::capability::FromClientHook::new(client.client.hook.add_ref());
        TcpStream {
            client,
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
