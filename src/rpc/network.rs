//! `Network`: the capability to open sockets, scoped by a [`NetPolicy`].
//!
//! Every request is checked against the policy *before* any socket is created or any name is
//! resolved, and every decision is audited ([`crate::net::audit`]). Denials fail with
//! `denied: <decision>` (e.g. `denied: deny connect 10.0.0.1:80: private (RFC 1918) address not
//! named by any rule`).
//!
//! Per connection (= per process) state lives in [`Conn`] (`rpc/conn.rs`): the capability server sets that
//! let the host recognise a `Network` or socket it issued when a guest hands one back in
//! `Executor.spawn` (a guest-made object implementing the interface is refused with
//! `bad-grant: …`), and the process's socket budget (`max-sockets`).
//!
//! `restrict` yields `policy ∩ requested` ([`NetPolicy::intersect`]): a request for more than
//! this Network allows is *clamped* (silently narrowed), never refused and never widened.

use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;

use capnp::capability::Rc as CapRc;
use cell_proto::{read_rules, write_rules, Reason};

use crate::cell_capnp::{net_policy, network};
use crate::limits::{MAX_LISTEN_BACKLOG, MAX_RESOLVED_ADDRS, NET_CONNECT_TIMEOUT};
use crate::net::audit::{AuditEvent, Via};
use crate::net::policy::{canonical_name, parse_ip, Decision, NetOp, NetPolicy, MAX_RULES};
use crate::net::socket::{ListenerInner, StreamInner, UdpInner};
use crate::rpc::conn::Conn;
use crate::rpc::fail::failed;
use crate::text::guest_text;

/// The reason text for a name that no rule lets the host resolve.
pub(crate) const NO_NAME_RULES: &str = "no rule allows name lookups";

/// The server of one `Network` capability.
pub(crate) struct NetworkServer {
    policy: Rc<NetPolicy>,
    net: Conn,
}

impl NetworkServer {
    /// A `Network` with `policy`, issued on `net` (see [`Conn::network`]).
    pub(crate) fn new(policy: Rc<NetPolicy>, net: Conn) -> Self {
        NetworkServer { policy, net }
    }

    /// Its policy.
    pub(crate) fn policy(&self) -> &NetPolicy {
        &self.policy
    }
}

/// The local address of a listen or bind request; binding by name is not supported.
fn local_ip(address: &str) -> Result<IpAddr, capnp::Error> {
    parse_ip(address).ok_or_else(|| {
        failed(
            Reason::BadAddress,
            format!("{address:?} is not an IP address"),
        )
    })
}

/// A denial, with what would grant it: for pid0 the `--net` rule to add (its Network is the
/// operator's), for a child that its parent's Network does not allow it.
pub(crate) fn denied(decision: &Decision, pid: crate::handle::Pid) -> capnp::Error {
    // The address itself: a name's resolved address is what a rule must still name (special
    // ranges are never covered by a name rule).
    let target = match decision.canonical_ip.unwrap_or(decision.ip) {
        IpAddr::V6(v6) => format!("[{v6}]"),
        ip => ip.to_string(),
    };
    failed(
        Reason::Denied,
        format!(
            "{decision}{}",
            grant_hint(pid, decision.op, &target, decision.port)
        ),
    )
}

/// `; to allow it, start cell with --net connect=127.0.0.1:8080` for pid0; for a child, that
/// the Network its parent passed does not allow it.
pub(crate) fn grant_hint(pid: crate::handle::Pid, op: NetOp, target: &str, port: u16) -> String {
    if pid == 0 {
        format!("; to allow it, start cell with --net {op}={target}:{port}")
    } else {
        "; the Network its parent granted does not allow it".to_string()
    }
}

impl NetworkServer {
    /// Checks `op` on `ip:port`, audits, and fails with `denied: …` unless allowed.
    fn check(&self, op: NetOp, ip: IpAddr, port: u16) -> Result<(), capnp::Error> {
        let decision = self.policy.allows(op, ip, port);
        self.net.record(&decision);
        if decision.allowed {
            Ok(())
        } else {
            Err(denied(&decision, self.net.pid()))
        }
    }

    /// The addresses `host:port` may be connected to, in the order to try them. For a name,
    /// resolves it only if a name rule lets the host do so, and keeps only the resolved
    /// addresses the policy allows.
    async fn connect_targets(
        &self,
        host: &str,
        port: u16,
    ) -> Result<Vec<SocketAddr>, capnp::Error> {
        if let Some(ip) = parse_ip(host) {
            self.check(NetOp::Connect, ip, port)?;
            return Ok(vec![SocketAddr::new(ip, port)]);
        }
        // One spelling is matched, resolved and audited (`LOCALHOST.` is `localhost`).
        let host = &canonical_name(host).map_err(|why| {
            failed(
                Reason::BadAddress,
                format!(
                    "{:?} is neither an IP address nor a host name: {why}",
                    guest_text(host)
                ),
            )
        })?;
        let deny_name = |reason: &str| {
            self.net.audit().event(AuditEvent::denied(
                self.net.pid(),
                Via::Rpc,
                "connect",
                Some(host),
                port,
                reason,
            ));
            let hint = grant_hint(self.net.pid(), NetOp::Connect, host, port);
            failed(Reason::Denied, format!("{reason}{hint}"))
        };
        if !self.policy.has_name_rules(NetOp::Connect) {
            return Err(deny_name(NO_NAME_RULES));
        }
        if !self.policy.allows_name(NetOp::Connect, host, port) {
            return Err(deny_name(&format!(
                "connect {host}:{port}: no rule allows this name and port"
            )));
        }
        let resolved: Vec<SocketAddr> = match self.net.host().pinned(host) {
            // `--resolve`: the operator's answer, no query at all.
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::net::lookup_host((host.as_str(), port))
                .await
                .map_err(|e| failed(Reason::Unresolvable, format!("{host}: {e}")))?
                .collect(),
        };
        let mut allowed = Vec::new();
        let mut last = None;
        for addr in resolved.into_iter().take(MAX_RESOLVED_ADDRS) {
            let decision = self
                .policy
                .allows_resolved(NetOp::Connect, host, addr.ip(), port);
            self.net.record(&decision);
            if decision.allowed {
                allowed.push(addr);
            } else {
                last = Some(decision);
            }
        }
        match (allowed.is_empty(), last) {
            (false, _) => Ok(allowed),
            (true, Some(decision)) => Err(denied(&decision, self.net.pid())),
            (true, None) => Err(failed(
                Reason::Unresolvable,
                format!("{host}: no addresses"),
            )),
        }
    }
}

