//! `wasi:http/outgoing-handler` under the process's network policy: the same [`NetPolicy`] that
//! scopes its `Network` and its `wasi:sockets`, decided before any connection is made, audited
//! as op `http`. wasmtime-wasi-http parses the guest's request and owns the body streams; cell
//! supplies the hooks ([`HttpHooks`]) that decide where a request may go and then connect to the
//! address *cell* resolved and checked ([`send`]) — never to the name again, so an answer
//! cannot change between the check and the connect (no DNS rebinding).
//!
//! - A process holding no Network, or one without a `connect` rule, gets `HTTP-request-denied`
//!   for every request (wasi:http is linked for every process, so a component importing it
//!   loads; only requests are refused).
//! - The authority's port defaults by scheme (80 for `http`, 443 for `https`). An IP literal
//!   must match an address rule ([`NetPolicy::allows_destination`]). A name must match a name
//!   rule for that port ([`NetPolicy::allows_name`]) before it is resolved (by `--resolve`, or
//!   the system resolver under [`LOOKUP_TIMEOUT`]); each address then passes
//!   [`NetPolicy::allows_resolved`] (a name rule never grants a special range such as loopback
//!   or link-local metadata unless an address rule names it) or is dropped.
//! - Denials return `HTTP-request-denied`; a name that does not resolve `DNS-error`.
//!   Every decision is one audit line with op `http`, the method, the authority (as `host`)
//!   and the length of the path and query — never the path, which may carry secrets.
//! - Bounded: a request holds one socket of the process's `max-sockets` from before its
//!   connect until its connection closes (more get `connection-limit-reached`); timeouts are
//!   the guest's `request-options`, capped by [`HTTP_CONNECT_TIMEOUT`],
//!   [`HTTP_FIRST_BYTE_TIMEOUT`] and [`HTTP_BETWEEN_BYTES_TIMEOUT`]; each connection's buffers
//!   are bounded in [`send`]; header fields the guest builds are at most [`HTTP_FIELD_BYTES`]
//!   per `fields` resource, and their number is the process's resource-table bound. Every task
//!   is owned by a resource of the process's table, so all of it ends with the process.

pub(crate) mod held;
mod send;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks};

use crate::limits::{
    HTTP_BETWEEN_BYTES_TIMEOUT, HTTP_BODY_CHUNK_BYTES, HTTP_CONNECT_TIMEOUT, HTTP_FIELD_BYTES,
    HTTP_FIRST_BYTE_TIMEOUT, MAX_RESOLVED_ADDRS,
};
use crate::net::audit::{Audit, AuditEvent, Via};
use crate::net::count::{SocketPermit, SocketTally};
use crate::net::lookup::LOOKUP_TIMEOUT;
use crate::net::policy::{canonical_name, parse_ip, Decision, NetOp, NetPolicy};

/// The audit op of an outgoing request.
const OP: &str = "http";

/// One process's `wasi:http` state: the crate's context (field limits) and cell's hooks.
pub(crate) struct HttpOutgoing {
    pub(crate) ctx: WasiHttpCtx,
    pub(crate) hooks: HttpHooks,
    /// What its resources' header fields are charged (see [`held`]).
    pub(crate) held: held::HeldHeaders,
}

impl HttpOutgoing {
    /// The state for a process whose network grant is `grant` (`None`: every request denied).
    pub(crate) fn new(grant: HttpGrant) -> Self {
        let mut ctx = WasiHttpCtx::new();
        ctx.set_field_size_limit(HTTP_FIELD_BYTES);
        HttpOutgoing {
            ctx,
            hooks: HttpHooks {
                grant: Arc::new(grant),
            },
            held: held::HeldHeaders::default(),
        }
    }
}

/// What a process's requests are decided by. `Send + Sync`: the request runs on a task of its
/// own, away from the store.
pub(crate) struct HttpGrant {
    /// Its network policy; `None` when it holds no Network.
    pub policy: Option<NetPolicy>,
    pub pid: u32,
    pub audit: Audit,
    /// `--resolve NAME=IP`: answered without a query.
    pub pinned_names: Arc<HashMap<String, IpAddr>>,
    /// Its sockets on every path, against `max-sockets`.
    pub sockets: Arc<SocketTally>,
}

/// cell's [`WasiHttpHooks`]: every request is decided by [`HttpGrant::targets`] and sent by
/// [`send::send`].
pub(crate) struct HttpHooks {
    grant: Arc<HttpGrant>,
}

/// The request's target, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    /// The authority's host: an IP literal (IPv6 without brackets) or a canonical name.
    host: String,
    port: u16,
    tls: bool,
}

impl Target {
    /// The target of `uri`; `None` when it has no host.
    fn of(uri: &http::Uri) -> Option<Target> {
        let tls = uri.scheme() == Some(&Scheme::HTTPS);
        let host = uri.host().filter(|h| !h.is_empty())?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        Some(Target {
            host: host.to_string(),
            port,
            tls,
        })
    }
}

