//! Benchmark 9: one `cell run` tree over shards (issue 14) — the same bench-pid0 with
//! `--shards 1` and with one shard per core, side by side in one run, rounds alternating so
//! that a noisy moment hits both alike: what one pid0's children gain from more cores, and
//! what the sequential paths lose (nothing should: a lone child stays on its parent's shard).

use crate::env::{args, Env};
use crate::report::{Row, Section};
use crate::stats::{median_by, p50_p99, rate, ratio, Summary};

const TITLE: &str = "9. One tree over shards (`cell run --shards N`)";
const BASELINE: &str = "the same pid0 with `--shards 1`, same run";
/// Spawns (or busy children) in flight in the throughput rows.
const IN_FLIGHT: usize = 64;
/// Spinning siblings in the fairness row.
const SPINNERS: usize = 4;
/// Rounds per figure; the median is reported.
const ROUNDS: usize = 3;

pub fn run(env: &Env) -> Section {
    measure(env).unwrap_or_else(|e| Section::failed(TITLE, format!("{e:#}")))
}

/// `cell run --shards <shards> --cache-dir <cache> bench-pid0 <mode…>`'s `kind` result.
struct Runner<'a> {
    env: &'a Env,
    cache: String,
    pid0: String,
}

impl Runner<'_> {
    fn result(
        &self,
        shards: usize,
        mode: &[String],
        kind: &str,
    ) -> anyhow::Result<crate::env::Fields> {
        let mut a = args(["--shards"]);
        a.push(shards.to_string());
        a.extend(args(["--cache-dir", &self.cache, &self.pid0]));
        a.extend(mode.iter().cloned());
        self.env.cell_result(&a, kind)
    }

    /// Median over rounds of `pick` of the result, for one shard and for `cores`,
    /// alternating.
    fn both(
        &self,
        cores: usize,
        mode: &[String],
        kind: &str,
        pick: impl Fn(&crate::env::Fields) -> anyhow::Result<Summary>,
    ) -> anyhow::Result<(Summary, Summary)> {
        let (mut one, mut many) = (Vec::new(), Vec::new());
        for _ in 0..self.env.n(ROUNDS, 1) {
            one.push(pick(&self.result(1, mode, kind)?)?);
            many.push(pick(&self.result(cores, mode, kind)?)?);
        }
        let one = median_by(one, |s| s.p50).unwrap_or_default();
        let many = median_by(many, |s| s.p50).unwrap_or_default();
        Ok((one, many))
    }

    /// [`Runner::both`] of a rate field (`spawns_per_s`, `calls_per_s`).
    fn rates(
        &self,
        cores: usize,
        mode: &[String],
        kind: &str,
        field: &str,
    ) -> anyhow::Result<(Summary, Summary)> {
        self.both(cores, mode, kind, |f| Ok(as_rate(f.u64(field)?)))
    }
}

impl Runner<'_> {
    /// `spawns_per_s` of one `cell run --shards 1` alone, and the sum of `cores` of them
    /// running at once as separate processes (no shared address space: what the machine
    /// itself allows).
    fn apart(&self, cores: usize, mode: &[String], kind: &str) -> anyhow::Result<(f64, f64)> {
        let rate =
            |f: crate::env::Fields| -> anyhow::Result<f64> { Ok(f.u64("spawns_per_s")? as f64) };
        let alone = rate(self.result(1, mode, kind)?)?;
        let together: anyhow::Result<Vec<f64>> = std::thread::scope(|scope| {
            let runs: Vec<_> = (0..cores)
                .map(|_| scope.spawn(|| rate(self.result(1, mode, kind)?)))
                .collect();
            runs.into_iter()
                .map(|r| r.join().map_err(|_| anyhow::anyhow!("a run panicked"))?)
                .collect()
        });
        Ok((alone, together?.iter().sum()))
    }
}

/// A rate carried in a `Summary`'s p50 (so that `both` can take medians of either).
fn as_rate(value: u64) -> Summary {
    Summary {
        p50: value,
        p99: value,
        mean: value,
    }
}

