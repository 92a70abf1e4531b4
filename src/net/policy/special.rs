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
