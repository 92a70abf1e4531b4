//! The network audit trail: every allow/deny decision about a guest's socket use, from both the
//! RPC capabilities and the guest's own `wasi:sockets`.
//!
//! Each decision goes to `tracing` (target `cell::audit`, level info, so `-v` shows them) and,
//! when the operator passed `--audit FILE`, to that file as one JSON object per line:
//!
//! ```json
//! {"ts":1718000000.123,"pid":1,"via":"rpc","op":"connect","host":"localhost","ip":"127.0.0.1",
//!  "port":8080,"allowed":false,"rule":null,"reason":"loopback address not named by any rule"}
//! ```
//!
//! `ts` is seconds since the Unix epoch; `host` is the name the guest asked for (only for name
//! lookups); `ip` is null when no address was involved (a name refused before any lookup);
//! `rule` is the rule that allowed the request in `--net` syntax (or a short description of a
//! host-side allowance, e.g. the ephemeral source port of a connect); `reason` says why a request
//! was denied. A line about a job of a daemon client that showed a certificate (`cell serve
//! --client-ca`) also has `"client"`, the client's identity; and each such connection has a
//! line of its own, `"op":"client"` with `pid` null, the client's address, `client` when it was
//! accepted, and `reason` (the TLS error) when its certificate was refused.
//!
//! Bounded: lines are written synchronously through a `BufWriter` flushed after every line, so
//! nothing queues in memory. Writes happen on the supervisor thread (RPC) or on a wasmtime
//! thread (`wasi:sockets` checks) behind a mutex; a line is a few hundred bytes. A write error
//! is reported once on the log and further lines are dropped (and counted), never fatal.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::IpAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::events::{EventBus, EventKind};
use crate::net::policy::Decision;

/// Which path a decision was taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Via {
    /// A `Network`/`UdpSocket` capability call.
    Rpc,
    /// The guest's own `wasi:sockets` (`socket_addr_check`).
    Wasi,
}

/// One audited decision; the JSON line format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// Seconds since the Unix epoch.
    pub ts: f64,
    /// The process that asked.
    pub pid: u32,
    /// RPC capability or `wasi:sockets`.
    pub via: Via,
    /// `connect`, `listen`, `udp`, or `bind` (an ephemeral source port before a connect).
    pub op: &'static str,
    /// The host name asked for, if any.
    pub host: Option<String>,
    /// The address decided on; `None` when the request was refused before any address existed.
    pub ip: Option<IpAddr>,
    /// The port asked for.
    pub port: u16,
    /// Whether the request was allowed.
    pub allowed: bool,
    /// The rule that allowed it (`--net` syntax), or the host-side allowance.
    pub rule: Option<String>,
    /// Why it was denied.
    pub reason: Option<String>,
    /// For op `http`: the method and the length of the path and query (`"method"`,
    /// `"path_len"`), never the path itself, which may carry secrets.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpFacts>,
}

/// What an `http` audit line says about the request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpFacts {
    pub method: String,
    pub path_len: usize,
}

impl AuditEvent {
    /// The event for a policy decision.
    pub fn from_decision(pid: u32, via: Via, decision: &Decision) -> Self {
        AuditEvent {
            ts: now(),
            pid,
            via,
            op: decision.op.as_str(),
            host: decision.name.clone(),
            ip: Some(decision.ip),
            port: decision.port,
            allowed: decision.allowed,
            rule: decision.matched.as_ref().map(ToString::to_string),
            reason: decision.reason.map(|r| r.to_string()),
            http: None,
        }
    }

    /// An allowance that did not come from a policy rule (e.g. the ephemeral source port of a
    /// connect), with a description in place of the rule.
    pub fn allowed(pid: u32, via: Via, op: &'static str, ip: IpAddr, port: u16, why: &str) -> Self {
        AuditEvent {
            ts: now(),
            pid,
            via,
            op,
            host: None,
            ip: Some(ip),
            port,
            allowed: true,
            rule: Some(why.to_string()),
            reason: None,
            http: None,
        }
    }

    /// A denial that did not come from an address check (e.g. a name with no name rule).
    pub fn denied(
        pid: u32,
        via: Via,
        op: &'static str,
        host: Option<&str>,
        port: u16,
        reason: &str,
    ) -> Self {
        AuditEvent {
            ts: now(),
            pid,
            via,
            op,
            host: host.map(crate::text::guest_text),
            ip: None,
            port,
            allowed: false,
            rule: None,
            reason: Some(reason.to_string()),
            http: None,
        }
    }
}