fn measure(env: &Env) -> anyhow::Result<Section> {
    let mut s = Section::new(TITLE, BASELINE);
    let cores = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .max(2);
    let run = Runner {
        env,
        cache: env.fresh_cache("shards"),
        pid0: env.guest("bench-pid0").to_string_lossy().into_owned(),
    };
    // Warm the compile cache (bench-pid0, bench-nop, bench-echo).
    run.result(1, &args(["spawn", "2"]), "spawn")?;
    run.result(1, &args(["busy-children", "1", "10", "1"]), "busy")?;
    let n = env.n(2_000, 200);
    let calls = env.n(20_000, 2_000);

    let (one, many) = run.both(
        cores,
        &args(["echo", &calls.to_string(), "16"]),
        "echo",
        |f| f.summary(),
    )?;
    latency_row(&mut s, "sequential echo 16 B", cores, one, many);
    let (one, many) = run.both(cores, &args(["spawn", &n.to_string()]), "spawn", |f| {
        f.summary()
    })?;
    latency_row(&mut s, "cached spawn → exit, sequential", cores, one, many);

    for (kind, how) in [
        ("spawn-concurrent", "from bytes"),
        ("spawn-concurrent-component", "through one Component"),
    ] {
        let mode = args([kind, &n.to_string(), &IN_FLIGHT.to_string()]);
        let (one, many) = run.rates(cores, &mode, kind, "spawns_per_s")?;
        rate_row(
            &mut s,
            format!("spawn → exit/s, {n} bench-nop children {IN_FLIGHT} in flight, {how}"),
            cores,
            one,
            many,
        );
    }
    let per = env.n(50_000, 5_000);
    let mode = args([
        "busy-children",
        &cores.to_string(),
        &per.to_string(),
        &IN_FLIGHT.to_string(),
    ]);
    let (one, many) = run.rates(cores, &mode, "busy", "calls_per_s")?;
    rate_row(
        &mut s,
        format!(
            "echo calls/s of {cores} busy children, each pipelining {per} calls {IN_FLIGHT} in flight"
        ),
        cores,
        one,
        many,
    );
    let per = env.n(2_000, 200);
    let mode = args([
        "spawner-children",
        &cores.to_string(),
        &(n / 2).to_string(),
        &IN_FLIGHT.to_string(),
    ]);
    let (one, many) = run.rates(cores, &mode, "spawners", "spawns_per_s")?;
    rate_row(
        &mut s,
        format!(
            "spawn → exit/s of {cores} spawner children, each {} bench-nop {IN_FLIGHT} in flight through a Component",
            n / 2
        ),
        cores,
        one,
        many,
    );
    let mode = args([
        "spawn-concurrent-component",
        &(n / 2).to_string(),
        &IN_FLIGHT.to_string(),
    ]);
    let apart = run.apart(cores, &mode, "spawn-concurrent-component")?;
    s.row(
        Row::new(
            format!(
                "the machine's own limit: {cores} separate `cell run --shards 1` at once, each {} bench-nop {IN_FLIGHT} in flight through a Component",
                n / 2
            ),
            rate(apart.1),
        )
        .baseline(rate(apart.0), ratio(apart.1, apart.0)),
    );
    let mode = args(["busy-children", "64", &per.to_string(), "16"]);
    let (one, many) = run.rates(cores, &mode, "busy", "calls_per_s")?;
    s.row(
        Row::new(
            format!("echo calls/s of 64 busy children started one after another, {per} calls 16 in flight each, `--shards {cores}`"),
            rate(many.p50 as f64),
        )
        .baseline(rate(one.p50 as f64), ratio(many.p50 as f64, one.p50 as f64)),
    );

    let f = run.result(
        cores,
        &args([
            "fairness",
            &env.n(200, 20).to_string(),
            &SPINNERS.to_string(),
        ]),
        "fairness",
    )?;
    let (idle, busy) = (f.u64("idle_p50_ns")?, f.u64("busy_p50_ns")?);
    let idle = Summary {
        p50: idle,
        p99: f.u64("idle_p99_ns")?,
        mean: 0,
    };
    let busy = Summary {
        p50: busy,
        p99: f.u64("busy_p99_ns")?,
        mean: 0,
    };
    s.row(
        Row::new(
            format!("fairness, `--shards {cores}`: echo 16 B beside {SPINNERS} spinning siblings: p50 / p99"),
            p50_p99(busy),
        )
        .baseline(format!("{} alone", p50_p99(idle)), ratio(busy.p50 as f64, idle.p50 as f64))
        .target(
            "p50 ≤ 2x alone",
            Some(busy.p50 as f64 <= 2.0 * idle.p50.max(1) as f64),
        ),
    );
    s.note(format!(
        "Each figure is bench-pid0 in one `cell run`, with `--shards 1` and with `--shards \
         {cores}` (the default on this machine, `--placement load`), {} rounds each, \
         alternating; the median round is shown. Sequential rows: pid0 alone calls or spawns \
         one child at a time, which stays on pid0's shard. Throughput: pid0 keeps \
         {IN_FLIGHT} spawns in flight (the children spread over the shards as their load \
         says), or starts {cores} bench-echo children at once, each pipelining its own calls \
         (one per shard), or {cores} bench-spawner children, each spawning its own \
         bench-nop children; the rate is all the calls (or spawns) over the wall time from \
         the first spawn to the last exit. The machine's own limit: the same spawns in \
         {cores} separate `cell` processes at once, against one alone.",
        env.n(ROUNDS, 1)
    ));
    Ok(s)
}

fn latency_row(s: &mut Section, what: &str, cores: usize, one: Summary, many: Summary) {
    s.row(
        Row::new(
            format!("{what}, `--shards {cores}`: p50 / p99"),
            p50_p99(many),
        )
        .baseline(p50_p99(one), ratio(many.p50 as f64, one.p50 as f64))
        .target(
            "p50 ≤ 1.05× `--shards 1`",
            Some(many.p50 as f64 <= 1.05 * one.p50 as f64),
        ),
    );
}

fn rate_row(s: &mut Section, what: String, cores: usize, one: Summary, many: Summary) {
    let want = 0.85 * cores as f64;
    let (one, many) = (one.p50 as f64, many.p50 as f64);
    s.row(
        Row::new(format!("{what}, `--shards {cores}`"), rate(many))
            .baseline(rate(one), ratio(many, one))
            .target(
                format!("≥ {want:.2}× `--shards 1`"),
                Some(many >= want * one),
            ),
    );
}
