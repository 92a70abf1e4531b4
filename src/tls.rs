//! TLS for the daemon's TCP listeners (`--tls-cert`, `--tls-key`: PEM files) and for its
//! clients (`--tls-ca`: the PEM certificate(s) to trust), with rustls (ring provider) through
//! tokio-rustls — no hand-written crypto. With TLS a TCP listener may use a non-loopback
//! address; the token is still required, inside the encrypted stream, unless the daemon
//! has `--client-ca`: then TLS is mutual — rustls's WebPKI verifier refuses, during the
//! handshake, every client without a certificate chaining to one of those CAs, and the
//! names in the certificate are who the client is (`identity.rs`). A client shows its own
//! certificate with `--tls-cert`/`--tls-key` (`cell exec`, `cell run --remote`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// How long a client may take to complete its handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    anyhow::ensure!(
        !certs.is_empty(),
        "{}: no PEM certificate in it",
        path.display()
    );
    Ok(certs)
}

/// A certificate chain and its key: `--tls-cert FILE --tls-key FILE`.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

impl CertPair {
    fn load(&self) -> anyhow::Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)> {
        let chain = certs(&self.cert).map_err(|e| anyhow::anyhow!("--tls-cert {e}"))?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", self.key.display()))?;
        Ok((chain, key))
    }
}

/// The certificates of a CA file as a root store.
fn roots(flag: &str, ca: &Path) -> anyhow::Result<Arc<rustls::RootCertStore>> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca).map_err(|e| anyhow::anyhow!("{flag} {e}"))? {
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("{flag} {}: {e}", ca.display()))?;
    }
    Ok(Arc::new(roots))
}

/// The acceptor for `--tls-cert CERT --tls-key KEY`; with `client_ca` (`--client-ca`) every
/// client must show a certificate chaining to one of its certificates.
///
/// # Errors
/// A file cannot be read or parsed, or the key does not fit the certificate.
pub(crate) fn acceptor(
    pair: &CertPair,
    client_ca: Option<&Path>,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let (chain, key) = pair.load()?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                roots("--client-ca", ca)?,
                provider(),
            )
            .build()
            .map_err(|e| anyhow::anyhow!("--client-ca {}: {e}", ca.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A client's connector trusting the certificates in `ca`, showing `mine` when given.
///
/// # Errors
/// A file cannot be read or holds no usable certificate, or the key does not fit.
pub(crate) fn connector(
    ca: &Path,
    mine: Option<&CertPair>,
) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots("--tls-ca", ca)?);
    let config = match mine {
        None => builder.with_no_client_auth(),
        Some(pair) => {
            let (chain, key) = pair.load()?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?
        }
    };
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The name a client checks the daemon's certificate against: `--tls-name`, else the address.
///
/// # Errors
/// Not a valid DNS name or IP address.
pub(crate) fn server_name(name: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(name.to_string()).map_err(|e| anyhow::anyhow!("--tls-name {name:?}: {e}"))
}
