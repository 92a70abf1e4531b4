//! Operations, ports, targets and rules: what one permission says.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::*;

/// A kind of socket operation a rule can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
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
    pub(super) fn accepts_port(self, port: u16) -> bool {
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
pub(super) fn parse_port(s: &str) -> Option<u16> {
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

    pub(super) fn applies_to(&self, op: NetOp, port: u16) -> bool {
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
impl Serialize for NetRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NetRule {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_rule(&text).map_err(serde::de::Error::custom)
    }
}
