//! net-std: an ordinary WASI program using plain `std::net`, with no cell SDK — to show that a
//! guest's own `wasi:sockets` work inside exactly its network grant and nowhere else.
//!
//! It never touches stdout (as pid0, stdout is the RPC channel). Each mode prints one
//! `net-std: …` line on stderr and exits 0 when the expectation held, 1 otherwise:
//!
//! - `connect ADDR MSG`  connect to ADDR (`ip:port`), send MSG, shut down the write half, and
//!   expect MSG back (the test servers echo)
//! - `deny ADDR`         expect the policy to deny the connect to ADDR (access-denied), not a refusal
//! - `no-dns NAME`       expect resolving NAME to fail (no name rule matches it)
//! - `resolve NAME`      resolve NAME and print `net-std: ok: NAME is [ADDRS]` (possibly empty)
//! - `no-udp`            expect binding a UDP socket on 127.0.0.1 to fail
//! - `socket-flood N`    bind UDP sockets on 127.0.0.1 until refused; expect exactly N, and
//!   one more once they are closed
//! - `accept-flood N`    listen on 127.0.0.1, then connect to itself and accept, until refused;
//!   expect exactly N sockets held (listener, dialed and accepted together)
//! - `listen`            listen on 127.0.0.1:0, print `net-std: listening on ADDR`, accept one
//!   connection, echo it back uppercased, exit

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, ToSocketAddrs, UdpSocket};

fn say(line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "net-std: {line}");
    let _ = err.flush();
}

fn round_trip(addr: &str, msg: &str) -> std::io::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    s.write_all(msg.as_bytes())?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)?;
    Ok(reply)
}

fn serve_once() -> std::io::Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    say(&format!("listening on {}", listener.local_addr()?));
    let (mut s, peer) = listener.accept()?;
    say(&format!("accepted {peer}"));
    let mut data = Vec::new();
    s.read_to_end(&mut data)?;
    s.write_all(&data.to_ascii_uppercase())?;
    Ok(())
}

fn run(args: &[String]) -> Result<String, String> {
    let arg = |i: usize| args.get(i).map(String::as_str).ok_or("missing argument");
    match arg(1)? {
        "connect" => {
            let (addr, msg) = (arg(2)?, arg(3)?);
            match round_trip(addr, msg) {
                Ok(reply) if reply == msg => Ok(format!("round trip to {addr}: {reply}")),
                Ok(reply) => Err(format!("{addr} answered {reply:?}, expected {msg:?}")),
                Err(e) => Err(format!("connect {addr}: {e}")),
            }
        }
        "deny" => {
            // Only the policy's answer counts: wasi:sockets' access-denied (PermissionDenied),
            // or invalid-argument for an IPv4-mapped IPv6 address (which wasi:sockets rejects
            // by spec before any check). A refused connection or a timeout is not a denial.
            let addr = arg(2)?;
            match TcpStream::connect(addr) {
                Ok(_) => Err(format!("connected to {addr}, which should be denied")),
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    Ok(format!("connect {addr} denied: {e}"))
                }
                Err(e)
                    if e.kind() == std::io::ErrorKind::InvalidInput && addr.contains("::ffff:") =>
                {
                    Ok(format!(
                        "connect {addr} rejected as an invalid argument: {e}"
                    ))
                }
                Err(e) => Err(format!(
                    "connect {addr} failed, but not by the policy: {e} ({:?})",
                    e.kind()
                )),
            }
        }
        "no-dns" => {
            let name = arg(2)?;
            match (name, 80).to_socket_addrs() {
                Ok(addrs) => Err(format!("resolved {name}: {:?}", addrs.collect::<Vec<_>>())),
                Err(e) => Ok(format!("no lookup of {name}: {e}")),
            }
        }
        "resolve" => {
            let name = arg(2)?;
            match (name, 80).to_socket_addrs() {
                Ok(addrs) => {
                    let ips: Vec<String> = addrs.map(|a| a.ip().to_string()).collect();
                    Ok(format!("{name} is [{}]", ips.join(", ")))
                }
                // wasi-libc reports an answer with no address as a failed lookup.
                Err(e) => Ok(format!("{name} is [] ({e})")),
            }
        }
        "no-udp" => match UdpSocket::bind("127.0.0.1:0") {
            Ok(s) => Err(format!("bound UDP {:?}", s.local_addr())),
            Err(e) => Ok(format!("no UDP: {e}")),
        },
        "socket-flood" => {
            let expected: usize = arg(2)?.parse().map_err(|_| "socket-flood needs a count")?;
            let mut sockets = Vec::new();
            let err = loop {
                match UdpSocket::bind("127.0.0.1:0") {
                    Ok(s) => sockets.push(s),
                    Err(e) => break e,
                }
                if sockets.len() > expected + 1000 {
                    return Err(format!("bound {} sockets, no limit", sockets.len()));
                }
            };
            let bound = sockets.len();
            // Dropped sockets give their slots back.
            sockets.clear();
            let again =
                UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("after closing: {e}"))?;
            drop(again);
            if bound == expected {
                Ok(format!("bound {bound} sockets, then: {err}"))
            } else {
                Err(format!(
                    "bound {bound} sockets (expected {expected}), then: {err}"
                ))
            }
        }
        "accept-flood" => {
            let expected: usize = arg(2)?.parse().map_err(|_| "accept-flood needs a count")?;
            let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("listen: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            let (mut dialed, mut accepted) = (Vec::new(), Vec::new());
            let err = loop {
                match TcpStream::connect(addr) {
                    Ok(s) => dialed.push(s),
                    Err(e) => break format!("connect: {e}"),
                }
                match listener.accept() {
                    Ok((s, _)) => accepted.push(s),
                    Err(e) => break format!("accept: {e}"),
                }
                if dialed.len() > expected + 100 {
                    break "no limit".to_string();
                }
            };
            let held = 1 + dialed.len() + accepted.len();
            if held == expected {
                Ok(format!("held {held} sockets, then {err}"))
            } else {
                Err(format!(
                    "held {held} sockets (expected {expected}), then {err}"
                ))
            }
        }
        "listen" => serve_once()
            .map(|()| "served one connection".to_string())
            .map_err(|e| format!("listen: {e}")),
        other => Err(format!("unknown mode {other:?}")),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match run(&args) {
        Ok(line) => say(&format!("ok: {line}")),
        Err(line) => {
            say(&format!("fail: {line}"));
            std::process::exit(1);
        }
    }
}
