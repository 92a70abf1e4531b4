//! Links to remote nodes: `cell run --remote NAME=tls://HOST:PORT` connects, before pid0
//! starts, to another machine's `cell serve` over TCP with mutual TLS (this host shows
//! `--remote-cert`, trusts `--remote-ca`) and keeps that node's `Daemon` for pid0's
//! `Session.remotes()` (served by `rpc/remote.rs`).
//!
//! A link is *lost* — once, for good — when its connection ends (the node's process died, the
//! network dropped it) or when the node leaves a heartbeat ([`HEARTBEAT`], `Daemon.ping`)
//! unanswered for [`LINK_TIMEOUT`] (a frozen node, a black-holed route; TCP keepalive alone
//! would not notice a stopped process whose kernel still answers). Then the RPC system is
//! dropped, so every call in flight on the link fails at once, and [`RemoteLink::lost`]
//! resolves with the reason: each remote child's `wait` reports `killed: link-lost`, never
//! hangs. A lost link stays lost: `cell run` does not reconnect (run again); a daemon's
//! `--remote` pool (`serve/remotes.rs`) makes a new link for the next job that asks.
//!
//! Ownership and bounds: a link is shard-local (`Rc`, on the run's one thread), held by pid0's
//! grants; its task (RPC system + heartbeat) is aborted when the last holder drops it. What the
//! node sends is read with the same 64 MiB message bound as a daemon client's, and only in
//! answer to calls this host made (one heartbeat at a time, pid0's calls under pid0's own
//! call bounds); the node applies its own limits to everything it runs.

use std::rc::Rc;
use std::time::Duration;

use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use tokio::sync::watch;
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::cell_capnp::daemon;
use crate::tls::CertPair;

/// How often a link's node is asked whether it is still there.
pub(crate) const HEARTBEAT: Duration = Duration::from_secs(2);

/// How long a node may leave a heartbeat (or the connection attempt) unanswered.
pub(crate) const LINK_TIMEOUT: Duration = Duration::from_secs(6);

/// Messages from a node, at most (as for a daemon's clients).
const MAX_MESSAGE_WORDS: usize = 64 << 17;

/// `--remote NAME=tls://HOST:PORT`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteSpec {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl std::fmt::Display for RemoteSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}=tls://{}:{}", self.name, self.host, self.port)
    }
}

impl std::str::FromStr for RemoteSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("expected NAME=tls://HOST:PORT, got {s:?}");
        let (name, url) = s.split_once('=').ok_or_else(bad)?;
        let rest = url.strip_prefix("tls://").ok_or_else(bad)?;
        let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port: u16 = port.parse().map_err(|_| bad())?;
        check_name(name)?;
        if host.is_empty() || port == 0 {
            return Err(bad());
        }
        Ok(RemoteSpec {
            name: name.to_string(),
            host: host.to_string(),
            port,
        })
    }
}

/// Checks a remote's name: 1 to 64 letters, digits, `-`, `_` or `.`.
///
/// # Errors
/// The name is empty, too long, or has another character.
pub(crate) fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "remote name {name:?}: 1 to 64 letters, digits, '-', '_' or '.'"
        ))
    }
}

/// How this host proves itself to its remotes and checks them: the rustls client config built
/// from `--remote-ca`, `--remote-cert` and `--remote-key` when the flags are read — the files
/// are read once, before any guest runs, so a guest with a writable grant over them cannot
/// change who this host is to its nodes (nor make a later link fail).
#[derive(Clone)]
pub struct RemoteTls {
    connector: tokio_rustls::TlsConnector,
}

impl std::fmt::Debug for RemoteTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RemoteTls")
    }
}

impl RemoteTls {
    /// Reads the CA and this host's certificate and key.
    ///
    /// # Errors
    /// A file cannot be read or holds no usable certificate or key.
    pub fn load(ca: &std::path::Path, mine: &CertPair) -> anyhow::Result<Self> {
        Ok(RemoteTls {
            connector: crate::tls::connector(ca, Some(mine))?,
        })
    }
}

/// A live (or lost) link to one node.
pub struct RemoteLink {
    pub name: String,
    /// `tls://HOST:PORT`, for messages.
    pub addr: String,
    daemon: daemon::Client,
    lost: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RemoteLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "remote {} ({})", self.name, self.addr)
    }
}

