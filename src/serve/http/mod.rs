//! `cell serve --http ADDR FILE.wasm` (and `[[http]]` in `--config`): serving a
//! `wasi:http/proxy` component over HTTP/1.1, like `wasmtime serve`, with cell's policy.
//!
//! The component is compiled and linked once at start ([`crate::engine::CellEngine::load_proxy`]); every
//! request gets a fresh store and instance ([`invoke`]) with exactly the front's grants —
//! nothing unless given: its outgoing `wasi:http` and `wasi:sockets` go through its network
//! policy and are audited under the request's own pid, its header bytes count against its
//! `max-memory`, its stdout and stderr go to the daemon's log.
//!
//! Bounds: at most [`MAX_HTTP_CONNECTIONS`] client connections per front (more are closed at
//! once), each with hyper's read buffer and header count capped ([`HTTP_READ_BUF_BYTES`],
//! [`HTTP_MAX_HEADERS`]) and [`HTTP_HEADER_READ_TIMEOUT`] to send a request head; at most
//! `max-concurrency` requests in flight (more get `503` at once); each handler within its
//! timeout (`--timeout`, else [`HTTP_HANDLER_TIMEOUT`]). Request and response bodies stream
//! with backpressure through hyper and wasmtime-wasi-http's bounded body channels.
//!
//! Threading: like the rest of the daemon, on its one current-thread runtime; each
//! connection and each handler is a local task.

pub(crate) mod invoke;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use cell_proto::{JobDir, JobLimits};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::budget::Budget;
use crate::limits::{
    HTTP_HANDLER_TIMEOUT, HTTP_HEADER_READ_TIMEOUT, HTTP_MAX_HEADERS, HTTP_READ_BUF_BYTES,
    MAX_HTTP_CONNECTIONS,
};
use crate::net::policy::NetRule;
use crate::serve::ceiling::{Ask, Ceiling};
use crate::serve::DaemonCore;
use invoke::Front;

/// Latency histograms by `service` label.
pub(crate) type LatencyFamily = Family<Vec<(String, String)>, Histogram, fn() -> Histogram>;

/// An empty [`LatencyFamily`]: buckets from 100 µs doubling to ~13 s.
pub(crate) fn latency_family() -> LatencyFamily {
    Family::new_with_constructor(|| Histogram::new(exponential_buckets(0.000_1, 2.0, 18)))
}

/// One HTTP front, as flags or the config file give it.
#[derive(Clone, Debug, PartialEq)]
pub struct HttpSpec {
    /// Its name in logs and metrics (the file's stem unless the config names it).
    pub name: String,
    pub listen: SocketAddr,
    pub wasm: PathBuf,
    pub env: Vec<(String, String)>,
    /// Its network's rules (narrowed to the ceiling); empty: none.
    pub net: Vec<NetRule>,
    pub dirs: Vec<JobDir>,
    pub limits: JobLimits,
    /// Requests in flight at once; more get `503`.
    pub max_concurrency: usize,
}

/// What one front has answered, read by `--metrics`.
pub(crate) struct HttpStats {
    pub name: String,
    /// Answers by status code.
    pub answers: RefCell<BTreeMap<u16, u64>>,
    /// Requests in flight now (the front's concurrency budget).
    pub in_flight: Budget,
    /// Client connections open now.
    pub connections: Budget,
    /// Time to the response head, in seconds.
    pub latency: Histogram,
}

impl HttpStats {
    fn answered(&self, status: u16, took: Duration) {
        *self.answers.borrow_mut().entry(status).or_default() += 1;
        self.latency.observe(took.as_secs_f64());
    }
}

/// A front that is serving: dropping it stops accepting and asks every open connection to
/// finish the request it is serving and close (hyper's graceful shutdown); [`drain`] waits
/// for them.
pub(crate) struct Serving {
    pub stats: Rc<HttpStats>,
    accept: tokio::task::JoinHandle<()>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.accept.abort();
        let _ = self.stop.send(true);
    }
}

