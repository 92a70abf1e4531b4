//! The network grant applied to a process's own `wasi:sockets`, so a guest written with plain
//! `std::net` works inside exactly its grant — the same [`NetPolicy`] that scopes its RPC
//! `Network`, decided by the same function, audited the same way (`"via":"wasi"`).
//!
//! How wasmtime-wasi's checks map to policy operations (`socket_addr_check` sees an address, a
//! port and what it is for):
//!
//! | wasi use      | decided as                                                                  |
//! |---------------|-----------------------------------------------------------------------------|
//! | `TcpConnect`  | `connect` to the remote address                                             |
//! | `TcpBind`     | `listen` on the local address; *or*, for the implicit bind wasi does before |
//! |               | a connect (the unspecified address, port 0), allowed if any `connect` rule |
//! |               | exists, audited as op `bind` — an ephemeral source port, which cannot       |
//! |               | accept connections unless a later `TcpListen` is allowed                    |
//! | `TcpListen`   | `listen` on the bound address; a socket bound to port 0 (OS-picked port)    |
//! |               | is judged by its address with port 0, as the policy's "ephemeral" means     |
//! | `TcpAccept`   | allowed: the listener was granted, peers may come from anywhere             |
//! | `UdpBind`     | `udp` on the local address (the implicit bind before a send is            |
//! |               | `0.0.0.0:0`/`[::]:0`, which needs e.g. `udp=0.0.0.0:0`)                     |
//! | `UdpSend`     | `udp` to the destination                                                    |
//! | `UdpReceive`  | allowed: the socket was granted (not audited: one line per datagram)        |
//!
//! TCP is enabled only if the policy has a `connect` or `listen` rule, UDP only with a `udp`
//! rule. Name lookups (`wasi:sockets/ip-name-lookup`) are cell's own ([`crate::net::lookup`]):
//! only names a name rule matches are resolved, and the addresses a lookup returned are
//! allowed for connects (and UDP sends) on that name's rules — a `TcpConnect` or `UdpSend`
//! denied by address rules is allowed when a name this process looked up was answered with
//! that address and [`NetPolicy::allows_resolved`] allows it.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::WasiCtxBuilder;

use crate::net::audit::{Audit, AuditEvent, Via};
use crate::net::lookup::Pins;
use crate::net::policy::{Decision, NetOp, NetPolicy};

/// Whether `policy` grants `op` anywhere.
fn has_rules(policy: &NetPolicy, op: NetOp) -> bool {
    policy.rules().iter().any(|r| r.op == op)
}

/// Enables exactly the socket uses `policy` allows on `b`, auditing each decision for `pid`.
pub(crate) fn apply(
    b: &mut WasiCtxBuilder,
    policy: &NetPolicy,
    pid: u32,
    audit: Audit,
    pins: Arc<Pins>,
) {
    b.allow_tcp(has_rules(policy, NetOp::Connect) || has_rules(policy, NetOp::Listen))
        .allow_udp(has_rules(policy, NetOp::Udp))
        .allow_ip_name_lookup(false);
    let checker = Arc::new(Checker {
        policy: policy.clone(),
        pid,
        audit,
        pins,
    });
    b.socket_addr_check(move |addr, use_| {
        let allowed = checker.check(addr, use_);
        Box::pin(async move { allowed })
    });
}

/// The state behind a process's `socket_addr_check`.
struct Checker {
    policy: NetPolicy,
    pid: u32,
    audit: Audit,
    /// Addresses the process's own lookups returned, each allowed for its name's rules.
    pins: Arc<Pins>,
}

impl Checker {
    fn check(&self, addr: SocketAddr, use_: SocketAddrUse) -> bool {
        let (ip, port) = (addr.ip(), addr.port());
        match use_ {
            SocketAddrUse::TcpConnect => self.decide_connect(ip, port),
            SocketAddrUse::TcpBind => self.tcp_bind(ip, port),
            SocketAddrUse::TcpListen => self.tcp_listen(ip, port),
            SocketAddrUse::UdpBind => self.decide(NetOp::Udp, ip, port),
            SocketAddrUse::UdpSend => self.decide_destination(NetOp::Udp, ip, port),
            SocketAddrUse::TcpAccept | SocketAddrUse::UdpReceive => true,
        }
    }

    fn decide(&self, op: NetOp, ip: IpAddr, port: u16) -> bool {
        let decision = self.policy.allows(op, ip, port);
        self.audit.decision(self.pid, Via::Wasi, &decision);
        decision.allowed
    }

    /// A TCP connect: by address rules, or by the name rules of a name this process looked up.
    fn decide_connect(&self, ip: IpAddr, port: u16) -> bool {
        let decision = self.policy.allows(NetOp::Connect, ip, port);
        let decision = self.or_pinned(decision, NetOp::Connect, ip, port);
        self.audit.decision(self.pid, Via::Wasi, &decision);
        decision.allowed
    }

    /// Like `decide`, for an address traffic is sent to: never the unspecified address.
    fn decide_destination(&self, op: NetOp, ip: IpAddr, port: u16) -> bool {
        let decision = self.policy.allows_destination(op, ip, port);
        let decision = self.or_pinned(decision, op, ip, port);
        self.audit.decision(self.pid, Via::Wasi, &decision);
        decision.allowed
    }

    /// `decision`, or when it denies an address a lookup of this process returned, the
    /// decision for that name (see [`crate::net::lookup`]). Only for destinations.
    fn or_pinned(&self, decision: Decision, op: NetOp, ip: IpAddr, port: u16) -> Decision {
        if decision.allowed || ip.is_unspecified() {
            return decision;
        }
        self.pins
            .allows(&self.policy, op, ip, port)
            .unwrap_or(decision)
    }

