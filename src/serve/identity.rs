//! Who a mutual-TLS client is, and which grant ceiling it gets.
//!
//! With `--client-ca`, rustls has already verified the client's certificate chain during the
//! handshake (`tls.rs`); here its end-entity certificate is only *read*: the subject's common
//! names and the subject-alternative URIs, DNS names and e-mail addresses, in that order, are
//! the names it goes by. `--ceiling NAME=FILE` gives the clients carrying NAME that ceiling
//! instead of the daemon's own (the first `--ceiling` whose name the certificate carries
//! wins); the name recorded for the client — in the audit log (`"client"`), in every report
//! of its jobs, in `ps`' logs — is the one that chose its ceiling, else the first name.
//!
//! The certificate came from the client, so it is read as hostile input even though a CA
//! signed it: at most [`MAX_NAMES`] names, each bounded and escaped like any text a guest
//! gives ([`crate::text::guest_text`]); a certificate that does not parse has no names (it
//! gets the daemon's ceiling and is recorded as `"?"`), never an error that ends the daemon.

use std::rc::Rc;
use std::sync::Arc;

use x509_parser::extensions::GeneralName;

use crate::serve::ceiling::Ceiling;

/// Names read from one certificate, at most.
pub(crate) const MAX_NAMES: usize = 16;

/// The names a client certificate (DER) goes by, best first (see the module documentation).
pub(crate) fn names(der: &[u8]) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for cn in cert.subject().iter_common_name() {
        if let Ok(cn) = cn.as_str() {
            out.push(cn.to_string());
        }
    }
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        let all = &san.value.general_names;
        let pick = |want: fn(&GeneralName<'_>) -> Option<String>| all.iter().filter_map(want);
        out.extend(pick(|n| match n {
            GeneralName::URI(u) => Some((*u).to_string()),
            _ => None,
        }));
        out.extend(pick(|n| match n {
            GeneralName::DNSName(d) => Some((*d).to_string()),
            _ => None,
        }));
        out.extend(pick(|n| match n {
            GeneralName::RFC822Name(m) => Some((*m).to_string()),
            _ => None,
        }));
    }
    out.truncate(MAX_NAMES);
    out.iter().map(|n| crate::text::guest_text(n)).collect()
}

/// The daemon's ceilings on one shard: its own (the flags') and the `--ceiling NAME=FILE`
/// ones, in command-line order. Shard-local: each shard opens its own directory handles.
#[derive(Debug)]
pub(crate) struct Ceilings {
    pub default: Rc<Ceiling>,
    pub named: Vec<(String, Rc<Ceiling>)>,
}

/// Who a connection's client is: its recorded name (`None` without a client certificate)
/// and the ceiling it gets. `Send`, so a connection can carry it to another shard, which
/// looks the ceiling up again in its own [`Ceilings`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Peer {
    /// The recorded name.
    pub identity: Option<Arc<str>>,
    /// Index into [`Ceilings::named`]; `None`: the daemon's own ceiling.
    pub ceiling: Option<usize>,
}

impl Ceilings {
    /// The peer a certificate with `names` is (the first `--ceiling` it matches).
    pub(crate) fn peer(&self, names: &[String]) -> Peer {
        let matched = self
            .named
            .iter()
            .enumerate()
            .find(|(_, (name, _))| names.iter().any(|n| n == name));
        let identity = match matched {
            Some((_, (name, _))) => name.clone(),
            None => names.first().cloned().unwrap_or_else(|| "?".into()),
        };
        Peer {
            identity: Some(Arc::from(identity)),
            ceiling: matched.map(|(i, _)| i),
        }
    }

    /// The ceiling of `peer` on this shard.
    pub(crate) fn of(&self, peer: &Peer) -> &Rc<Ceiling> {
        peer.ceiling
            .and_then(|i| self.named.get(i))
            .map_or(&self.default, |(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(cn: &str, sans: &[&str]) -> Vec<u8> {
        let mut params =
            rcgen::CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        if !cn.is_empty() {
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, cn);
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn names_come_common_name_first_then_alternative_names() {
        let der = cert("ci-runner", &["runner.ci.example", "b.example"]);
        assert_eq!(names(&der), ["ci-runner", "runner.ci.example", "b.example"]);
        assert_eq!(names(&cert("", &["only.example"])), ["only.example"]);
        assert!(names(b"not a certificate").is_empty());
    }

    #[test]
    fn hostile_names_are_bounded_and_escaped() {
        let long = "x".repeat(10_000);
        let sans: Vec<String> = (0..100).map(|i| format!("n{i}.example")).collect();
        let sans: Vec<&str> = sans.iter().map(String::as_str).collect();
        let got = names(&cert(&format!("{long}\n"), &sans));
        assert_eq!(got.len(), MAX_NAMES);
        assert!(
            got[0].len() <= crate::text::GUEST_TEXT_MAX + 32,
            "{}",
            got[0].len()
        );
        let forged = names(&cert("a\r\n[pid 0] cell: b", &[]));
        assert_eq!(forged, ["a\\u{d}\\u{a}[pid 0] cell: b"]);
    }

    #[test]
    fn the_first_matching_ceiling_wins() {
        let c = |n: u64| {
            let mut c = Ceiling::default();
            c.limits.max_memory = n;
            Rc::new(c)
        };
        let ceilings = Ceilings {
            default: c(1),
            named: vec![("b".into(), c(2)), ("a".into(), c(3))],
        };
        let peer = ceilings.peer(&["a".into(), "b".into()]);
        assert_eq!(peer.identity.as_deref(), Some("b"));
        assert_eq!(ceilings.of(&peer).limits.max_memory, 2);
        let stranger = ceilings.peer(&["z".into()]);
        assert_eq!(stranger.identity.as_deref(), Some("z"));
        assert_eq!(ceilings.of(&stranger).limits.max_memory, 1);
        assert_eq!(ceilings.peer(&[]).identity.as_deref(), Some("?"));
        assert_eq!(ceilings.of(&Peer::default()).limits.max_memory, 1);
    }
}
