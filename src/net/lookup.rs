//! `wasi:sockets/ip-name-lookup` under the process's network policy: cell's own implementation,
//! replacing wasmtime-wasi's, whose only switch turns lookups on for *every* name (a DNS query
//! is itself a way out: a guest could leak data in the names it asks for).
//!
//! - A name is resolved only if a name rule of the process's policy matches it
//!   ([`NetPolicy::may_resolve`]); otherwise the lookup fails with `access-denied` and no
//!   query is made. IP literals are answered as themselves (no query; the connect is checked
//!   by address rules as usual).
//! - `--resolve NAME=IP` names are answered from the operator's table, never queried. Other
//!   names go to the system resolver on a tokio task, under [`LOOKUP_TIMEOUT`], at most
//!   [`MAX_PENDING_LOOKUPS`] at once per process.
//! - Every address returned is **pinned** to the name: a later `connect` (or UDP send) to it is
//!   allowed when [`NetPolicy::allows_resolved`] allows it for that name and port — i.e. a
//!   name rule's ports, never a special range unless an address rule names it. Addresses no rule
//!   could ever allow for the name are dropped from the answer. Pins last as long as the
//!   process (std resolves, drops the lookup, then connects), so a later re-resolution only
//!   ever adds the addresses it returned, each still judged by the name's rules; at most
//!   [`MAX_PINS`] per process, then lookups fail with `temporary-resolver-failure`.
//! - Audited as op `resolve`: one line per address kept or dropped, one per refused name.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Linker, Resource, ResourceTable, ResourceType};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddress};
use wasmtime_wasi::p2::{DynPollable, Pollable};

use crate::net::audit::{Audit, AuditEvent, Via};
use crate::net::policy::{parse_ip, Decision, NetOp, NetPolicy};

/// How long one lookup by the system resolver may take.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Lookups by the system resolver one process may have in progress.
pub(crate) const MAX_PENDING_LOOKUPS: usize = 4;
/// (name, address) pairs one process may hold pinned.
pub(crate) const MAX_PINS: usize = 256;
/// Addresses kept from one answer.
const MAX_ANSWER: usize = 16;

/// The `wasi:sockets` version wasmtime-wasi defines (guests' 0.2.x imports resolve to it).
const LOOKUP_INTERFACE: &str = "wasi:sockets/ip-name-lookup@0.2.12";

/// The addresses lookups returned to a process, each with the name it was returned for.
/// Shared with the process's `socket_addr_check` (which runs on wasmtime's threads: `Sync`).
#[derive(Default, Debug)]
pub(crate) struct Pins(Mutex<Vec<(String, IpAddr)>>);

impl Pins {
    /// Pins `ip` to `name`; false when the process holds [`MAX_PINS`] already.
    fn pin(&self, name: &str, ip: IpAddr) -> bool {
        let Ok(mut pins) = self.0.lock() else {
            return false;
        };
        if pins.iter().any(|(n, i)| n == name && *i == ip) {
            return true;
        }
        if pins.len() >= MAX_PINS {
            return false;
        }
        pins.push((name.to_string(), ip));
        true
    }

    /// [`Pins::pin`], for tests of the checks that read pins.
    #[cfg(test)]
    pub(crate) fn pin_for_test(&self, name: &str, ip: IpAddr) {
        assert!(self.pin(name, ip));
    }

    fn room(&self) -> bool {
        self.0.lock().map(|p| p.len() < MAX_PINS).unwrap_or(false)
    }

    /// The first allowing decision for `op` on `ip:port` through a name `ip` was pinned to.
    pub(crate) fn allows(
        &self,
        policy: &NetPolicy,
        op: NetOp,
        ip: IpAddr,
        port: u16,
    ) -> Option<Decision> {
        let pins = self.0.lock().ok()?;
        pins.iter()
            .filter(|(_, pinned)| *pinned == ip)
            .map(|(name, _)| policy.allows_resolved(op, name, ip, port))
            .find(|d| d.allowed)
    }
}

