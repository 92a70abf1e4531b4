//! Sockets the host binds on a guest's behalf (`Network.listen`, `Network.bindUdp`).
//!
//! Every IPv6 socket is made IPv6-only (`IPV6_V6ONLY`) before it is bound, whatever the
//! system default (`net.ipv6.bindv6only`) says: a dual-stack `[::]:P` would also accept IPv4 on
//! `0.0.0.0:P`, which no rule named. A guest that wants both families asks for both, and each
//! is judged by its own rule. (`wasmtime-wasi` does the same for a guest's own `wasi:sockets`.)

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};

fn socket(addr: SocketAddr, ty: Type, protocol: Protocol) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), ty, Some(protocol))?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    Ok(socket)
}

/// A TCP listener on `addr` (the policy was checked by the caller).
///
/// # Errors
/// The socket, bind or listen system call failed (address in use, not local, …).
pub(crate) fn tcp_listener(addr: SocketAddr, backlog: u32) -> io::Result<tokio::net::TcpListener> {
    let socket = socket(addr, Type::STREAM, Protocol::TCP)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    tokio::net::TcpListener::from_std(socket.into())
}

/// A UDP socket bound to `addr` (the policy was checked by the caller).
///
/// # Errors
/// The socket or bind system call failed.
pub(crate) fn udp_socket(addr: SocketAddr) -> io::Result<tokio::net::UdpSocket> {
    let socket = socket(addr, Type::DGRAM, Protocol::UDP)?;
    socket.bind(&addr.into())?;
    tokio::net::UdpSocket::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `[::]` must not take IPv4 connections: connecting to 127.0.0.1 on its port is refused.
    #[tokio::test]
    async fn ipv6_listener_is_ipv6_only() {
        let Ok(listener) = tcp_listener("[::]:0".parse().unwrap(), 8) else {
            return; // no IPv6 on this machine: nothing dual-stack to guard against
        };
        let port = listener.local_addr().unwrap().port();
        let v4 = std::net::TcpStream::connect(("127.0.0.1", port));
        assert!(v4.is_err(), "IPv4 reached an IPv6 listener");
        let v6 = std::net::TcpStream::connect(("::1", port));
        assert!(v6.is_ok(), "{v6:?}");
    }

    #[tokio::test]
    async fn ipv6_udp_socket_is_ipv6_only() {
        let Ok(socket) = udp_socket("[::]:0".parse().unwrap()) else {
            return;
        };
        let port = socket.local_addr().unwrap().port();
        // The same port is still free for IPv4: the IPv6 socket did not take it.
        let v4 = std::net::UdpSocket::bind(("0.0.0.0", port));
        assert!(v4.is_ok(), "{v4:?}");
    }
}
