//! The `--net` rule syntax: parsing rules and host names (the one grammar of cell).

use std::net::{IpAddr, Ipv4Addr};

use ipnet::{IpNet, Ipv4Net};

use super::*;

/// A `--net` rule that did not parse. Displays as
/// `bad --net rule "connect=10.0.0.0/33:80": invalid CIDR "10.0.0.0/33" (prefix length 33 > 32)`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad --net rule {rule:?}: {kind}")]
pub struct RuleParseError {
    /// The whole rule as given.
    pub rule: String,
    /// What is wrong with it, naming the bad part.
    pub kind: RuleErrorKind,
}

/// What is wrong with a `--net` rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleErrorKind {
    /// No `=` between operation and target.
    #[error("missing \"=\" (write OP=HOST:PORT, e.g. connect=example.com:443)")]
    MissingEquals,
    /// The operation is not one of connect, listen, udp.
    #[error("unknown operation {0:?} (expected connect, listen or udp)")]
    UnknownOp(String),
    /// Nothing before the port.
    #[error("missing address or host name (write OP=HOST:PORT)")]
    MissingTarget,
    /// No `:PORT`.
    #[error("missing port (write HOST:PORT, PORT may be N, N-M or *)")]
    MissingPort,
    /// Something other than `:PORT` after a bracketed IPv6 address.
    #[error("expected \":PORT\" after \"]\" but found {0:?}")]
    JunkAfterBracket(String),
    /// The port is not `N`, `N-M` or `*`.
    #[error("invalid port {0:?} (PORT may be N, N-M or *, with N at most 65535)")]
    BadPort(String),
    /// `N-M` with `N > M`.
    #[error("port range {0}-{1} is reversed")]
    ReversedPorts(u16, u16),
    /// `connect=…:0`.
    #[error("port 0 means \"let the OS pick\" and only makes sense for listen and udp")]
    ConnectPortZero,
    /// A malformed address or CIDR.
    #[error("invalid CIDR {text:?} ({why})")]
    BadCidr {
        /// The offending part.
        text: String,
        /// Why it is invalid.
        why: String,
    },
    /// A CIDR whose address has bits set beyond the prefix, e.g. `10.0.0.1/8`.
    #[error("CIDR {text:?} has host bits set (did you mean {suggestion}?)")]
    HostBits {
        /// The offending part.
        text: String,
        /// The CIDR with host bits cleared.
        suggestion: String,
    },
    /// An IPv6 address without brackets, which would be ambiguous with the port.
    #[error("IPv6 address in {0:?} must be in brackets, e.g. [::1]:443 or [2001:db8::/32]:443")]
    UnbracketedIpv6(String),
    /// `[` without `]`.
    #[error("unclosed \"[\" in {0:?}")]
    UnclosedBracket(String),
    /// A malformed host name.
    #[error("invalid host name {text:?} ({why})")]
    BadHost {
        /// The offending part.
        text: String,
        /// Why it is invalid.
        why: String,
    },
    /// `listen=NAME:…`: a listener binds a local address, which a DNS name does not denote.
    #[error("listen rules need a local address, not the host name {0:?}")]
    ListenOnHost(String),
}

/// Parse one `--net` rule, e.g. `connect=93.184.0.0/16:443`, `listen=127.0.0.1:0`,
/// `connect=[::1]:443`, `connect=*.example.com:443`, `udp=127.0.0.1:*`.
///
/// Host names are lowercased and lose a trailing dot; IPv4-mapped IPv6 CIDRs
/// (`[::ffff:127.0.0.1]`) are stored as IPv4. `parse_rule(&rule.to_string())` gives `rule` back.
///
/// # Errors
///
/// A [`RuleParseError`] quoting the rule and naming the bad part.
pub fn parse_rule(s: &str) -> Result<NetRule, RuleParseError> {
    parse_rule_kind(s).map_err(|kind| RuleParseError {
        rule: s.to_string(),
        kind,
    })
}

