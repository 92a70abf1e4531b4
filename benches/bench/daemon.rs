//! Benchmark 6: the daemon. A job's start→exit latency through a warm `cell serve` (the
//! client already connected: `Daemon.run` + `Job.wait` of `bench-nop`), the same through a
//! whole `cell exec` process, against a whole `cell run` of the same file; and jobs/s with
//! several clients at once — each with `--shards 1` and with one shard per core, side by side.

use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use cell_proto::cell_capnp::{component, daemon};
use cell_proto::{ExitStatus, JobCode, JobRequest};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use crate::env::{time_process, Env};
use crate::report::{Row, Section};
use crate::stats::{p50_p99, rate, ratio, Summary};

const TITLE: &str = "6. Daemon (`cell serve`): job start latency and throughput";

pub fn run(env: &Env) -> Section {
    measure(env).unwrap_or_else(|e| Section::failed(TITLE, format!("{e:#}")))
}

/// A daemon on a socket in the scratch directory, killed on drop.
struct Serving {
    child: std::process::Child,
    sock: std::path::PathBuf,
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve(env: &Env, cache: &str, shards: usize) -> anyhow::Result<Serving> {
    let dir = env.scratch.path().join(format!("daemon-socket-{shards}"));
    std::fs::create_dir_all(&dir).context("the socket's directory")?;
    let sock = dir.join("cell.sock");
    let child = Command::new(&env.cell)
        .arg("serve")
        .arg("--listen")
        .arg(format!("unix:{}", sock.display()))
        .args(["--cache-dir", cache, "--max-jobs", "1024"])
        .args(["--shards", &shards.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting cell serve")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::os::unix::net::UnixStream::connect(&sock).is_err() {
        anyhow::ensure!(Instant::now() < deadline, "cell serve did not come up");
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(Serving { child, sock })
}

async fn connect(sock: &std::path::Path) -> anyhow::Result<daemon::Client> {
    let stream = tokio::net::UnixStream::connect(sock)
        .await
        .with_context(|| format!("connecting to {}", sock.display()))?;
    let (r, w) = stream.into_split();
    let net = twoparty::VatNetwork::new(
        r.compat(),
        w.compat_write(),
        Side::Client,
        Default::default(),
    );
    let mut system = RpcSystem::new(Box::new(net), None);
    let daemon: daemon::Client = system.bootstrap(Side::Server);
    tokio::task::spawn_local(async move {
        let _ = system.await;
    });
    Ok(daemon)
}

/// One job, start to exit: `Daemon.run` then `Job.wait`.
async fn job(daemon: &daemon::Client, wasm: &Rc<[u8]>) -> anyhow::Result<()> {
    let mut req = daemon.run_request();
    JobRequest::new(JobCode::Wasm(wasm.clone())).write(req.get().init_request())?;
    let job = req.send().promise.await?.get()?.get_job()?;
    let reply = job.wait_request().send().promise.await?;
    let status = ExitStatus::read(reply.get()?.get_status()?)?;
    anyhow::ensure!(status == ExitStatus::Exited(0), "job ended {status}");
    Ok(())
}

fn local<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// Jobs one after another from one connected client (after one untimed warm-up job).
fn sequential(sock: &std::path::Path, nop: &Rc<[u8]>, n: usize) -> anyhow::Result<Summary> {
    local(async {
        let daemon = connect(sock).await?;
        job(&daemon, nop).await?; // warm: compiled once, then from memory
        let mut samples = Vec::with_capacity(n);
        for _ in 0..n {
            let t = Instant::now();
            job(&daemon, nop).await?;
            samples.push(t.elapsed().as_nanos() as u64);
        }
        anyhow::Ok(Summary::of(samples))
    })
}

/// One job of a loaded component, start to exit.
async fn job_of_daemon(
    daemon: &daemon::Client,
    component: &component::Client,
) -> anyhow::Result<()> {
    let mut req = daemon.run_request();
    JobRequest::<Rc<[u8]>>::new(JobCode::Component(component.clone()))
        .write(req.get().init_request())?;
    let job = req.send().promise.await?.get()?.get_job()?;
    let reply = job.wait_request().send().promise.await?;
    let status = ExitStatus::read(reply.get()?.get_status()?)?;
    anyhow::ensure!(status == ExitStatus::Exited(0), "job ended {status}");
    Ok(())
}

/// Jobs/s with [`IN_FLIGHT`] jobs in flight: [`CLIENTS`] connected clients, each of which
/// loads bench-nop once (`Daemon.load`) and keeps `IN_FLIGHT / CLIENTS` jobs of it going,
/// `per` jobs per loop.
fn throughput(sock: &std::path::Path, nop: &Rc<[u8]>, per: usize) -> anyhow::Result<f64> {
    local(async {
        let mut loaded = Vec::new();
        for _ in 0..CLIENTS {
            let daemon = connect(sock).await?;
            let mut load = daemon.load_request();
            load.get().set_wasm(nop);
            let component = load.send().promise.await?.get()?.get_component()?;
            job_of_daemon(&daemon, &component).await?; // warm
            loaded.push((daemon, component));
        }
        let t = Instant::now();
        let mut tasks = Vec::new();
        for (daemon, component) in &loaded {
            for _ in 0..IN_FLIGHT / CLIENTS {
                let (daemon, component) = (daemon.clone(), component.clone());
                tasks.push(tokio::task::spawn_local(async move {
                    for _ in 0..per {
                        job_of_daemon(&daemon, &component).await?;
                    }
                    anyhow::Ok(())
                }));
            }
        }
        for task in tasks {
            task.await??;
        }
        anyhow::Ok((IN_FLIGHT * per) as f64 / t.elapsed().as_secs_f64())
    })
}

/// Work per second of `jobs` bench-pid0 jobs started at once from one client (whole trees:
/// each job's children live on its shard), each running `args`; `units` is the work each
/// job does (spawns or calls), so the figure is the daemon's aggregate rate.
fn trees(
    sock: &std::path::Path,
    pid0: &Rc<[u8]>,
    jobs: usize,
    args: &[String],
    units: usize,
) -> anyhow::Result<f64> {
    local(async {
        let daemon = connect(sock).await?;
        let t = Instant::now();
        let mut running = Vec::new();
        for _ in 0..jobs {
            let mut req = daemon.run_request();
            let mut request = JobRequest::new(JobCode::Wasm(pid0.clone()));
            request.args = args.to_vec();
            request.write(req.get().init_request())?;
            running.push(req.send().promise.await?.get()?.get_job()?);
        }
        for job in running {
            let reply = job.wait_request().send().promise.await?;
            let status = ExitStatus::read(reply.get()?.get_status()?)?;
            anyhow::ensure!(
                status == ExitStatus::Exited(0),
                "a bench-pid0 job ended {status}"
            );
        }
        anyhow::Ok((jobs * units) as f64 / t.elapsed().as_secs_f64())
    })
}

/// What one daemon (one shard count) measured.
struct Measured {
    latency: Summary,
    per_s: f64,
    spawns_per_s: f64,
    calls_per_s: f64,
}

/// What a daemon is measured with.
struct Load {
    nop: Rc<[u8]>,
    pid0: Rc<[u8]>,
    /// Jobs at once in the tree rows: one per core.
    jobs: usize,
    spawns: usize,
    calls: usize,
}

fn measure_daemon(env: &Env, cache: &str, shards: usize, load: &Load) -> anyhow::Result<Measured> {
    let serving = serve(env, cache, shards)?;
    // Measured from a settled daemon: its first ~100 ms (start-up work, the readiness probe's
    // connection) doubled the p50 of whichever figure came first.
    std::thread::sleep(Duration::from_millis(200));
    let latency = sequential(&serving.sock, &load.nop, env.n(500, 50))?;
    let per_s = throughput(&serving.sock, &load.nop, env.n(100, 10))?;
    let spawn = [
        "spawn-concurrent".to_string(),
        load.spawns.to_string(),
        IN_FLIGHT.to_string(),
    ];
    let spawns_per_s = trees(&serving.sock, &load.pid0, load.jobs, &spawn, load.spawns)?;
    let pipeline = [
        "pipeline".to_string(),
        load.calls.to_string(),
        IN_FLIGHT.to_string(),
    ];
    let calls_per_s = trees(&serving.sock, &load.pid0, load.jobs, &pipeline, load.calls)?;
    Ok(Measured {
        latency,
        per_s,
        spawns_per_s,
        calls_per_s,
    })
}

/// Client connections in the throughput rows.
const CLIENTS: usize = 16;
/// Jobs in flight at once in the throughput rows (over all clients).
const IN_FLIGHT: usize = 64;

fn measure(env: &Env) -> anyhow::Result<Section> {
    let mut s = Section::new(TITLE, "whole `cell run` of the same file; `--shards 1`");
    let cache = env.fresh_cache("daemon");
    let nop_path = env.guest("bench-nop");
    let nop: Rc<[u8]> = Rc::from(std::fs::read(&nop_path).context("reading bench-nop")?);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let runs = env.n(30, 5);
    let run_whole = time_process(runs, || {
        let mut c = Command::new(&env.cell);
        c.arg("run").args(["--cache-dir", &cache]).arg(&nop_path);
        c
    })?;
    let load = Load {
        nop: nop.clone(),
        pid0: Rc::from(std::fs::read(env.guest("bench-pid0")).context("reading bench-pid0")?),
        jobs: cores,
        spawns: env.n(2000, 200),
        calls: env.n(50_000, 5_000),
    };
    let one = measure_daemon(env, &cache, 1, &load)?;
    let many = measure_daemon(env, &cache, cores, &load)?;
    s.row(
        Row::new(
            "job start→exit, warm daemon `--shards 1`, connected client (`Daemon.run` + `Job.wait`, bench-nop): p50 / p99",
            p50_p99(one.latency),
        )
        .baseline(p50_p99(run_whole), ratio(one.latency.p50 as f64, run_whole.p50 as f64)),
    );
    s.row(
        Row::new(
            format!("the same, `--shards {cores}`: p50 / p99"),
            p50_p99(many.latency),
        )
        .baseline(
            p50_p99(one.latency),
            ratio(many.latency.p50 as f64, one.latency.p50 as f64),
        )
        .target(
            "≤ 1.05× `--shards 1`",
            Some(many.latency.p50 as f64 <= 1.05 * one.latency.p50 as f64),
        ),
    );
    let serving = serve(env, &cache, cores)?;
    let addr = format!("unix:{}", serving.sock.display());
    let exec_whole = time_process(runs, || {
        let mut c = Command::new(&env.cell);
        c.args(["exec", "--connect", &addr]).arg(&nop_path);
        c
    })?;
    drop(serving);
    s.row(
        Row::new(
            "`cell exec bench-nop.wasm` (whole client process): p50 / p99",
            p50_p99(exec_whole),
        )
        .baseline(
            p50_p99(run_whole),
            ratio(exec_whole.p50 as f64, run_whole.p50 as f64),
        )
        .target(
            "faster than `cell run`",
            Some(exec_whole.p50 < run_whole.p50),
        ),
    );
    let per = env.n(100, 10);
    s.row(Row::new(
        format!(
            "jobs/s, {IN_FLIGHT} in flight from {CLIENTS} clients ({per} each, a loaded bench-nop, start→exit), `--shards 1`"
        ),
        rate(one.per_s),
    ));
    let want = 0.85 * cores as f64;
    s.row(
        Row::new(format!("the same, `--shards {cores}`"), rate(many.per_s))
            .baseline(rate(one.per_s), ratio(many.per_s, one.per_s)),
    );
    let (jobs, spawns, calls) = (load.jobs, load.spawns, load.calls);
    s.row(Row::new(
        format!(
            "spawn→exit/s, {jobs} jobs at once, each a bench-pid0 spawning {spawns} bench-nop children {IN_FLIGHT} in flight, `--shards 1`"
        ),
        rate(one.spawns_per_s),
    ));
    s.row(
        Row::new(
            format!("the same, `--shards {cores}`"),
            rate(many.spawns_per_s),
        )
        .baseline(
            rate(one.spawns_per_s),
            ratio(many.spawns_per_s, one.spawns_per_s),
        )
        .target(
            format!("≥ {want:.2}× `--shards 1`"),
            Some(many.spawns_per_s >= want * one.spawns_per_s),
        ),
    );
    s.row(Row::new(
        format!(
            "RPC echo calls/s, {jobs} jobs at once, each a bench-pid0 pipelining {calls} `Executor.echo` calls {IN_FLIGHT} in flight, `--shards 1`"
        ),
        rate(one.calls_per_s),
    ));
    s.row(
        Row::new(
            format!("the same, `--shards {cores}`"),
            rate(many.calls_per_s),
        )
        .baseline(
            rate(one.calls_per_s),
            ratio(many.calls_per_s, one.calls_per_s),
        )
        .target(
            format!("≥ {want:.2}× `--shards 1`"),
            Some(many.calls_per_s >= want * one.calls_per_s),
        ),
    );
    s.note(format!(
        "The daemon is the release `cell serve` on a unix socket, its compile cache warm (one \
         untimed job first). Latency: jobs one after another from one connected client, \
         each `Daemon.run` (the 64 KiB bench-nop sent each time and found in the in-memory \
         cache by its bytes) + `Job.wait`. `cell exec` adds the client process's own start-up \
         and connection. The baseline is a whole `cell run` of the same file ({runs} runs, \
         warm disk cache): engine set-up and loading the compiled code from disk are what the \
         warm daemon saves. Each figure is measured with `--shards 1` (one thread) and with \
         `--shards {cores}` (one per core, the default). Throughput: {CLIENTS} client \
         connections (spread over the shards as they connect), each loading bench-nop once \
         (`Daemon.load`) and keeping {IN_FLIGHT}/{CLIENTS} jobs of it in flight, one after \
         another per loop; the bench's own client thread shares the machine's cores (no target: \
         on 2 cores the client takes ~0.35 of one and the daemon's threads the rest, so the \
         machine, not the daemon, is the limit; measured per thread from /proc). Trees: one client \
         starts one bench-pid0 job per core at once (each placed on the least loaded shard, \
         its children on its own shard) and waits for all; the rate is all the jobs' spawns \
         (or echo calls) over the wall time."
    ));
    Ok(s)
}
