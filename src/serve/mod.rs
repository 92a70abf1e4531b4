//! `cell serve`: the supervisor as a daemon. One long-running host with one engine (compiled
//! code stays warm), one [`Supervisor`] and one process table, serving clients on unix and
//! TCP listeners; each client gets a `Daemon` (`daemon.rs`) whose jobs (`job.rs`) are pid0
//! trees of their own, within the listener's grant ceiling (`ceiling.rs`).
//!
//! `cell run` and `cell serve` share the supervisor: a job is started with the same
//! `Supervisor::spawn_root` as `cell run`'s pid0, in a [`crate::tree::Tree`] of its own (its
//! report history, its stderr stream, its network counts), so everything below — stores,
//! RPC, limits, cascade — is one code path.
//!
//! Threading: `--shards N` current-thread runtimes, each with a `LocalSet` and a supervisor of
//! its own (`shards.rs`); a job's whole tree lives on one shard. Listeners, services and
//! `--http` fronts live on shard 0; each client connection is one local task of the shard it
//! was handed to (`accept.rs`). Bounds:
//! [`MAX_CLIENTS`] connections, `max_jobs` jobs at once over all shards, and per connection
//! the same framing, flow and call bounds as a guest's.

pub(crate) mod accept;
pub(crate) mod ceiling;
pub(crate) mod daemon;
pub(crate) mod http;
pub(crate) mod identity;
pub(crate) mod job;
pub(crate) mod listen;
pub(crate) mod metrics;
pub(crate) mod remotes;
pub(crate) mod services;
pub(crate) mod shards;
pub(crate) mod subscribe;

use std::future::Future;
use std::rc::Rc;

use capnp::capability::Rc as CapRc;

use crate::budget::SharedBudget;
use crate::cell_capnp::{daemon as daemon_capnp, login};
use crate::engine::{CellEngine, EngineConfig};
use crate::limits::{LOGIN_TIMEOUT, MAX_CLIENTS, TEARDOWN_GRACE};
use crate::net::audit::Audit;
use crate::rpc::fail::failed;
use crate::rpc::Link;
use crate::shard::{ShardSet, Shards};
use crate::supervisor::{ShardPlace, SharedParts, Supervisor};
use crate::tls;
use ceiling::Ceiling;
use daemon::{ClientState, DaemonServer};
use listen::ListenAddr;
use shards::ShardCore;

/// What `cell serve` runs with.
pub struct ServeConfig {
    pub listen: Vec<ListenAddr>,
    /// The token TCP clients must present (`--token-file`, trimmed).
    pub token: Option<String>,
    /// The most any job may get (the same for every listener).
    pub ceiling: CeilingConfig,
    pub engine: EngineConfig,
    /// `--audit FILE`, opened before anything runs.
    pub audit: Option<std::fs::File>,
    /// `--resolve NAME=IP`, for every job.
    pub resolve: std::collections::HashMap<String, std::net::IpAddr>,
    /// Jobs running at once.
    pub max_jobs: usize,
    /// The services to start and keep up.
    pub services: Vec<services::ServiceSpec>,
    /// Re-reads the services on SIGHUP (from `--config`); `None`: SIGHUP is ignored.
    pub reload: Option<Reload>,
    /// `--metrics ADDR`: serve Prometheus metrics there.
    pub metrics: Option<std::net::SocketAddr>,
    /// `--metrics-public`: a non-loopback `--metrics` address is allowed.
    pub metrics_public: bool,
    /// `--http ADDR FILE` and `[[http]]`: proxy components to serve.
    pub http: Vec<http::HttpSpec>,
    /// `--tls-cert` and `--tls-key`: TCP listeners speak TLS (and may be non-loopback).
    pub tls: Option<tls::CertPair>,
    /// `--client-ca`: TLS is mutual; clients are who their certificates say.
    pub client_ca: Option<std::path::PathBuf>,
    /// `--ceiling NAME=FILE`: the ceilings of clients whose certificates carry NAME.
    pub ceilings: Vec<(String, CeilingConfig)>,
    /// `--shards N`: the threads jobs run on.
    pub shards: usize,
    /// `--remote NAME=tls://HOST:PORT`: nodes jobs may spawn on (linked per shard on demand).
    pub remotes: Vec<crate::remote::RemoteSpec>,
    /// `--remote-ca`, `--remote-cert`, `--remote-key` (set whenever `remotes` is not empty).
    pub remote_tls: Option<crate::remote::RemoteTls>,
}

/// How SIGHUP gets the new set of services.
pub(crate) type Reload = Box<dyn Fn() -> anyhow::Result<Vec<services::ServiceSpec>>>;

