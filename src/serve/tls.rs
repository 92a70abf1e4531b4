//! TLS for the daemon's TCP listeners (`--tls-cert`, `--tls-key`: PEM files) and for its
//! clients (`--tls-ca`: the PEM certificate(s) to trust), with rustls (ring provider) through
//! tokio-rustls — no hand-written crypto. With TLS a TCP listener may use a non-loopback
//! address; the token is still required, inside the encrypted stream.

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

/// The acceptor for `--tls-cert CERT --tls-key KEY`.
///
/// # Errors
/// A file cannot be read or parsed, or the key does not fit the certificate.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let chain = certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| anyhow::anyhow!("--tls-key {}: {e}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| anyhow::anyhow!("--tls-cert/--tls-key: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// A client's connector trusting the certificates in `ca`.
///
/// # Errors
/// The file cannot be read or holds no usable certificate.
pub(crate) fn connector(ca: &Path) -> anyhow::Result<tokio_rustls::TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs(ca)? {
        roots
            .add(cert)
            .map_err(|e| anyhow::anyhow!("--tls-ca {}: {e}", ca.display()))?;
    }
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// The name a client checks the daemon's certificate against: `--tls-name`, else the address.
///
/// # Errors
/// Not a valid DNS name or IP address.
pub(crate) fn server_name(name: &str) -> anyhow::Result<ServerName<'static>> {
    ServerName::try_from(name.to_string()).map_err(|e| anyhow::anyhow!("--tls-name {name:?}: {e}"))
}
