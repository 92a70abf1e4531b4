//! bench-pid0: the pid0 of `make bench`. It measures from inside the wasm, with the WASI
//! monotonic clock, and prints each result as one machine-readable line on stderr:
//!
//! ```text
//! bench: kind=echo size=16 n=20000 p50_ns=21000 p99_ns=40000 mean_ns=23000
//! ```
//!
//! (`key=value` pairs, no spaces inside values). The harness (`benches/bench/`) parses these
//! lines; everything else on stderr is ignored. Modes (first argument):
//!
//! - `nop`: bootstrap the RPC connection, ask for `info`, exit (start-up of an RPC pid0).
//! - `echo N SIZE`: N sequential `Executor.echo` calls with a SIZE-byte message: p50/p99.
//! - `pipeline N INFLIGHT`: N echo calls (16 B) keeping INFLIGHT in flight: calls/s.
//! - `spawn N`: N sequential spawn → wait of bench-nop: the first (cold) and the rest (cached).
//! - `spawn-concurrent N C`: N spawn → wait of bench-nop, C at a time (after one warm-up).
//! - `spawn-component N`: N sequential spawn → wait of bench-nop through one `Component`.
//! - `spawn-concurrent-component N C`: `spawn-concurrent` through one `Component`.
//! - `idle-children N HOLD_MS`: start N bench-nop children that block forever, print
//!   `bench: kind=idle ...` once all have started, hold them for HOLD_MS (the harness samples
//!   the host's memory meanwhile), then exit; the cascade kills the children.
//! - `fairness N SPINNERS`: echo p50/p99 of N calls, then again with SPINNERS bench-nop `spin`
//!   siblings burning CPU (each an own process), then kills them.
//! - `idle-sdk-children N HOLD_MS`: the same with bench-idle, an SDK guest whose RPC session
//!   is up (what an idle real guest costs).
//! - `busy-children K N INFLIGHT`: K bench-echo children at once, each pipelining N echo
//!   calls INFLIGHT in flight on its own connection: `bench: kind=busy calls_per_s=...`, all
//!   their calls over the wall time from the first spawn to the last exit.
//! - `spawner-children K N INFLIGHT`: K bench-spawner children at once, each spawning N
//!   bench-nop INFLIGHT at a time: `bench: kind=spawners spawns_per_s=...`, all their
//!   spawns over the wall time from the first spawn to the last exit.
//! - `tcp HOST PORT MIB INFLIGHT CHUNK_KIB`: `Network.connect` to HOST:PORT (the harness's
//!   loopback sink; needs `--net connect=HOST:PORT`), write MIB MiB as CHUNK_KIB KiB
//!   `ByteStream.write` calls keeping INFLIGHT in flight, close, wait for the sink to close:
//!   `bench: kind=rpc-tcp ... elapsed_ns=...` (timed from just after the connect).

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};
use cell_guest::net::Network;
use cell_guest::{log, Caps, Executor, StderrMode};
use futures::stream::{FuturesUnordered, StreamExt as _};
use wasip2::clocks::monotonic_clock;

/// The trivial child, built in an earlier stage and embedded here.
static NOP: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm32-wasip2/release/bench-nop.wasm"
));

/// A busy child: pipelines echo calls on its own connection.
static ECHO: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm32-wasip2/release/bench-echo.wasm"
));

/// A spawning child: spawns bench-nop through a Component, many in flight.
static SPAWNER: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm32-wasip2/release/bench-spawner.wasm"
));

/// An SDK guest that connects its session and waits, embedded the same way.
static IDLE: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm32-wasip2/release/bench-idle.wasm"
));