/// The ceiling as flags give it; its directories are opened when the daemon starts.
#[derive(Clone, Debug)]
pub struct CeilingConfig {
    /// `--net` rules; empty: no job gets a network.
    pub net: Vec<crate::net::policy::NetRule>,
    pub dirs: Vec<crate::grants::DirGrant>,
    pub limits: crate::limits::Limits,
    /// Names of the daemon's `--remote` nodes its jobs may get.
    pub remotes: Vec<String>,
}

/// What every client connection of the daemon shares, one per shard (shard-local).
pub(crate) struct DaemonCore {
    /// This shard's supervisor.
    pub sup: Supervisor,
    /// Which shard this is.
    pub shard: usize,
    /// Every shard, this one included.
    pub shards: Shards<ShardCore>,
    /// Jobs running now on every shard, bounded by `--max-jobs`.
    pub jobs: SharedBudget,
    /// Client connections now on every shard, bounded by [`MAX_CLIENTS`].
    clients: SharedBudget,
    /// What each `--http` front has answered (for `--metrics`).
    pub http: std::cell::RefCell<Vec<Rc<http::HttpStats>>>,
    /// Every front's time to a response head, labelled by front.
    pub http_latency: http::LatencyFamily,
    /// This shard's links to the daemon's `--remote` nodes.
    pub remotes: remotes::RemotePool,
}

/// Runs the daemon until `shutdown` resolves (SIGTERM/SIGINT), then stops every job
/// ("killed by the operator"), waits at most [`TEARDOWN_GRACE`] for them, removes its unix
/// sockets and returns 0. Must be called inside a `LocalSet`.
///
/// # Errors
/// A listener cannot be set up or a ceiling directory opened (exit 125).
pub(crate) async fn serve(
    mut config: ServeConfig,
    shutdown: impl Future<Output = i32>,
) -> anyhow::Result<u8> {
    crate::net::count::raise_fd_limit();
    // Before anything can be signalled: SIGHUP's default action would end the daemon.
    let hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(hup) => Some(hup),
        Err(e) => {
            tracing::warn!("cannot handle SIGHUP ({e}): the config will not be re-read");
            None
        }
    };
    if config.listen.is_empty() && config.http.is_empty() {
        anyhow::bail!(
            "nothing to listen on: give --listen unix:PATH (or tcp:127.0.0.1:PORT), or --http \
             ADDR FILE.wasm"
        );
    }
    let set = start_shards(&mut config)?;
    let (core, ceiling) = {
        let front = set.local();
        (front.core.clone(), front.ceiling().clone())
    };
    // Dropped on every way out (an error below included): accepting stops, sockets go.
    let open = open_listeners(&config, &core).await?;
    let mut fronts = Vec::new();
    for spec in &config.http {
        let serving = http::start(&core, &ceiling, spec).await?;
        core.http.borrow_mut().push(serving.stats.clone());
        fronts.push(serving);
    }
    let services = services::Services::new(core.clone(), ceiling.clone());
    services.apply(std::mem::take(&mut config.services)).await;
    let sig = until_shutdown(shutdown, hup, &services, config.reload.as_ref()).await;
    tracing::info!("signal {sig}: stopping every job");
    for task in &open.tasks {
        task.abort();
    }
    drop(fronts);
    services.stop_all().await;
    if !shards::stop_all(set.shards(), TEARDOWN_GRACE).await {
        tracing::warn!("some processes did not stop within {TEARDOWN_GRACE:?}");
    }
    let stats = core.http.borrow().clone();
    if !http::drain(&stats, TEARDOWN_GRACE).await {
        tracing::warn!("some HTTP requests did not finish within {TEARDOWN_GRACE:?}");
    }
    drop(open);
    drop(set);
    Ok(0)
}

/// Starts the shards, each with its supervisor over the shared engine, audit sink and event
/// bus, and its own copy of the ceiling (its directories opened on that shard).
fn start_shards(config: &mut ServeConfig) -> anyhow::Result<ShardSet<ShardCore>> {
    let engine = CellEngine::new(&config.engine)?;
    let audit = match config.audit.take() {
        Some(file) => Audit::to_writer(file),
        None => Audit::tracing_only(),
    };
    let mut shared = SharedParts::new(engine, audit);
    shared.pinned = std::sync::Arc::new(std::mem::take(&mut config.resolve));
    let jobs = SharedBudget::new(config.max_jobs);
    let clients = SharedBudget::new(MAX_CLIENTS);
    let ceiling = config.ceiling.clone();
    let named = config.ceilings.clone();
    let (remote_specs, remote_tls) = (config.remotes.clone(), config.remote_tls.clone());
    ShardSet::start(config.shards, move |index, shards| {
        let mut ceilings = identity::Ceilings {
            default: Rc::new(open_ceiling(&ceiling)?),
            named: Vec::with_capacity(named.len()),
        };
        for (name, config) in &named {
            let opened =
                open_ceiling(config).map_err(|e| e.context(format!("--ceiling {name}")))?;
            ceilings.named.push((name.clone(), Rc::new(opened)));
        }
        let place = ShardPlace {
            index,
            of: shards.len(),
            load: shards[index].procs(),
            pids: None,
        };
        let core = Rc::new(DaemonCore {
            sup: Supervisor::for_shard(&shared, place),
            shard: index,
            shards,
            jobs: jobs.clone(),
            clients: clients.clone(),
            http: std::cell::RefCell::default(),
            http_latency: http::latency_family(),
            remotes: remotes::RemotePool::new(remote_specs.clone(), remote_tls.clone()),
        });
        Ok(ShardCore {
            core,
            ceilings: Rc::new(ceilings),
        })
    })
}

