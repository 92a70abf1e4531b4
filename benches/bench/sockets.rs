//! Benchmark 4: Sockets: TCP bulk throughput from a guest to a loopback sink, through the guest's
//! own `wasi:sockets` under a `--net` policy and through the RPC `TcpStream`, against a native
//! Rust client doing the same.
//!
//! The sink is this harness: a thread listening on 127.0.0.1:0 that accepts one connection at a
//! time, reads and discards until end of stream, counting bytes, then closes. Every client
//! writes the same number of bytes, shuts its write half down and waits for the sink's close, so
//! the last byte has been read by the sink, not merely buffered. Throughput is measured by the
//! sink (accept → end of stream), the same clock for all three clients; the guests' own timing
//! (connect → the sink's close) is kept as a cross-check in the notes.
//!
//! - wasi:sockets: `cell run --plain --net connect=127.0.0.1:PORT bench-net.wasm` (plain
//!   `std::net::TcpStream`, `write_all` of CHUNK bytes at a time).
//! - RPC: `cell run --net connect=127.0.0.1:PORT bench-pid0.wasm tcp ...` (`Network.connect`,
//!   then `ByteStream.write` calls of [`RPC_CHUNK`] bytes with [`RPC_INFLIGHT`] in flight).
//! - native: `std::net::TcpStream` in this process, `write_all` of CHUNK bytes at a time.

use std::io::{Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::env::{args, Env, Fields};
use crate::report::{Row, Section};
use crate::stats::median_by;

const TITLE: &str = "4. Sockets, TCP bulk to a loopback sink";
const BASELINE: &str = "native Rust client (`std::net::TcpStream`)";
/// Target: the guest's own wasi:sockets reach this share of the native client's throughput.
const TARGET_SHARE: f64 = 0.70;
/// `write_all` size of the native client and of bench-net.
const CHUNK_KIB: usize = 256;
/// The same at the most wasmtime-wasi 48 lets one stream write carry (`MAX_READ_SIZE_ALLOC`):
/// the like-for-like row, same syscall size on both sides.
const SMALL_CHUNK_KIB: usize = 64;
/// `ByteStream.write` size of the RPC client (capnp-rpc has no streaming call, so each write is
/// a call and its reply).
const RPC_CHUNK_KIB: usize = 64;
/// RPC writes kept in flight.
const RPC_INFLIGHT: usize = 8;
/// Each client runs this many times, the three interleaved; the median round is reported.
const ROUNDS: usize = 5;
/// How long the sink waits for a client's connection and its data before giving up.
const SINK_TIMEOUT: Duration = Duration::from_secs(120);

pub fn run(env: &Env) -> Section {
    measure(env).unwrap_or_else(|e| Section::failed(TITLE, format!("{e:#}")))
}

/// One transfer as the sink saw it.
#[derive(Clone, Copy, Debug)]
struct Transfer {
    bytes: u64,
    /// accept → end of stream.
    elapsed: Duration,
}

impl Transfer {
    fn mib_per_s(&self) -> f64 {
        self.bytes as f64 / (1u64 << 20) as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The loopback sink: a thread accepting connections on 127.0.0.1:0 one at a time. Each is read
/// to its end and closed, and its [`Transfer`] sent on the channel. The thread ends when the
/// receiving side is dropped (after the next connection) or when an accept fails.
struct Sink {
    addr: SocketAddr,
    done: mpsc::Receiver<std::io::Result<Transfer>>,
}

impl Sink {
    fn start() -> anyhow::Result<Sink> {
        let listener = TcpListener::bind("127.0.0.1:0").context("binding the sink")?;
        let addr = listener.local_addr()?;
        let (tx, done) = mpsc::sync_channel(1);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            for conn in listener.incoming() {
                let result = conn.and_then(|mut c| {
                    let t0 = Instant::now();
                    let mut bytes = 0u64;
                    loop {
                        match c.read(&mut buf)? {
                            0 => break,
                            n => bytes += n as u64,
                        }
                    }
                    let elapsed = t0.elapsed();
                    c.shutdown(Shutdown::Both)?;
                    Ok(Transfer { bytes, elapsed })
                });
                if tx.send(result).is_err() {
                    return;
                }
            }
        });
        Ok(Sink { addr, done })
    }

    /// The next connection's transfer; fails unless exactly `expect` bytes arrived.
    fn next(&self, expect: u64) -> anyhow::Result<Transfer> {
        let t = self
            .done
            .recv_timeout(SINK_TIMEOUT)
            .context("the sink saw no transfer")?
            .context("the sink's connection failed")?;
        anyhow::ensure!(
            t.bytes == expect,
            "the sink read {} bytes, expected {expect}",
            t.bytes
        );
        Ok(t)
    }
}

/// The baseline: the same transfer from this process; returns its own connect → close time.
fn native(addr: SocketAddr, total: usize, chunk_kib: usize) -> anyhow::Result<Duration> {
    let chunk = vec![0x5au8; chunk_kib << 10];
    let mut s = TcpStream::connect(addr).context("native connect")?;
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        s.write_all(&chunk[..n])?;
        sent += n;
    }
    s.shutdown(Shutdown::Write)?;
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)?;
    Ok(t0.elapsed())
}