pub(crate) fn parse_rule_kind(s: &str) -> Result<NetRule, RuleErrorKind> {
    let (op, rest) = s.split_once('=').ok_or(RuleErrorKind::MissingEquals)?;
    let op: NetOp = op.parse()?;
    let (host, port) = split_host_port(rest)?;
    let ports: PortRange = port.parse()?;
    let target = match host {
        HostPart::Bracketed(inner) => parse_bracketed(inner)?,
        HostPart::Plain(text) => parse_plain_target(text)?,
    };
    if op == NetOp::Connect && ports == PortRange::single(0) {
        return Err(RuleErrorKind::ConnectPortZero);
    }
    if let (NetOp::Listen, Target::Host(name)) = (op, &target) {
        return Err(RuleErrorKind::ListenOnHost(name.clone()));
    }
    Ok(NetRule { op, target, ports })
}

pub(crate) enum HostPart<'a> {
    Bracketed(&'a str),
    Plain(&'a str),
}

/// Split `HOST:PORT` / `[V6]:PORT`. The port is after the *last* colon of a plain host; a plain
/// host with a colon left in it is an unbracketed IPv6 address.
pub(crate) fn split_host_port(rest: &str) -> Result<(HostPart<'_>, &str), RuleErrorKind> {
    if let Some(after_open) = rest.strip_prefix('[') {
        let (inner, after) = after_open
            .split_once(']')
            .ok_or_else(|| RuleErrorKind::UnclosedBracket(rest.to_string()))?;
        if after.is_empty() {
            return Err(RuleErrorKind::MissingPort);
        }
        let port = after
            .strip_prefix(':')
            .ok_or_else(|| RuleErrorKind::JunkAfterBracket(after.to_string()))?;
        return Ok((HostPart::Bracketed(inner), port));
    }
    let (host, port) = rest.rsplit_once(':').ok_or(RuleErrorKind::MissingPort)?;
    if host.contains(':') {
        return Err(RuleErrorKind::UnbracketedIpv6(rest.to_string()));
    }
    if host.is_empty() {
        return Err(RuleErrorKind::MissingTarget);
    }
    Ok((HostPart::Plain(host), port))
}

pub(crate) fn parse_bracketed(inner: &str) -> Result<Target, RuleErrorKind> {
    if inner.is_empty() {
        return Err(RuleErrorKind::MissingTarget);
    }
    let net = parse_cidr(inner)?;
    if !matches!(net, IpNet::V6(_)) {
        return Err(RuleErrorKind::BadCidr {
            text: inner.to_string(),
            why: "brackets are for IPv6; write IPv4 addresses without them".to_string(),
        });
    }
    Ok(Target::Cidr(canonical_net(net)))
}

pub(crate) fn parse_plain_target(text: &str) -> Result<Target, RuleErrorKind> {
    if text == "*" {
        return Ok(Target::Any);
    }
    if text.contains('/') || text.parse::<Ipv4Addr>().is_ok() {
        let net = parse_cidr(text)?;
        if matches!(net, IpNet::V6(_)) {
            return Err(RuleErrorKind::UnbracketedIpv6(text.to_string()));
        }
        return Ok(Target::Cidr(net));
    }
    normalize_host_name(text, true)
        .map(Target::Host)
        .map_err(|why| RuleErrorKind::BadHost {
            text: text.to_string(),
            why: why.to_string(),
        })
}

/// `ADDR` or `ADDR/LEN` (either family), rejecting host bits and over-long prefixes.
pub(crate) fn parse_cidr(text: &str) -> Result<IpNet, RuleErrorKind> {
    let bad = |why: String| RuleErrorKind::BadCidr {
        text: text.to_string(),
        why,
    };
    let (addr_text, len_text) = match text.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (text, None),
    };
    let addr: IpAddr = addr_text
        .parse()
        .map_err(|_| bad(format!("{addr_text:?} is not an IP address")))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let len = match len_text {
        None => max,
        Some(l) => parse_prefix_len(l).ok_or_else(|| bad(format!("bad prefix length {l:?}")))?,
    };
    if len > max {
        return Err(bad(format!("prefix length {len} > {max}")));
    }
    let net = IpNet::new(addr, len).map_err(|_| bad(format!("prefix length {len} > {max}")))?;
    if net.trunc() != net {
        return Err(RuleErrorKind::HostBits {
            text: text.to_string(),
            suggestion: Target::Cidr(net.trunc()).to_string(),
        });
    }
    Ok(net)
}