/// One process's name lookup: its policy, the operator's pinned names, its pins.
#[derive(Debug)]
pub(crate) struct NameLookup {
    policy: NetPolicy,
    pid: u32,
    audit: Audit,
    pinned_names: Arc<HashMap<String, IpAddr>>,
    pins: Arc<Pins>,
    pending: Arc<AtomicUsize>,
}

impl NameLookup {
    pub(crate) fn new(
        policy: NetPolicy,
        pid: u32,
        audit: Audit,
        pinned_names: Arc<HashMap<String, IpAddr>>,
        pins: Arc<Pins>,
    ) -> Self {
        NameLookup {
            policy,
            pid,
            audit,
            pinned_names,
            pins,
            pending: Arc::default(),
        }
    }

    fn deny(&self, name: &str, reason: &str) -> ErrorCode {
        self.audit.event(AuditEvent::denied(
            self.pid,
            Via::Wasi,
            "resolve",
            Some(name),
            0,
            reason,
        ));
        ErrorCode::AccessDenied
    }

    /// Starts resolving `name`: refused, answered at once, or left to the system resolver.
    fn start(&self, name: &str) -> Result<NameStream, ErrorCode> {
        if let Some(ip) = parse_ip(name) {
            return Ok(NameStream::ready(name, vec![ip]));
        }
        let Ok(name) = crate::net::policy::canonical_name(name) else {
            return Err(ErrorCode::InvalidArgument);
        };
        if !self.policy.may_resolve(&name) {
            return Err(self.deny(&name, "no name rule matches this name"));
        }
        if !self.pins.room() {
            return Err(ErrorCode::TemporaryResolverFailure);
        }
        if let Some(&ip) = self.pinned_names.get(&name) {
            let kept = self.keep(&name, vec![ip]);
            return Ok(NameStream::ready(&name, kept));
        }
        let Some(slot) = Slot::take(&self.pending) else {
            return Err(ErrorCode::TemporaryResolverFailure);
        };
        let query = name.clone();
        let task = tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((query, 0))).await {
                Ok(Ok(addrs)) => Ok(addrs.map(|a| a.ip()).take(MAX_ANSWER * 4).collect()),
                Ok(Err(_)) => Err(ErrorCode::NameUnresolvable),
                Err(_) => Err(ErrorCode::TemporaryResolverFailure),
            }
        });
        Ok(NameStream {
            name,
            state: State::Pending(Task(task)),
        })
    }

    /// The addresses of `name`'s answer that some rule could allow, pinned and audited.
    fn keep(&self, name: &str, answer: Vec<IpAddr>) -> Vec<IpAddr> {
        let mut kept = Vec::new();
        for ip in answer {
            if kept.len() >= MAX_ANSWER || kept.contains(&ip) {
                continue;
            }
            let decision = self.best_decision(name, ip);
            let mut event = AuditEvent::from_decision(self.pid, Via::Wasi, &decision);
            event.op = "resolve";
            event.port = 0;
            if decision.allowed && self.pins.pin(name, ip) {
                kept.push(ip);
            } else if decision.allowed {
                event.allowed = false;
                event.rule = None;
                event.reason = Some(format!("more than {MAX_PINS} resolved addresses pinned"));
            }
            self.audit.event(event);
        }
        kept
    }

    /// An allowing decision for `ip` as an answer for `name` under any rule, or the denial of
    /// the first rule matching the name.
    fn best_decision(&self, name: &str, ip: IpAddr) -> Decision {
        let mut first = None;
        for rule in self.policy.rules() {
            let decision = self
                .policy
                .allows_resolved(rule.op, name, ip, rule.ports.low);
            if decision.allowed {
                return decision;
            }
            first.get_or_insert(decision);
        }
        first.unwrap_or_else(|| self.policy.allows_resolved(NetOp::Connect, name, ip, 0))
    }
}

