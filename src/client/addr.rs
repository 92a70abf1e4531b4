//! `--connect ADDR`: where a client finds a daemon. Unlike a listener's address (an IP to bind,
//! `serve::listen::ListenAddr`), a client's may name a host — `tls:cell.cell.svc:7443`, the
//! Service of a Kubernetes DaemonSet — resolved by the system resolver when connecting, and
//! that name is then what the daemon's certificate must carry (unless `--tls-name` says
//! otherwise).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

/// A daemon's address, as a client gives it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectAddr {
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `tcp:HOST:PORT`: TLS when the client trusts a CA (`--tls-ca`).
    Tcp(HostPort),
    /// `tls:HOST:PORT`: TCP that must speak TLS (an error without `--tls-ca`).
    Tls(HostPort),
}

/// A host (an IP or a DNS name, without brackets) and a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ConnectAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConnectAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            ConnectAddr::Tcp(hp) => write!(f, "tcp:{hp}"),
            ConnectAddr::Tls(hp) => write!(f, "tls:{hp}"),
        }
    }
}

impl FromStr for HostPort {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            || format!("{s:?} is not HOST:PORT (127.0.0.1:7070, [::1]:7070, cell.example:7443)");
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let host = match host.strip_prefix('[') {
            Some(inner) => inner.strip_suffix(']').ok_or_else(bad)?,
            None if host.contains(':') => return Err(bad()),
            None => host,
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
        if !host_ok || port == 0 {
            return Err(bad());
        }
        Ok(HostPort {
            host: host.to_string(),
            port,
        })
    }
}

impl FromStr for ConnectAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path (unix:/run/cell/cell.sock)".into());
            }
            return Ok(ConnectAddr::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            return addr.parse().map(ConnectAddr::Tcp);
        }
        if let Some(addr) = s.strip_prefix("tls:") {
            return addr.parse().map(ConnectAddr::Tls);
        }
        Err(format!(
            "{s:?}: expected unix:PATH, tcp:HOST:PORT or tls:HOST:PORT (e.g. unix:/run/cell/cell.sock)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ips_and_bracketed_v6_parse_and_print_back() {
        for (text, host, port) in [
            ("tls:cell.cell.svc:7443", "cell.cell.svc", 7443),
            ("tcp:127.0.0.1:7070", "127.0.0.1", 7070),
            ("tls:[::1]:7443", "::1", 7443),
        ] {
            let addr: ConnectAddr = text.parse().unwrap();
            let hp = match &addr {
                ConnectAddr::Tcp(hp) | ConnectAddr::Tls(hp) => hp,
                ConnectAddr::Unix(_) => unreachable!(),
            };
            assert_eq!((hp.host.as_str(), hp.port), (host, port));
            assert_eq!(addr.to_string(), text);
        }
        assert_eq!(
            "unix:/run/cell.sock".parse::<ConnectAddr>(),
            Ok(ConnectAddr::Unix("/run/cell.sock".into()))
        );
    }

    #[test]
    fn malformed_addresses_are_refused_with_the_expected_form() {
        for bad in [
            "tls:cell:0",
            "tls::7443",
            "tls:cell",
            "tls:::1:7443",
            "tls:[::1:7443",
            "tcp:a b:1",
            "tcp:a/b:1",
            "unix:",
            "cell:7443",
        ] {
            let err = bad.parse::<ConnectAddr>().unwrap_err();
            assert!(
                err.contains("expected") || err.contains("HOST:PORT") || err.contains("path"),
                "{bad}: {err}"
            );
        }
    }
}
