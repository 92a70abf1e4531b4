//! Intersection: the policy allowing what two policies both allow, never wider.

use ipnet::IpNet;

use super::*;

/// The rule covering exactly what both `a` and `b` cover, if they overlap at all.
pub(super) fn intersect_rules(a: &NetRule, b: &NetRule) -> Option<NetRule> {
    if a.op != b.op {
        return None;
    }
    let ports = a.ports.intersect(b.ports)?;
    if a.op == NetOp::Connect && ports == PortRange::single(0) {
        return None; // connect to port 0 is never allowed anyway
    }
    let target = intersect_targets(&a.target, &b.target)?;
    Some(NetRule::new(a.op, target, ports))
}

pub(super) fn intersect_targets(a: &Target, b: &Target) -> Option<Target> {
    match (a, b) {
        (Target::Any, Target::Any) => Some(Target::Any),
        (Target::Host(x), Target::Host(y)) => intersect_names(x, y).map(Target::Host),
        (Target::Any, Target::Cidr(n)) | (Target::Cidr(n), Target::Any) => {
            narrow(canonical_net(*n), None).map(Target::Cidr)
        }
        (Target::Cidr(x), Target::Cidr(y)) => {
            let (x, y) = (canonical_net(*x), canonical_net(*y));
            let narrowed = if y.contains(&x) {
                narrow(x, Some(y))
            } else if x.contains(&y) {
                narrow(y, Some(x))
            } else {
                None
            };
            narrowed.map(Target::Cidr)
        }
        _ => None,
    }
}

/// `small` as intersected with `large` (`None` = `*`), where `small` lies inside `large`.
///
/// Special ranges nest, so an address in `small` either lies in a special range strictly inside
/// `small` (which `small` does not name, so it does not cover the address, and neither does the
/// result) or has as innermost range `T`, the innermost special range containing `small`, if any.
/// `small` names `T`; `large` covers those addresses iff it lies inside `T` too. So the result
/// is `small` unchanged or nothing.
pub(super) fn narrow(small: IpNet, large: Option<IpNet>) -> Option<IpNet> {
    match innermost_special(small) {
        Some((range, _)) if !large.is_some_and(|l| range.contains(&l)) => None,
        _ => Some(small),
    }
}

/// Drop rules another rule already covers (and duplicates), keeping at most `max` (`None` if
/// more would remain). Dropping a rule can only narrow a policy; `subsumes_with` makes sure it does
/// not.
///
/// Rules are visited largest first ([`extent`] never grows from a rule to one it covers), so
/// a rule can only be covered by one already kept and one pass suffices: at most
/// `rules × max` comparisons, each of a few field compares (the special range of each rule is
/// looked up once). Measured worst cases (`the_worst_intersection_is_bounded`, 64 × 64 rules):
/// 0.4 ms and 3.8 ms in an unoptimised test build.
pub(super) fn prune_redundant(rules: Vec<NetRule>, max: usize) -> Option<Vec<NetRule>> {
    // Exact duplicates first, in one pass (pairs of a policy with itself are mostly duplicates).
    let mut seen = std::collections::HashSet::with_capacity(rules.len());
    let rules: Vec<NetRule> = rules
        .into_iter()
        .filter(|r| seen.insert(r.clone()))
        .collect();
    let mut order: Vec<(usize, NetRule)> = rules.into_iter().enumerate().collect();
    order.sort_by_key(|(i, r)| (std::cmp::Reverse(extent(r)), *i));
    let mut kept: Vec<(usize, NetRule)> = Vec::new();
    for (index, rule) in order {
        let special = rule_special(&rule);
        if kept.iter().any(|(_, k)| subsumes_with(k, &rule, special)) {
            continue;
        }
        if kept.len() == max {
            return None;
        }
        kept.push((index, rule));
    }
    // The result keeps the order the rules were given in (decisions cite them by index).
    kept.sort_by_key(|(i, _)| *i);
    Some(kept.into_iter().map(|(_, rule)| rule).collect())
}

/// A size that never grows from a rule to a rule it covers: equal only for equal rules among
/// rules that cover one another (same target and ports).
pub(super) fn extent(rule: &NetRule) -> (u8, u128, u32) {
    let ports = u32::from(rule.ports.high) - u32::from(rule.ports.low);
    let target = match &rule.target {
        Target::Any => u128::MAX,
        Target::Cidr(net) => {
            let net = canonical_net(*net);
            let host_bits = u32::from(net.max_prefix_len() - net.prefix_len());
            1u128.checked_shl(host_bits).unwrap_or(u128::MAX - 1)
        }
        // A wildcard covers names with more labels: fewer labels, larger extent.
        Target::Host(name) if name.starts_with("*.") => 256 - name.split('.').count() as u128,
        Target::Host(_) => 0,
    };
    (rule.op as u8, target, ports)
}

/// The innermost special range of a rule's CIDR, looked up once per rule.
pub(super) fn rule_special(rule: &NetRule) -> Option<IpNet> {
    match &rule.target {
        Target::Cidr(net) => innermost_special(canonical_net(*net)).map(|(range, _)| range),
        _ => None,
    }
}