/// One of a process's [`MAX_PENDING_LOOKUPS`], given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    fn take(pending: &Arc<AtomicUsize>) -> Option<Slot> {
        pending
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_PENDING_LOOKUPS).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(pending.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The guest's `resolve-address-stream`: a lookup in progress, its raw answer, or the answer
/// the guest reads (filtered and pinned). Dropping it aborts a lookup in progress.
pub(crate) struct NameStream {
    name: String,
    state: State,
}

enum State {
    Pending(Task),
    Answered(Result<Vec<IpAddr>, ErrorCode>),
    Ready(Result<std::vec::IntoIter<IpAddr>, ErrorCode>),
}

/// A system-resolver lookup, aborted when dropped.
struct Task(tokio::task::JoinHandle<Result<Vec<IpAddr>, ErrorCode>>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn flatten(
    joined: Result<Result<Vec<IpAddr>, ErrorCode>, tokio::task::JoinError>,
) -> Result<Vec<IpAddr>, ErrorCode> {
    joined.unwrap_or(Err(ErrorCode::TemporaryResolverFailure))
}

impl NameStream {
    fn ready(name: &str, addrs: Vec<IpAddr>) -> Self {
        NameStream {
            name: name.to_string(),
            state: State::Ready(Ok(addrs.into_iter())),
        }
    }

    /// Moves a finished lookup on to its answer (filtered and pinned by `lookup`); false while
    /// the lookup is still in progress.
    fn settle(&mut self, lookup: &NameLookup) -> bool {
        if let State::Pending(task) = &mut self.state {
            if !task.0.is_finished() {
                return false;
            }
            let joined = futures::FutureExt::now_or_never(&mut task.0);
            self.state = State::Answered(joined.map_or(Err(ErrorCode::WouldBlock), flatten));
        }
        if let State::Answered(result) = &mut self.state {
            let result = std::mem::replace(result, Err(ErrorCode::WouldBlock));
            let answer = result.map(|addrs| lookup.keep(&self.name, addrs).into_iter());
            self.state = State::Ready(answer);
        }
        true
    }
}

#[async_trait::async_trait]
impl Pollable for NameStream {
    async fn ready(&mut self) {
        if let State::Pending(task) = &mut self.state {
            let joined = (&mut task.0).await;
            self.state = State::Answered(flatten(joined));
        }
    }
}

/// What the lookup functions need from a store's data.
pub(crate) struct LookupView<'a> {
    pub table: &'a mut ResourceTable,
    /// `None` when the process holds no network: every lookup is refused.
    pub lookup: Option<&'a NameLookup>,
}

impl LookupView<'_> {
    fn resolve_addresses(
        &mut self,
        name: &str,
    ) -> wasmtime::Result<Result<Resource<NameStream>, ErrorCode>> {
        let Some(lookup) = self.lookup else {
            return Ok(Err(ErrorCode::AccessDenied));
        };
        match lookup.start(name) {
            Ok(stream) => Ok(Ok(self.table.push(stream)?)),
            Err(e) => Ok(Err(e)),
        }
    }

    fn next_address(
        &mut self,
        this: &Resource<NameStream>,
    ) -> wasmtime::Result<Result<Option<IpAddress>, ErrorCode>> {
        let stream = self.table.get_mut(this)?;
        let Some(lookup) = self.lookup else {
            return Ok(Err(ErrorCode::AccessDenied));
        };
        if !stream.settle(lookup) {
            return Ok(Err(ErrorCode::WouldBlock));
        }
        Ok(match &mut stream.state {
            State::Ready(Ok(iter)) => Ok(iter.next().map(IpAddress::from)),
            State::Ready(Err(e)) => Err(*e),
            State::Pending(_) | State::Answered(_) => Err(ErrorCode::AccessDenied),
        })
    }
}

