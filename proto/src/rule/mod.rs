//! Network rules: operations, ports, targets, and the `--net` rule grammar (`grammar.rs`) —
//! the one definition of what a rule says, for the host's policy, the guest SDK and clients.
//! What a set of rules *allows* (special ranges, decisions, intersection) is the host's
//! `NetPolicy`.

mod grammar;

pub use grammar::*;

use std::fmt;
use std::str::FromStr;

use ipnet::IpNet;

use crate::cell_capnp::{net_policy, net_rule, NetOp as WireNetOp};
use crate::reason::{CellError, Reason};

/// A kind of socket operation a rule can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum NetOp {
    /// Open a TCP connection to a remote address.
    Connect,
    /// Bind a TCP listener to a local address.
    Listen,
    /// Bind a UDP socket to, or exchange datagrams with, an address.
    Udp,
}

impl NetOp {
    /// Every operation, in syntax order.
    pub const ALL: [NetOp; 3] = [NetOp::Connect, NetOp::Listen, NetOp::Udp];

    /// The rule-syntax spelling: `connect`, `listen` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            NetOp::Connect => "connect",
            NetOp::Listen => "listen",
            NetOp::Udp => "udp",
        }
    }

    /// Port 0 means "let the OS pick" for listen/udp, but is never a connect destination.
    pub fn accepts_port(self, port: u16) -> bool {
        !(self == NetOp::Connect && port == 0)
    }
}

impl fmt::Display for NetOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NetOp {
    type Err = RuleErrorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NetOp::ALL
            .into_iter()
            .find(|op| op.as_str() == s)
            .ok_or_else(|| RuleErrorKind::UnknownOp(s.to_string()))
    }
}

/// An inclusive port range. `*` (= `0-65535`) is [`PortRange::ANY`]; see the module docs for
/// what port 0 means.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortRange {
    /// Lowest port in the range.
    pub low: u16,
    /// Highest port in the range (inclusive).
    pub high: u16,
}

impl PortRange {
    /// Every port, including 0 ("ephemeral" for listen/udp).
    pub const ANY: PortRange = PortRange {
        low: 0,
        high: u16::MAX,
    };

    /// The range holding only `port`.
    pub const fn single(port: u16) -> Self {
        PortRange {
            low: port,
            high: port,
        }
    }

    /// `low..=high`, or `None` if the range is reversed.
    pub fn new(low: u16, high: u16) -> Option<Self> {
        (low <= high).then_some(PortRange { low, high })
    }

    /// Whether `port` lies in the range.
    pub fn contains(self, port: u16) -> bool {
        self.low <= port && port <= self.high
    }

    /// Whether every port of `other` lies in `self`.
    pub fn covers(self, other: PortRange) -> bool {
        self.low <= other.low && other.high <= self.high
    }

    /// The ports in both ranges, if any.
    pub fn intersect(self, other: PortRange) -> Option<PortRange> {
        PortRange::new(self.low.max(other.low), self.high.min(other.high))
    }

    /// Whether this is `*`.
    pub fn is_any(self) -> bool {
        self == PortRange::ANY
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_any() {
            f.write_str("*")
        } else if self.low == self.high {
            write!(f, "{}", self.low)
        } else {
            write!(f, "{}-{}", self.low, self.high)
        }
    }
}

impl FromStr for PortRange {
    type Err = RuleErrorKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err(RuleErrorKind::MissingPort);
        }
        if s == "*" {
            return Ok(PortRange::ANY);
        }
        let bad = || RuleErrorKind::BadPort(s.to_string());
        match s.split_once('-') {
            None => parse_port(s).map(PortRange::single).ok_or_else(bad),
            Some((low, high)) => {
                let low = parse_port(low).ok_or_else(bad)?;
                let high = parse_port(high).ok_or_else(bad)?;
                PortRange::new(low, high).ok_or(RuleErrorKind::ReversedPorts(low, high))
            }
        }
    }
}

