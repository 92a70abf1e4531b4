//! `cell run --remote NAME=tls://HOST:PORT`: other machines' `cell serve` daemons granted to
//! pid0 (`Session.remotes`), and the certificate this host shows them.

use std::path::PathBuf;

use clap::Args;

use crate::remote::{RemoteSpec, RemoteTls};
use crate::tls::CertPair;

#[derive(Debug, Args)]
#[command(next_help_heading = "Remote nodes (pid0 may spawn children there: Session.remotes)")]
pub struct RemoteArgs {
    /// Grant pid0 the `cell serve` at HOST:PORT (mutual TLS) under NAME (repeatable): its
    /// children started there behave like local ones, within that node's ceiling. Connected
    /// before pid0 starts; a node that cannot be reached is an error (exit 125).
    #[arg(long = "remote", value_name = "NAME=tls://HOST:PORT")]
    pub remotes: Vec<RemoteSpec>,

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

impl RemoteArgs {
    /// The remotes and how to reach them.
    ///
    /// # Errors
    /// A `--remote` without the three TLS flags, or two remotes with one name.
    pub(crate) fn into_remotes(self) -> anyhow::Result<(Vec<RemoteSpec>, Option<RemoteTls>)> {
        if self.remotes.is_empty() {
            return Ok((Vec::new(), None));
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &self.remotes {
            anyhow::ensure!(
                names.insert(&r.name),
                "--remote: two remotes are named {:?}",
                r.name
            );
        }
        let (Some(ca), Some(cert), Some(key)) = (self.remote_ca, self.remote_cert, self.remote_key)
        else {
            anyhow::bail!(
                "--remote needs --remote-ca, --remote-cert and --remote-key: nodes take only \
                 clients with a certificate (cell serve --client-ca)"
            );
        };
        let tls = RemoteTls {
            ca,
            mine: CertPair { cert, key },
        };
        Ok((self.remotes, Some(tls)))
    }

    /// Whether any remote was asked for.
    pub(crate) fn any(&self) -> bool {
        !self.remotes.is_empty()
    }
}