/// Replaces wasmtime-wasi's `wasi:sockets/ip-name-lookup` in `linker` by cell's.
///
/// # Errors
/// wasmtime refused the definitions.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> LookupView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut inst = linker.instance(LOOKUP_INTERFACE)?;
    inst.resource(
        "resolve-address-stream",
        ResourceType::host::<NameStream>(),
        move |mut store, rep| {
            view(store.data_mut())
                .table
                .delete(Resource::<NameStream>::new_own(rep))?;
            Ok(())
        },
    )?;
    inst.func_wrap(
        "resolve-addresses",
        move |mut store: wasmtime::StoreContextMut<'_, T>,
              (_network, name): (Resource<wasmtime_wasi::p2::Network>, String)| {
            view(store.data_mut())
                .resolve_addresses(&name)
                .map(|r| (r,))
        },
    )?;
    inst.func_wrap(
        "[method]resolve-address-stream.resolve-next-address",
        move |mut store: wasmtime::StoreContextMut<'_, T>, (this,): (Resource<NameStream>,)| {
            view(store.data_mut()).next_address(&this).map(|r| (r,))
        },
    )?;
    inst.func_wrap(
        "[method]resolve-address-stream.subscribe",
        move |mut store: wasmtime::StoreContextMut<'_, T>, (this,): (Resource<NameStream>,)| {
            let table = view(store.data_mut()).table;
            let pollable: Resource<DynPollable> = wasmtime_wasi::p2::subscribe(table, this)?;
            Ok((pollable,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(rules: &[&str], pinned: &[(&str, &str)]) -> NameLookup {
        let names = pinned
            .iter()
            .map(|(n, ip)| (n.to_string(), ip.parse().unwrap()))
            .collect();
        NameLookup::new(
            NetPolicy::parse(rules).unwrap(),
            1,
            Audit::tracing_only(),
            Arc::new(names),
            Arc::default(),
        )
    }

    fn answer(stream: NameStream) -> Vec<IpAddr> {
        match stream.state {
            State::Ready(Ok(iter)) => iter.collect(),
            _ => panic!("not answered at once"),
        }
    }

    #[test]
    fn only_names_a_rule_matches_are_looked_up() {
        let l = lookup(
            &["connect=api.example.com:443"],
            &[("api.example.com", "93.184.216.34")],
        );
        assert_eq!(
            l.start("other.example.com").err(),
            Some(ErrorCode::AccessDenied)
        );
        assert_eq!(
            l.start("not a name").err(),
            Some(ErrorCode::InvalidArgument)
        );
        let ip: IpAddr = "93.184.216.34".parse().unwrap();
        assert_eq!(answer(l.start("API.example.com.").unwrap()), vec![ip]);
        // Pinned to the name: its rule's port only.
        let policy = &l.policy;
        assert!(l.pins.allows(policy, NetOp::Connect, ip, 443).is_some());
        assert!(l.pins.allows(policy, NetOp::Connect, ip, 80).is_none());
        assert!(l.pins.allows(policy, NetOp::Udp, ip, 443).is_none());
        // Literals are answered as themselves, without a rule.
        assert_eq!(
            answer(l.start("[::1]").unwrap()),
            vec!["::1".parse::<IpAddr>().unwrap()]
        );
    }

    #[test]
    fn a_name_rule_never_yields_a_special_range() {
        let l = lookup(
            &["connect=db.example.com:5432"],
            &[("db.example.com", "10.0.0.5")],
        );
        assert!(answer(l.start("db.example.com").unwrap()).is_empty());
        let ip = "10.0.0.5".parse().unwrap();
        assert!(l.pins.allows(&l.policy, NetOp::Connect, ip, 5432).is_none());
        // Named by an address rule too, it is kept.
        let l = lookup(
            &["connect=db.example.com:5432", "connect=10.0.0.0/8:5432"],
            &[("db.example.com", "10.0.0.5")],
        );
        assert_eq!(answer(l.start("db.example.com").unwrap()), vec![ip]);
    }

    #[test]
    fn pins_are_bounded() {
        let pins = Pins::default();
        for i in 0..MAX_PINS {
            let ip = IpAddr::from([11, 0, (i / 256) as u8, (i % 256) as u8]);
            assert!(pins.pin("a.example.com", ip));
        }
        assert!(!pins.pin("a.example.com", IpAddr::from([12, 0, 0, 1])));
        assert!(!pins.room());
    }
}