/// Digits only: `u16::from_str` would also accept `+80`.
pub(crate) fn parse_port(s: &str) -> Option<u16> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// What a rule is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Target {
    /// `*`: every address, IPv4 and IPv6. Like any broad rule it never covers a special range.
    Any,
    /// An address range. A bare address is a /32 or /128.
    Cidr(IpNet),
    /// A DNS name, lowercase ASCII without trailing dot, or a wildcard `*.example.com` (any name
    /// with at least one more label). Never matches an address directly; see the module docs.
    Host(String),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Any => f.write_str("*"),
            Target::Host(name) => f.write_str(name),
            Target::Cidr(IpNet::V4(net)) if net.prefix_len() == 32 => write!(f, "{}", net.addr()),
            Target::Cidr(IpNet::V4(net)) => write!(f, "{net}"),
            Target::Cidr(IpNet::V6(net)) if net.prefix_len() == 128 => {
                write!(f, "[{}]", net.addr())
            }
            Target::Cidr(IpNet::V6(net)) => write!(f, "[{net}]"),
        }
    }
}

/// One permission: `op` on `target` for `ports`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NetRule {
    /// The operation granted.
    pub op: NetOp,
    /// The addresses (or name) it is granted for.
    pub target: Target,
    /// The ports it is granted for.
    pub ports: PortRange,
}

impl NetRule {
    /// A rule from its parts (no validation: build from [`parse_rule`] for user input).
    pub fn new(op: NetOp, target: Target, ports: PortRange) -> Self {
        NetRule { op, target, ports }
    }

    /// Whether the rule is about `op` on `port` (its target still has to match).
    pub fn applies_to(&self, op: NetOp, port: u16) -> bool {
        self.op == op && self.ports.contains(port) && op.accepts_port(port)
    }
}

impl fmt::Display for NetRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}:{}", self.op, self.target, self.ports)
    }
}

impl FromStr for NetRule {
    type Err = RuleParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_rule(s)
    }
}

/// Serialised as its rule syntax, e.g. `"connect=127.0.0.1:8080"`.
#[cfg(feature = "serde")]
impl serde::Serialize for NetRule {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for NetRule {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <String as serde::Deserialize>::deserialize(deserializer)?;
        parse_rule(&text).map_err(serde::de::Error::custom)
    }
}

/// Constructors from parts, through the one grammar (so they accept exactly what `--net`
/// accepts): `NetRule::connect("127.0.0.1", 8080)`, `NetRule::listen("::1", PortRange::ANY)`.
/// IPv6 addresses and CIDRs may be given with or without brackets.
impl NetRule {
    /// Parses the `--net` syntax (`connect=127.0.0.1:8080`); the same as `str::parse`.
    pub fn parse(s: &str) -> Result<NetRule, RuleParseError> {
        parse_rule(s)
    }

    /// `connect=HOST:PORTS`.
    pub fn connect(host: &str, ports: impl Into<PortRange>) -> Result<NetRule, RuleParseError> {
        NetRule::from_parts(NetOp::Connect, host, ports.into())
    }

    /// `listen=ADDRESS:PORTS`.
    pub fn listen(address: &str, ports: impl Into<PortRange>) -> Result<NetRule, RuleParseError> {
        NetRule::from_parts(NetOp::Listen, address, ports.into())
    }

    /// `udp=ADDRESS:PORTS`.
    pub fn udp(address: &str, ports: impl Into<PortRange>) -> Result<NetRule, RuleParseError> {
        NetRule::from_parts(NetOp::Udp, address, ports.into())
    }

    /// `OP=HOST:PORTS`, validated by [`parse_rule`].
    pub fn from_parts(op: NetOp, host: &str, ports: PortRange) -> Result<NetRule, RuleParseError> {
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_string()
        };
        parse_rule(&format!("{op}={host}:{ports}"))
    }

    /// Reads a rule from its wire form (`NetRule` in the schema), through the same grammar.
    ///
    /// # Errors
    /// `bad-policy: …` for a rule that does not parse, `bad-request: …` for a malformed message.
    pub fn read(r: net_rule::Reader<'_>) -> Result<NetRule, CellError> {
        let op = NetOp::from(r.get_op().map_err(|e| CellError::bad_request(e.into()))?);
        let host = r
            .get_host()
            .and_then(|h| Ok(h.to_str()?))
            .map_err(CellError::bad_request)?;
        let (low, high) = (r.get_port_low(), r.get_port_high());
        let ports = PortRange::new(low, high).ok_or_else(|| {
            CellError::new(
                Reason::BadPolicy,
                RuleParseError {
                    rule: format!("{op}={host}:{low}-{high}"),
                    kind: RuleErrorKind::ReversedPorts(low, high),
                },
            )
        })?;
        NetRule::from_parts(op, host, ports).map_err(|e| CellError::new(Reason::BadPolicy, e))
    }

    /// Writes the rule in its wire form: the host as in `--net` but without IPv6 brackets
    /// (`127.0.0.1`, `::1`, `10.0.0.0/8`, `example.com`, `*`).
    pub fn write(&self, mut b: net_rule::Builder<'_>) {
        b.set_op(self.op.into());
        let host = self.target.to_string();
        let host = match &self.target {
            Target::Cidr(_) => host.trim_start_matches('[').trim_end_matches(']'),
            _ => host.as_str(),
        };
        b.set_host(host);
        b.set_port_low(self.ports.low);
        b.set_port_high(self.ports.high);
    }
}

