//! `--remote`: other machines' `cell serve` daemons a pid0 may spawn on (`Session.remotes`).
//! `cell run --remote NAME=tls://HOST:PORT` connects to them itself, showing `--remote-cert`;
//! `cell exec --remote NAME` asks the daemon for one of its own (`cell serve --remote`).

use std::path::PathBuf;

use clap::Args;

use crate::remote::{RemoteSpec, RemoteTls};
use crate::tls::CertPair;

/// One `--remote` value: a node and its address, or only a name (a daemon's node, for
/// `cell exec`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RemoteArg {
    Node(RemoteSpec),
    Named(String),
}

impl std::str::FromStr for RemoteArg {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.contains('=') {
            return s.parse().map(RemoteArg::Node);
        }
        crate::remote::check_name(s)?;
        Ok(RemoteArg::Named(s.to_string()))
    }
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Remote nodes (pid0 may spawn children there: Session.remotes)")]
pub struct RemoteArgs {
    /// Grant pid0 the `cell serve` at HOST:PORT (mutual TLS) under NAME (repeatable): its
    /// children started there behave like local ones, within that node's ceiling. Connected
    /// before pid0 starts; a node that cannot be reached is an error (exit 125). With
    /// `cell exec`, only NAME: one of the daemon's own nodes (`cell serve --remote`).
    #[arg(long = "remote", value_name = "NAME=tls://HOST:PORT")]
    pub remotes: Vec<RemoteArg>,

    #[command(flatten)]
    pub tls: RemoteTlsArgs,
}

/// The certificates a host uses with its remote nodes.
#[derive(Debug, Args)]
pub struct RemoteTlsArgs {
    /// The CA certificate(s) the nodes' certificates must chain to (PEM).
    #[arg(long, value_name = "FILE", requires = "remotes")]
    pub remote_ca: Option<PathBuf>,

    /// The certificate this host shows the nodes (PEM chain; its name is who the nodes
    /// think it is, and chooses their ceiling for it).
    #[arg(long, value_name = "FILE", requires_all = ["remotes", "remote_key"])]
    pub remote_cert: Option<PathBuf>,

    /// The private key of --remote-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "remote_cert")]
    pub remote_key: Option<PathBuf>,
}

impl RemoteTlsArgs {
    /// Whether any of the three was given.
    pub(crate) fn any(&self) -> bool {
        self.remote_ca.is_some() || self.remote_cert.is_some() || self.remote_key.is_some()
    }
}

/// Checks a list of nodes (names unique, all three TLS flags there) and how to reach them.
///
/// # Errors
/// Two remotes with one name, or a missing TLS flag.
pub(crate) fn checked(
    remotes: Vec<RemoteSpec>,
    tls: RemoteTlsArgs,
) -> anyhow::Result<(Vec<RemoteSpec>, Option<RemoteTls>)> {
    if remotes.is_empty() {
        return Ok((Vec::new(), None));
    }
    let mut names = std::collections::BTreeSet::new();
    for r in &remotes {
        anyhow::ensure!(
            names.insert(&r.name),
            "--remote: two remotes are named {:?}",
            r.name
        );
    }
    let (Some(ca), Some(cert), Some(key)) = (tls.remote_ca, tls.remote_cert, tls.remote_key) else {
        anyhow::bail!(
            "--remote needs --remote-ca, --remote-cert and --remote-key: nodes take only \
             clients with a certificate (cell serve --client-ca)"
        );
    };
    let tls = RemoteTls::load(&ca, &CertPair { cert, key })
        .map_err(|e| anyhow::anyhow!("--remote-ca/--remote-cert/--remote-key: {e:#}"))?;
    Ok((remotes, Some(tls)))
}

impl RemoteArgs {
    /// The remotes and how to reach them (`cell run`).
    ///
    /// # Errors
    /// A bare name (that is `cell exec`'s form), a `--remote` without the three TLS flags,
    /// or two remotes with one name.
    pub(crate) fn into_remotes(self) -> anyhow::Result<(Vec<RemoteSpec>, Option<RemoteTls>)> {
        let mut specs = Vec::with_capacity(self.remotes.len());
        for r in self.remotes {
            match r {
                RemoteArg::Node(spec) => specs.push(spec),
                RemoteArg::Named(name) => anyhow::bail!(
                    "--remote {name}: give the node's address, --remote {name}=tls://HOST:PORT \
                     (a bare name asks a daemon for one of its own nodes, with cell exec)"
                ),
            }
        }
        checked(specs, self.tls)
    }

    /// The daemon's nodes a job asks for, by name (`cell exec`).
    ///
    /// # Errors
    /// An address or a TLS flag: the daemon connects only to its own `--remote`s, as itself.
    pub(crate) fn into_names(self) -> anyhow::Result<Vec<String>> {
        anyhow::ensure!(
            !self.tls.any(),
            "--remote-ca, --remote-cert and --remote-key are the daemon's (cell serve): a job's \
             remotes are linked by the daemon, as itself"
        );
        let mut names: Vec<String> = Vec::with_capacity(self.remotes.len());
        for r in self.remotes {
            match r {
                RemoteArg::Named(name) if names.contains(&name) => {
                    anyhow::bail!("--remote {name}: given twice")
                }
                RemoteArg::Named(name) => names.push(name),
                RemoteArg::Node(spec) => anyhow::bail!(
                    "--remote {spec}: a daemon job names one of the daemon's own nodes \
                     (--remote {}); the daemon connects to no other address",
                    spec.name
                ),
            }
        }
        Ok(names)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_name_is_for_exec_and_an_address_for_run() {
        let args = |remotes: &[&str]| RemoteArgs {
            remotes: remotes.iter().map(|r| r.parse().unwrap()).collect(),
            tls: RemoteTlsArgs {
                remote_ca: Some("ca.pem".into()),
                remote_cert: Some("me.pem".into()),
                remote_key: Some("me-key.pem".into()),
            },
        };
        // The certificate files are read at once: these do not exist.
        let missing = args(&["b=tls://127.0.0.1:7443"])
            .into_remotes()
            .unwrap_err();
        assert!(missing.to_string().contains("--remote-ca"), "{missing}");
        assert!(args(&["b"]).into_remotes().is_err());
        assert!(args(&["b=tls://h:1", "b=tls://h:2"])
            .into_remotes()
            .is_err());
        let mut named = args(&["b", "gpu"]);
        named.tls = RemoteTlsArgs {
            remote_ca: None,
            remote_cert: None,
            remote_key: None,
        };
        assert_eq!(named.into_names().unwrap(), ["b", "gpu"]);
        assert!(
            args(&["b"]).into_names().is_err(),
            "TLS flags are the daemon's"
        );
        assert!("a b".parse::<RemoteArg>().is_err());
    }
}