impl AuditEvent {
    /// A directory decision: `op` is `dir` (granted to a process, `pid` the receiver) or
    /// `dir-open` (a subtree asked for by `pid`); `host` carries the guest path or subpath,
    /// `rule` the rights and host path when allowed, `reason` why not.
    pub fn directory(
        pid: u32,
        op: &'static str,
        path: &str,
        outcome: Result<String, String>,
    ) -> Self {
        let allowed = outcome.is_ok();
        let (rule, reason) = match outcome {
            Ok(rule) => (Some(rule), None),
            Err(reason) => (None, Some(reason)),
        };
        AuditEvent {
            ts: now(),
            pid,
            via: Via::Rpc,
            op,
            host: Some(crate::text::guest_text(path)),
            ip: None,
            port: 0,
            allowed,
            rule,
            reason,
            http: None,
        }
    }

    /// This event, about an HTTP request with `method` and a path and query `path_len` long.
    pub fn with_http(mut self, method: &str, path_len: usize) -> Self {
        self.http = Some(HttpFacts {
            method: crate::text::guest_text(method),
            path_len,
        });
        self
    }
}

/// A denial as a `Daemon.events` event: what was asked for, and why not.
fn deny_event(event: &AuditEvent) -> EventKind {
    let target = match (&event.host, event.ip) {
        (Some(host), _) => format!("{host}:{}", event.port),
        (None, Some(ip)) => std::net::SocketAddr::new(ip, event.port).to_string(),
        (None, None) => format!(":{}", event.port),
    };
    EventKind::Deny {
        op: event.op.to_string(),
        target,
        detail: event.reason.clone().unwrap_or_default(),
    }
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| (d.as_millis() as f64) / 1000.0)
        .unwrap_or(0.0)
}

/// The audit sink shared by every process of a run. Cheap to clone; `Send + Sync` because the
/// `wasi:sockets` check runs wherever wasmtime polls it.
#[derive(Clone, Default)]
pub struct Audit {
    file: Option<Arc<AuditFile>>,
    /// Decisions made so far, for the run report (all trees).
    counts: Arc<DecisionCounts>,
    /// The decisions of one tree (a daemon job's report), counted as well.
    tree: Option<Arc<DecisionCounts>>,
    /// The mutual-TLS identity of the daemon client whose job this is: every line says it.
    client: Option<Arc<str>>,
    /// Denials are published here too (`Daemon.events`).
    events: Option<EventBus>,
}

/// Decisions allowed and denied, counted.
#[derive(Default)]
pub(crate) struct DecisionCounts {
    allowed: AtomicU64,
    denied: AtomicU64,
}

impl DecisionCounts {
    /// `(allowed, denied)` so far.
    pub(crate) fn get(&self) -> (u64, u64) {
        (
            self.allowed.load(Ordering::Relaxed),
            self.denied.load(Ordering::Relaxed),
        )
    }

    fn count(&self, allowed: bool) {
        let counter = if allowed { &self.allowed } else { &self.denied };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

struct AuditFile {
    writer: Mutex<BufWriter<File>>,
    /// Lines lost to write errors.
    dropped: AtomicU64,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("file", &self.file.is_some())
            .finish()
    }
}

impl Audit {
    /// Decisions go to `tracing` only.
    pub fn tracing_only() -> Self {
        Audit::default()
    }

    /// Decisions also go to `path` as JSON lines (the file is created or truncated).
    ///
    /// # Errors
    /// The file cannot be created.
    pub fn to_file(path: &Path) -> std::io::Result<Self> {
        Ok(Self::to_writer(File::create(path)?))
    }

    /// Records decisions (and counts them) into an already open file.
    pub fn to_writer(file: File) -> Self {
        Audit {
            file: Some(Arc::new(AuditFile {
                writer: Mutex::new(BufWriter::new(file)),
                dropped: AtomicU64::new(0),
            })),
            counts: Arc::default(),
            tree: None,
            client: None,
            events: None,
        }
    }

    /// Also publishes every denial on `bus`.
    pub(crate) fn with_events(mut self, bus: EventBus) -> Self {
        self.events = Some(bus);
        self
    }

    /// The same sink, also counting into `counts` (one tree's decisions), every line
    /// naming `client` (the identity of the daemon client that started the tree).
    pub(crate) fn for_tree(&self, counts: Arc<DecisionCounts>, client: Option<Arc<str>>) -> Audit {
        Audit {
            tree: Some(counts),
            client,
            ..self.clone()
        }
    }

    /// The same sink, every line naming `client` (a daemon job's lines outside its tree's
    /// processes: the directories it was granted).
    pub(crate) fn with_client(&self, client: Option<Arc<str>>) -> Audit {
        Audit {
            client,
            ..self.clone()
        }
    }

    /// Records one decision.
    pub fn decision(&self, pid: u32, via: Via, decision: &Decision) {
        tracing::info!(target: "cell::audit", pid, via = ?via, "{decision}");
        self.write(&AuditEvent::from_decision(pid, via, decision));
    }

