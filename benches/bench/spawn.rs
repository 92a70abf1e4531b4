//! Benchmark 2: Spawn: `Executor.spawn` → child exits, for a trivial child (bench-nop, a plain std
//! `main` that returns at once), measured inside pid0. Baseline: `wasmtime run bench-nop.wasm`
//! as a whole process, when `wasmtime` is on PATH.

use crate::env::{args, time_process, Env};
use crate::report::{Row, Section};
use crate::stats::{dur, median_by, p50_p99, rate, ratio};

const TITLE: &str = "2. Spawn → exit, trivial child";
/// Target: cached spawn → exit p50, in nanoseconds.
const TARGET_P50_NS: u64 = 100_000;
/// Target: cached spawns per second.
const TARGET_PER_S: f64 = 10_000.0;
const CONCURRENCY: usize = 64;
/// Targets for spawning through a loaded `Component` (no bytes per spawn).
const TARGET_COMPONENT_P50_NS: u64 = 50_000;
const TARGET_COMPONENT_PER_S: f64 = 20_000.0;
/// The sequential measurement is repeated; the median round (by p50) is reported.
const ROUNDS: usize = 3;

pub fn run(env: &Env) -> Section {
    measure(env).unwrap_or_else(|e| Section::failed(TITLE, format!("{e:#}")))
}

fn measure(env: &Env) -> anyhow::Result<Section> {
    let baseline_name = if env.wasmtime.is_some() {
        "`wasmtime run bench-nop.wasm` (a process each)"
    } else {
        "`wasmtime run` (not on PATH: skipped)"
    };
    let mut s = Section::new(TITLE, baseline_name);
    let pid0 = env.guest("bench-pid0").to_string_lossy().into_owned();
    let nop = env.guest("bench-nop");

    // A fresh cache: the first spawn compiles. The second run finds it in the disk cache.
    let cache = env.fresh_cache("spawn");
    let n = env.n(2_000, 200);
    let mut a = args(["--cache-dir", &cache, &pid0, "spawn"]);
    a.push(n.to_string());
    let mut seqs = vec![env.cell_result(&a, "spawn")?];
    // The first run compiled; more rounds (cold = from the disk cache) for a median.
    for _ in 1..env.n(ROUNDS, 1) {
        seqs.push(env.cell_result(&a, "spawn")?);
    }
    let cold_compile = seqs[0].u64("cold_ns")?;
    let seq = median_by(seqs, |f| f.u64("p50_ns").unwrap_or(u64::MAX))
        .ok_or_else(|| anyhow::anyhow!("no spawn rounds"))?;
    let disk = env.cell_result(&args(["--cache-dir", &cache, &pid0, "spawn", "2"]), "spawn")?;
    let mut a = args(["--cache-dir", &cache, &pid0, "spawn-concurrent"]);
    a.extend([n.to_string(), CONCURRENCY.to_string()]);
    let conc = env.cell_result(&a, "spawn-concurrent")?;
    let mut a = args(["--cache-dir", &cache, &pid0, "spawn-component"]);
    a.push(n.to_string());
    let comp = env.cell_result(&a, "spawn-component")?;

    let wasmtime = match &env.wasmtime {
        Some(w) => {
            let nop = nop.clone();
            Some(time_process(env.n(20, 5), || {
                let mut c = std::process::Command::new(w);
                c.arg("run").arg(&nop);
                c
            })?)
        }
        None => None,
    };
    let (base_lat, base_rate) = match wasmtime {
        Some(w) => (p50_p99(w), Some(1e9 / w.mean.max(1) as f64)),
        None => ("skipped".to_string(), None),
    };

    s.row(Row::new("cold: first spawn, compiling", dur(cold_compile)));
    s.row(Row::new(
        "cold: first spawn, from the disk cache",
        dur(disk.u64("cold_ns")?),
    ));
    let cached = seq.summary()?;
    let per_s = seq.u64("spawns_per_s")? as f64;
    let w_p50 = wasmtime.map(|w| w.p50 as f64).unwrap_or(0.0);
    s.row(
        Row::new("cached, sequential: p50 / p99", p50_p99(cached))
            .baseline(base_lat.clone(), ratio(cached.p50 as f64, w_p50))
            .target(
                format!("p50 ≤ {}", dur(TARGET_P50_NS)),
                Some(cached.p50 <= TARGET_P50_NS),
            ),
    );
    let base_rate_s = base_rate.map(rate).unwrap_or_else(|| "skipped".into());
    s.row(
        Row::new("cached, sequential: spawns/s", rate(per_s))
            .baseline(base_rate_s.clone(), ratio(per_s, base_rate.unwrap_or(0.0)))
            .target(
                format!("≥ {}", rate(TARGET_PER_S)),
                Some(per_s >= TARGET_PER_S),
            ),
    );
    let k = comp.summary()?;
    let k_per_s = comp.u64("spawns_per_s")? as f64;
    s.row(
        Row::new("cached, via a Component: p50 / p99", p50_p99(k)).target(
            format!("p50 ≤ {}", dur(TARGET_COMPONENT_P50_NS)),
            Some(k.p50 <= TARGET_COMPONENT_P50_NS),
        ),
    );
    s.row(
        Row::new("cached, via a Component: spawns/s", rate(k_per_s)).target(
            format!("≥ {}", rate(TARGET_COMPONENT_PER_S)),
            Some(k_per_s >= TARGET_COMPONENT_PER_S),
        ),
    );
    let c = conc.summary()?;
    let c_per_s = conc.u64("spawns_per_s")? as f64;
    s.row(Row::new(
        format!("cached, {CONCURRENCY} concurrent: p50 / p99"),
        p50_p99(c),
    ));
    s.row(
        Row::new(
            format!("cached, {CONCURRENCY} concurrent: spawns/s"),
            rate(c_per_s),
        )
        .target(
            format!("≥ {}", rate(TARGET_PER_S)),
            Some(c_per_s >= TARGET_PER_S),
        ),
    );
    s.note(format!(
        "Measured inside pid0 from `spawn` sent to `wait` answered ({n} spawns sequentially, \
         median of {} rounds; {n} with {CONCURRENCY} at a time). Each spawn sends the \
         child's {} KiB of wasm in the request, as a real parent does; the host recognises \
         the bytes of a cached component by comparing them.",
        env.n(ROUNDS, 1),
        seq.u64("wasm_bytes")? / 1024
    ));
    if env.wasmtime.is_none() {
        s.note("`wasmtime` is not on PATH: the wasmtime baseline column is skipped.");
    }
    Ok(s)
}