/// Binds every `--listen` address (and `--metrics`) and starts accepting on each.
///
/// # Errors
/// The first listener that cannot be set up; those bound before it are closed again.
async fn open_listeners(config: &ServeConfig, core: &Rc<DaemonCore>) -> anyhow::Result<Listeners> {
    let token: Option<std::sync::Arc<str>> = config.token.as_deref().map(std::sync::Arc::from);
    let tls = match &config.tls {
        Some(pair) => Some(tls::acceptor(pair, config.client_ca.as_deref())?),
        None => None,
    };
    let guard = listen::TcpGuard {
        token: token.is_some(),
        tls: tls.is_some(),
        client_ca: config.client_ca.is_some(),
    };
    let mut open = Listeners::default();
    let (sockets, accepting) = (&mut open.sockets, &mut open.tasks);
    for addr in &config.listen {
        match addr {
            ListenAddr::Unix(path) => {
                let (listener, file) = listen::bind_unix(path)?;
                eprintln!("cell: listening on unix:{}", path.display());
                sockets.push(file);
                accepting.push(tokio::task::spawn_local(accept::accept_unix(
                    listener,
                    core.clone(),
                )));
            }
            ListenAddr::Tcp(sock) | ListenAddr::Tls(sock) => {
                let must_tls = matches!(addr, ListenAddr::Tls(_));
                if must_tls && tls.is_none() {
                    return Err(listen::ListenError::NoCertificate { addr: *sock }.into());
                }
                let listener = listen::bind_tcp(*sock, guard).await?;
                let local = listener.local_addr()?;
                let with = match (tls.is_some(), guard.client_ca) {
                    (false, _) => "",
                    (true, false) => " (TLS)",
                    (true, true) => " (mutual TLS)",
                };
                let scheme = if must_tls { "tls" } else { "tcp" };
                eprintln!("cell: listening on {scheme}:{local}{with}");
                let terms = accept::TcpTerms {
                    token: token.clone(),
                    tls: tls.clone(),
                    mutual: guard.client_ca,
                };
                accepting.push(tokio::task::spawn_local(accept::accept_tcp(
                    listener,
                    core.clone(),
                    terms,
                )));
            }
        }
    }
    if let Some(addr) = config.metrics {
        let listener = metrics::bind(addr, config.metrics_public).await?;
        eprintln!("cell: metrics on http://{}/metrics", listener.local_addr()?);
        accepting.push(tokio::task::spawn_local(metrics::serve(
            listener,
            core.clone(),
        )));
    }
    Ok(open)
}

/// The daemon's listeners: their accept tasks and unix socket files. Dropping it stops
/// accepting and removes the socket files it created.
#[derive(Default)]
struct Listeners {
    sockets: Vec<listen::SocketFile>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Listeners {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
        for socket in &self.sockets {
            socket.remove();
        }
    }
}