/// Waits until the (stopped) fronts have no connection open, at most `grace`; whether they
/// all closed. A request still running at the end is cut off.
pub(crate) async fn drain(fronts: &[Rc<HttpStats>], grace: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + grace;
    while fronts.iter().any(|f| f.connections.used() > 0) {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    true
}

/// Loads `spec`'s component, narrows its grants to `ceiling`, binds its address and starts
/// accepting.
///
/// # Errors
/// The file cannot be read or is not a proxy component, a grant exceeds the ceiling, or the
/// address cannot be bound.
pub(crate) async fn start(
    core: &DaemonCore,
    ceiling: &Ceiling,
    spec: &HttpSpec,
) -> anyhow::Result<Serving> {
    let what = |e: &dyn std::fmt::Display| {
        anyhow::anyhow!("--http {} {}: {e}", spec.listen, spec.wasm.display())
    };
    let ask = Ask {
        net: (!spec.net.is_empty()).then_some(spec.net.as_slice()),
        dirs: &spec.dirs,
        limits: &spec.limits,
    };
    let (grants, limits) = ceiling.narrow(&ask).map_err(|e| what(&e))?;
    let sup = &core.sup;
    let bytes = std::fs::read(&spec.wasm).map_err(|e| what(&e))?;
    if bytes.len() as u64 > limits.max_wasm_bytes {
        return Err(what(&"larger than max-wasm-size"));
    }
    let pre = sup
        .engine()
        .load_proxy(Arc::from(bytes))
        .await
        .map_err(|e| what(&e))?;
    let listener = tokio::net::TcpListener::bind(spec.listen)
        .await
        .map_err(|e| what(&e))?;
    let local = listener.local_addr()?;
    eprintln!("cell: serving {} on http://{local}", spec.wasm.display());
    let slots = Budget::new(spec.max_concurrency.max(1));
    let connections = Budget::new(MAX_HTTP_CONNECTIONS);
    let stats = Rc::new(HttpStats {
        name: spec.name.clone(),
        answers: RefCell::default(),
        in_flight: slots.clone(),
        connections: connections.clone(),
        latency: core
            .http_latency
            .get_or_create(&vec![("service".to_string(), spec.name.clone())])
            .clone(),
    });
    let front = Rc::new(Front {
        name: spec.name.clone(),
        sup: sup.clone(),
        pre,
        grants,
        deadline: limits.timeout.unwrap_or(HTTP_HANDLER_TIMEOUT),
        limits,
        env: spec.env.clone(),
        slots,
        stats: stats.clone(),
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let accept = tokio::task::spawn_local(accept(listener, front, connections, stopped));
    Ok(Serving {
        stats,
        accept,
        stop,
    })
}

/// Accepts connections until the task is aborted, each served on a task of its own.
async fn accept(
    listener: tokio::net::TcpListener,
    front: Rc<Front>,
    connections: Budget,
    stopped: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // Out of descriptors, most likely: wait instead of spinning.
                tracing::warn!(target: "cell::http", "http {}: accept: {e}", front.name);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = connections.take(1) else {
            continue; // dropped: closed at once
        };
        tokio::task::spawn_local(connection(stream, front.clone(), slot, stopped.clone()));
    }
}

/// Serves one client connection until it closes, or until the front stops (then the request
/// in progress is finished and the connection closed).
async fn connection(
    stream: tokio::net::TcpStream,
    front: Rc<Front>,
    _slot: crate::budget::Taken,
    mut stopped: tokio::sync::watch::Receiver<bool>,
) {
    let service = hyper::service::service_fn(move |req| {
        let front = front.clone();
        async move { Ok::<_, std::convert::Infallible>(front.answer(req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_READ_TIMEOUT)
        .max_buf_size(HTTP_READ_BUF_BYTES)
        .max_headers(HTTP_MAX_HEADERS)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    let mut stopping = false;
    let served = loop {
        tokio::select! {
            served = conn.as_mut() => break served,
            _ = stopped.wait_for(|s| *s), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = served {
        tracing::debug!(target: "cell::http", "connection ended: {e}");
    }
}
