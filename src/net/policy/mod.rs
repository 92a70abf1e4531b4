//! `NetPolicy`: the deny-by-default rule set deciding which socket operations a guest may perform.
//!
//! The same decision function answers for sockets the host opens on the guest's behalf (RPC
//! capabilities) and for the guest's own `wasi:sockets`, so there is exactly one place where
//! network authority is granted.
//!
//! # Threat model
//!
//! A sandboxed guest wants to reach something it was not meant to: the cloud metadata service
//! (`169.254.169.254`, which hands out credentials), services bound to localhost, or the private
//! network the host sits in. The operator, meanwhile, wants to write broad rules such as
//! `connect=0.0.0.0/0:443` ("the internet on 443") without granting any of that by accident.
//! Hence:
//!
//! * **Deny by default.** An empty policy ([`NetPolicy::deny_all`], also `Default`) allows
//!   nothing; every permission is a [`NetRule`].
//! * **Special ranges must be named explicitly.** Loopback, private, link-local, multicast and the
//!   other ranges in [`SpecialRange`] are never covered by a rule that merely *contains* them. A
//!   rule covers an address in a special range only if the rule's CIDR lies entirely inside the
//!   (innermost) special range holding that address: `127.0.0.1/32`, `127.0.0.0/8` and
//!   `10.1.0.0/16` name a special range; `0.0.0.0/0`, `::/0`, `*` and `96.0.0.0/3` do not. A rule
//!   that *partially* overlaps a special range therefore covers only its part outside special
//!   ranges: `169.0.0.0/8` covers `169.1.2.3` but not `169.254.169.254`.
//!   Nested special ranges are handled the same way, innermost first: `0.0.0.0/8` names "this
//!   network" but not the unspecified address `0.0.0.0` (which Linux treats as localhost), and
//!   `240.0.0.0/4` does not name the broadcast address `255.255.255.255`.
//! * **One address, one answer.** IPv6 spellings of an IPv4 address are canonicalised to IPv4 before
//!   any check (see [`canonical_ip`]), so `::ffff:127.0.0.1` is judged exactly like `127.0.0.1`:
//!   it cannot slip past a rule that excludes loopback, and a rule allowing `127.0.0.1:8080`
//!   allows `[::ffff:127.0.0.1]:8080` too.
//! * **Translated addresses are checked twice.** A NAT64 (`64:ff9b::/96`) or 6to4 (`2002::/16`)
//!   address is a real IPv6 destination that a gateway turns into an IPv4 one. It must be allowed
//!   as IPv6 by the rules *and*, if the embedded IPv4 address is special, that IPv4 address must
//!   itself be allowed (i.e. named explicitly) for the same operation and port. So
//!   `64:ff9b::a9fe:a9fe` (metadata through NAT64) is denied under `[::/0]`.
//!
//! # Operations and ports
//!
//! * [`NetOp::Connect`]: open a TCP connection to the address. Port 0 is never a valid
//!   destination: such requests are denied and `connect=…:0` does not parse.
//! * [`NetOp::Listen`]: bind a TCP listener to the (local) address. Listening on `0.0.0.0` or `::`
//!   (all interfaces) is the *unspecified* special range and needs e.g. `listen=0.0.0.0:8080`.
//! * [`NetOp::Udp`]: bind a UDP socket to, or send to, the address; the host checks each address it
//!   is asked to use. A guest that binds an ephemeral port on all interfaces and talks to a DNS
//!   server needs `udp=0.0.0.0:0` and `udp=9.9.9.9:53`.
//!
//! For listen and udp, port 0 means "let the OS pick" (ephemeral). Such a request is allowed iff
//! some rule for that operation and address has a port range containing 0: `listen=127.0.0.1:0`
//! allows only ephemeral ports, `listen=127.0.0.1:*` (`*` is `0-65535`) allows ephemeral and any
//! fixed port, `listen=127.0.0.1:8080` does not allow an ephemeral one. The port the OS then
//! picks is not checked again: the guest asked for "any port" and that is what was granted.
//!
//! # Host names
//!
//! A [`Target::Host`] rule (`connect=example.com:443`, or a wildcard `*.example.com`, which
//! matches any name with at least one more label but not `example.com` itself) never matches an
//! IP address in [`NetPolicy::allows`]. The host resolves names itself: it asks
//! [`NetPolicy::allows_name`] (or [`NetPolicy::host_rules_for`]) whether it may resolve the name,
//! and then [`NetPolicy::allows_resolved`] for each address it got. A resolved address is allowed
//! if a CIDR rule allows it (exactly as in `allows`), or if a matching name rule exists and the
//! address is not special. A name that resolves to `127.0.0.1` or `169.254.169.254` is therefore
//! denied unless a CIDR rule names that range for the same operation and port; DNS cannot be used
//! to launder a special address. When [`NetPolicy::has_name_rules`] is false for an operation,
//! the caller should not resolve names for it at all.
//!
//! Name resolution is itself treated as a permission: a DNS query leaves the sandbox, and a
//! guest-chosen name (`<secret>.attacker.example`) is an exfiltration channel even when no
//! connection follows. This matters for [`NetPolicy::intersect`].
//!
//! # Intersection and the never-widen invariant
//!
//! [`NetPolicy::intersect`] computes the policy a child gets when it asks for `request` from a
//! parent holding `grant`: `grant.intersect(&request)`. Invariant: **the result never allows
//! anything that either side denies**, for every question the policy answers (`allows`,
//! `allows_name`, `allows_resolved`). It is computed as a flat rule list (pairwise intersection of
//! rules) rather than a chain of policies that must all agree, so that [`NetPolicy::rules`] and
//! `Display` show what is *actually* allowed and a decision can cite the single rule that allowed
//! it. The result is exact, not merely a subset, for `allows` and `allows_name`; see
//! [`NetPolicy::intersect`] for the argument and for the one deliberate narrowing (name rules
//! only survive against name rules).
//!
//! # Rule syntax (`--net`)
//!
//! `OP=HOST:PORT` where `OP` is `connect`, `listen` or `udp`; `HOST` is an IPv4 address or CIDR
//! (`127.0.0.1`, `93.184.0.0/16`), a bracketed IPv6 address or CIDR (`[::1]`,
//! `[2001:db8::/32]`), a host name (`example.com`, `*.example.com`) or `*` (every address, which
//! by the rules above still never covers a special range); `PORT` is `N`, `N-M` or `*`. The
//! `Display` of a [`NetRule`] prints this syntax back.
//!
//! # Files
//!
//! This file holds [`NetPolicy`] and its decisions; `rule` the operations, ports, targets and
//! rules; `parse` the `--net` grammar and host names; `special` the special ranges and
//! canonical addresses; `decision` the answer to one request; `intersect` the never-widening
//! intersection and its pruning.