async fn connect_any(targets: &[SocketAddr]) -> Result<tokio::net::TcpStream, capnp::Error> {
    let mut last_err = None;
    for addr in targets {
        match tokio::time::timeout(NET_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(addr)).await
        {
            Ok(Ok(stream)) => return Ok(stream),
            Ok(Err(e)) => last_err = Some(format!("{addr}: {e}")),
            Err(_) => last_err = Some(format!("{addr}: timed out")),
        }
    }
    Err(failed(
        Reason::ConnectFailed,
        last_err.unwrap_or_else(|| "no address to try".into()),
    ))
}

impl network::Server for NetworkServer {
    async fn connect(
        self: CapRc<Self>,
        params: network::ConnectParams,
        mut results: network::ConnectResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        let p = params.get()?;
        let host = p.get_host()?.to_str()?.to_string();
        let port = p.get_port();
        drop(params);
        // Policy first, then the budget, then (and only then) the network.
        let targets = self.connect_targets(&host, port).await?;
        let permit = self.net.acquire_socket()?;
        let stream = connect_any(&targets).await?;
        let inner =
            StreamInner::new(stream, permit).map_err(|e| failed(Reason::ConnectFailed, e))?;
        results.get().set_stream(self.net.stream(Rc::new(inner)));
        Ok(())
    }

    async fn listen(
        self: CapRc<Self>,
        params: network::ListenParams,
        mut results: network::ListenResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        let p = params.get()?;
        let ip = local_ip(p.get_address()?.to_str()?)?;
        let port = p.get_port();
        let backlog = p.get_backlog().clamp(1, MAX_LISTEN_BACKLOG);
        drop(params);
        self.check(NetOp::Listen, ip, port)?;
        let permit = self.net.acquire_socket()?;
        let inner = ListenerInner::bind(SocketAddr::new(ip, port), backlog, permit)
            .map_err(|e| failed(Reason::ListenFailed, e))?;
        results
            .get()
            .set_listener(self.net.listener(Rc::new(inner)));
        Ok(())
    }

    async fn bind_udp(
        self: CapRc<Self>,
        params: network::BindUdpParams,
        mut results: network::BindUdpResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        let p = params.get()?;
        let ip = local_ip(p.get_address()?.to_str()?)?;
        let port = p.get_port();
        drop(params);
        self.check(NetOp::Udp, ip, port)?;
        let permit = self.net.acquire_socket()?;
        let inner = UdpInner::bind(SocketAddr::new(ip, port), self.policy.clone(), permit)
            .await
            .map_err(|e| failed(Reason::BindFailed, e))?;
        results.get().set_socket(self.net.udp(inner));
        Ok(())
    }

    async fn restrict(
        self: CapRc<Self>,
        params: network::RestrictParams,
        mut results: network::RestrictResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        let requested = read_policy(params.get()?.get_policy()?)?;
        drop(params);
        let narrowed = self
            .policy
            .try_intersect(&requested)
            .map_err(|e| failed(Reason::Limit, e))?;
        tracing::debug!(
            target: "cell::audit",
            pid = self.net.pid(),
            "restrict: {} ∩ {} = {}",
            self.policy,
            requested,
            narrowed
        );
        results.get().set_network(self.net.network(narrowed));
        Ok(())
    }

    async fn policy(
        self: CapRc<Self>,
        _: network::PolicyParams,
        mut results: network::PolicyResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.net.gate().enter()?;
        write_policy(&self.policy, results.get().init_policy())
    }
}

/// A policy from the wire, its size checked before any rule is parsed (through the one rule
/// grammar of `cell-proto`).
///
/// # Errors
/// `limit: …` past [`crate::net::policy::MAX_RULES`] rules, `bad-policy: …` for a bad rule.
fn read_policy(policy: net_policy::Reader<'_>) -> capnp::Result<NetPolicy> {
    Ok(NetPolicy::new(read_rules(policy, MAX_RULES)?))
}

fn write_policy(policy: &NetPolicy, out: net_policy::Builder<'_>) -> capnp::Result<()> {
    Ok(write_rules(policy.rules(), out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_rules_round_trip() {
        let policy = NetPolicy::parse([
            "connect=127.0.0.1:8080",
            "connect=[::1]:443",
            "connect=[2001:db8::/32]:1-1024",
            "listen=127.0.0.1:0",
            "udp=*:*",
            "connect=*.example.com:443",
        ])
        .unwrap();
        let mut message = capnp::message::Builder::new_default();
        write_policy(&policy, message.init_root()).unwrap();
        let reader = message
            .get_root_as_reader::<net_policy::Reader<'_>>()
            .unwrap();
        assert_eq!(read_policy(reader).unwrap(), policy);
    }
}
