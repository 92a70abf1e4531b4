//! Special ranges and canonical addresses: what a broad rule never covers, and the one
//! spelling of an address every check is made against.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

/// An address range a broad rule never covers: reaching it needs a rule that names it.
///
/// Deliberately *not* special: the documentation ranges (`192.0.2.0/24`, `198.51.100.0/24`,
/// `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`), which are unroutable and harmless;
/// `192.88.99.0/24`; Teredo `2001::/32` (its embedded addresses are those of a public relay and
/// an obfuscated, NATed client, so nothing local is reachable through it). IPv4-mapped and
/// IPv4-compatible IPv6 addresses are not listed because they are canonicalised to IPv4 first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpecialRange {
    /// `0.0.0.0/32`, `::/128`: "any interface"; connecting to it reaches localhost on Linux.
    Unspecified,
    /// `0.0.0.0/8` (RFC 791 "this network"), apart from `0.0.0.0` itself.
    ThisNetwork,
    /// `127.0.0.0/8`, `::1/128`.
    Loopback,
    /// RFC 1918: `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16`.
    Private,
    /// `100.64.0.0/10` (RFC 6598 shared address space, carrier-grade NAT).
    SharedCgnat,
    /// `169.254.0.0/16` (including the cloud metadata service `169.254.169.254`), `fe80::/10`.
    LinkLocal,
    /// `192.0.0.0/24` (IETF protocol assignments: DS-Lite, NAT64 discovery, …).
    IetfProtocol,
    /// `198.18.0.0/15`, `2001:2::/48` (benchmarking networks).
    Benchmarking,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255/32`.
    Broadcast,
    /// `240.0.0.0/4` (reserved for future use), apart from the broadcast address.
    Reserved,
    /// `fc00::/7` (unique local addresses; AWS serves metadata at `fd00:ec2::254`).
    UniqueLocal,
    /// `fec0::/10` (deprecated site-local addresses, still routed locally by some stacks).
    SiteLocal,
    /// `100::/64` (discard-only).
    Discard,
    /// `64:ff9b:1::/48` (local-use NAT64 prefix, translated by a translator inside the site).
    LocalNat64,
}

impl SpecialRange {
    /// A short description used in audit messages ("link-local").
    pub fn description(self) -> &'static str {
        match self {
            SpecialRange::Unspecified => "unspecified",
            SpecialRange::ThisNetwork => "\"this network\" (0.0.0.0/8)",
            SpecialRange::Loopback => "loopback",
            SpecialRange::Private => "private (RFC 1918)",
            SpecialRange::SharedCgnat => "shared/CGNAT (100.64.0.0/10)",
            SpecialRange::LinkLocal => "link-local",
            SpecialRange::IetfProtocol => "IETF protocol assignment (192.0.0.0/24)",
            SpecialRange::Benchmarking => "benchmarking",
            SpecialRange::Multicast => "multicast",
            SpecialRange::Broadcast => "broadcast",
            SpecialRange::Reserved => "reserved (240.0.0.0/4)",
            SpecialRange::UniqueLocal => "unique-local (fc00::/7)",
            SpecialRange::SiteLocal => "site-local (fec0::/10)",
            SpecialRange::Discard => "discard-only (100::/64)",
            SpecialRange::LocalNat64 => "local-use NAT64 (64:ff9b:1::/48)",
        }
    }
}

impl fmt::Display for SpecialRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.description())
    }
}

pub(super) const fn v4net(a: u8, b: u8, c: u8, d: u8, len: u8) -> IpNet {
    IpNet::new_assert(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), len)
}

pub(super) const fn v6net(segments: [u16; 8], len: u8) -> IpNet {
    let [a, b, c, d, e, f, g, h] = segments;
    IpNet::new_assert(IpAddr::V6(Ipv6Addr::new(a, b, c, d, e, f, g, h)), len)
}

/// The special ranges. They form a laminar family (any two are nested or disjoint, as CIDRs
/// always are); an address belongs to its *innermost* range. A test checks the table.
pub(super) const SPECIAL_RANGES: &[(IpNet, SpecialRange)] = &[
    (v4net(0, 0, 0, 0, 32), SpecialRange::Unspecified),
    (v4net(0, 0, 0, 0, 8), SpecialRange::ThisNetwork),
    (v4net(10, 0, 0, 0, 8), SpecialRange::Private),
    (v4net(100, 64, 0, 0, 10), SpecialRange::SharedCgnat),
    (v4net(127, 0, 0, 0, 8), SpecialRange::Loopback),
    (v4net(169, 254, 0, 0, 16), SpecialRange::LinkLocal),
    (v4net(172, 16, 0, 0, 12), SpecialRange::Private),
    (v4net(192, 0, 0, 0, 24), SpecialRange::IetfProtocol),
    (v4net(192, 168, 0, 0, 16), SpecialRange::Private),
    (v4net(198, 18, 0, 0, 15), SpecialRange::Benchmarking),
    (v4net(224, 0, 0, 0, 4), SpecialRange::Multicast),
    (v4net(240, 0, 0, 0, 4), SpecialRange::Reserved),
    (v4net(255, 255, 255, 255, 32), SpecialRange::Broadcast),
    (
        v6net([0, 0, 0, 0, 0, 0, 0, 0], 128),
        SpecialRange::Unspecified,
    ),
    (v6net([0, 0, 0, 0, 0, 0, 0, 1], 128), SpecialRange::Loopback),
    (
        v6net([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        SpecialRange::LocalNat64,
    ),
    (
        v6net([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        SpecialRange::Discard,
    ),
    (
        v6net([0x2001, 2, 0, 0, 0, 0, 0, 0], 48),
        SpecialRange::Benchmarking,
    ),
    (
        v6net([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        SpecialRange::UniqueLocal,
    ),
    (
        v6net([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10),
        SpecialRange::LinkLocal,
    ),
    (
        v6net([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        SpecialRange::SiteLocal,
    ),
    (
        v6net([0xff00, 0, 0, 0, 0, 0, 0, 0], 8),
        SpecialRange::Multicast,
    ),
];

/// The innermost special range containing `net` (a range containing a single address, for a
/// /32 or /128). Callers pass canonical nets.
pub(super) fn innermost_special(net: IpNet) -> Option<(IpNet, SpecialRange)> {
    SPECIAL_RANGES
        .iter()
        .filter(|(range, _)| range.contains(&net))
        .max_by_key(|(range, _)| range.prefix_len())
        .copied()
}

pub(super) fn special_entry(ip: IpAddr) -> Option<(IpNet, SpecialRange)> {
    innermost_special(IpNet::from(ip))
}

/// The special range `ip` is in, after canonicalisation (so `::ffff:10.0.0.1` is private).
/// Does not look inside NAT64/6to4 addresses; [`NetPolicy`] checks those separately.
#[cfg(test)]
pub(crate) fn special_range(ip: IpAddr) -> Option<SpecialRange> {
    special_entry(canonical_ip(ip)).map(|(_, range)| range)
}

/// The address every check is made against: IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible
/// (`::a.b.c.d`, except `::` and `::1`, which are IPv6 unspecified/loopback) addresses become the
/// IPv4 address they denote; everything else is unchanged.
pub(crate) fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None if is_ipv4_compatible(v6) => IpAddr::V4(low32(v6)),
            None => ip,
        },
    }
}

pub(super) fn is_ipv4_compatible(v6: Ipv6Addr) -> bool {
    let s = v6.segments();
    s[..6].iter().all(|&x| x == 0) && u128::from(v6) > 1
}

pub(super) fn low32(v6: Ipv6Addr) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

/// The IPv4 address a gateway would translate `ip` to: NAT64 well-known prefix `64:ff9b::/96`
/// (low 32 bits) and 6to4 `2002::/16` (bits 16..48).
pub(super) fn embedded_ipv4(ip: IpAddr) -> Option<Ipv4Addr> {
    let IpAddr::V6(v6) = ip else { return None };
    let s = v6.segments();
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        Some(low32(v6))
    } else if s[0] == 0x2002 {
        let [a, b] = s[1].to_be_bytes();
        let [c, d] = s[2].to_be_bytes();
        Some(Ipv4Addr::new(a, b, c, d))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::*;
    use super::super::*;

    // ----- special ranges -----------------------------------------------------------------

    #[test]
    fn special_range_table_is_laminar_and_canonical() {
        for (i, (a, _)) in SPECIAL_RANGES.iter().enumerate() {
            assert_eq!(*a, a.trunc(), "{a} has host bits");
            assert_eq!(*a, canonical_net(*a), "{a} is not canonical");
            for (b, _) in &SPECIAL_RANGES[i + 1..] {
                let disjoint = !a.contains(&b.network()) && !b.contains(&a.network());
                assert!(
                    a.contains(b) || b.contains(a) || disjoint,
                    "{a} and {b} overlap partially"
                );
                assert_ne!(a, b, "duplicate range");
            }
        }
    }

    #[test]
    fn every_special_range_denied_under_broad_rules() {
        let broad = policy(&[
            "connect=0.0.0.0/0:*",
            "connect=[::/0]:*",
            "connect=*:*",
            "listen=0.0.0.0/0:*",
            "listen=[::/0]:*",
            "udp=*:*",
        ]);
        for &(addr, range) in SPECIAL_SAMPLES {
            for op in NetOp::ALL {
                let d = broad.allows(op, ip(addr), 80);
                assert!(!d.allowed, "{addr} allowed for {op}: {d}");
                let expected = if op == NetOp::Connect && never_a_destination(ip(addr)) {
                    DenyReason::NotADestination
                } else {
                    DenyReason::SpecialRange(range)
                };
                assert_eq!(d.reason, Some(expected), "{addr}");
            }
        }
        for &addr in PUBLIC_SAMPLES {
            assert!(connect(&broad, addr, 443), "{addr} should be public");
        }
    }

    #[test]
    fn special_range_helper_canonicalises() {
        for &(addr, range) in SPECIAL_SAMPLES {
            assert_eq!(special_range(ip(addr)), Some(range), "{addr}");
        }
        for &addr in PUBLIC_SAMPLES {
            assert_eq!(special_range(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn deny_all_denies_everything_and_is_default() {
        let p = NetPolicy::default();
        assert_eq!(p, NetPolicy::deny_all());
        assert!(p.is_deny_all());
        for &addr in PUBLIC_SAMPLES {
            let d = p.allows(NetOp::Connect, ip(addr), 443);
            assert!(!d.allowed);
            assert_eq!(d.reason, Some(DenyReason::NoRule));
        }
        for &(addr, _) in SPECIAL_SAMPLES {
            assert_eq!(
                p.allows(NetOp::Listen, ip(addr), 0).reason,
                Some(DenyReason::NoRule)
            );
        }
        assert!(!p.has_name_rules(NetOp::Connect));
        assert_eq!(p.to_string(), "deny all");
    }

    #[test]
    fn every_special_range_allowed_when_named() {
        for &(addr, _) in SPECIAL_SAMPLES {
            if never_a_destination(ip(addr)) {
                continue; // named or not, never a destination (below)
            }
            let canonical = canonical_ip(ip(addr));
            let rule = NetRule::new(
                NetOp::Connect,
                Target::Cidr(IpNet::from(canonical)),
                PortRange::single(80),
            );
            let p = NetPolicy::new(vec![rule]);
            assert!(connect(&p, addr, 80), "{addr} named but denied");
            assert!(!connect(&p, addr, 81), "{addr} allowed on another port");
        }
    }

    #[test]
    fn explicitly_named_loopback_allows_only_its_port() {
        let p = policy(&["connect=93.184.0.0/16:443", "connect=127.0.0.1:8080"]);
        let d = p.allows(NetOp::Connect, ip("127.0.0.1"), 8080);
        assert!(d.allowed);
        assert_eq!(d.rule, Some(1));
        assert!(!connect(&p, "127.0.0.1", 8081));
        assert!(!connect(&p, "127.0.0.2", 8080));
        assert!(!allowed(&p, NetOp::Listen, "127.0.0.1", 8080));
        assert!(!allowed(&p, NetOp::Udp, "127.0.0.1", 8080));
    }

    #[test]
    fn named_loopback_range_covers_the_range() {
        let p = policy(&["connect=127.0.0.0/8:*"]);
        assert!(connect(&p, "127.1.2.3", 22));
        assert!(connect(&p, "::ffff:127.1.2.3", 22));
        assert!(
            !connect(&p, "::1", 22),
            "IPv6 loopback is not named by 127/8"
        );
    }

    #[test]
    fn mapped_and_v6_loopback_denied_under_rule_for_other_port() {
        let p = policy(&[
            "connect=127.0.0.1:8080",
            "connect=0.0.0.0/0:*",
            "connect=*:*",
        ]);
        assert!(!connect(&p, "::ffff:127.0.0.1", 9090));
        assert!(!connect(&p, "::1", 9090));
        assert!(!connect(&p, "::1", 8080), "::1 is not 127.0.0.1");
        assert!(!connect(&p, "::127.0.0.1", 9090));
    }

    #[test]
    fn mapped_loopback_allowed_under_v4_rule() {
        let p = policy(&["connect=127.0.0.1:8080"]);
        let d = p.allows(NetOp::Connect, ip("::ffff:127.0.0.1"), 8080);
        assert!(d.allowed, "{d}");
        assert_eq!(d.canonical_ip, Some(ip("127.0.0.1")));
        assert_eq!(
            d.to_string(),
            "allow connect [::ffff:127.0.0.1]:8080 (as 127.0.0.1) by rule 0 (connect=127.0.0.1:8080)"
        );
        // A rule written in mapped form is the same rule.
        let mapped = policy(&["connect=[::ffff:127.0.0.1]:8080"]);
        assert_eq!(mapped, p);
        assert!(connect(&mapped, "127.0.0.1", 8080));
    }

    #[test]
    fn v6_rules_do_not_cover_mapped_v4() {
        let p = policy(&["connect=[::/0]:443"]);
        assert!(connect(&p, "2606:4700::1111", 443));
        assert!(!connect(&p, "::ffff:93.184.216.34", 443), "that is IPv4");
    }

    #[test]
    fn metadata_address() {
        let meta = "169.254.169.254";
        let d = policy(&["connect=0.0.0.0/0:*"]).allows(NetOp::Connect, ip(meta), 80);
        assert!(!d.allowed);
        assert_eq!(
            d.to_string(),
            "deny connect 169.254.169.254:80: link-local address not named by any rule"
        );
        let partial = policy(&["connect=169.0.0.0/8:*"]);
        assert!(
            !connect(&partial, meta, 80),
            "partial overlap must not name it"
        );
        assert!(
            connect(&partial, "169.1.2.3", 80),
            "the public part is covered"
        );
        let named = policy(&["connect=169.254.169.254/32:80"]);
        assert!(connect(&named, meta, 80));
        assert!(!connect(&named, "169.254.169.253", 80));
        assert!(connect(&policy(&["connect=169.254.0.0/16:80"]), meta, 80));
    }

    #[test]
    fn nested_special_ranges_are_named_innermost_first() {
        let this_net = policy(&["listen=0.0.0.0/8:*"]);
        assert!(allowed(&this_net, NetOp::Listen, "0.1.2.3", 80));
        assert!(
            !allowed(&this_net, NetOp::Listen, "0.0.0.0", 80),
            "unspecified is not named"
        );
        let reserved = policy(&["udp=240.0.0.0/4:*"]);
        assert!(allowed(&reserved, NetOp::Udp, "240.1.2.3", 9));
        assert!(!allowed(&reserved, NetOp::Udp, "255.255.255.255", 9));
        let bcast = policy(&["udp=255.255.255.255:9"]);
        assert!(allowed(&bcast, NetOp::Udp, "255.255.255.255", 9));
    }

    #[test]
    fn private_range_named_by_subnet() {
        let p = policy(&["connect=10.1.0.0/16:5432", "connect=8.0.0.0/6:5432"]);
        assert!(connect(&p, "10.1.2.3", 5432));
        assert!(
            !connect(&p, "10.2.0.1", 5432),
            "8/6 contains 10/8 but does not name it"
        );
        assert!(connect(&p, "9.1.2.3", 5432));
    }

    #[test]
    fn unspecified_listen_needs_explicit_rule() {
        let broad = policy(&["listen=0.0.0.0/0:*", "listen=[::/0]:*"]);
        assert!(!allowed(&broad, NetOp::Listen, "0.0.0.0", 8080));
        assert!(!allowed(&broad, NetOp::Listen, "::", 8080));
        let named = policy(&["listen=0.0.0.0:8080", "listen=[::]:8080"]);
        assert!(allowed(&named, NetOp::Listen, "0.0.0.0", 8080));
        assert!(allowed(&named, NetOp::Listen, "::", 8080));
    }

    #[test]
    fn nat64_and_6to4_embedded_addresses() {
        let v6 = policy(&["connect=[::/0]:*"]);
        // Embedded public IPv4: the IPv6 rule decides.
        assert!(connect(&v6, "64:ff9b::5db8:d822", 443)); // 93.184.216.34
        assert!(connect(&v6, "2002:5db8:d822::1", 443));
        // Embedded special IPv4: denied unless the IPv4 address is named.
        for addr in ["64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "2002:7f00:1::1"] {
            let d = v6.allows(NetOp::Connect, ip(addr), 80);
            assert!(!d.allowed, "{addr}");
            assert!(
                matches!(d.reason, Some(DenyReason::EmbeddedSpecialRange { .. })),
                "{d}"
            );
        }
        let d = v6.allows(NetOp::Connect, ip("64:ff9b::a9fe:a9fe"), 80);
        assert_eq!(
            d.to_string(),
            "deny connect [64:ff9b::a9fe:a9fe]:80: embeds link-local IPv4 address \
             169.254.169.254, which is not named by any rule"
        );
        let named = policy(&["connect=[::/0]:*", "connect=127.0.0.1:80"]);
        assert!(connect(&named, "64:ff9b::7f00:1", 80));
        assert!(!connect(&named, "64:ff9b::7f00:1", 81));
        // An IPv4 rule alone does not allow the IPv6 (translated) address.
        assert!(!connect(
            &policy(&["connect=127.0.0.1:80"]),
            "64:ff9b::7f00:1",
            80
        ));
    }
}