pub(crate) fn parse_prefix_len(s: &str) -> Option<u8> {
    if s.is_empty() || s.len() > 3 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The one spelling of a host name that is matched, resolved and audited: lower case, without
/// a trailing dot (`LOCALHOST.` is `localhost`). Resolving the name as the guest spelled it
/// could ask a different question (`localhost.` is not in `/etc/hosts` and would go to DNS).
///
/// # Errors
/// Why `name` is not a valid DNS name (wildcards are not names).
pub fn canonical_name(name: &str) -> Result<String, &'static str> {
    normalize_host_name(name, false)
}

/// Lowercase, drop one trailing dot, validate. `wildcard_ok` allows a leading `*.` label.
pub fn normalize_host_name(text: &str, wildcard_ok: bool) -> Result<String, &'static str> {
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    let base = match name.strip_prefix("*.") {
        Some(base) if wildcard_ok => base,
        Some(_) => return Err("wildcards are only allowed in rules"),
        None => name.as_str(),
    };
    validate_dns_name(base)?;
    Ok(name)
}

pub(crate) fn validate_dns_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty name");
    }
    if name.len() > 253 {
        return Err("longer than 253 characters");
    }
    for label in name.split('.') {
        validate_label(label)?;
    }
    let last = name.rsplit('.').next().unwrap_or(name);
    if last.bytes().all(|b| b.is_ascii_digit()) {
        return Err("all-numeric last label: not a DNS name, and not a valid IPv4 address either");
    }
    Ok(())
}

pub(crate) fn validate_label(label: &str) -> Result<(), &'static str> {
    if label.is_empty() {
        return Err("empty label");
    }
    if label.len() > 63 {
        return Err("label longer than 63 characters");
    }
    if label.contains('*') {
        return Err("\"*\" is only allowed as the whole first label, e.g. *.example.com");
    }
    if !label
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("only letters, digits, '-' and '_' are allowed; write IDNs in punycode");
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err("a label cannot start or end with '-'");
    }
    Ok(())
}

/// Whether every name matched by `q` (a name or `*.` wildcard) is matched by `p`.
/// For a plain name `q` this is simply "`p` matches `q`".
pub fn name_covers(p: &str, q: &str) -> bool {
    if p == q {
        return true;
    }
    match p.strip_prefix('*') {
        // `suffix` starts with '.', so matching respects label boundaries.
        Some(suffix) => q.len() > suffix.len() && q.ends_with(suffix),
        None => false,
    }
}

/// The names matched by both patterns, as one pattern. Two patterns either nest or are disjoint
/// (a name matching `*.a` and `*.b` makes one of `a`, `b` a suffix of the other), so this is exact.
pub fn intersect_names(a: &str, b: &str) -> Option<String> {
    if name_covers(a, b) {
        Some(b.to_string())
    } else if name_covers(b, a) {
        Some(a.to_string())
    } else {
        None
    }
}

