//! Decisions: the answer to one request, with why, for audit lines and errors.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::Serialize;

use super::*;

/// Why a request was denied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// No rule covers the operation, address and port.
    NoRule,
    /// The address is in a special range that only broad rules (or, for a resolved name, only a
    /// name rule) matched; none named it.
    SpecialRange(SpecialRange),
    /// A NAT64/6to4 address whose embedded IPv4 address is special and not named by any rule.
    EmbeddedSpecialRange {
        /// The embedded address's range.
        range: SpecialRange,
        /// The embedded IPv4 address.
        embedded: Ipv4Addr,
    },
    /// Port 0 is never a connect destination.
    ConnectPortZero,
    /// The unspecified address (`0.0.0.0`, `::`, or any spelling of them) and the rest of
    /// `0.0.0.0/8` are never a destination, whatever the rules say: Linux delivers traffic sent
    /// to them to the local host, so "may bind to any interface" must not become "may reach
    /// localhost".
    NotADestination,
}

impl fmt::Display for DenyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DenyReason::NoRule => f.write_str("no rule allows it"),
            DenyReason::SpecialRange(range) => {
                write!(f, "{range} address not named by any rule")
            }
            DenyReason::EmbeddedSpecialRange { range, embedded } => write!(
                f,
                "embeds {range} IPv4 address {embedded}, which is not named by any rule"
            ),
            DenyReason::ConnectPortZero => f.write_str("port 0 is not a connect destination"),
            DenyReason::NotADestination => {
                f.write_str("the unspecified address (0.0.0.0/8, ::) is never a destination")
            }
        }
    }
}

/// The answer to one request, with enough context for an audit line. `Display` gives e.g.
/// `allow connect 127.0.0.1:8080 by rule 2 (connect=127.0.0.1:8080)` or
/// `deny connect 169.254.169.254:80: link-local address not named by any rule`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the request is allowed.
    pub allowed: bool,
    /// The operation asked for.
    pub op: NetOp,
    /// The host name asked for, for [`NetPolicy::allows_resolved`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The address asked for, as given.
    pub ip: IpAddr,
    /// The port asked for.
    pub port: u16,
    /// The address actually checked, when canonicalisation changed it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub canonical_ip: Option<IpAddr>,
    /// Index into [`NetPolicy::rules`] of the rule that allowed the request.
    pub rule: Option<usize>,
    /// That rule.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub matched: Option<NetRule>,
    /// Why the request was denied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<DenyReason>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allow" } else { "deny" };
        write!(f, "{verdict} {} ", self.op)?;
        match &self.name {
            Some(name) => write!(f, "{name}:{} via {}", self.port, self.ip)?,
            None => write!(f, "{}", SocketAddr::new(self.ip, self.port))?,
        }
        if let Some(canonical) = self.canonical_ip {
            write!(f, " (as {canonical})")?;
        }
        if let (Some(index), Some(rule)) = (self.rule, &self.matched) {
            write!(f, " by rule {index} ({rule})")?;
        }
        if let Some(reason) = &self.reason {
            write!(f, ": {reason}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;

    // ----- serialisation --------------------------------------------------------------------

    #[test]
    fn serialises_for_audit_lines() {
        let p = policy(&["connect=127.0.0.1:8080", "connect=example.com:443"]);
        let json = serde_json::to_string(&p).expect("serialises");
        assert_eq!(
            json,
            r#"{"rules":["connect=127.0.0.1:8080","connect=example.com:443"]}"#
        );
        let back: NetPolicy = serde_json::from_str(&json).expect("deserialises");
        assert_eq!(back, p);

        let allow = p.allows(NetOp::Connect, ip("127.0.0.1"), 8080);
        assert_eq!(
            serde_json::to_string(&allow).expect("serialises"),
            r#"{"allowed":true,"op":"connect","ip":"127.0.0.1","port":8080,"rule":0,"matched":"connect=127.0.0.1:8080"}"#
        );
        let deny = p.allows_resolved(NetOp::Connect, "example.com", ip("::ffff:10.0.0.1"), 443);
        assert_eq!(
            serde_json::to_string(&deny).expect("serialises"),
            r#"{"allowed":false,"op":"connect","name":"example.com","ip":"::ffff:10.0.0.1","port":443,"canonical_ip":"10.0.0.1","rule":null,"reason":{"special_range":"private"}}"#
        );
        assert!(serde_json::from_str::<NetPolicy>(r#"{"rules":["connect=x"]}"#).is_err());
    }
}
