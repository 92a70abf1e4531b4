//! Benchmark 1: RPC echo, guest → host over stdio, against the same capnp-rpc echo between two host tasks
//! over the same kind of in-memory pipe (`cell::transport::pipe`), no wasm.
//!
//! The cell side is measured inside the guest (bench-pid0, WASI monotonic clock), the baseline
//! here with `Instant`; both are the same nearest-rank percentiles over the same call counts.

use std::future::Future;
use std::time::Instant;

use capnp::capability::Rc;
use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use cell::cell_capnp::executor;
use cell::inproc::pipe;
use cell::inproc::PIPE_CAPACITY;
use futures::io::{BufReader, BufWriter};
use futures::stream::{FuturesUnordered, StreamExt as _};

use crate::env::{args, Env};
use crate::report::{Row, Section};
use crate::stats::{median_by, p50_p99, rate, ratio, Summary};

const TITLE: &str = "1. RPC echo, guest → host over stdio";
const BASELINE: &str = "capnp-rpc echo, 2 host tasks, transport::pipe, no wasm";
/// Target: pipelined calls per second through cell.
const TARGET_CALLS_PER_S: f64 = 80_000.0;
/// Target: cell's echo p50 at most this many times the baseline's.
const TARGET_RATIO: f64 = 1.2;
const INFLIGHT: usize = 100;
/// Each measurement is repeated; the median round is reported.
const ROUNDS: usize = 3;

/// Spinning siblings in the fairness row.
const SPINNERS: usize = 4;
/// Issue 14's target: echo p50 beside the spinners at most this many times its idle figure.
const FAIRNESS_RATIO: f64 = 2.0;

/// Fuel for the metered fairness row: more than the spinners burn while it runs.
const FAIRNESS_FUEL: &str = "1000000000000000";

/// Echo p50 of one process alone and beside [`SPINNERS`] CPU-bound siblings; with `fuel`,
/// the same run under `--fuel` (where wasmtime also yields every fuel slice).
fn fairness(env: &Env, cache: &str, pid0: &str, fuel: bool, s: &mut Section) -> anyhow::Result<()> {
    let n = env.n(50, 10);
    let mut a = args(["--cache-dir", cache]);
    if fuel {
        a.extend(args(["--fuel", FAIRNESS_FUEL]));
    }
    a.extend(args([pid0, "fairness"]));
    a.extend([n.to_string(), SPINNERS.to_string()]);
    let f = env.cell_result(&a, "fairness")?;
    let idle = Summary {
        p50: f.u64("idle_p50_ns")?,
        p99: f.u64("idle_p99_ns")?,
        mean: 0,
    };
    let busy = Summary {
        p50: f.u64("busy_p50_ns")?,
        p99: f.u64("busy_p99_ns")?,
        mean: 0,
    };
    let r = busy.p50 as f64 / idle.p50.max(1) as f64;
    s.row(
        Row::new(
            format!(
                "fairness: echo 16 B beside {SPINNERS} spinning siblings{}: p50 / p99",
                if fuel { ", under `--fuel`" } else { "" }
            ),
            p50_p99(busy),
        )
        .baseline(
            format!("{} alone", p50_p99(idle)),
            ratio(busy.p50 as f64, idle.p50 as f64),
        )
        .target(
            format!("p50 ≤ {FAIRNESS_RATIO}x alone"),
            Some(r <= FAIRNESS_RATIO),
        ),
    );
    Ok(())
}

pub fn run(env: &Env) -> Section {
    measure(env).unwrap_or_else(|e| Section::failed(TITLE, format!("{e:#}")))
}