/// Serves until `shutdown`; on every SIGHUP, re-reads the services and applies the changes.
async fn until_shutdown(
    shutdown: impl Future<Output = i32>,
    mut hup: Option<tokio::signal::unix::Signal>,
    services: &services::Services,
    reload: Option<&Reload>,
) -> i32 {
    tokio::pin!(shutdown);
    loop {
        let hup_next = async {
            match hup.as_mut() {
                Some(h) => h.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            sig = &mut shutdown => return sig,
            _ = hup_next => match reload {
                None => tracing::warn!("SIGHUP: no --config to re-read"),
                Some(reload) => match reload() {
                    Ok(specs) => {
                        eprintln!("cell: SIGHUP: applying {} services", specs.len());
                        services.apply(specs).await;
                    }
                    Err(e) => eprintln!("cell: SIGHUP: the config is not valid, nothing changed: {e:#}"),
                },
            },
        }
    }
}

/// Opens the ceiling's directories (canonical paths, handles) and parses its policy.
fn open_ceiling(config: &CeilingConfig) -> anyhow::Result<Ceiling> {
    let network =
        (!config.net.is_empty()).then(|| crate::net::policy::NetPolicy::new(config.net.clone()));
    let mut dirs = Vec::new();
    for d in &config.dirs {
        let host = d
            .host
            .canonicalize()
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", d.host.display()))?;
        let dir = crate::hostdir::HostDir::open_root(&host, d.writable)
            .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", host.display()))?;
        dirs.push(ceiling::CeilingDir { host, dir });
    }
    Ok(Ceiling {
        network,
        dirs,
        limits: config.limits.clone(),
        remotes: config.remotes.clone(),
    })
}

/// What one client connection is served under: its ceiling, the token it must show first,
/// and who it is.
pub(crate) struct ClientTerms {
    pub ceiling: Rc<Ceiling>,
    pub token: Option<Rc<str>>,
    pub peer: identity::Peer,
}

/// Serves one client connection on its own task: a `Daemon` (or, with a token, a `Login`
/// that hands one out) under the same bounds as a guest's connection. When it ends, the jobs
/// it started `attached` are killed.
pub(crate) fn connect(
    permit: accept::ClientSlot,
    core: &Rc<DaemonCore>,
    terms: ClientTerms,
    read: impl futures::io::AsyncRead + Unpin + 'static,
    write: impl futures::io::AsyncWrite + Unpin + 'static,
) {
    let ClientTerms {
        ceiling,
        token,
        peer,
    } = terms;
    // A client may send a whole component in one call.
    let link = Link::new(read, write, shards::link_bounds(&ceiling.limits));
    let client = Rc::new(ClientState::new(core.clone(), ceiling, link.gate(), peer));
    let daemon: daemon_capnp::Client = capnp_rpc::new_client(DaemonServer::new(client.clone()));
    let (outcome_tx, outcome_rx) = tokio::sync::oneshot::channel();
    let needs_login = token.is_some();
    let bootstrap = match token {
        None => daemon.client,
        Some(token) => {
            let login: login::Client = capnp_rpc::new_client(LoginServer {
                token,
                daemon,
                outcome: std::cell::RefCell::new(Some(outcome_tx)),
            });
            login.client
        }
    };
    let system = link.serve(bootstrap);
    tokio::task::spawn_local(async move {
        let _permit = permit;
        // A wrong token, or none within LOGIN_TIMEOUT, closes the connection: no second try
        // on it, and no connection slot held by someone who never logs in.
        let login = async move {
            if !needs_login {
                return std::future::pending::<()>().await;
            }
            match tokio::time::timeout(LOGIN_TIMEOUT, outcome_rx).await {
                Ok(Ok(true)) | Ok(Err(_)) => std::future::pending::<()>().await,
                Ok(Ok(false)) => {}
                Err(_) => tracing::warn!("a client did not log in within {LOGIN_TIMEOUT:?}"),
            }
        };
        tokio::select! {
            ended = system => if let Err(e) = ended {
                tracing::debug!("client connection ended: {e}");
            },
            () = login => {}
        }
        client.detach_all();
    });
}

/// The bootstrap of a TCP listener: nothing until the token is shown.
struct LoginServer {
    token: Rc<str>,
    daemon: daemon_capnp::Client,
    /// Told whether the login succeeded; a failure closes the connection.
    outcome: std::cell::RefCell<Option<tokio::sync::oneshot::Sender<bool>>>,
}

impl login::Server for LoginServer {
    async fn login(
        self: CapRc<Self>,
        params: login::LoginParams,
        mut results: login::LoginResults,
    ) -> Result<(), capnp::Error> {
        let given = params.get()?.get_token()?;
        let given = given.as_bytes();
        if !same_token(given, self.token.as_bytes()) {
            tracing::warn!("a client presented a wrong token");
            // Close the connection once this answer is out.
            if let Some(tx) = self.outcome.borrow_mut().take() {
                tokio::task::spawn_local(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    let _ = tx.send(false);
                });
            }
            return Err(failed(cell_proto::Reason::Denied, "wrong token"));
        }
        if let Some(tx) = self.outcome.borrow_mut().take() {
            let _ = tx.send(true);
        }
        results.get().set_daemon(self.daemon.clone());
        Ok(())
    }
}

/// Compares tokens in time independent of where they differ.
fn same_token(given: &[u8], want: &[u8]) -> bool {
    let given = trim(given);
    let want = trim(want);
    let mut diff = u8::from(given.len() != want.len());
    for (i, w) in want.iter().enumerate() {
        diff |= w ^ given.get(i).copied().unwrap_or(0);
    }
    diff == 0
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end]
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_compare_whole_and_trimmed() {
        use super::same_token;
        assert!(same_token(b"s3cret\n", b"s3cret"));
        assert!(!same_token(b"s3cre", b"s3cret"));
        assert!(!same_token(b"s3cretX", b"s3cret"));
        assert!(!same_token(b"", b"s3cret"));
    }
}