fn main() {
    cell_guest::run(|caps| async move {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mode = args.first().map(String::as_str).unwrap_or("nop");
        let n = |i: usize| -> anyhow::Result<usize> {
            let arg = args
                .get(i)
                .with_context(|| format!("{mode}: argument {i} missing"))?;
            arg.parse()
                .with_context(|| format!("{mode}: bad number {arg:?}"))
        };
        match mode {
            "nop" => {
                caps.info().await?;
                Ok(())
            }
            "echo" => echo(&executor(&caps).await?, n(1)?, n(2)?).await,
            "pipeline" => pipeline(&executor(&caps).await?, n(1)?, n(2)?).await,
            "spawn" => spawn_sequential(&executor(&caps).await?, n(1)?).await,
            "spawn-concurrent" => spawn_concurrent(&executor(&caps).await?, n(1)?, n(2)?).await,
            "spawn-component" => spawn_component(&executor(&caps).await?, n(1)?).await,
            "spawn-concurrent-component" => {
                spawn_concurrent_component(&executor(&caps).await?, n(1)?, n(2)?).await
            }
            "fairness" => fairness(&executor(&caps).await?, n(1)?, n(2)?).await,
            "busy-children" => busy_children(&executor(&caps).await?, n(1)?, n(2)?, n(3)?).await,
            "spawner-children" => {
                fan_out(
                    &executor(&caps).await?,
                    SPAWNER,
                    "spawners",
                    n(1)?,
                    n(2)?,
                    n(3)?,
                )
                .await
            }
            "idle-children" => idle_children(&executor(&caps).await?, NOP, n(1)?, n(2)?).await,
            "idle-sdk-children" => idle_children(&executor(&caps).await?, IDLE, n(1)?, n(2)?).await,
            "tcp" => {
                let host = args.get(1).context("tcp: HOST missing")?;
                let port = u16::try_from(n(2)?).context("tcp: bad PORT")?;
                let network = caps.network().await?;
                tcp_bulk(&network, host, port, n(3)?, n(4)?, n(5)?).await
            }
            other => bail!("unknown mode {other:?}"),
        }
    })
}

async fn executor(caps: &Caps) -> anyhow::Result<Executor> {
    caps.executor()
        .await
        .context("bench-pid0 needs --grant-executor")
}

fn now() -> u64 {
    monotonic_clock::now()
}

async fn echo(executor: &Executor, n: usize, size: usize) -> anyhow::Result<()> {
    let message = "x".repeat(size);
    for _ in 0..(n / 10).max(100) {
        executor.echo(&message).await?;
    }
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let t0 = now();
        let reply = executor.echo(&message).await?;
        samples.push(now() - t0);
        ensure!(reply.len() == size, "echo returned {} bytes", reply.len());
    }
    let (p50, p99, mean) = cell_testkit::summary(samples);
    log!("bench: kind=echo size={size} n={n} p50_ns={p50} p99_ns={p99} mean_ns={mean}");
    Ok(())
}

/// Echo latency alone and beside `spinners` CPU-bound siblings.
async fn fairness(executor: &Executor, n: usize, spinners: usize) -> anyhow::Result<()> {
    let message = "x".repeat(16);
    let sample = |n: usize| {
        let message = message.clone();
        async move {
            let mut samples = Vec::with_capacity(n);
            for _ in 0..n {
                let t0 = now();
                executor.echo(&message).await?;
                samples.push(now() - t0);
            }
            anyhow::Ok(cell_testkit::summary(samples))
        }
    };
    sample(100).await?; // warm
    let (idle_p50, idle_p99, _) = sample(n).await?;
    let mut spinning = Vec::with_capacity(spinners);
    for _ in 0..spinners {
        let child = executor
            .spawn(NOP)
            .name("bench-spin")
            .arg("spin")
            .stderr(StderrMode::Discard)
            .start()
            .await?;
        spinning.push(child);
    }
    cell_guest::sleep(Duration::from_millis(100)).await;
    let (busy_p50, busy_p99, _) = sample(n).await?;
    for child in &spinning {
        child.kill().await?;
    }
    log!("bench: kind=fairness n={n} spinners={spinners} idle_p50_ns={idle_p50} idle_p99_ns={idle_p99} busy_p50_ns={busy_p50} busy_p99_ns={busy_p99}");
    Ok(())
}

async fn pipeline(executor: &Executor, n: usize, inflight: usize) -> anyhow::Result<()> {
    let message = "x".repeat(16);
    for _ in 0..100 {
        executor.echo(&message).await?;
    }
    let t0 = now();
    let mut pending = FuturesUnordered::new();
    let mut sent = 0;
    let mut done = 0;
    while done < n {
        while sent < n && pending.len() < inflight {
            pending.push(executor.echo(&message));
            sent += 1;
        }
        if let Some(reply) = pending.next().await {
            ensure!(reply?.len() == 16, "echo mismatch");
            done += 1;
        }
    }
    let elapsed = (now() - t0).max(1);
    let per_s = n as u64 * 1_000_000_000 / elapsed;
    log!("bench: kind=pipeline n={n} inflight={inflight} elapsed_ns={elapsed} calls_per_s={per_s}");
    Ok(())
}