fn measure(env: &Env) -> anyhow::Result<Section> {
    let mut s = Section::new(TITLE, BASELINE);
    let cache = env.fresh_cache("rpc");
    let pid0 = env.guest("bench-pid0").to_string_lossy().into_owned();
    let calls = env.n(30_000, 2_000);
    let rounds = env.n(ROUNDS, 1);
    for size in [16usize, 4096] {
        let mut a = args(["--cache-dir", &cache, &pid0, "echo"]);
        a.extend([calls.to_string(), size.to_string()]);
        // Rounds alternate cell and baseline, so that a noisy moment hits both alike.
        let (mut cells, mut bases) = (Vec::new(), Vec::new());
        for _ in 0..rounds {
            cells.push(env.cell_result(&a, "echo")?.summary()?);
            bases.push(baseline_echo(calls, size)?);
        }
        let cell = median_by(cells, |s| s.p50).unwrap_or_default();
        let base = median_by(bases, |s| s.p50).unwrap_or_default();
        let r = cell.p50 as f64 / base.p50.max(1) as f64;
        let label = if size == 16 { "16 B" } else { "4 KiB" };
        s.row(
            Row::new(format!("echo {label}: p50 / p99 latency"), p50_p99(cell))
                .baseline(p50_p99(base), ratio(cell.p50 as f64, base.p50 as f64))
                .target(
                    format!("p50 ≤ {TARGET_RATIO}x baseline"),
                    Some(r <= TARGET_RATIO),
                ),
        );
    }
    fairness(env, &cache, &pid0, false, &mut s)?;
    fairness(env, &cache, &pid0, true, &mut s)?;
    let n = env.n(100_000, 10_000);
    let mut a = args(["--cache-dir", &cache, &pid0, "pipeline"]);
    a.extend([n.to_string(), INFLIGHT.to_string()]);
    let (mut cells, mut bases) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        cells.push(env.cell_result(&a, "pipeline")?.u64("calls_per_s")? as f64);
        bases.push(baseline_pipeline(n, INFLIGHT)?);
    }
    let cell = median_by(cells, |r| *r).unwrap_or_default();
    let base = median_by(bases, |r| *r).unwrap_or_default();
    s.row(
        Row::new(
            format!("echo 16 B pipelined, {INFLIGHT} in flight"),
            rate(cell),
        )
        .baseline(rate(base), ratio(cell, base))
        .target(
            format!("≥ {}", rate(TARGET_CALLS_PER_S)),
            Some(cell >= TARGET_CALLS_PER_S),
        ),
    );
    s.note(format!(
        "{calls} sequential calls per size after a warm-up; pipelined: {n} calls; the median \
         of {rounds} rounds, cell and baseline alternating. \
         Ratios are cell/baseline: above 1 is slower for latencies, below 1 is slower for rates."
    ));
    Ok(s)
}

/// `Executor.echo` and nothing else: the host side of the baseline.
struct EchoServer;

impl executor::Server for EchoServer {
    async fn echo(
        self: Rc<Self>,
        params: executor::EchoParams,
        mut results: executor::EchoResults,
    ) -> Result<(), capnp::Error> {
        let message = params.get()?.get_message()?;
        results.get().set_response(message);
        Ok(())
    }
}

/// Runs `f` with an Executor client connected to an [`EchoServer`] over two
/// `cell::transport` pipes: the server end exactly as cell serves a guest, the client end as the
/// guest SDK connects (buffered reader and writer), both on one current-thread runtime like
/// `cell` itself.
fn with_echo_client<F, Fut, T>(f: F) -> anyhow::Result<T>
where
    F: FnOnce(executor::Client) -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let (to_server, server_in) = pipe(PIPE_CAPACITY);
        let (server_out, to_client) = pipe(PIPE_CAPACITY);
        let server_net = twoparty::VatNetwork::new(
            server_in.into_host(),
            server_out.into_host(),
            Side::Server,
            ReaderOptions::new(),
        );
        let echo: executor::Client = capnp_rpc::new_client(EchoServer);
        tokio::task::spawn_local(RpcSystem::new(Box::new(server_net), Some(echo.client)));
        let client_net = twoparty::VatNetwork::new(
            BufReader::new(to_client.into_host()),
            BufWriter::new(to_server.into_host()),
            Side::Client,
            ReaderOptions::new(),
        );
        let mut client_rpc = RpcSystem::new(Box::new(client_net), None);
        let client: executor::Client = client_rpc.bootstrap(Side::Server);
        tokio::task::spawn_local(client_rpc);
        f(client).await
    })
}

async fn echo_once(client: &executor::Client, message: &str) -> anyhow::Result<usize> {
    let mut req = client.echo_request();
    req.get().set_message(message);
    let reply = req.send().promise.await?;
    Ok(reply.get()?.get_response()?.len())
}

fn baseline_echo(n: usize, size: usize) -> anyhow::Result<Summary> {
    with_echo_client(|client| async move {
        let message = "x".repeat(size);
        for _ in 0..(n / 10).max(100) {
            echo_once(&client, &message).await?;
        }
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t0 = Instant::now();
            let len = echo_once(&client, &message).await?;
            samples.push(u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX));
            anyhow::ensure!(len == size, "echo returned {len} bytes");
        }
        Ok(Summary::of(samples))
    })
}

fn baseline_pipeline(n: usize, inflight: usize) -> anyhow::Result<f64> {
    with_echo_client(|client| async move {
        let message = "x".repeat(16);
        for _ in 0..100 {
            echo_once(&client, &message).await?;
        }
        let t0 = Instant::now();
        let mut pending = FuturesUnordered::new();
        let (mut sent, mut done) = (0, 0);
        while done < n {
            while sent < n && pending.len() < inflight {
                pending.push(echo_once(&client, &message));
                sent += 1;
            }
            if let Some(r) = pending.next().await {
                anyhow::ensure!(r? == 16, "echo mismatch");
                done += 1;
            }
        }
        Ok(n as f64 / t0.elapsed().as_secs_f64())
    })
}