/// The guest's own `elapsed_ns` from its `bench:` line.
fn guest_time(fields: Fields) -> anyhow::Result<Duration> {
    Ok(Duration::from_nanos(fields.u64("elapsed_ns")?))
}

/// Median of the rounds by throughput, with the matching client-side time.
fn median(rounds: Vec<(Transfer, Duration)>) -> (Transfer, Duration) {
    median_by(rounds, |(t, _)| t.mib_per_s()).unwrap_or((
        Transfer {
            bytes: 0,
            elapsed: Duration::ZERO,
        },
        Duration::ZERO,
    ))
}

fn mib_s(v: f64) -> String {
    format!("{v:.0} MiB/s")
}

fn measure(env: &Env) -> anyhow::Result<Section> {
    let mut s = Section::new(TITLE, BASELINE);
    if !env.has_plain {
        s.row(Row::new(
            "wasi:sockets and RPC TcpStream throughput",
            "pending: this build has no `cell run --plain`",
        ));
        return Ok(s);
    }
    let sink = Sink::start()?;
    let port = sink.addr.port().to_string();
    let policy = format!("connect=127.0.0.1:{port}");
    let mib = env.n(1024, 32);
    let total = mib << 20;
    let rounds = env.n(ROUNDS, 1);
    let cache = env.fresh_cache("sockets");
    let net = env.guest("bench-net").to_string_lossy().into_owned();
    let pid0 = env.guest("bench-pid0").to_string_lossy().into_owned();
    let wasi_args = |mib: usize, chunk_kib: usize| {
        let mut a = args(["--cache-dir", &cache, "--plain", "--net", &policy, &net]);
        a.extend([
            format!("127.0.0.1:{port}"),
            mib.to_string(),
            chunk_kib.to_string(),
        ]);
        a
    };
    let rpc_args = |mib: usize| {
        let mut a = args(["--cache-dir", &cache, "--net", &policy, &pid0, "tcp"]);
        a.extend(["127.0.0.1".to_string(), port.clone(), mib.to_string()]);
        a.extend([RPC_INFLIGHT.to_string(), RPC_CHUNK_KIB.to_string()]);
        a
    };

    // Compile both guests once, untimed (a 1 MiB transfer each).
    env.cell_result(&wasi_args(1, CHUNK_KIB), "wasi-tcp")?;
    sink.next(1 << 20)?;
    env.cell_result(&rpc_args(1), "rpc-tcp")?;
    sink.next(1 << 20)?;
    let (mut natives, mut wasis, mut rpcs) = (Vec::new(), Vec::new(), Vec::new());
    let (mut small_natives, mut small_wasis) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let own = native(sink.addr, total, CHUNK_KIB)?;
        natives.push((sink.next(total as u64)?, own));
        let own = guest_time(env.cell_result(&wasi_args(mib, CHUNK_KIB), "wasi-tcp")?)?;
        wasis.push((sink.next(total as u64)?, own));
        let own = guest_time(env.cell_result(&rpc_args(mib), "rpc-tcp")?)?;
        rpcs.push((sink.next(total as u64)?, own));
        let own = native(sink.addr, total, SMALL_CHUNK_KIB)?;
        small_natives.push((sink.next(total as u64)?, own));
        let own = guest_time(env.cell_result(&wasi_args(mib, SMALL_CHUNK_KIB), "wasi-tcp")?)?;
        small_wasis.push((sink.next(total as u64)?, own));
    }
    // The machine is shared: a busy moment can hit one client of a round and not the others.
    // So the ratio reported is the median of each round's own ratio (clients run back to back),
    // and every round's ratio is listed in the notes.
    let shares = |of: &[(Transfer, Duration)], base: &[(Transfer, Duration)]| -> Vec<f64> {
        of.iter()
            .zip(base)
            .map(|((t, _), (n, _))| t.mib_per_s() / n.mib_per_s().max(1e-9))
            .collect()
    };
    let (wasi_shares, rpc_shares) = (shares(&wasis, &natives), shares(&rpcs, &natives));
    let small_shares = shares(&small_wasis, &small_natives);
    let mid = |v: &[f64]| median_by(v.to_vec(), |r| *r).unwrap_or_default();
    let (wasi_share, rpc_share) = (mid(&wasi_shares), mid(&rpc_shares));
    let small_share = mid(&small_shares);
    let (small_native, _) = median(small_natives);
    let (small_wasi, _) = median(small_wasis);
    let (native, native_own) = median(natives);
    let (wasi, wasi_own) = median(wasis);
    let (rpc, rpc_own) = median(rpcs);
    let base = mib_s(native.mib_per_s());
    s.row(
        Row::new(
            format!("wasi:sockets (`--plain`, std `TcpStream`), {CHUNK_KIB} KiB writes"),
            mib_s(wasi.mib_per_s()),
        )
        .baseline(base.clone(), format!("{wasi_share:.2}x"))
        .target(
            format!("≥ {:.0}% of native", TARGET_SHARE * 100.0),
            Some(wasi_share >= TARGET_SHARE),
        ),
    );
    s.row(
        Row::new(
            format!(
                "wasi:sockets, {SMALL_CHUNK_KIB} KiB writes (native also {SMALL_CHUNK_KIB} KiB)"
            ),
            mib_s(small_wasi.mib_per_s()),
        )
        .baseline(
            mib_s(small_native.mib_per_s()),
            format!("{small_share:.2}x"),
        )
        .target(
            format!("≥ {:.0}% of native", TARGET_SHARE * 100.0),
            Some(small_share >= TARGET_SHARE),
        ),
    );
    s.row(
        Row::new(
            format!("RPC `TcpStream`, {RPC_CHUNK_KIB} KiB writes, {RPC_INFLIGHT} in flight"),
            mib_s(rpc.mib_per_s()),
        )
        .baseline(base, format!("{rpc_share:.2}x")),
    );
    let own = |t: Duration| mib_s(total as f64 / (1u64 << 20) as f64 / t.as_secs_f64().max(1e-9));
    let list = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{r:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    s.note(format!(
        "{mib} MiB per transfer to a sink in the harness on 127.0.0.1 (reads 1 MiB at a time, \
         discards); throughput as the sink measured it (accept → end of stream), the median of \
         {rounds} rounds in which native, wasi:sockets and RPC run back to back. Cell's \
         start-up is not in the time. The ratio is the median of the rounds' own ratios \
         (wasi:sockets / native: {}; at {SMALL_CHUNK_KIB} KiB: {}; RPC / native: {}). \
         Measured by the clients themselves (connect → the sink's close), the median rounds: \
         native {}, wasi:sockets {}, RPC {}. wasmtime-wasi 48 lets one stream write carry at \
         most 64 KiB, so a guest's {CHUNK_KIB} KiB `write_all` becomes four 64 KiB sends where \
         the native client makes one {CHUNK_KIB} KiB send; the {SMALL_CHUNK_KIB} KiB row compares \
         equal send sizes.",
        list(&wasi_shares),
        list(&small_shares),
        list(&rpc_shares),
        own(native_own),
        own(wasi_own),
        own(rpc_own),
    ));
    Ok(s)
}