    /// Records an event that is not a policy decision (logged, then written).
    pub fn event(&self, event: AuditEvent) {
        let verdict = if event.allowed { "allow" } else { "deny" };
        tracing::info!(
            target: "cell::audit",
            pid = event.pid,
            via = ?event.via,
            "{verdict} {} {}:{}{}{}",
            event.op,
            event.host.as_deref().map_or_else(
                || event.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                str::to_string
            ),
            event.port,
            event.rule.as_deref().map(|r| format!(" by {r}")).unwrap_or_default(),
            event.reason.as_deref().map(|r| format!(": {r}")).unwrap_or_default(),
        );
        self.write(&event);
    }

    /// How many decisions allowed and denied so far: `(allowed, denied)`.
    pub fn counts(&self) -> (u64, u64) {
        self.counts.get()
    }

    /// Lines that could not be written.
    pub fn dropped(&self) -> u64 {
        self.file
            .as_ref()
            .map_or(0, |f| f.dropped.load(Ordering::Relaxed))
    }

    fn write(&self, event: &AuditEvent) {
        self.counts.count(event.allowed);
        if let Some(tree) = &self.tree {
            tree.count(event.allowed);
        }
        if let (false, Some(bus)) = (event.allowed, &self.events) {
            bus.publish(event.pid, deny_event(event));
        }
        let Some(file) = &self.file else { return };
        self.write_line(file, event, self.client.as_deref());
    }

    /// A mutual-TLS client connection: accepted as `client` (the identity its certificate
    /// gave), or refused during the handshake with `refused` (the TLS error). `pid` is null
    /// (no process), `via` `tls`, `op` `client`, `ip`/`port` the client's address.
    pub(crate) fn connection(
        &self,
        peer: std::net::SocketAddr,
        client: Option<&str>,
        refused: Option<&str>,
    ) {
        /// The line of one connection.
        #[derive(Serialize)]
        struct ConnectionLine<'a> {
            ts: f64,
            pid: Option<u32>,
            via: &'static str,
            op: &'static str,
            ip: IpAddr,
            port: u16,
            allowed: bool,
            rule: Option<&'static str>,
            reason: Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            client: Option<&'a str>,
        }
        match refused {
            None => {
                tracing::info!(target: "cell::audit", "client {peer} is {}", client.unwrap_or("?"))
            }
            Some(why) => tracing::warn!(target: "cell::audit", "client {peer} refused: {why}"),
        }
        let line = ConnectionLine {
            ts: now(),
            pid: None,
            via: "tls",
            op: "client",
            ip: peer.ip(),
            port: peer.port(),
            allowed: refused.is_none(),
            rule: refused.is_none().then_some("--client-ca"),
            reason: refused.map(crate::text::guest_text),
            client,
        };
        if let (Some(file), Ok(json)) = (&self.file, serde_json::to_vec(&line)) {
            Self::append(file, json);
        }
    }

    fn write_line(&self, file: &AuditFile, event: &AuditEvent, client: Option<&str>) {
        /// An event and, when it has one, the client it is on behalf of.
        #[derive(Serialize)]
        struct Line<'a> {
            #[serde(flatten)]
            event: &'a AuditEvent,
            #[serde(skip_serializing_if = "Option::is_none")]
            client: Option<&'a str>,
        }
        if let Ok(json) = serde_json::to_vec(&Line { event, client }) {
            Self::append(file, json);
        }
    }

    /// Appends one JSON line (see the module documentation for the bounds).
    fn append(file: &AuditFile, mut line: Vec<u8>) {
        line.push(b'\n');
        let mut writer = match file.writer.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Err(e) = writer.write_all(&line).and_then(|()| writer.flush()) {
            if file.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
                tracing::warn!("cannot write the audit file: {e}; audit lines are being lost");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::policy::{NetOp, NetPolicy};

    #[test]
    fn writes_one_json_line_per_decision() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.jsonl");
        let audit = Audit::to_file(&path).unwrap();
        let policy = NetPolicy::parse(["connect=127.0.0.1:8080"]).unwrap();
        audit.decision(
            3,
            Via::Rpc,
            &policy.allows(NetOp::Connect, "127.0.0.1".parse().unwrap(), 8080),
        );
        audit.decision(
            3,
            Via::Wasi,
            &policy.allows(NetOp::Connect, "10.0.0.1".parse().unwrap(), 80),
        );
        audit.event(AuditEvent::denied(
            4,
            Via::Rpc,
            "connect",
            Some("example.com"),
            443,
            "no rule allows name lookups",
        ));
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["allowed"], true);
        assert_eq!(lines[0]["rule"], "connect=127.0.0.1:8080");
        assert_eq!(lines[0]["via"], "rpc");
        assert_eq!(lines[1]["allowed"], false);
        assert_eq!(lines[1]["ip"], "10.0.0.1");
        assert_eq!(lines[1]["reason"], "no rule allows it");
        assert_eq!(lines[1]["via"], "wasi");
        assert_eq!(lines[2]["host"], "example.com");
        assert!(lines[2]["ip"].is_null());
        assert_eq!(audit.dropped(), 0);
    }
}
