//! The daemon's command-line clients: `cell exec` (`exec.rs`), `cell ps` and `cell kill`
//! (`ps.rs`), `cell logs` (`logs.rs`), all speaking `capnp/cell.capnp`'s `Daemon` over the
//! daemon's socket, like any other client (the Python example in `examples/python` speaks the
//! same schema).

pub(crate) mod addr;
pub(crate) mod exec;
pub(crate) mod logs;
pub(crate) mod ps;

use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::cell_capnp::{daemon, login};
use addr::ConnectAddr;

/// Where a client connects, and how.
pub(crate) struct Endpoint {
    pub addr: ConnectAddr,
    /// The token of a TCP daemon.
    pub token_file: Option<std::path::PathBuf>,
    /// `--tls-ca`: speak TLS, trusting these certificates.
    pub tls_ca: Option<std::path::PathBuf>,
    /// `--tls-name`: the name the daemon's certificate must carry (default: the address's
    /// host, a DNS name or an IP).
    pub tls_name: Option<String>,
    /// `--tls-cert`/`--tls-key`: the certificate this client shows (mutual TLS).
    pub tls_cert: Option<crate::tls::CertPair>,
}

/// A connection to a daemon: its `Daemon` capability. The RPC system runs on a local task
/// until every capability of it is dropped.
pub(crate) async fn connect(end: &Endpoint) -> anyhow::Result<daemon::Client> {
    let (addr, token_file) = (&end.addr, end.token_file.as_deref());
    let hint = "is `cell serve` running there?";
    let (read, write): (
        Box<dyn futures::io::AsyncRead + Unpin>,
        Box<dyn futures::io::AsyncWrite + Unpin>,
    ) = match addr {
        ConnectAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e} ({hint})"))?;
            let (r, w) = stream.into_split();
            (Box::new(r.compat()), Box::new(w.compat_write()))
        }
        ConnectAddr::Tcp(hp) | ConnectAddr::Tls(hp) => {
            if matches!(addr, ConnectAddr::Tls(_)) && end.tls_ca.is_none() {
                anyhow::bail!("{addr}: TLS needs --tls-ca FILE (the certificate(s) to trust)");
            }
            // A name is resolved by the system resolver, like any client's would be.
            let stream = tokio::net::TcpStream::connect((hp.host.as_str(), hp.port))
                .await
                .map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e} ({hint})"))?;
            let _ = stream.set_nodelay(true);
            match end.tls_ca.as_deref() {
                None => {
                    let (r, w) = stream.into_split();
                    (Box::new(r.compat()), Box::new(w.compat_write()))
                }
                Some(ca) => {
                    let connector = crate::tls::connector(ca, end.tls_cert.as_ref())?;
                    let name = end.tls_name.as_deref().unwrap_or(&hp.host);
                    let name = crate::tls::server_name(name)?;
                    let tls = connector
                        .connect(name, stream)
                        .await
                        .map_err(|e| anyhow::anyhow!("{addr}: TLS: {e}"))?;
                    let (r, w) = tokio::io::split(tls);
                    (Box::new(r.compat()), Box::new(w.compat_write()))
                }
            }
        }
    };
    let mut options = ReaderOptions::new();
    options.traversal_limit_in_words(Some(64 << 20));
    let network = twoparty::VatNetwork::new(read, write, Side::Client, options);
    let mut system = RpcSystem::new(Box::new(network), None);
    let bootstrap: capnp::capability::Client = system.bootstrap(Side::Server);
    tokio::task::spawn_local(async move {
        if let Err(e) = system.await {
            tracing::debug!("daemon connection: {e}");
        }
    });
    // A unix socket, and a mutual-TLS daemon to which no token is shown, answer a `Daemon`
    // at once; otherwise the daemon wants the token first.
    match (addr, token_file) {
        (ConnectAddr::Unix(_), _) => Ok(daemon::Client { client: bootstrap }),
        (_, None) if end.tls_cert.is_some() => Ok(daemon::Client { client: bootstrap }),
        (_, None) => anyhow::bail!(
            "{addr}: a TCP daemon needs --token-file FILE (its token), or --tls-cert and \
             --tls-key when it takes client certificates"
        ),
        (_, Some(path)) => {
            let token = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
            let login = login::Client { client: bootstrap };
            let mut req = login.login_request();
            req.get().set_token(token.trim());
            let reply = req
                .send()
                .promise
                .await
                .map_err(|e| anyhow::anyhow!("{addr}: {}", described(&e)))?;
            Ok(reply.get()?.get_daemon()?)
        }
    }
}

/// A capnp error from the daemon as `REASON: DETAIL`, or what went wrong with the connection.
pub(crate) fn described(e: &capnp::Error) -> String {
    match e.kind {
        capnp::ErrorKind::Disconnected => {
            format!("lost the connection to the daemon ({})", e.extra)
        }
        _ => cell_proto::CellError::from(e.clone()).to_string(),
    }
}