    fn tcp_bind(&self, ip: IpAddr, port: u16) -> bool {
        let listen = self.policy.allows(NetOp::Listen, ip, port);
        if !listen.allowed
            && port == 0
            && ip.is_unspecified()
            && has_rules(&self.policy, NetOp::Connect)
        {
            self.audit.event(AuditEvent::allowed(
                self.pid,
                Via::Wasi,
                "bind",
                ip,
                port,
                "ephemeral source port for connect",
            ));
            return true;
        }
        self.audit.decision(self.pid, Via::Wasi, &listen);
        listen.allowed
    }

    fn tcp_listen(&self, ip: IpAddr, port: u16) -> bool {
        let exact = self.policy.allows(NetOp::Listen, ip, port);
        if !exact.allowed && port != 0 {
            // Bound earlier to port 0 and given a port by the OS: judge the request that was made.
            let ephemeral = self.policy.allows(NetOp::Listen, ip, 0);
            if ephemeral.allowed {
                self.audit.decision(self.pid, Via::Wasi, &ephemeral);
                return true;
            }
        }
        self.audit.decision(self.pid, Via::Wasi, &exact);
        exact.allowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checker(rules: &[&str]) -> Checker {
        Checker {
            policy: NetPolicy::parse(rules).unwrap(),
            pid: 1,
            audit: Audit::tracing_only(),
            pins: Arc::default(),
        }
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn connect_needs_its_implicit_bind_and_a_connect_rule() {
        let c = checker(&["connect=127.0.0.1:8080"]);
        assert!(c.check(sa("0.0.0.0:0"), SocketAddrUse::TcpBind));
        assert!(c.check(sa("[::]:0"), SocketAddrUse::TcpBind));
        assert!(c.check(sa("127.0.0.1:8080"), SocketAddrUse::TcpConnect));
        assert!(!c.check(sa("127.0.0.1:8081"), SocketAddrUse::TcpConnect));
        assert!(!c.check(sa("10.0.0.1:8080"), SocketAddrUse::TcpConnect));
        // An ephemeral bind is not a listener: listening on it is still denied.
        assert!(!c.check(sa("0.0.0.0:0"), SocketAddrUse::TcpListen));
        assert!(!c.check(sa("0.0.0.0:40000"), SocketAddrUse::TcpListen));
        assert!(!c.check(sa("127.0.0.1:0"), SocketAddrUse::TcpBind));
    }

    #[test]
    fn listen_on_an_os_picked_port() {
        let c = checker(&["listen=127.0.0.1:0"]);
        assert!(c.check(sa("127.0.0.1:0"), SocketAddrUse::TcpBind));
        assert!(c.check(sa("127.0.0.1:40000"), SocketAddrUse::TcpListen));
        assert!(!c.check(sa("127.0.0.1:8080"), SocketAddrUse::TcpBind));
        assert!(
            !c.check(sa("0.0.0.0:0"), SocketAddrUse::TcpBind),
            "all interfaces not named"
        );
        assert!(!c.check(sa("0.0.0.0:0"), SocketAddrUse::TcpListen));
    }

    #[test]
    fn udp_binds_and_sends_are_udp_rules() {
        let c = checker(&["udp=127.0.0.1:*"]);
        assert!(c.check(sa("127.0.0.1:0"), SocketAddrUse::UdpBind));
        assert!(c.check(sa("127.0.0.1:5353"), SocketAddrUse::UdpSend));
        assert!(!c.check(sa("0.0.0.0:0"), SocketAddrUse::UdpBind));
        assert!(!c.check(sa("10.0.0.1:53"), SocketAddrUse::UdpSend));
        assert!(c.check(sa("10.0.0.1:53"), SocketAddrUse::UdpReceive));
    }

    /// An address a lookup of this process returned is allowed for the name's rules only.
    #[test]
    fn resolved_addresses_are_allowed_for_their_names_ports() {
        let mut c = checker(&["connect=api.example.com:443"]);
        let pins = Arc::new(Pins::default());
        c.pins = pins.clone();
        assert!(!c.check(sa("93.184.216.34:443"), SocketAddrUse::TcpConnect));
        pins.pin_for_test("api.example.com", "93.184.216.34".parse().unwrap());
        assert!(c.check(sa("93.184.216.34:443"), SocketAddrUse::TcpConnect));
        assert!(!c.check(sa("93.184.216.34:80"), SocketAddrUse::TcpConnect));
        assert!(!c.check(sa("93.184.216.35:443"), SocketAddrUse::TcpConnect));
    }

    /// A rule written to let a socket bind on every interface never lets it send to the
    /// unspecified address, which the kernel delivers to localhost.
    #[test]
    fn binding_everywhere_is_not_sending_to_the_unspecified_address() {
        let c = checker(&["udp=0.0.0.0:*", "udp=[::]:*", "connect=0.0.0.0:*"]);
        assert!(c.check(sa("0.0.0.0:0"), SocketAddrUse::UdpBind));
        assert!(c.check(sa("[::]:0"), SocketAddrUse::UdpBind));
        for dest in ["0.0.0.0:9", "[::]:9", "[::ffff:0.0.0.0]:9", "0.1.2.3:9"] {
            assert!(!c.check(sa(dest), SocketAddrUse::UdpSend), "{dest}");
            assert!(!c.check(sa(dest), SocketAddrUse::TcpConnect), "{dest}");
        }
    }
}