/// One spawn of bench-nop, waited for; its wall time in nanoseconds.
async fn spawn_one(executor: &Executor) -> anyhow::Result<u64> {
    timed_spawn(executor.spawn(NOP)).await
}

/// Spawns bench-nop through `builder` (bytes or a Component) and waits; nanoseconds taken.
async fn timed_spawn(builder: cell_guest::SpawnBuilder<'_>) -> anyhow::Result<u64> {
    let t0 = now();
    let child = builder
        .name("bench-nop")
        .stderr(StderrMode::Discard)
        .start()
        .await?;
    let status = child.wait().await?;
    ensure!(status.success(), "bench-nop {status}");
    Ok(now() - t0)
}

async fn spawn_sequential(executor: &Executor, n: usize) -> anyhow::Result<()> {
    let cold = spawn_one(executor).await?;
    let t0 = now();
    let mut samples = Vec::with_capacity(n);
    for _ in 1..n {
        samples.push(spawn_one(executor).await?);
    }
    let elapsed = (now() - t0).max(1);
    let per_s = (n as u64 - 1) * 1_000_000_000 / elapsed;
    let (p50, p99, mean) = cell_testkit::summary(samples);
    log!("bench: kind=spawn n={n} cold_ns={cold} p50_ns={p50} p99_ns={p99} mean_ns={mean} spawns_per_s={per_s} wasm_bytes={}", NOP.len());
    Ok(())
}

/// N sequential spawn → wait of bench-nop through one `Component` (`Executor.load` once): no
/// bytes sent per spawn.
async fn spawn_component(executor: &Executor, n: usize) -> anyhow::Result<()> {
    let component = executor.load(NOP).await?;
    let one = || timed_spawn(component.spawn());
    one().await?; // warm
    let t0 = now();
    let mut samples = Vec::with_capacity(n);
    for _ in 1..n {
        samples.push(one().await?);
    }
    let elapsed = (now() - t0).max(1);
    let per_s = (n as u64 - 1) * 1_000_000_000 / elapsed;
    let (p50, p99, mean) = cell_testkit::summary(samples);
    log!("bench: kind=spawn-component n={n} p50_ns={p50} p99_ns={p99} mean_ns={mean} spawns_per_s={per_s}");
    Ok(())
}

/// `k` bench-echo children at once, each pipelining `n` calls: all calls over the wall time.
async fn busy_children(
    executor: &Executor,
    k: usize,
    n: usize,
    inflight: usize,
) -> anyhow::Result<()> {
    fan_out(executor, ECHO, "busy", k, n, inflight).await
}

/// `k` children of `wasm` at once, each given `n inflight`: `n × k` over the wall time, as
/// `calls_per_s` (bench-echo) or `spawns_per_s` (bench-spawner).
async fn fan_out(
    executor: &Executor,
    wasm: &[u8],
    kind: &str,
    k: usize,
    n: usize,
    inflight: usize,
) -> anyhow::Result<()> {
    let component = executor.load(wasm).await?;
    let name = if kind == "busy" {
        "bench-echo"
    } else {
        "bench-spawner"
    };
    let t0 = now();
    let mut children = Vec::with_capacity(k);
    for _ in 0..k {
        let child = component
            .spawn()
            .name(name)
            .args([n.to_string(), inflight.to_string()])
            .grant_executor(true)
            .start()
            .await?;
        children.push(child);
    }
    for child in children {
        let status = child.wait().await?;
        ensure!(status.success(), "{kind} child {status}");
    }
    let elapsed = (now() - t0).max(1);
    let per_s = (k * n) as u64 * 1_000_000_000 / elapsed;
    log!("bench: kind={kind} children={k} n={n} calls_per_s={per_s} spawns_per_s={per_s}");
    Ok(())
}

async fn spawn_concurrent(executor: &Executor, n: usize, concurrency: usize) -> anyhow::Result<()> {
    spawn_one(executor).await?; // compile once: this mode measures cached spawns
    concurrently(n, concurrency, "spawn-concurrent", || spawn_one(executor)).await?;
    Ok(())
}