impl From<u16> for PortRange {
    fn from(port: u16) -> Self {
        PortRange::single(port)
    }
}

/// `8000..=8080`. A reversed range is kept as given, so that the constructors refuse it with
/// the grammar's "reversed" error instead of silently swapping it.
impl From<std::ops::RangeInclusive<u16>> for PortRange {
    fn from(range: std::ops::RangeInclusive<u16>) -> Self {
        PortRange {
            low: *range.start(),
            high: *range.end(),
        }
    }
}

impl From<WireNetOp> for NetOp {
    fn from(op: WireNetOp) -> Self {
        match op {
            WireNetOp::Connect => NetOp::Connect,
            WireNetOp::Listen => NetOp::Listen,
            WireNetOp::Udp => NetOp::Udp,
        }
    }
}

impl From<NetOp> for WireNetOp {
    fn from(op: NetOp) -> Self {
        match op {
            NetOp::Connect => WireNetOp::Connect,
            NetOp::Listen => WireNetOp::Listen,
            NetOp::Udp => WireNetOp::Udp,
        }
    }
}

/// Reads a policy's rules (`NetPolicy` in the schema), refusing more than `max_rules` before
/// any rule is parsed.
///
/// # Errors
/// `limit: …` past `max_rules`, `bad-policy: …` for a bad rule.
pub fn read_rules(
    policy: net_policy::Reader<'_>,
    max_rules: usize,
) -> Result<Vec<NetRule>, CellError> {
    let rules = policy.get_rules().map_err(CellError::bad_request)?;
    if rules.len() as usize > max_rules {
        return Err(CellError::new(
            Reason::Limit,
            format!(
                "policy of {} rules (at most {max_rules} rules per policy)",
                rules.len()
            ),
        ));
    }
    rules.iter().map(NetRule::read).collect()
}

/// Writes `rules` as a policy.
pub fn write_rules(rules: &[NetRule], b: net_policy::Builder<'_>) -> Result<(), CellError> {
    let mut list = b.init_rules(crate::spawn::list_len(rules.len(), "rules")?);
    for (i, rule) in rules.iter().enumerate() {
        rule.write(list.reborrow().get(i as u32));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constructors_go_through_the_grammar() {
        let r = NetRule::connect("127.0.0.1", 8080).expect("valid");
        assert_eq!(r.to_string(), "connect=127.0.0.1:8080");
        let r = NetRule::listen("::1", PortRange::ANY).expect("valid");
        assert_eq!(r.to_string(), "listen=[::1]:*");
        let r = NetRule::udp("[::1]", 1000..=2000).expect("valid");
        assert_eq!(r.to_string(), "udp=[::1]:1000-2000");
        assert!(NetRule::connect("127.0.0.1", 0).is_err(), "connect port 0");
        assert!(
            NetRule::listen("example.com", 80).is_err(),
            "listen on a name"
        );
        assert!(NetRule::connect("10.0.0.1/8", 80).is_err(), "host bits");
        let reversed = PortRange { low: 9, high: 8 };
        assert!(NetRule::connect("127.0.0.1", reversed).is_err(), "reversed");
    }

    #[test]
    fn rules_round_trip_through_the_wire() {
        let rules: Vec<NetRule> = [
            "connect=127.0.0.1:8080",
            "connect=[::1]:1-1024",
            "udp=10.0.0.0/8:*",
            "connect=*.example.com:443",
            "listen=[2001:db8::/32]:0",
        ]
        .iter()
        .map(|s| s.parse().expect("valid"))
        .collect();
        let mut message = capnp::message::Builder::new_default();
        write_rules(&rules, message.init_root()).expect("write");
        let r = message.get_root_as_reader().expect("root");
        assert_eq!(read_rules(r, 64).expect("read"), rules);
        let r = message.get_root_as_reader().expect("root");
        assert_eq!(
            read_rules(r, 4).err().map(|e| e.reason),
            Some(Reason::Limit)
        );
    }
}