mod decision;
mod intersect;
mod special;

pub(crate) use decision::*;
use intersect::*;
// Rules and their grammar are the wire crate's: one definition for host, guests and clients.
pub(crate) use cell_proto::{
    canonical_name, canonical_net, intersect_names, name_covers, normalize_host_name, parse_rule,
    NetOp, NetRule, PortRange, RuleParseError, Target,
};
pub(crate) use special::*;

use std::fmt;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// The most rules one policy may hold: the operator's `--net` flags, a guest's
/// `Network.restrict` request, and the policy an intersection yields. It bounds the work of
/// every policy operation a guest can ask for ([`NetPolicy::try_intersect`] compares at most
/// `MAX_RULES²` pairs), so no call can hold the supervisor thread for long. Rules take CIDRs,
/// port ranges and `*.` wildcards, so 64 is plenty for hand-written policies.
pub(crate) const MAX_RULES: usize = 64;

/// A policy with more than [`MAX_RULES`] rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{} (at most {max} rules per policy)", match .count {
    Some(n) => format!("policy of {n} rules"),
    None => "the intersection has too many rules".to_string(),
})]
pub struct TooManyRules {
    /// How many rules were given, when known.
    pub count: Option<usize>,
    /// [`MAX_RULES`].
    pub max: usize,
}

/// Refuses a count of rules above [`MAX_RULES`] (checked before anything is parsed).
///
/// # Errors
/// [`TooManyRules`] naming the count.
pub(crate) fn check_rule_count(count: usize) -> Result<(), TooManyRules> {
    if count > MAX_RULES {
        return Err(TooManyRules {
            count: Some(count),
            max: MAX_RULES,
        });
    }
    Ok(())
}

/// A deny-by-default set of [`NetRule`]s; see the module docs for the semantics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetPolicy {
    rules: Vec<NetRule>,
}

/// How a rule's target relates to a (canonical) address.
#[derive(PartialEq, Eq)]
pub(super) enum Coverage {
    /// The target does not contain the address (or is a host name).
    No,
    /// The target contains the address but it is special and the target does not name it.
    Broad,
    /// The target covers the address.
    Yes,
}

pub(super) fn coverage(
    target: &Target,
    ip: IpAddr,
    special: Option<(IpNet, SpecialRange)>,
) -> Coverage {
    let named = |net: IpNet| special.is_none_or(|(range, _)| range.contains(&net));
    match target {
        Target::Host(_) => Coverage::No,
        Target::Any if special.is_some() => Coverage::Broad,
        Target::Any => Coverage::Yes,
        Target::Cidr(net) => {
            let net = canonical_net(*net);
            if !net.contains(&ip) {
                Coverage::No
            } else if named(net) {
                Coverage::Yes
            } else {
                Coverage::Broad
            }
        }
    }
}

impl NetPolicy {
    /// The policy that allows nothing (also `NetPolicy::default()`).
    pub fn deny_all() -> Self {
        NetPolicy { rules: Vec::new() }
    }

    /// A policy from rules, kept in the given order (decisions cite rules by index).
    pub fn new(rules: Vec<NetRule>) -> Self {
        NetPolicy { rules }
    }