/// The same through one `Component` (loaded once: no bytes sent per spawn).
async fn spawn_concurrent_component(
    executor: &Executor,
    n: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let component = executor.load(NOP).await?;
    timed_spawn(component.spawn()).await?; // warm
    concurrently(n, concurrency, "spawn-concurrent-component", || {
        timed_spawn(component.spawn())
    })
    .await?;
    Ok(())
}

/// Runs `n` timed spawns `concurrency` at a time and logs `kind`'s line; spawns per second.
async fn concurrently<F, Fut>(
    n: usize,
    concurrency: usize,
    kind: &str,
    spawn: F,
) -> anyhow::Result<u64>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<u64>>,
{
    let t0 = now();
    let samples = cell_testkit::in_flight(n, concurrency, spawn).await?;
    let elapsed = (now() - t0).max(1);
    let per_s = n as u64 * 1_000_000_000 / elapsed;
    let (p50, p99, mean) = cell_testkit::summary(samples);
    log!("bench: kind={kind} n={n} concurrency={concurrency} p50_ns={p50} p99_ns={p99} mean_ns={mean} spawns_per_s={per_s}");
    Ok(per_s)
}

/// Starts `n` children of `wasm` (bench-nop blocked on its stdin, or bench-idle with its
/// session up), reports, and holds them for `hold_ms`.
async fn idle_children(
    executor: &Executor,
    wasm: &'static [u8],
    n: usize,
    hold_ms: usize,
) -> anyhow::Result<()> {
    const STARTS_IN_FLIGHT: usize = 64;
    let start_idle = || {
        executor
            .spawn(wasm)
            .name("bench-idle")
            .arg("idle")
            .stderr(StderrMode::Discard)
            .start()
    };
    // Compile before the clock starts: this measures starting, not compiling.
    let warm = start_idle().await?;
    warm.kill().await?;
    let t0 = now();
    let mut children = Vec::with_capacity(n);
    let mut pending = FuturesUnordered::new();
    let mut error = None;
    while children.len() < n && error.is_none() {
        while children.len() + pending.len() < n && pending.len() < STARTS_IN_FLIGHT {
            pending.push(start_idle());
        }
        match pending.next().await {
            Some(Ok(child)) => children.push(child),
            Some(Err(e)) => error = Some(format!("{e:#}")),
            None => break,
        }
    }
    // Let the starts already under way finish (or fail) before reporting.
    while let Some(r) = pending.next().await {
        if let Ok(child) = r {
            children.push(child);
        }
    }
    let elapsed = now() - t0;
    let started = children.len();
    let error = error
        .map(|e| e.split_whitespace().collect::<Vec<_>>().join("_"))
        .unwrap_or_else(|| "none".into());
    log!("bench: kind=idle n={n} started={started} start_ns={elapsed} error={error}");
    cell_guest::sleep(Duration::from_millis(hold_ms as u64)).await;
    log!("bench-pid0: releasing {started} idle children");
    Ok(())
}

/// Bulk TCP through the RPC `TcpStream`: capnp-rpc has no flow-controlled streaming call, so
/// throughput depends on keeping several writes in flight (the host serves them in order).
async fn tcp_bulk(
    network: &Network,
    host: &str,
    port: u16,
    mib: usize,
    inflight: usize,
    chunk_kib: usize,
) -> anyhow::Result<()> {
    let stream = network.connect(host, port).await?;
    let bytes = stream.bytes();
    let total = mib << 20;
    let chunk = vec![0x5au8; (chunk_kib << 10).max(1)];
    let t0 = now();
    let mut pending = FuturesUnordered::new();
    let mut queued = 0;
    loop {
        while queued < total && pending.len() < inflight.max(1) {
            let len = chunk.len().min(total - queued);
            pending.push(bytes.write(&chunk[..len]));
            queued += len;
        }
        match pending.next().await {
            Some(r) => r?,
            None => break,
        }
    }
    bytes.close().await?;
    // The sink closes once it has read everything: wait for that.
    while !bytes.read(64 * 1024).await?.is_empty() {}
    let elapsed = (now() - t0).max(1);
    log!(
        "bench: kind=rpc-tcp bytes={total} chunk={} inflight={inflight} elapsed_ns={elapsed}",
        chunk.len()
    );
    Ok(())
}