/// What the audit line says about the request besides the decision.
struct Asked {
    method: String,
    authority: String,
    path_len: usize,
}

impl Asked {
    fn of(request: &http::Request<WasiBody>) -> Self {
        let uri = request.uri();
        Asked {
            method: request.method().as_str().to_string(),
            authority: uri.authority().map(|a| a.to_string()).unwrap_or_default(),
            path_len: uri.path_and_query().map_or(0, |p| p.as_str().len()),
        }
    }
}

impl HttpGrant {
    fn audit(&self, asked: &Asked, event: AuditEvent) {
        let mut event = event.with_http(&asked.method, asked.path_len);
        event.op = OP;
        event.host = Some(crate::text::guest_text(&asked.authority));
        self.audit.event(event);
    }

    fn deny(&self, asked: &Asked, port: u16, reason: &str) -> Error {
        self.audit(
            asked,
            AuditEvent::denied(self.pid, Via::Wasi, OP, None, port, reason),
        );
        Error::HttpRequestDenied
    }

    fn record(&self, asked: &Asked, decision: &Decision) {
        self.audit(
            asked,
            AuditEvent::from_decision(self.pid, Via::Wasi, decision),
        );
    }

    /// The addresses the request may connect to, in the order to try them, with the socket
    /// slot it holds from here on, or the `wasi:http` error to answer with. Audits every
    /// decision. The slot is taken after the policy's first word and before any lookup, so a
    /// guest's requests never have more name resolutions in progress than `max-sockets`.
    async fn targets(
        &self,
        asked: &Asked,
        target: &Target,
    ) -> Result<(Vec<SocketAddr>, SocketPermit), Error> {
        let port = target.port;
        let Some(policy) = self
            .policy
            .as_ref()
            .filter(|p| p.rules().iter().any(|r| r.op == NetOp::Connect))
        else {
            return Err(self.deny(
                asked,
                port,
                "no connect rule: this process may not make HTTP requests",
            ));
        };
        if let Some(ip) = parse_ip(&target.host) {
            let decision = policy.allows_destination(NetOp::Connect, ip, port);
            self.record(asked, &decision);
            return match decision.allowed {
                true => Ok((vec![SocketAddr::new(ip, port)], self.slot()?)),
                false => Err(Error::HttpRequestDenied),
            };
        }
        let Ok(name) = canonical_name(&target.host) else {
            return Err(self.deny(
                asked,
                port,
                "the authority is neither an IP address nor a host name",
            ));
        };
        if !policy.allows_name(NetOp::Connect, &name, port) {
            return Err(self.deny(asked, port, "no rule allows this name and port"));
        }
        let permit = self.slot()?;
        let resolved = self.resolve(&name).await?;
        let mut allowed = Vec::new();
        for ip in resolved.into_iter().take(MAX_RESOLVED_ADDRS) {
            let decision = policy.allows_resolved(NetOp::Connect, &name, ip, port);
            self.record(asked, &decision);
            if decision.allowed {
                allowed.push(SocketAddr::new(ip, port));
            }
        }
        match allowed.is_empty() {
            true => Err(Error::HttpRequestDenied),
            false => Ok((allowed, permit)),
        }
    }

    /// One of the process's `max-sockets`, or `connection-limit-reached`.
    fn slot(&self) -> Result<SocketPermit, Error> {
        self.sockets
            .acquire()
            .map_err(|_| Error::ConnectionLimitReached)
    }

    /// `name`'s addresses: the operator's `--resolve` answer, or the system resolver's.
    async fn resolve(&self, name: &str) -> Result<Vec<IpAddr>, Error> {
        if let Some(&ip) = self.pinned_names.get(name) {
            return Ok(vec![ip]);
        }
        let dns_error = |info: &str| Error::DnsError {
            rcode: Some(info.to_string()),
            info_code: None,
        };
        match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0))).await {
            Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).collect()),
            Ok(Err(_)) => Err(dns_error("name unresolvable")),
            Err(_) => Err(Error::DnsTimeout),
        }
    }
}

/// The timeouts a request runs under: the guest's, never longer than cell's caps.
fn timeouts(options: Option<RequestOptions>) -> send::Timeouts {
    let capped = |asked: Option<Duration>, cap: Duration| asked.map_or(cap, |d| d.min(cap));
    let options = options.unwrap_or_default();
    send::Timeouts {
        connect: capped(options.connect_timeout, HTTP_CONNECT_TIMEOUT),
        first_byte: capped(options.first_byte_timeout, HTTP_FIRST_BYTE_TIMEOUT),
        between_bytes: capped(options.between_bytes_timeout, HTTP_BETWEEN_BYTES_TIMEOUT),
    }
}

