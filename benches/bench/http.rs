//! Benchmark 7: serving a `wasi:http/proxy` component. Requests/s and latency of `GET /` on
//! `guests/http-hello` through `cell serve --http`, a fresh instance per request, against
//! `wasmtime serve` of the same file (when `wasmtime` is on PATH) at the same concurrency,
//! one after the other in this run. The client is a plain HTTP/1.1 load generator here:
//! keep-alive connections, one request in flight on each.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::env::Env;
use crate::report::{Row, Section};
use crate::stats::{p50_p99, rate, ratio, Summary};

const TITLE: &str = "7. HTTP serving (`cell serve --http`): a hello-world proxy component";

pub fn run(env: &Env) -> Section {
    measure(env).unwrap_or_else(|e| Section::failed(TITLE, format!("{e:#}")))
}

/// A server process, killed on drop.
struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` and waits until `addr` accepts connections.
fn start(mut cmd: Command, addr: String) -> anyhow::Result<Server> {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the server")?;
    let server = Server { child, addr };
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect(&server.addr).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "{} did not come up", server.addr);
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// A free loopback port (bound and released: the server binds it a moment later).
fn free_addr() -> anyhow::Result<String> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.to_string())
}

fn cell_server(env: &Env, wasm: &Path, cache: &str) -> anyhow::Result<Server> {
    let addr = free_addr()?;
    let mut cmd = Command::new(&env.cell);
    cmd.args([
        "serve",
        "--cache-dir",
        cache,
        "--http-max-concurrency",
        "256",
    ])
    .arg("--http")
    .arg(&addr)
    .arg(wasm);
    start(cmd, addr)
}

fn wasmtime_server(wasmtime: &Path, wasm: &Path) -> anyhow::Result<Server> {
    let addr = free_addr()?;
    let mut cmd = Command::new(wasmtime);
    cmd.args(["serve", "-Scli", "--addr", &addr]).arg(wasm);
    start(cmd, addr)
}

/// One `GET /` on `stream`, its response read to the end of its body.
fn get(stream: &mut BufReader<TcpStream>) -> anyhow::Result<()> {
    stream
        .get_mut()
        .write_all(b"GET / HTTP/1.1\r\nhost: bench\r\n\r\n")?;
    let mut line = String::new();
    stream.read_line(&mut line)?;
    anyhow::ensure!(line.starts_with("HTTP/1.1 200"), "answered {line:?}");
    let (mut chunked, mut length) = (false, 0usize);
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        let h = line.trim_end().to_ascii_lowercase();
        if h.is_empty() {
            break;
        }
        chunked |= h == "transfer-encoding: chunked";
        if let Some(n) = h.strip_prefix("content-length:") {
            length = n.trim().parse()?;
        }
    }
    if !chunked {
        let mut body = vec![0; length];
        return Ok(stream.read_exact(&mut body)?);
    }
    loop {
        line.clear();
        stream.read_line(&mut line)?;
        let n = usize::from_str_radix(line.trim(), 16)?;
        let mut chunk = vec![0; n + 2];
        stream.read_exact(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
    }
}

/// `connections` clients, `per` requests each: requests/s and the latency of each request.
fn load(addr: &str, connections: usize, per: usize) -> anyhow::Result<(f64, Summary)> {
    let started = Instant::now();
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            let addr = addr.to_string();
            std::thread::spawn(move || -> anyhow::Result<Vec<u64>> {
                let stream = TcpStream::connect(&addr)?;
                stream.set_nodelay(true)?;
                stream.set_read_timeout(Some(Duration::from_secs(30)))?;
                let mut stream = BufReader::new(stream);
                let mut samples = Vec::with_capacity(per);
                for _ in 0..per {
                    let t = Instant::now();
                    get(&mut stream)?;
                    samples.push(t.elapsed().as_nanos() as u64);
                }
                Ok(samples)
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in clients {
        all.extend(
            c.join()
                .map_err(|_| anyhow::anyhow!("a client panicked"))??,
        );
    }
    let per_s = all.len() as f64 / started.elapsed().as_secs_f64();
    Ok((per_s, Summary::of(all)))
}

/// What one server gives: sequential latency, then requests/s and latency under load.
struct Measured {
    one: Summary,
    per_s: f64,
    loaded: Summary,
}

fn measure_server(
    server: &Server,
    connections: usize,
    per: usize,
    n: usize,
) -> anyhow::Result<Measured> {
    load(&server.addr, 1, 20)?; // warm: the first instances, the connection paths
    let (_, one) = load(&server.addr, 1, n)?;
    let (per_s, loaded) = load(&server.addr, connections, per)?;
    Ok(Measured { one, per_s, loaded })
}

fn measure(env: &Env) -> anyhow::Result<Section> {
    let mut s = Section::new(TITLE, "`wasmtime serve` of the same file");
    let wasm = env.guest("http_hello");
    let cache = env.fresh_cache("http");
    let (connections, per, n) = (16, env.n(500, 50), env.n(2000, 200));
    let cell = {
        let server = cell_server(env, &wasm, &cache)?;
        measure_server(&server, connections, per, n)?
    };
    let wasmtime = match &env.wasmtime {
        Some(w) => Some(measure_server(
            &wasmtime_server(w, &wasm)?,
            connections,
            per,
            n,
        )?),
        None => None,
    };
    let base = |f: fn(&Measured) -> String| wasmtime.as_ref().map_or("—".into(), f);
    let vs = |c: f64, f: fn(&Measured) -> f64| {
        wasmtime.as_ref().map_or("—".into(), |w| ratio(c, f(w)))
    };
    s.row(
        Row::new(
            format!("requests/s, {connections} keep-alive connections × {per} `GET /`"),
            rate(cell.per_s),
        )
        .baseline(base(|w| rate(w.per_s)), vs(cell.per_s, |w| w.per_s)),
    );
    s.row(
        Row::new("latency under that load: p50 / p99", p50_p99(cell.loaded)).baseline(
            base(|w| p50_p99(w.loaded)),
            vs(cell.loaded.p50 as f64, |w| w.loaded.p50 as f64),
        ),
    );
    s.row(
        Row::new(
            format!("sequential latency, one connection, {n} requests: p50 / p99"),
            p50_p99(cell.one),
        )
        .baseline(
            base(|w| p50_p99(w.one)),
            vs(cell.one.p50 as f64, |w| w.one.p50 as f64),
        ),
    );
    s.note(format!(
        "Both servers run the release build's `guests/http-hello` (`GET /` answers 29 bytes, \
         streamed) with a fresh instance per request; cell with nothing granted, the default \
         limits and `--http-max-concurrency 256`, `wasmtime serve -Scli` with its defaults. \
         The load generator is {connections} threads of this harness, each with one keep-alive \
         connection and one request in flight, on the same 2 cores as the server{}.",
        if wasmtime.is_none() {
            " (no `wasmtime` on PATH: run `make bench-tools` for the baseline)"
        } else {
            ""
        }
    ));
    Ok(s)
}
