//! `cell serve --metrics ADDR`: the daemon's numbers in the Prometheus/OpenMetrics text format
//! (encoded by `prometheus-client`), served over plain HTTP on a loopback address: jobs,
//! processes by state, spawns, exits by status, RPC calls, network decisions, compile caches,
//! service restarts and the host's resident memory.
//!
//! The values are read when scraped (from the supervisor, the engine, the audit sink and
//! `/proc/self/statm`), so nothing on the per-call path knows about metrics. Bounded: at most
//! [`MAX_SCRAPES`] connections at once, each reading at most [`MAX_REQUEST`] bytes of request
//! within [`SCRAPE_TIMEOUT`]; anything else is closed.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::budget::Budget;
use crate::serve::shards::ShardRows;
use crate::serve::DaemonCore;
use crate::supervisor::PsEntry;

/// Scrape connections served at once.
const MAX_SCRAPES: usize = 16;
/// The largest request head read.
const MAX_REQUEST: usize = 8 * 1024;
/// How long a scraper may take to send its request and read the answer.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the metrics listener: loopback only (the numbers are not secret, but nothing
/// unauthenticated is offered beyond the machine) unless the operator says `public` — in a
/// container, where the scraper is on another pod and a network policy guards the port.
///
/// # Errors
/// A non-loopback address without `public`, or the bind failing.
pub(crate) async fn bind(
    addr: SocketAddr,
    public: bool,
) -> anyhow::Result<tokio::net::TcpListener> {
    if !addr.ip().is_loopback() && !public {
        anyhow::bail!(
            "--metrics {addr}: only a loopback address may serve metrics (unauthenticated \
             plain HTTP); add --metrics-public to serve them beyond this machine"
        );
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("--metrics {addr}: {e}"))
}

/// Serves scrapes until the task is aborted.
pub(crate) async fn serve(listener: tokio::net::TcpListener, core: Rc<DaemonCore>) {
    let slots = Rc::new(Budget::new(MAX_SCRAPES));
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Some(slot) = slots.take(1) else {
            continue; // dropped: closed
        };
        let core = core.clone();
        tokio::task::spawn_local(async move {
            let _slot = slot;
            let _ = tokio::time::timeout(SCRAPE_TIMEOUT, answer(&mut stream, &core)).await;
        });
    }
}

async fn answer(stream: &mut tokio::net::TcpStream, core: &DaemonCore) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() + n > MAX_REQUEST {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|b| *b == b'\r').next().unwrap_or_default();
    let (status, ctype, body) = if line.starts_with(b"GET /metrics ") || line.starts_with(b"GET / ")
    {
        (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            render(core, &crate::serve::shards::gather(core).await),
        )
    } else {
        ("404 Not Found", "text/plain", "try GET /metrics\n".into())
    };
    let reply = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(reply.as_bytes()).await?;
    stream.shutdown().await
}