impl Drop for RemoteLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RemoteLink {
    /// Connects to `spec` (TCP, then the TLS handshake, within [`LINK_TIMEOUT`]) and starts
    /// the link's task on this thread. Must be called inside a `LocalSet`.
    ///
    /// # Errors
    /// The name does not resolve, the node cannot be reached, or TLS fails (either side's
    /// certificate refused).
    pub(crate) async fn connect(spec: &RemoteSpec, tls: &RemoteTls) -> anyhow::Result<Rc<Self>> {
        let addr = format!("tls://{}:{}", spec.host, spec.port);
        let what = |e: String| anyhow::anyhow!("remote {} ({addr}): {e}", spec.name);
        let connector = tls.connector.clone();
        let server = crate::tls::server_name(&spec.host).map_err(|e| what(format!("{e:#}")))?;
        let connecting = async {
            let stream = tokio::net::TcpStream::connect((spec.host.as_str(), spec.port))
                .await
                .map_err(|e| what(format!("cannot connect: {e}")))?;
            let _ = stream.set_nodelay(true);
            connector
                .connect(server, stream)
                .await
                .map_err(|e| what(format!("TLS: {e}")))
        };
        let stream = tokio::time::timeout(LINK_TIMEOUT, connecting)
            .await
            .map_err(|_| what(format!("no answer within {LINK_TIMEOUT:?}")))??;
        let (read, write) = tokio::io::split(stream);
        let mut options = ReaderOptions::new();
        options.traversal_limit_in_words(Some(MAX_MESSAGE_WORDS));
        let network =
            twoparty::VatNetwork::new(read.compat(), write.compat_write(), Side::Client, options);
        let mut system = RpcSystem::new(Box::new(network), None);
        let daemon = daemon::Client {
            client: system.bootstrap(Side::Server),
        };
        // The node must answer once before pid0 is told it has it: a node that takes the TLS
        // connection but serves nothing (a token-only listener, another service) is an error
        // now, not a hang later.
        let (lost_tx, lost) = watch::channel(None);
        let first = daemon.ping_request().send().promise;
        let task = tokio::task::spawn_local(keep(system, daemon.clone(), lost_tx));
        match tokio::time::timeout(LINK_TIMEOUT, first).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                return Err(what(format!(
                    "the node does not answer as a cell daemon: {e}"
                )))
            }
            Err(_) => return Err(what(format!("no answer within {LINK_TIMEOUT:?}"))),
        }
        tracing::info!("remote {} linked ({addr})", spec.name);
        Ok(Rc::new(RemoteLink {
            name: spec.name.clone(),
            addr,
            daemon,
            lost,
            task,
        }))
    }

    /// The node's `Daemon`, while the link lives.
    ///
    /// # Errors
    /// The link was lost (the reason says why).
    pub(crate) fn daemon(&self) -> Result<daemon::Client, String> {
        match &*self.lost.borrow() {
            Some(why) => Err(why.clone()),
            None => Ok(self.daemon.clone()),
        }
    }

    /// Whether the link is lost (for good: a new one must be made).
    pub(crate) fn is_lost(&self) -> bool {
        self.lost.borrow().is_some() || self.task.is_finished()
    }

    /// Resolves, with the reason, once the link is lost (at once if it already is).
    pub(crate) async fn lost(&self) -> String {
        let mut rx = self.lost.clone();
        let why = match rx.wait_for(Option::is_some).await {
            Ok(why) => why.clone().unwrap_or_default(),
            // The task ended without saying why: it was aborted, so the link is gone.
            Err(_) => "the link was closed".into(),
        };
        why
    }
}

/// The link's task: runs the RPC system and the heartbeat until either fails, then says
/// why on `lost` and drops the system (failing every call in flight).
async fn keep(
    system: RpcSystem<Side>,
    daemon: daemon::Client,
    lost: watch::Sender<Option<String>>,
) {
    let heartbeat = async {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            let ping = daemon.ping_request().send().promise;
            match tokio::time::timeout(LINK_TIMEOUT, ping).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return format!("the node failed a heartbeat: {e}"),
                Err(_) => {
                    return format!("the node left a heartbeat unanswered for {LINK_TIMEOUT:?}")
                }
            }
        }
    };
    let why = tokio::select! {
        ended = system => match ended {
            Ok(()) => "the node closed the connection".to_string(),
            Err(e) => format!("the connection failed: {e}"),
        },
        why = heartbeat => why,
    };
    tracing::warn!("remote link lost: {why}");
    lost.send_replace(Some(why));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_specs_parse() {
        let s: RemoteSpec = "b=tls://127.0.0.1:7443".parse().unwrap();
        assert_eq!(
            (s.name.as_str(), s.host.as_str(), s.port),
            ("b", "127.0.0.1", 7443)
        );
        let s: RemoteSpec = "gpu-1=tls://[::1]:9".parse().unwrap();
        assert_eq!(s.host, "::1");
        let s: RemoteSpec = "n=tls://node.example:443".parse().unwrap();
        assert_eq!(s.to_string(), "n=tls://node.example:443");
        for bad in [
            "b",
            "b=127.0.0.1:7443",
            "b=tcp://127.0.0.1:7443",
            "b=tls://127.0.0.1",
            "b=tls://127.0.0.1:0",
            "b=tls://:80",
            "=tls://h:1",
            "a b=tls://h:1",
            "b=tls://h:99999",
        ] {
            assert!(bad.parse::<RemoteSpec>().is_err(), "{bad}");
        }
    }
}