    /// Parse `--net` rules; the first bad one is the error.
    ///
    /// # Errors
    ///
    /// The [`RuleParseError`] of the first rule that does not parse.
    pub fn parse<I, S>(specs: I) -> Result<Self, RuleParseError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        specs
            .into_iter()
            .map(|s| parse_rule(s.as_ref()))
            .collect::<Result<Vec<_>, _>>()
            .map(NetPolicy::new)
    }

    /// The rules, in the order decisions index them.
    pub fn rules(&self) -> &[NetRule] {
        &self.rules
    }

    /// Whether the policy has no rules and so allows nothing.
    pub fn is_deny_all(&self) -> bool {
        self.rules.is_empty()
    }

    /// May the guest perform `op` on `ip:port`? Only address rules apply; host-name rules are for
    /// [`NetPolicy::allows_resolved`]. For [`NetOp::Connect`] the address is a destination (see
    /// [`NetPolicy::allows_destination`]); for listen and udp it is the local address to bind.
    pub fn allows(&self, op: NetOp, ip: IpAddr, port: u16) -> Decision {
        self.decision(op, None, ip, port, self.check_ip(op, ip, port))
    }

    /// May the guest *send to* (or connect to) `ip:port` with `op`? As [`NetPolicy::allows`],
    /// except that an address that is never a destination ([`DenyReason::NotADestination`]) is
    /// denied whatever the rules say. `udp=0.0.0.0:0` lets a socket bind to every interface; it
    /// never lets it send to `0.0.0.0`, which the kernel would deliver to localhost.
    pub fn allows_destination(&self, op: NetOp, ip: IpAddr, port: u16) -> Decision {
        let result = if never_a_destination(ip) {
            Err(DenyReason::NotADestination)
        } else {
            self.check_ip(op, ip, port)
        };
        self.decision(op, None, ip, port, result)
    }

    /// The name rules granting `op` on `name:port` (name compared case-insensitively, trailing
    /// dot ignored; an invalid name matches nothing), with their indices.
    pub fn host_rules_for<'a>(
        &'a self,
        op: NetOp,
        name: &str,
        port: u16,
    ) -> impl Iterator<Item = (usize, &'a NetRule)> + 'a {
        let query = normalize_host_name(name, false).ok();
        self.rules.iter().enumerate().filter(move |(_, rule)| {
            rule.applies_to(op, port) && rule_matches_name(rule, query.as_deref())
        })
    }

    /// May the host resolve `name` in order to perform `op` on port `port`?
    pub fn allows_name(&self, op: NetOp, name: &str, port: u16) -> bool {
        self.host_rules_for(op, name, port).next().is_some()
    }

    /// May the host resolve `name` for any operation or port? For lookups that carry neither,
    /// such as `wasi:sockets/ip-name-lookup`.
    pub fn may_resolve(&self, name: &str) -> bool {
        let query = normalize_host_name(name, false).ok();
        self.rules
            .iter()
            .any(|rule| rule_matches_name(rule, query.as_deref()))
    }

    /// Whether any name rule exists for `op`; if not, the caller should not resolve names for it.
    pub fn has_name_rules(&self, op: NetOp) -> bool {
        self.rules
            .iter()
            .any(|rule| rule.op == op && matches!(rule.target, Target::Host(_)))
    }

    /// May the guest, having asked for `name`, perform `op` on `ip:port`, where `ip` is an address
    /// the host resolved `name` to? Yes if an address rule allows `ip` (as in
    /// [`NetPolicy::allows`]), or if a name rule matches and `ip` (and any IPv4 address embedded
    /// in it) is not special: a name rule never grants a special range.
    pub fn allows_resolved(&self, op: NetOp, name: &str, ip: IpAddr, port: u16) -> Decision {
        let result = match self.check_ip(op, ip, port) {
            Ok(index) => Ok(index),
            Err(DenyReason::ConnectPortZero) => Err(DenyReason::ConnectPortZero),
            Err(DenyReason::NotADestination) => Err(DenyReason::NotADestination),
            Err(by_ip) => match self.host_rules_for(op, name, port).next() {
                None => Err(by_ip),
                Some((index, _)) => special_reason(ip).map_or(Ok(index), Err),
            },
        };
        self.decision(op, Some(name.to_string()), ip, port, result)
    }

    /// The policy allowing what both `self` and `other` allow; used as
    /// `parent_grant.intersect(&child_request)`.
    ///
    /// **Never widens**: every rule of the result is the intersection of one rule of each side,
    /// so anything it allows, each side allows. It is **exact** for [`NetPolicy::allows`] and
    /// [`NetPolicy::allows_name`]:
    ///
    /// * address rules: two CIDRs nest or are disjoint, so their intersection is the smaller one;
    ///   ports and operations intersect likewise. What makes it subtle is explicitness: the
    ///   smaller CIDR may name a special range that the larger one does not (child
    ///   `127.0.0.1/32` under parent `0.0.0.0/0`). Then the pair yields nothing: every special
    ///   address the smaller CIDR covers is in that range, which the larger one does not name
    ///   (see `narrow`). So the result covers exactly the addresses both rules cover.
    /// * name rules intersect only with name rules (`*.example.com` with `api.example.com` gives
    ///   `api.example.com`). A name rule against an address rule yields nothing: keeping
    ///   `example.com` from a child request under a parent holding only `93.184.0.0/16` would
    ///   let the child make DNS queries (for names it chose, e.g. `*.attacker.example`) that the
    ///   parent could not, and DNS is an exfiltration channel. As `intersect` is symmetric the
    ///   same applies the other way round (parent `example.com:443`, child `0.0.0.0/0:443` gives
    ///   no name rule). This is the one place the result is narrower than "both allow": for
    ///   [`NetPolicy::allows_resolved`] it is exact whenever both sides allow resolving the
    ///   name, which is the only case a caller that resolves only when `allows_name` is true can
    ///   ask about.
    ///
    /// Rules made redundant by another rule of the result are dropped; intersecting with
    /// [`NetPolicy::deny_all`] gives `deny_all`.
    pub fn intersect(&self, other: &NetPolicy) -> NetPolicy {
        NetPolicy::new(prune_redundant(self.pairwise(other), usize::MAX).unwrap_or_default())
    }

    /// [`NetPolicy::intersect`] for policies from a guest: both sides must hold at most
    /// [`MAX_RULES`] rules, and so must the result.
    ///
    /// Work is bounded by the inputs' sizes: at most `MAX_RULES²` rule pairs, each kept or
    /// dropped by comparing it with at most `MAX_RULES` kept rules.
    ///
    /// # Errors
    /// [`TooManyRules`] when an input or the result holds more than [`MAX_RULES`] rules.
    pub fn try_intersect(&self, other: &NetPolicy) -> Result<NetPolicy, TooManyRules> {
        for side in [self, other] {
            check_rule_count(side.rules.len())?;
        }
        prune_redundant(self.pairwise(other), MAX_RULES)
            .map(NetPolicy::new)
            .ok_or(TooManyRules {
                count: None,
                max: MAX_RULES,
            })
    }

    /// The intersection of every rule of `self` with every rule of `other`, unpruned.
    pub(super) fn pairwise(&self, other: &NetPolicy) -> Vec<NetRule> {
        self.rules
            .iter()
            .flat_map(|a| {
                other
                    .rules
                    .iter()
                    .filter_map(move |b| intersect_rules(a, b))
            })
            .collect()
    }

    /// Address check shared by `allows` and `allows_resolved`: the rule index, or why not.
    pub(super) fn check_ip(&self, op: NetOp, ip: IpAddr, port: u16) -> Result<usize, DenyReason> {
        if !op.accepts_port(port) {
            return Err(DenyReason::ConnectPortZero);
        }
        if op == NetOp::Connect && never_a_destination(ip) {
            return Err(DenyReason::NotADestination);
        }
        let ip = canonical_ip(ip);
        let index = self.match_address(op, ip, port)?;
        if let Some(embedded) = embedded_ipv4(ip) {
            if let Some((_, range)) = special_entry(IpAddr::V4(embedded)) {
                self.match_address(op, IpAddr::V4(embedded), port)
                    .map_err(|_| DenyReason::EmbeddedSpecialRange { range, embedded })?;
            }
        }
        Ok(index)
    }

    /// The first address rule covering canonical `ip`; if none, whether a broad rule would have.
    pub(super) fn match_address(
        &self,
        op: NetOp,
        ip: IpAddr,
        port: u16,
    ) -> Result<usize, DenyReason> {
        let special = special_entry(ip);
        let mut broad_match = false;
        for (index, rule) in self.rules.iter().enumerate() {
            if !rule.applies_to(op, port) {
                continue;
            }
            match coverage(&rule.target, ip, special) {
                Coverage::Yes => return Ok(index),
                Coverage::Broad => broad_match = true,
                Coverage::No => {}
            }
        }
        match special {
            Some((_, range)) if broad_match => Err(DenyReason::SpecialRange(range)),
            _ => Err(DenyReason::NoRule),
        }
    }

    pub(super) fn decision(
        &self,
        op: NetOp,
        name: Option<String>,
        ip: IpAddr,
        port: u16,
        result: Result<usize, DenyReason>,
    ) -> Decision {
        let canonical = canonical_ip(ip);
        Decision {
            allowed: result.is_ok(),
            op,
            name,
            ip,
            port,
            canonical_ip: (canonical != ip).then_some(canonical),
            rule: result.ok(),
            matched: result.ok().and_then(|i| self.rules.get(i)).cloned(),
            reason: result.err(),
        }
    }
}