/// A rule CIDR as the checks see it: truncated, and an IPv4-mapped IPv6 CIDR (prefix >= 96
/// inside `::ffff:0:0/96`) turned into the IPv4 CIDR it denotes, matching the host's `canonical_ip`.
/// IPv4-compatible CIDRs are left alone (and so match nothing); write IPv4 rules as IPv4.
pub fn canonical_net(net: IpNet) -> IpNet {
    let net = net.trunc();
    let IpNet::V6(v6) = net else { return net };
    match v6.addr().to_ipv4_mapped() {
        Some(v4) if v6.prefix_len() >= 96 => {
            Ipv4Net::new(v4, v6.prefix_len() - 96).map_or(net, IpNet::V4)
        }
        _ => net,
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

    use ipnet::IpNet;

    use super::*;

    fn v4net(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
        IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), len)
    }

    fn v6net(segments: [u16; 8], len: u8) -> IpNet {
        let [a, b, c, d, e, f, g, h] = segments;
        IpNet::new_assert(IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), len)
    }

    fn parse_err(s: &str) -> RuleErrorKind {
        parse_rule(s).expect_err("rule should not parse").kind
    }

    // ----- parsing and display --------------------------------------------------------------

    #[test]
    fn parses_every_form() {
        let cases: &[(&str, NetOp, Target, PortRange)] = &[
            (
                "connect=93.184.0.0/16:443",
                NetOp::Connect,
                Target::Cidr(v4net(93, 184, 0, 0, 16)),
                PortRange::single(443),
            ),
            (
                "connect=127.0.0.1:8000-8100",
                NetOp::Connect,
                Target::Cidr(v4net(127, 0, 0, 1, 32)),
                PortRange {
                    low: 8000,
                    high: 8100,
                },
            ),
            (
                "listen=127.0.0.1:0",
                NetOp::Listen,
                Target::Cidr(v4net(127, 0, 0, 1, 32)),
                PortRange::single(0),
            ),
            (
                "udp=127.0.0.1:*",
                NetOp::Udp,
                Target::Cidr(v4net(127, 0, 0, 1, 32)),
                PortRange::ANY,
            ),
            (
                "connect=[::1]:443",
                NetOp::Connect,
                Target::Cidr(v6net([0, 0, 0, 0, 0, 0, 0, 1], 128)),
                PortRange::single(443),
            ),
            (
                "connect=[2001:db8::/32]:443",
                NetOp::Connect,
                Target::Cidr(v6net([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32)),
                PortRange::single(443),
            ),
            (
                "connect=example.com:443",
                NetOp::Connect,
                Target::Host("example.com".into()),
                PortRange::single(443),
            ),
            (
                "connect=*.example.com:443",
                NetOp::Connect,
                Target::Host("*.example.com".into()),
                PortRange::single(443),
            ),
            (
                "connect=*:443",
                NetOp::Connect,
                Target::Any,
                PortRange::single(443),
            ),
            (
                "udp=0-65535.example:0-65535",
                NetOp::Udp,
                Target::Host("0-65535.example".into()),
                PortRange::ANY,
            ),
        ];
        for (text, op, target, ports) in cases {
            let rule: NetRule = text.parse().expect("parses");
            assert_eq!(rule, NetRule::new(*op, target.clone(), *ports), "{text}");
        }
    }

    #[test]
    fn display_round_trips() {
        for text in [
            "connect=93.184.0.0/16:443",
            "connect=127.0.0.1:8000-8100",
            "listen=127.0.0.1:0",
            "udp=127.0.0.1:*",
            "connect=[::1]:443",
            "connect=[2001:db8::/32]:443",
            "connect=[::]:1",
            "connect=example.com:443",
            "connect=*.example.com:443",
            "connect=*:443",
            "udp=0.0.0.0/0:53",
        ] {
            let rule = parse_rule(text).expect("parses");
            assert_eq!(rule.to_string(), text);
            assert_eq!(parse_rule(&rule.to_string()), Ok(rule));
        }
        // Non-canonical spellings parse to canonical rules that round-trip from then on.
        for (text, canonical) in [
            ("connect=127.0.0.1/32:0-65535", "connect=127.0.0.1:*"),
            ("connect=[::ffff:10.0.0.0/104]:80", "connect=10.0.0.0/8:80"),
            ("connect=Example.Com.:80-80", "connect=example.com:80"),
            ("connect=[::1/128]:443", "connect=[::1]:443"),
        ] {
            let rule = parse_rule(text).expect("parses");
            assert_eq!(rule.to_string(), canonical, "{text}");
            assert_eq!(parse_rule(canonical), Ok(rule));
        }
    }

    #[test]
    fn parse_errors_name_the_bad_part() {
        let full = parse_rule("connect=10.0.0.0/33:80").expect_err("bad prefix");
        assert_eq!(
            full.to_string(),
            "bad --net rule \"connect=10.0.0.0/33:80\": invalid CIDR \"10.0.0.0/33\" \
             (prefix length 33 > 32)"
        );
        let msg = |s: &str| parse_rule(s).expect_err("should fail").to_string();
        assert!(msg("conect=1.2.3.4:80")
            .ends_with("unknown operation \"conect\" (expected connect, listen or udp)"));
        assert!(msg("connect=example.com")
            .ends_with("missing port (write HOST:PORT, PORT may be N, N-M or *)"));
        assert!(msg("connect=1.2.3.4:90-80").ends_with("port range 90-80 is reversed"));

        let cases: &[(&str, RuleErrorKind)] = &[
            ("connect", RuleErrorKind::MissingEquals),
            ("", RuleErrorKind::MissingEquals),
            (
                "Connect=1.2.3.4:80",
                RuleErrorKind::UnknownOp("Connect".into()),
            ),
            ("connect=1.2.3.4", RuleErrorKind::MissingPort),
            ("connect=1.2.3.4:", RuleErrorKind::MissingPort),
            ("connect=[::1]", RuleErrorKind::MissingPort),
            ("connect=[::1]:", RuleErrorKind::MissingPort),
            ("connect=:80", RuleErrorKind::MissingTarget),
            ("connect=[]:80", RuleErrorKind::MissingTarget),
            (
                "connect=[::1]443",
                RuleErrorKind::JunkAfterBracket("443".into()),
            ),
            (
                "connect=[::1:443",
                RuleErrorKind::UnclosedBracket("[::1:443".into()),
            ),
            (
                "connect=::1:443",
                RuleErrorKind::UnbracketedIpv6("::1:443".into()),
            ),
            (
                "connect=1.2.3.4:http",
                RuleErrorKind::BadPort("http".into()),
            ),
            (
                "connect=1.2.3.4:65536",
                RuleErrorKind::BadPort("65536".into()),
            ),
            ("connect=1.2.3.4:+80", RuleErrorKind::BadPort("+80".into())),
            ("connect=1.2.3.4:80-", RuleErrorKind::BadPort("80-".into())),
            ("connect=1.2.3.4:-80", RuleErrorKind::BadPort("-80".into())),
            (
                "connect=1.2.3.4:1-2-3",
                RuleErrorKind::BadPort("1-2-3".into()),
            ),
            (
                "connect=1.2.3.4:90-80",
                RuleErrorKind::ReversedPorts(90, 80),
            ),
            ("connect=1.2.3.4:0", RuleErrorKind::ConnectPortZero),
            (
                "listen=example.com:80",
                RuleErrorKind::ListenOnHost("example.com".into()),
            ),
            (
                "connect=10.0.0.1/8:80",
                RuleErrorKind::HostBits {
                    text: "10.0.0.1/8".into(),
                    suggestion: "10.0.0.0/8".into(),
                },
            ),
            (
                "connect=[2001:db8::1/32]:80",
                RuleErrorKind::HostBits {
                    text: "2001:db8::1/32".into(),
                    suggestion: "[2001:db8::/32]".into(),
                },
            ),
        ];
        for (text, kind) in cases {
            assert_eq!(&parse_err(text), kind, "{text}");
        }
        for text in [
            "connect=10.0.0.0/33:80",
            "connect=[::/129]:80",
            "connect=10.0.0/8:80",
            "connect=10.0.0.0/x:80",
            "connect=10.0.0.0/:80",
            "connect=[1.2.3.4]:80",
            "connect=[example.com]:80",
        ] {
            assert!(
                matches!(parse_err(text), RuleErrorKind::BadCidr { .. }),
                "{text}: {:?}",
                parse_err(text)
            );
        }
        for text in [
            "connect=10.0.0.256:80",
            "connect=1.2.3:80",
            "connect=exa mple.com:80",
            "connect=exa..com:80",
            "connect=-bad.com:80",
            "connect=a.*.com:80",
            "connect=**.com:80",
            "connect=bücher.de:80",
            "connect=.:80",
        ] {
            assert!(
                matches!(parse_err(text), RuleErrorKind::BadHost { .. }),
                "{text}: {:?}",
                parse_err(text)
            );
        }
        let long_label = format!("connect={}.com:80", "a".repeat(64));
        assert!(matches!(
            parse_err(&long_label),
            RuleErrorKind::BadHost { .. }
        ));
    }
}