/// Whether everything `a` allows (through any query) `b` allows too, with `a`'s innermost
/// special range already known.
pub(super) fn subsumes_with(b: &NetRule, a: &NetRule, a_special: Option<IpNet>) -> bool {
    if b.op != a.op || !b.ports.covers(a.ports) {
        return false;
    }
    match (&b.target, &a.target) {
        (Target::Any, Target::Cidr(_)) => a_special.is_none(),
        (Target::Cidr(bn), Target::Cidr(an)) => {
            let (bn, an) = (canonical_net(*bn), canonical_net(*an));
            bn.contains(&an) && a_special.is_none_or(|range| range.contains(&bn))
        }
        _ => target_subsumes(&b.target, &a.target),
    }
}

pub(super) fn target_subsumes(b: &Target, a: &Target) -> bool {
    match (b, a) {
        (Target::Any, Target::Any) => true,
        (Target::Any, Target::Cidr(an)) => innermost_special(canonical_net(*an)).is_none(),
        (Target::Cidr(bn), Target::Cidr(an)) => {
            let (bn, an) = (canonical_net(*bn), canonical_net(*an));
            // `a` covers a special address only if it lies inside the address's innermost range,
            // which then contains `a`'s innermost range, which must hold `b` for `b` to name it.
            bn.contains(&an) && innermost_special(an).is_none_or(|(range, _)| range.contains(&bn))
        }
        (Target::Host(p), Target::Host(q)) => name_covers(p, q),
        _ => false,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::net::IpAddr;

    use super::super::tests::*;
    use super::super::*;

    // ----- intersection ---------------------------------------------------------------------

    /// Probe addresses for the exhaustive intersection checks.
    pub(in crate::net::policy) fn probe_ips() -> Vec<IpAddr> {
        let mut ips: Vec<IpAddr> = SPECIAL_SAMPLES.iter().map(|(a, _)| ip(a)).collect();
        ips.extend(PUBLIC_SAMPLES.iter().map(|a| ip(a)));
        for extra in [
            "93.184.1.1",
            "127.0.0.2",
            "10.1.0.1",
            "10.2.0.1",
            "0.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::5db8:d822",
            "2002:a9fe:a9fe::1",
            "2001:db8:1::1",
            "::ffff:10.1.0.1",
        ] {
            ips.push(ip(extra));
        }
        ips
    }

    const PROBE_PORTS: &[u16] = &[0, 22, 80, 443, 8080, 8081, 65535];
    const PROBE_NAMES: &[&str] = &["example.com", "api.example.com", "a.b.example.com", "x.org"];

    /// Checks `intersect` against the semantics: exact for `allows` and `allows_name`, never
    /// wider for `allows_resolved` and exact there when both sides may resolve the name.
    pub(in crate::net::policy) fn check_intersection(p: &NetPolicy, q: &NetPolicy, ips: &[IpAddr]) {
        let r = p.intersect(q);
        for op in NetOp::ALL {
            // Without name rules on either side `allows_resolved` is `allows`, checked below.
            let names = if p.has_name_rules(op) || q.has_name_rules(op) {
                PROBE_NAMES
            } else {
                &[]
            };
            for &port in PROBE_PORTS {
                for name in PROBE_NAMES {
                    assert_eq!(
                        r.allows_name(op, name, port),
                        p.allows_name(op, name, port) && q.allows_name(op, name, port),
                        "{op} {name}:{port}: {p} ∩ {q} = {r}"
                    );
                }
                for &addr in ips {
                    let (a, b, both) = (
                        p.allows(op, addr, port).allowed,
                        q.allows(op, addr, port).allowed,
                        r.allows(op, addr, port).allowed,
                    );
                    assert_eq!(both, a && b, "{op} {addr}:{port}: {p} ∩ {q} = {r}");
                }
                for name in names {
                    let exact = p.allows_name(op, name, port) && q.allows_name(op, name, port);
                    for &addr in ips {
                        let (a, b, both) = (
                            p.allows_resolved(op, name, addr, port).allowed,
                            q.allows_resolved(op, name, addr, port).allowed,
                            r.allows_resolved(op, name, addr, port).allowed,
                        );
                        assert!(!both || (a && b), "widened {op} {name}/{addr}:{port}: {r}");
                        if exact {
                            assert_eq!(both, a && b, "{op} {name}/{addr}:{port}: {r}");
                        }
                    }
                }
            }
        }
    }

    fn sample_policies() -> Vec<NetPolicy> {
        [
            &[][..],
            &["connect=0.0.0.0/0:*"],
            &["connect=*:*", "listen=*:*", "udp=*:*"],
            &["connect=[::/0]:443", "connect=0.0.0.0/0:443"],
            &["connect=127.0.0.1:8080"],
            &["connect=127.0.0.0/8:*"],
            &["connect=0.0.0.0/8:80", "connect=0.0.0.0:80"],
            &[
                "connect=93.184.0.0/16:443",
                "connect=93.184.216.0/24:80-8080",
            ],
            &["connect=10.0.0.0/8:*", "connect=10.1.0.0/16:443"],
            &["connect=169.0.0.0/8:*", "connect=169.254.169.254:80"],
            &["connect=example.com:443", "connect=*.example.com:*"],
            &["connect=api.example.com:443", "connect=0.0.0.0/0:443"],
            &["connect=internal.corp:443", "connect=10.1.0.0/16:443"],
            &[
                "listen=127.0.0.1:0",
                "listen=127.0.0.1:8080",
                "udp=0.0.0.0:0",
            ],
            &["listen=127.0.0.1:*", "udp=*:53", "udp=0.0.0.0:*"],
            &[
                "connect=[::1]:8080",
                "connect=[fc00::/7]:*",
                "connect=[2001:db8::/32]:443",
            ],
        ]
        .iter()
        .map(|rules| policy(rules))
        .collect()
    }

    #[test]
    fn sample_rules_round_trip_through_their_syntax() {
        for samples in sample_policies() {
            for rule in samples.rules() {
                assert_eq!(parse_rule(&rule.to_string()).as_ref(), Ok(rule));
            }
        }
    }

    #[test]
    fn intersection_is_exact_on_all_sample_pairs() {
        let (samples, ips) = (sample_policies(), probe_ips());
        for p in &samples {
            for q in &samples {
                check_intersection(p, q, &ips);
            }
        }
    }

    #[test]
    fn intersection_never_names_loopback_the_parent_did_not() {
        let parent = policy(&["connect=0.0.0.0/0:*"]);
        let child = policy(&["connect=127.0.0.1/32:8080"]);
        let r = parent.intersect(&child);
        assert!(!connect(&r, "127.0.0.1", 8080), "{r}");
        assert!(r.is_deny_all(), "{r}");
        // The other way round too, and via `*`.
        assert!(child.intersect(&parent).is_deny_all());
        assert!(policy(&["connect=*:*"]).intersect(&child).is_deny_all());
        // A parent that does name loopback passes the narrower child request through.
        let named = policy(&["connect=127.0.0.0/8:*"]).intersect(&child);
        assert_eq!(named, child);
    }

    #[test]
    fn intersection_respects_nested_special_ranges() {
        let parent = policy(&["listen=0.0.0.0/8:80"]);
        let child = policy(&["listen=0.0.0.0/30:80", "listen=0.0.0.0:80"]);
        let r = parent.intersect(&child);
        assert_eq!(r.to_string(), "listen=0.0.0.0/30:80");
        let listen = |addr| allowed(&r, NetOp::Listen, addr, 80);
        assert!(!listen("0.0.0.0"), "the parent never named 0.0.0.0");
        assert!(listen("0.0.0.1"));
        assert!(listen("0.0.0.3"));
        assert_eq!(parent.intersect(&parent), parent);
    }

    #[test]
    fn intersection_of_cidrs_and_ports() {
        let parent = policy(&["connect=93.184.0.0/16:1-1024", "connect=[::/0]:443"]);
        let child = policy(&["connect=93.184.216.0/24:*", "connect=0.0.0.0/0:443-8443"]);
        let r = parent.intersect(&child);
        assert_eq!(
            r.to_string(),
            "connect=93.184.216.0/24:1-1024, connect=93.184.0.0/16:443-1024"
        );
        assert!(!connect(&r, "2606:4700::1111", 443));
        let same = parent.intersect(&parent);
        assert_eq!(same, parent, "P ∩ P = P");
    }

    #[test]
    fn intersection_of_names() {
        let parent = policy(&["connect=*.example.com:443"]);
        let child = policy(&["connect=api.example.com:*", "connect=other.org:443"]);
        let r = parent.intersect(&child);
        assert_eq!(r.to_string(), "connect=api.example.com:443");
        // parent names, child asks for a CIDR: no name rule survives (the child did not ask to
        // resolve names), and no address either.
        let r = policy(&["connect=example.com:443"]).intersect(&policy(&["connect=0.0.0.0/0:443"]));
        assert!(r.is_deny_all(), "{r}");
        // parent CIDR, child name: resolving the child's chosen name would widen DNS.
        let r = policy(&["connect=93.184.0.0/16:443"])
            .intersect(&policy(&["connect=*.attacker.example:443"]));
        assert!(!r.has_name_rules(NetOp::Connect));
        assert!(!r.allows_name(NetOp::Connect, "secret.attacker.example", 443));
        assert!(
            !r.allows_resolved(
                NetOp::Connect,
                "secret.attacker.example",
                ip("8.8.8.8"),
                443
            )
            .allowed
        );
    }

    #[test]
    fn intersection_with_deny_all_is_deny_all() {
        for p in sample_policies() {
            assert_eq!(p.intersect(&NetPolicy::deny_all()), NetPolicy::deny_all());
            assert_eq!(NetPolicy::deny_all().intersect(&p), NetPolicy::deny_all());
        }
    }

    #[test]
    fn intersection_is_idempotent_semantically() {
        let ips = probe_ips();
        for p in sample_policies() {
            check_intersection(&p, &p, &ips);
            let pp = p.intersect(&p);
            assert!(pp.rules().len() <= p.rules().len(), "{p} ∩ {p} = {pp}");
        }
    }
}