impl From<Vec<NetRule>> for NetPolicy {
    fn from(rules: Vec<NetRule>) -> Self {
        NetPolicy::new(rules)
    }
}

impl FromIterator<NetRule> for NetPolicy {
    fn from_iter<I: IntoIterator<Item = NetRule>>(iter: I) -> Self {
        NetPolicy::new(iter.into_iter().collect())
    }
}

/// `deny all`, or the rules separated by `, `.
impl fmt::Display for NetPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.rules.is_empty() {
            return f.write_str("deny all");
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{rule}")?;
        }
        Ok(())
    }
}

pub(super) fn rule_matches_name(rule: &NetRule, query: Option<&str>) -> bool {
    match (&rule.target, query) {
        (Target::Host(pattern), Some(name)) => name_covers(pattern, name),
        _ => false,
    }
}

/// Whether `ip` (in any spelling: `::ffff:0.0.0.0` too) is the unspecified address or lies in
/// `0.0.0.0/8`, which RFC 1122 forbids as a destination and Linux treats as the local host.
pub(super) fn never_a_destination(ip: IpAddr) -> bool {
    match canonical_ip(ip) {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// Why a resolved address may not be reached through a name rule, if it may not.
pub(super) fn special_reason(ip: IpAddr) -> Option<DenyReason> {
    let ip = canonical_ip(ip);
    if let Some((_, range)) = special_entry(ip) {
        return Some(DenyReason::SpecialRange(range));
    }
    let embedded = embedded_ipv4(ip)?;
    special_entry(IpAddr::V4(embedded))
        .map(|(_, range)| DenyReason::EmbeddedSpecialRange { range, embedded })
}

// ------------------------------------------------------------------------------------------------
// Tests: parsing, special ranges, decisions, intersection, properties
// ------------------------------------------------------------------------------------------------

/// An address as a guest writes it: `127.0.0.1`, `::1` or `[::1]`.
pub(crate) fn parse_ip(text: &str) -> Option<IpAddr> {
    let inner = text
        .strip_prefix('[')
        .and_then(|t| t.strip_suffix(']'))
        .unwrap_or(text);
    inner.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn parses_guest_addresses() {
        assert_eq!(parse_ip("127.0.0.1"), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(parse_ip("[::1]"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("::1"), Some("::1".parse().unwrap()));
        assert_eq!(parse_ip("localhost"), None);
    }

    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;

    pub(super) fn policy(rules: &[&str]) -> NetPolicy {
        NetPolicy::parse(rules).expect("test rules parse")
    }

    pub(super) fn ip(s: &str) -> IpAddr {
        s.parse().expect("test address parses")
    }

    pub(super) fn allowed(p: &NetPolicy, op: NetOp, addr: &str, port: u16) -> bool {
        p.allows(op, ip(addr), port).allowed
    }

    fn parse_err(s: &str) -> cell_proto::RuleErrorKind {
        parse_rule(s).expect_err("rule should not parse").kind
    }

    pub(super) fn connect(p: &NetPolicy, addr: &str, port: u16) -> bool {
        allowed(p, NetOp::Connect, addr, port)
    }

    /// One address in every special range, with the range it should be reported as.
    pub(super) const SPECIAL_SAMPLES: &[(&str, SpecialRange)] = &[
        ("127.0.0.1", SpecialRange::Loopback),
        ("127.255.0.9", SpecialRange::Loopback),
        ("::1", SpecialRange::Loopback),
        ("0.0.0.0", SpecialRange::Unspecified),
        ("::", SpecialRange::Unspecified),
        ("0.1.2.3", SpecialRange::ThisNetwork),
        ("10.1.2.3", SpecialRange::Private),
        ("172.16.0.1", SpecialRange::Private),
        ("172.31.255.254", SpecialRange::Private),
        ("192.168.1.1", SpecialRange::Private),
        ("100.64.0.1", SpecialRange::SharedCgnat),
        ("100.127.255.254", SpecialRange::SharedCgnat),
        ("169.254.169.254", SpecialRange::LinkLocal),
        ("169.254.0.1", SpecialRange::LinkLocal),
        ("fe80::1", SpecialRange::LinkLocal),
        ("224.0.0.1", SpecialRange::Multicast),
        ("239.255.255.250", SpecialRange::Multicast),
        ("ff02::1", SpecialRange::Multicast),
        ("255.255.255.255", SpecialRange::Broadcast),
        ("240.0.0.1", SpecialRange::Reserved),
        ("fc00::1", SpecialRange::UniqueLocal),
        ("fd00:ec2::254", SpecialRange::UniqueLocal),
        ("fec0::1", SpecialRange::SiteLocal),
        ("192.0.0.8", SpecialRange::IetfProtocol),
        ("198.18.0.1", SpecialRange::Benchmarking),
        ("198.19.255.1", SpecialRange::Benchmarking),
        ("2001:2::1", SpecialRange::Benchmarking),
        ("100::1", SpecialRange::Discard),
        ("64:ff9b:1::1", SpecialRange::LocalNat64),
        // IPv6 spellings of special IPv4 addresses.
        ("::ffff:127.0.0.1", SpecialRange::Loopback),
        ("::ffff:169.254.169.254", SpecialRange::LinkLocal),
        ("::ffff:10.0.0.1", SpecialRange::Private),
        ("::127.0.0.1", SpecialRange::Loopback),
        ("::ffff:0.0.0.0", SpecialRange::Unspecified),
    ];

    pub(super) const PUBLIC_SAMPLES: &[&str] = &[
        "93.184.216.34",
        "8.8.8.8",
        "1.1.1.1",
        "169.1.2.3",
        "172.32.0.1",
        "100.128.0.1",
        "192.0.2.1", // documentation: deliberately public
        "2606:4700::1111",
        "2001:db8::1", // documentation: deliberately public
        "::ffff:93.184.216.34",
    ];

    // ----- ports ----------------------------------------------------------------------------

    #[test]
    fn port_zero_means_ephemeral_for_listen_and_udp() {
        let eph = policy(&["listen=127.0.0.1:0", "udp=0.0.0.0:0"]);
        assert!(allowed(&eph, NetOp::Listen, "127.0.0.1", 0));
        assert!(!allowed(&eph, NetOp::Listen, "127.0.0.1", 8080));
        assert!(allowed(&eph, NetOp::Udp, "0.0.0.0", 0));
        assert!(!allowed(&eph, NetOp::Udp, "0.0.0.0", 53));
        let any = policy(&["listen=127.0.0.1:*"]);
        assert!(allowed(&any, NetOp::Listen, "127.0.0.1", 0), "* contains 0");
        assert!(allowed(&any, NetOp::Listen, "127.0.0.1", 8080));
        let fixed = policy(&["listen=127.0.0.1:8080"]);
        assert!(!allowed(&fixed, NetOp::Listen, "127.0.0.1", 0));
        let range = policy(&["listen=127.0.0.1:0-1024"]);
        assert!(allowed(&range, NetOp::Listen, "127.0.0.1", 0));
    }

    #[test]
    fn connect_to_port_zero_is_always_denied() {
        let p = policy(&["connect=*:*", "connect=127.0.0.1:0-10"]);
        for addr in ["93.184.216.34", "127.0.0.1"] {
            let d = p.allows(NetOp::Connect, ip(addr), 0);
            assert!(!d.allowed);
            assert_eq!(d.reason, Some(DenyReason::ConnectPortZero));
        }
        let names = policy(&["connect=example.com:*"]);
        assert!(!names.allows_name(NetOp::Connect, "example.com", 0));
        assert_eq!(
            parse_err("connect=1.2.3.4:0"),
            cell_proto::RuleErrorKind::ConnectPortZero
        );
    }

    #[test]
    fn port_ranges() {
        let p = policy(&["connect=93.184.0.0/16:8000-8100"]);
        assert!(connect(&p, "93.184.216.34", 8000));
        assert!(connect(&p, "93.184.216.34", 8100));
        assert!(!connect(&p, "93.184.216.34", 7999));
        assert!(!connect(&p, "93.184.216.34", 8101));
        assert_eq!(
            PortRange::single(80).intersect(PortRange::new(1, 100).expect("range")),
            Some(PortRange::single(80))
        );
        assert_eq!(PortRange::single(80).intersect(PortRange::single(81)), None);
    }

    // ----- names ----------------------------------------------------------------------------

    #[test]
    fn host_rules_never_match_addresses_directly() {
        let p = policy(&["connect=example.com:443"]);
        assert!(!connect(&p, "93.184.216.34", 443));
        assert!(p.has_name_rules(NetOp::Connect));
        assert!(!p.has_name_rules(NetOp::Udp));
        assert!(!policy(&["connect=0.0.0.0/0:443"]).has_name_rules(NetOp::Connect));
    }

    #[test]
    fn name_matching_is_normalised() {
        let p = policy(&["connect=Example.COM.:443", "udp=example.com:53"]);
        assert_eq!(p.rules()[0].target, Target::Host("example.com".into()));
        assert!(p.allows_name(NetOp::Connect, "EXAMPLE.com.", 443));
        assert!(!p.allows_name(NetOp::Connect, "example.com", 80));
        assert!(!p.allows_name(NetOp::Connect, "www.example.com", 443));
        assert!(!p.allows_name(NetOp::Connect, "example.com.evil", 443));
        assert!(!p.allows_name(NetOp::Connect, "bad..name", 443));
        assert!(!p.allows_name(NetOp::Connect, "*.example.com", 443));
        let hits: Vec<usize> = p
            .host_rules_for(NetOp::Udp, "example.com", 53)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(hits, vec![1]);
        assert!(p.may_resolve("example.com"));
        assert!(!p.may_resolve("example.org"));
    }

    #[test]
    fn wildcard_names() {
        let p = policy(&["connect=*.example.com:443"]);
        assert!(p.allows_name(NetOp::Connect, "api.example.com", 443));
        assert!(p.allows_name(NetOp::Connect, "a.b.example.com", 443));
        assert!(!p.allows_name(NetOp::Connect, "example.com", 443));
        assert!(!p.allows_name(NetOp::Connect, "badexample.com", 443));
        assert!(!p.allows_name(NetOp::Connect, "example.com.evil.net", 443));
    }

    #[test]
    fn resolved_addresses() {
        let p = policy(&["connect=example.com:443"]);
        let ok = p.allows_resolved(NetOp::Connect, "example.com", ip("93.184.216.34"), 443);
        assert!(ok.allowed);
        assert_eq!(ok.rule, Some(0));
        assert_eq!(
            ok.to_string(),
            "allow connect example.com:443 via 93.184.216.34 by rule 0 (connect=example.com:443)"
        );
        // DNS cannot launder special addresses.
        for &(addr, _) in SPECIAL_SAMPLES {
            let d = p.allows_resolved(NetOp::Connect, "example.com", ip(addr), 443);
            assert!(!d.allowed, "{d}");
        }
        let d = p.allows_resolved(NetOp::Connect, "example.com", ip("169.254.169.254"), 443);
        assert_eq!(
            d.to_string(),
            "deny connect example.com:443 via 169.254.169.254: \
             link-local address not named by any rule"
        );
        let nat64 = p.allows_resolved(NetOp::Connect, "example.com", ip("64:ff9b::7f00:1"), 443);
        assert!(matches!(
            nat64.reason,
            Some(DenyReason::EmbeddedSpecialRange { .. })
        ));
        // Wrong name, port or op.
        assert!(
            !p.allows_resolved(NetOp::Connect, "example.org", ip("93.184.216.34"), 443)
                .allowed
        );
        assert!(
            !p.allows_resolved(NetOp::Connect, "example.com", ip("93.184.216.34"), 80)
                .allowed
        );
        assert!(
            !p.allows_resolved(NetOp::Udp, "example.com", ip("93.184.216.34"), 443)
                .allowed
        );
    }

    #[test]
    fn resolved_special_address_needs_explicit_cidr_for_same_op_and_port() {
        let p = policy(&[
            "connect=internal.corp:443",
            "connect=10.0.0.0/8:22",
            "connect=10.1.0.0/16:443",
        ]);
        let d = p.allows_resolved(NetOp::Connect, "internal.corp", ip("10.1.2.3"), 443);
        assert!(d.allowed);
        assert_eq!(d.rule, Some(2), "the CIDR rule naming the range allowed it");
        assert!(
            !p.allows_resolved(NetOp::Connect, "internal.corp", ip("10.2.0.1"), 443)
                .allowed
        );
        // CIDR rules apply to resolved addresses as normal.
        let cidr = policy(&["connect=93.184.0.0/16:443"]);
        assert!(
            cidr.allows_resolved(NetOp::Connect, "example.com", ip("93.184.216.34"), 443)
                .allowed
        );
    }

    // ----- destinations, bounds, canonical names -------------------------------------------

    #[test]
    fn the_unspecified_address_is_never_a_destination() {
        let p = policy(&[
            "udp=0.0.0.0:*",
            "udp=[::]:*",
            "udp=0.0.0.0/8:*",
            "connect=0.0.0.0:*",
            "connect=[::]:*",
        ]);
        for dest in ["0.0.0.0", "::", "::ffff:0.0.0.0", "0.1.2.3", "::0.1.2.3"] {
            let d = p.allows_destination(NetOp::Udp, ip(dest), 53);
            assert_eq!(d.reason, Some(DenyReason::NotADestination), "{dest}: {d}");
            let d = p.allows(NetOp::Connect, ip(dest), 80);
            assert_eq!(d.reason, Some(DenyReason::NotADestination), "{dest}: {d}");
        }
        // Binding there is a different question, still answered by the rules.
        assert!(allowed(&p, NetOp::Udp, "0.0.0.0", 0));
        assert!(allowed(&p, NetOp::Udp, "::", 0));
        // A name resolving to it gets no further through a name rule.
        let named = policy(&["connect=example.com:80"]);
        let d = named.allows_resolved(NetOp::Connect, "example.com", ip("0.0.0.0"), 80);
        assert_eq!(d.reason, Some(DenyReason::NotADestination));
    }

    #[test]
    fn policies_are_bounded_in_rules() {
        let many = |n: usize| {
            NetPolicy::new(
                (0..n)
                    .map(|i| {
                        NetRule::new(
                            NetOp::Connect,
                            Target::Cidr(
                                IpNet::new(IpAddr::V4(Ipv4Addr::new(93, i as u8, 0, 0)), 16)
                                    .unwrap(),
                            ),
                            PortRange::ANY,
                        )
                    })
                    .collect(),
            )
        };
        let any = policy(&["connect=*:*"]);
        assert_eq!(
            any.try_intersect(&many(MAX_RULES)).unwrap(),
            many(MAX_RULES)
        );
        let err = any.try_intersect(&many(MAX_RULES + 1)).unwrap_err();
        assert_eq!(err.count, Some(MAX_RULES + 1));
        assert!(check_rule_count(MAX_RULES).is_ok());
        assert!(check_rule_count(MAX_RULES + 1).is_err());
    }

    /// The worst case a guest can ask for: two policies of `MAX_RULES` rules whose every pair
    /// intersects into a distinct rule. The result is refused, and computing that is bounded
    /// by `MAX_RULES²` pairs (the time is printed for the record; `make bench` is where speed
    /// is judged).
    #[test]
    fn the_worst_intersection_is_bounded() {
        let side = |offset: u16| {
            NetPolicy::new(
                (0..MAX_RULES as u16)
                    .map(|i| {
                        NetRule::new(
                            NetOp::Connect,
                            Target::Any,
                            PortRange::new(offset + i * 300, offset + i * 300 + 400).unwrap(),
                        )
                    })
                    .collect(),
            )
        };
        let (a, b) = (side(1), side(2));
        let started = std::time::Instant::now();
        let result = a.try_intersect(&b);
        eprintln!(
            "worst-case try_intersect (result too large): {:?}",
            started.elapsed()
        );
        match result {
            Ok(r) => assert!(r.rules().len() <= MAX_RULES),
            Err(e) => assert_eq!(e.count, None),
        }
        // Every pair survives but collapses onto MAX_RULES distinct rules: the most comparisons.
        let copies = NetPolicy::new(vec![
            NetRule::new(
                NetOp::Connect,
                Target::Any,
                PortRange::ANY
            );
            MAX_RULES
        ]);
        let distinct = NetPolicy::new(
            (0..MAX_RULES)
                .map(|i| {
                    let net = IpNet::new(IpAddr::V4(Ipv4Addr::new(93, i as u8, 0, 0)), 16).unwrap();
                    NetRule::new(NetOp::Connect, Target::Cidr(net), PortRange::ANY)
                })
                .collect(),
        );
        let started = std::time::Instant::now();
        let r = copies.try_intersect(&distinct).unwrap();
        eprintln!(
            "worst-case try_intersect (all pairs kept): {:?}",
            started.elapsed()
        );
        assert_eq!(r, distinct);
    }

    #[test]
    fn names_have_one_canonical_spelling() {
        assert_eq!(canonical_name("LOCALHOST.").unwrap(), "localhost");
        assert_eq!(
            canonical_name("Api.Example.COM").unwrap(),
            "api.example.com"
        );
        assert!(canonical_name("*.example.com").is_err());
        assert!(canonical_name(&"x".repeat(300)).is_err());
        assert!(canonical_name("a..b").is_err());
        let p = policy(&["connect=localhost:80"]);
        assert!(p.allows_name(NetOp::Connect, "LOCALHOST.", 80));
    }

    // ----- properties ------------------------------------------------------------------------

    mod props {
        use super::*;
        use crate::net::policy::intersect::tests::{check_intersection, probe_ips};
        use proptest::prelude::*;

        /// Bases that sit on and around the special ranges, so random prefixes land inside,
        /// across and around them.
        const BASES: &[&str] = &[
            "0.0.0.0",
            "10.1.2.3",
            "93.184.216.34",
            "127.0.0.1",
            "169.254.169.254",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.1.1",
            "224.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fe80::1",
            "fd00:ec2::254",
            "2606:4700::1111",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
        ];
        const NAMES: &[&str] = &["example.com", "*.example.com", "api.example.com", "x.org"];
        const PORT_EDGES: &[u16] = &[0, 1, 22, 80, 443, 1024, 8080, 65535];

        fn op() -> impl Strategy<Value = NetOp> {
            prop::sample::select(NetOp::ALL.to_vec())
        }

        fn ports() -> impl Strategy<Value = PortRange> {
            (
                prop::sample::select(PORT_EDGES),
                prop::sample::select(PORT_EDGES),
            )
                .prop_map(|(a, b)| PortRange::new(a.min(b), a.max(b)).unwrap_or(PortRange::ANY))
        }

        fn target() -> impl Strategy<Value = Target> {
            prop_oneof![
                Just(Target::Any),
                (prop::sample::select(BASES), 0u8..=128).prop_map(|(base, len)| {
                    let addr: IpAddr = base.parse().unwrap();
                    let max = if addr.is_ipv4() { 32 } else { 128 };
                    Target::Cidr(IpNet::new(addr, len % (max + 1)).unwrap().trunc())
                }),
                prop::sample::select(NAMES).prop_map(|n| Target::Host(n.to_string())),
            ]
        }

        fn rule() -> impl Strategy<Value = NetRule> {
            (op(), target(), ports()).prop_filter_map("valid rule", |(op, target, ports)| {
                let listen_on_name = op == NetOp::Listen && matches!(target, Target::Host(_));
                let connect_zero = op == NetOp::Connect && ports == PortRange::single(0);
                (!listen_on_name && !connect_zero).then(|| NetRule::new(op, target, ports))
            })
        }

        fn policy_strategy() -> impl Strategy<Value = NetPolicy> {
            prop::collection::vec(rule(), 0..6).prop_map(NetPolicy::new)
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(64))]

            /// `restrict(a, b)` allows exactly what both allow, for every operation.
            #[test]
            fn intersection_is_exact(p in policy_strategy(), q in policy_strategy()) {
                check_intersection(&p, &q, &probe_ips());
                if let Ok(bounded) = p.try_intersect(&q) {
                    prop_assert_eq!(bounded, p.intersect(&q));
                }
            }

            /// A rule that merely contains a special range never covers it, in any spelling of
            /// its addresses.
            #[test]
            fn broad_rules_never_cover_special_ranges(
                op in op(),
                len in 0u8..8,
                index in 0usize..SPECIAL_RANGES.len(),
                host in any::<u32>(),
            ) {
                let (range, _) = SPECIAL_RANGES[index];
                prop_assume!(range.prefix_len() > len);
                let broad = NetPolicy::new(vec![NetRule::new(
                    op,
                    Target::Cidr(IpNet::new(range.addr(), len).unwrap().trunc()),
                    PortRange::ANY,
                )]);
                let addr = match range {
                    IpNet::V4(net) => {
                        let bits = 32 - u32::from(net.prefix_len());
                        let mask = if bits == 0 { 0 } else { u32::MAX >> (32 - bits) };
                        IpAddr::V4(Ipv4Addr::from(u32::from(net.network()) | (host & mask)))
                    }
                    IpNet::V6(net) => {
                        let bits = 128 - u32::from(net.prefix_len());
                        let mask = if bits >= 32 { u128::from(u32::MAX) } else { (1u128 << bits) - 1 };
                        IpAddr::V6(Ipv6Addr::from(u128::from(net.network()) | (u128::from(host) & mask)))
                    }
                };
                let mut spellings = vec![addr];
                if let IpAddr::V4(v4) = addr {
                    spellings.push(IpAddr::V6(v4.to_ipv6_mapped()));
                    if u32::from(v4) > 1 {
                        spellings.push(IpAddr::V6(v4.to_ipv6_compatible()));
                    }
                }
                for spelled in spellings {
                    let d = broad.allows(op, spelled, 80);
                    prop_assert!(!d.allowed, "{} allowed {}: {}", broad, spelled, d);
                }
                // Translated spellings (NAT64, 6to4) under the broadest IPv6 rule.
                if let IpAddr::V4(v4) = addr {
                    let v6_broad = NetPolicy::new(vec![NetRule::new(
                        op,
                        Target::Cidr("::/0".parse().unwrap()),
                        PortRange::ANY,
                    )]);
                    let [a, b, c, d] = v4.octets();
                    let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]));
                    let six_to_four = Ipv6Addr::new(0x2002, u16::from_be_bytes([a, b]), u16::from_be_bytes([c, d]), 0, 0, 0, 0, 1);
                    for spelled in [nat64, six_to_four] {
                        let decision = v6_broad.allows(op, IpAddr::V6(spelled), 80);
                        prop_assert!(!decision.allowed, "::/0 allowed {}: {}", spelled, decision);
                    }
                }
            }
        }
    }
}