/// The metrics text, from every shard's rows and counts read just now.
pub(crate) fn render(core: &DaemonCore, shards: &[ShardRows]) -> String {
    let mut registry = Registry::with_prefix("cell");
    let sup = &core.sup;
    let gauge = |registry: &mut Registry, name: &str, help: &str, v: u64| {
        let g: Gauge = Gauge::default();
        g.set(i64::try_from(v).unwrap_or(i64::MAX));
        registry.register(name, help, g);
    };
    let counter = |registry: &mut Registry, name: &str, help: &str, v: u64| {
        let c: Counter = Counter::default();
        c.inc_by(v);
        registry.register(name, help, c);
    };
    gauge(
        &mut registry,
        "jobs",
        "Jobs running now",
        core.jobs.used() as u64,
    );
    let ps: Vec<&PsEntry> = shards.iter().flat_map(|s| &s.rows).collect();
    let per_shard: Family<Vec<(String, String)>, Gauge> = Family::default();
    for s in shards {
        per_shard
            .get_or_create(&vec![("shard".to_string(), s.shard.to_string())])
            .set(i64::try_from(s.rows.len()).unwrap_or(i64::MAX));
    }
    registry.register(
        "shard_processes",
        "Processes in each shard's table (running or exited)",
        per_shard,
    );
    let by_state: Family<Vec<(String, String)>, Gauge> = Family::default();
    let running = ps.iter().filter(|p| p.running).count() as i64;
    let state = |s: &str| vec![("state".to_string(), s.to_string())];
    by_state.get_or_create(&state("running")).set(running);
    by_state
        .get_or_create(&state("exited"))
        .set(ps.len() as i64 - running);
    registry.register("processes", "Processes in the table, by state", by_state);
    let restarts: u64 = ps
        .iter()
        .filter(|p| p.parent.is_none())
        .filter_map(|p| p.service.as_ref().map(|(_, r)| u64::from(*r)))
        .sum();
    gauge(
        &mut registry,
        "service_restarts",
        "Restarts of the services running now",
        restarts,
    );
    let spawns = shards.iter().map(|s| s.counts.spawns).sum();
    counter(&mut registry, "spawns", "Processes started", spawns);
    let exits: Family<Vec<(String, String)>, Counter> = Family::default();
    for (status, n) in shards.iter().flat_map(|s| &s.counts.exits) {
        exits
            .get_or_create(&vec![("status".to_string(), (*status).to_string())])
            .inc_by(*n);
    }
    registry.register("exits", "Processes ended, by status", exits);
    counter(
        &mut registry,
        "rpc_calls",
        "RPC calls served (guests and clients)",
        crate::rpc::gate::calls_total(),
    );
    let (allowed, denied) = sup.audit().counts();
    let decisions: Family<Vec<(String, String)>, Counter> = Family::default();
    let verdict = |v: &str| vec![("verdict".to_string(), v.to_string())];
    decisions.get_or_create(&verdict("allowed")).inc_by(allowed);
    decisions.get_or_create(&verdict("denied")).inc_by(denied);
    registry.register(
        "network_decisions",
        "Network decisions, by verdict",
        decisions,
    );
    let disk = sup.engine().compile_cache_stats();
    let cache: Family<Vec<(String, String)>, Counter> = Family::default();
    let kind = |cache: &str, result: &str| {
        vec![
            ("cache".to_string(), cache.to_string()),
            ("result".to_string(), result.to_string()),
        ]
    };
    cache
        .get_or_create(&kind("memory", "hit"))
        .inc_by(sup.engine().memory_hits());
    cache.get_or_create(&kind("disk", "hit")).inc_by(disk.hits);
    cache
        .get_or_create(&kind("disk", "miss"))
        .inc_by(disk.misses);
    registry.register(
        "compile_cache_lookups",
        "Compile cache lookups, by cache and result",
        cache,
    );
    render_http(&mut registry, core);
    gauge(
        &mut registry,
        "host_resident_bytes",
        "The daemon's resident memory",
        resident_bytes(),
    );
    let mut out = String::new();
    if encode(&mut out, &registry).is_err() {
        out = "# cannot encode the metrics\n".into();
    }
    out
}

/// The `--http` fronts' answers by status, requests in flight and latency.
fn render_http(registry: &mut Registry, core: &DaemonCore) {
    let fronts = core.http.borrow();
    if fronts.is_empty() {
        return;
    }
    let answers: Family<Vec<(String, String)>, Counter> = Family::default();
    let in_flight: Family<Vec<(String, String)>, Gauge> = Family::default();
    for front in fronts.iter() {
        let service = ("service".to_string(), front.name.clone());
        for (code, n) in front.answers.borrow().iter() {
            answers
                .get_or_create(&vec![
                    service.clone(),
                    ("code".to_string(), code.to_string()),
                ])
                .inc_by(*n);
        }
        in_flight
            .get_or_create(&vec![service])
            .set(i64::try_from(front.in_flight.used()).unwrap_or(i64::MAX));
    }
    registry.register(
        "http_responses",
        "HTTP answers of --http fronts, by status",
        answers,
    );
    registry.register("http_in_flight", "Requests being handled now", in_flight);
    registry.register(
        "http_response_head_seconds",
        "Time from a request to its response head",
        core.http_latency.clone(),
    );
}

/// This process's resident memory, from `/proc/self/statm` (0 if unreadable).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no memory-safety preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}