type IoFuture = Box<dyn std::future::Future<Output = Result<(), Error>> + Send>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> Box<
        dyn std::future::Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>>
            + Send,
    > {
        let grant = self.grant.clone();
        Box::new(async move {
            let asked = Asked::of(&request);
            let Some(target) = Target::of(request.uri()) else {
                grant.deny(&asked, 0, "the request has no host");
                return Err(Error::HttpRequestUriInvalid);
            };
            // Policy first, then the budget, then (and only then) the network.
            let (addrs, permit) = grant.targets(&asked, &target).await?;
            let server_name = send::server_name(&target.host)?;
            let link = send::Link {
                addrs,
                tls: target.tls.then_some(server_name),
                timeouts: timeouts(options),
                permit,
            };
            send::send(request, link).await
        })
    }

    fn p2_outgoing_body_chunk_size(&mut self) -> usize {
        HTTP_BODY_CHUNK_BYTES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(uri: &str) -> Option<Target> {
        Target::of(&uri.parse().unwrap())
    }

    #[test]
    fn ports_default_by_scheme_and_ipv6_loses_its_brackets() {
        let t = target("http://example.com/x").unwrap();
        assert_eq!((t.host.as_str(), t.port, t.tls), ("example.com", 80, false));
        let t = target("https://example.com/x").unwrap();
        assert_eq!((t.port, t.tls), (443, true));
        let t = target("https://[::1]:8443/").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 8443));
        assert_eq!(target("/relative"), None);
    }

    #[test]
    fn the_guest_may_shorten_timeouts_never_lengthen_them() {
        let t = timeouts(None);
        assert_eq!(t.connect, HTTP_CONNECT_TIMEOUT);
        assert_eq!(t.first_byte, HTTP_FIRST_BYTE_TIMEOUT);
        let t = timeouts(Some(RequestOptions {
            connect_timeout: Some(Duration::from_millis(5)),
            first_byte_timeout: Some(Duration::from_secs(86_400)),
            between_bytes_timeout: None,
        }));
        assert_eq!(t.connect, Duration::from_millis(5));
        assert_eq!(t.first_byte, HTTP_FIRST_BYTE_TIMEOUT);
        assert_eq!(t.between_bytes, HTTP_BETWEEN_BYTES_TIMEOUT);
    }

    fn grant(rules: &[&str]) -> HttpGrant {
        HttpGrant {
            policy: Some(NetPolicy::parse(rules).unwrap()),
            pid: 1,
            audit: Audit::tracing_only(),
            pinned_names: Arc::new(HashMap::from([
                ("api.test".to_string(), "127.0.0.1".parse().unwrap()),
                ("meta.test".to_string(), "169.254.169.254".parse().unwrap()),
            ])),
            sockets: SocketTally::new(4),
        }
    }

    fn asked() -> Asked {
        Asked {
            method: "GET".into(),
            authority: "x".into(),
            path_len: 1,
        }
    }

    async fn decide(rules: &[&str], uri: &str) -> Result<Vec<SocketAddr>, String> {
        let g = grant(rules);
        let t = target(uri).unwrap();
        g.targets(&asked(), &t)
            .await
            .map(|(addrs, _permit)| addrs)
            .map_err(|e| format!("{e:?}"))
    }

    /// Decided by the policy before any socket exists: these never touch the network.
    #[tokio::test]
    async fn requests_are_decided_by_the_policy() {
        let denied = |rules: &'static [&'static str], uri: &'static str| async move {
            decide(rules, uri).await.is_err()
        };
        let loopback = &["connect=127.0.0.1:8080"];
        assert!(!denied(loopback, "http://127.0.0.1:8080/").await);
        assert!(denied(loopback, "http://127.0.0.1:8081/").await);
        assert!(
            denied(loopback, "http://127.0.0.1/").await,
            "port 80 by default"
        );
        assert!(denied(loopback, "http://10.0.0.1:8080/").await);
        // A name needs a name rule, even when it would resolve to an allowed address.
        assert!(denied(loopback, "http://api.test:8080/").await);
        // A name rule never grants a special range: not loopback, not the metadata address.
        assert!(denied(&["connect=api.test:8080"], "http://api.test:8080/").await);
        assert!(denied(&["connect=meta.test:80"], "http://meta.test/").await);
        // Unless an address rule names it too.
        let both = ["connect=api.test:8080", "connect=127.0.0.1:8080"];
        assert_eq!(
            decide(&both, "http://api.test:8080/").await.unwrap(),
            vec!["127.0.0.1:8080".parse().unwrap()]
        );
        // No connect rule: nothing at all.
        assert!(denied(&["listen=127.0.0.1:8080"], "http://127.0.0.1:8080/").await);
        assert!(!denied(&["connect=[::1]:443"], "https://[::1]/").await);
    }
}
