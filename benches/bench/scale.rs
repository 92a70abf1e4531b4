//! Benchmark 5: Scale: N idle children (bench-nop blocked reading its stdin) under one pid0: the time
//! to start them all and the host's resident memory per child.
//!
//! RSS is read from `/proc/<cell pid>/status` when pid0 reports that all children have started
//! (it then holds them for a moment before exiting). Per-child memory is the growth over a run
//! with zero children, divided by N. Virtual memory is not reported: wasmtime reserves address
//! space per linear memory up front, and only resident pages cost anything; the number of
//! memory mappings is, because Linux caps it per process (`vm.max_map_count`).
//!
//! With `cell run --max-procs`, 10,000 children are started directly. If spawning fails at some
//! N (pid0 stops at the first failed start and reports how many are live and the error), the
//! table says how many started and why, and measures memory at N; nothing on the machine is
//! reconfigured.

use std::time::Duration;

use crate::env::{args, mappings, max_map_count, rss, Env, Fields};
use crate::report::{Row, Section};
use crate::stats::{bytes, dur, thousands};

const TITLE: &str = "5. Scale: idle children under one pid0";
/// Target: 10,000 idle children fit in this much host memory.
const TARGET_BYTES: u64 = 8 << 30;
const TARGET_N: u64 = 10_000;
/// How long pid0 holds its children after reporting (the sampling window).
const HOLD_MS: &str = "1500";
/// The default `max_procs` (pid0 included), when `--max-procs` is not available.
const DEFAULT_MAX_PROCS: usize = 1024;

pub fn run(env: &Env) -> Section {
    measure(env).unwrap_or_else(|e| Section::failed(TITLE, format!("{e:#}")))
}

/// What one run with N children found.
struct Sample {
    started: u64,
    start_ns: u64,
    rss: u64,
    hwm: u64,
    maps: u64,
    error: String,
}

fn sample(env: &Env, cache: &str, n: usize) -> anyhow::Result<Sample> {
    sample_of(env, cache, "idle-children", n)
}

/// One run of bench-pid0 `mode N HOLD_MS`, memory sampled when it reports.
fn sample_of(env: &Env, cache: &str, mode: &str, n: usize) -> anyhow::Result<Sample> {
    let pid0 = env.guest("bench-pid0").to_string_lossy().into_owned();
    let mut a = args(["--cache-dir", cache]);
    if env.has_max_procs {
        a.extend(["--max-procs".to_string(), (n + 8).to_string()]);
    }
    a.extend(args([&pid0, mode]));
    a.extend([n.to_string(), HOLD_MS.to_string()]);
    let mut mem = None;
    let fields = env.run_cell(&a, Duration::from_secs(300), |line, pid| {
        if Fields::parse(line).is_some_and(|f| f.get("kind") == Some("idle")) {
            mem = Some(rss(pid).and_then(|(rss, hwm)| Ok((rss, hwm, mappings(pid)?))));
        }
    })?;
    let f = fields
        .into_iter()
        .find(|f| f.get("kind") == Some("idle"))
        .ok_or_else(|| anyhow::anyhow!("no `kind=idle` result"))?;
    let (rss, hwm, maps) = mem.ok_or_else(|| anyhow::anyhow!("memory was not sampled"))??;
    Ok(Sample {
        started: f.u64("started")?,
        start_ns: f.u64("start_ns")?,
        rss,
        hwm,
        maps,
        error: f.get("error").unwrap_or("none").replace('_', " "),
    })
}

fn measure(env: &Env) -> anyhow::Result<Section> {
    let mut s = Section::new(TITLE, "the same cell with 0 children");
    let cache = env.fresh_cache("scale");
    // The first run compiles (and fills the disk cache); compiling leaves memory behind in the
    // allocator, so the baseline is the second run, which loads from the cache like the rest.
    sample(env, &cache, 0)?;
    let base = sample(env, &cache, 0)?;
    s.row(Row::new("host RSS, pid0 alone", bytes(base.rss)));
    let mut sizes = vec![100usize, 1_000];
    if env.has_max_procs {
        sizes.push(TARGET_N as usize);
    }
    if env.quick {
        sizes.truncate(1);
    }
    let mut per_child = None;
    for n in sizes {
        let label = format!("{} idle children", thousands(n as u64));
        // A run that fails outright (e.g. `cell` itself dies) is a row, not the section's end.
        let got = match sample(env, &cache, n) {
            Ok(got) => got,
            Err(e) => {
                let first = format!("{e:#}").lines().next().unwrap_or("").to_string();
                s.row(Row::new(label, format!("FAILED: {first}")));
                s.note(format!("{} idle children: {e:#}", thousands(n as u64)));
                continue;
            }
        };
        if got.started == 0 {
            s.row(Row::new(label, format!("none started: {}", got.error)));
            continue;
        }
        let target = n as u64 == TARGET_N;
        let partial = got.started < n as u64;
        if target || partial {
            s.row(
                Row::new(
                    format!("{label}: started"),
                    format!("{} of {}", thousands(got.started), thousands(n as u64)),
                )
                .target("all start", Some(!partial)),
            );
        }
        if partial {
            s.note(format!(
                "{label}: spawning failed after {} children: `{}`.",
                thousands(got.started),
                got.error
            ));
        }
        let live = if partial {
            format!(" ({} live)", thousands(got.started))
        } else {
            String::new()
        };
        let each = got.rss.saturating_sub(base.rss) / got.started;
        s.row(
            Row::new(format!("{label}: time to start{live}"), dur(got.start_ns)).baseline(
                "—",
                format!("{} per child", dur(got.start_ns / got.started)),
            ),
        );
        let mut row = Row::new(format!("{label}: host RSS{live}"), bytes(got.rss))
            .baseline(bytes(base.rss), format!("+{} per child", bytes(each)));
        if target {
            let at_target = base.rss + each * TARGET_N;
            row = if partial {
                row.target(
                    format!(
                        "{} children ≤ {} (extrapolated: {})",
                        thousands(TARGET_N),
                        bytes(TARGET_BYTES),
                        bytes(at_target)
                    ),
                    Some(at_target <= TARGET_BYTES),
                )
            } else {
                row.target(
                    format!("{} children ≤ {}", thousands(TARGET_N), bytes(TARGET_BYTES)),
                    Some(got.rss <= TARGET_BYTES),
                )
            };
        }
        s.row(row);
        let maps_each = got.maps.saturating_sub(base.maps) as f64 / got.started as f64;
        let mut row = Row::new(
            format!("{label}: memory mappings of `cell`{live}"),
            thousands(got.maps),
        )
        .baseline(thousands(base.maps), format!("+{maps_each:.1} per child"));
        if let (true, Some(max)) = (target, max_map_count()) {
            let at_target = base.maps + (maps_each * TARGET_N as f64) as u64;
            row = row.target(
                format!(
                    "{} children ≤ vm.max_map_count ({}): {}",
                    thousands(TARGET_N),
                    thousands(max),
                    thousands(at_target)
                ),
                Some(at_target <= max),
            );
        }
        s.row(row);
        s.note(format!(
            "{label}: peak RSS (VmHWM) {}{}.",
            bytes(got.hwm),
            max_map_count()
                .map(|m| format!(
                    "; at {maps_each:.1} mappings per child, vm.max_map_count {} allows ~{} \
                     children",
                    thousands(m),
                    thousands((m.saturating_sub(base.maps) as f64 / maps_each.max(0.01)) as u64)
                ))
                .unwrap_or_default()
        ));
        per_child = Some((each, maps_each));
    }
    if !env.has_max_procs {
        extrapolate(&mut s, &base, per_child);
    }
    sdk_rows(env, &cache, &base, &mut s);
    s.note(
        "Children are started 64 at a time; the clock starts after one warm-up child has been \
         compiled, so this is start-up from the in-memory cache. `--max-procs` is set to N + 8 \
         for each run.",
    );
    Ok(s)
}

/// The cost of an idle SDK guest (bench-idle: its RPC session up), which is what a real
/// guest costs, against issue 14's target of 128 KiB per child, host and guest together.
fn sdk_rows(env: &Env, cache: &str, base: &Sample, s: &mut Section) {
    const SDK_TARGET: u64 = 128 << 10;
    let n = match (env.quick, env.has_max_procs) {
        (true, _) | (false, false) => 100,
        (false, true) => TARGET_N as usize,
    };
    let label = format!("{} idle SDK children (session up)", thousands(n as u64));
    let got = match sample_of(env, cache, "idle-sdk-children", n) {
        Ok(got) if got.started > 0 => got,
        Ok(got) => return s.row(Row::new(label, format!("none started: {}", got.error))),
        Err(e) => return s.row(Row::new(label, format!("FAILED: {e:#}"))),
    };
    let each = got.rss.saturating_sub(base.rss) / got.started;
    s.row(
        Row::new(format!("{label}: time to start"), dur(got.start_ns)).baseline(
            "—",
            format!("{} per child", dur(got.start_ns / got.started)),
        ),
    );
    s.row(
        Row::new(format!("{label}: host RSS"), bytes(got.rss))
            .baseline(bytes(base.rss), format!("+{} per child", bytes(each)))
            .target(
                format!("≤ {} per child", bytes(SDK_TARGET)),
                Some(each <= SDK_TARGET),
            ),
    );
}

/// Without `--max-procs` (pid0's subtree is capped at [`DEFAULT_MAX_PROCS`]), 10,000 children
/// are extrapolated from the largest run: pid0 alone + N × the measured per-child cost.
fn extrapolate(s: &mut Section, base: &Sample, per_child: Option<(u64, f64)>) {
    if let Some((each, maps_each)) = per_child {
        let projected = base.rss + each * TARGET_N;
        s.row(
            Row::new(
                format!("{} idle children (extrapolated)", thousands(TARGET_N)),
                bytes(projected),
            )
            .target(
                format!("≤ {}", bytes(TARGET_BYTES)),
                Some(projected <= TARGET_BYTES),
            ),
        );
        if let Some(max) = max_map_count() {
            let maps = base.maps + (maps_each * TARGET_N as f64) as u64;
            s.row(
                Row::new(
                    format!(
                        "{} idle children: memory mappings (extrapolated)",
                        thousands(TARGET_N)
                    ),
                    thousands(maps),
                )
                .target(
                    format!("≤ vm.max_map_count ({})", thousands(max)),
                    Some(maps <= max),
                ),
            );
        }
    }
    s.note(format!(
        "10,000 children need `cell run --max-procs` (pid0's subtree is limited to \
         {DEFAULT_MAX_PROCS} processes by default); this build has no such flag, so 10,000 is \
         extrapolated from the largest run. The rows are measured as soon as `cell run --help` \
         lists `--max-procs`."
    ));
}
