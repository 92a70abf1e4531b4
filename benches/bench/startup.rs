//! Benchmark 3: Start-up: whole-process wall time of `cell run`, with a warm compile cache, against
//! `wasmtime run` of the same file (when on PATH) and, as a floor, a native process.

use std::process::Command;

use crate::env::{time_process, time_process_any_status, Env};
use crate::report::{Row, Section};
use crate::stats::{p50_p99, ratio, Summary};

const TITLE: &str = "3. Start-up, whole process, warm compile cache";

pub fn run(env: &Env) -> Section {
    measure(env).unwrap_or_else(|e| Section::failed(TITLE, format!("{e:#}")))
}

fn measure(env: &Env) -> anyhow::Result<Section> {
    let baseline = if env.wasmtime.is_some() {
        "`wasmtime run` of the same file"
    } else {
        "`wasmtime run` (not on PATH: skipped)"
    };
    let mut s = Section::new(TITLE, baseline);
    let runs = env.n(30, 5);
    let cache = env.fresh_cache("startup");
    let hello = env.guest("bench-hello");
    let pid0 = env.guest("bench-pid0");

    // `wasmtime run` of the same file and arguments (cell's own cache is warm; wasmtime's
    // is filled by the untimed first run). A cell guest under `wasmtime run` has no host on
    // its stdin, so it exits with an error right after starting: its time still covers
    // loading, instantiating and starting the same component.
    let wasmtime_of = |wasm: &std::path::Path, args: &[&str]| -> anyhow::Result<Option<Summary>> {
        let Some(w) = &env.wasmtime else {
            return Ok(None);
        };
        let make = || {
            let mut c = Command::new(w);
            c.arg("run").arg(wasm).args(args);
            c
        };
        Ok(Some(time_process_any_status(runs, make)?))
    };
    let vs_wasmtime = |row: Row, cell: Summary, wasmtime: Option<Summary>| match wasmtime {
        Some(w) => row
            .baseline(p50_p99(w), ratio(cell.p50 as f64, w.p50 as f64))
            .target("no slower than wasmtime", Some(cell.p50 <= w.p50)),
        None => row
            .baseline("skipped", "—")
            .target("no slower than wasmtime", None),
    };

    // `time_process` runs once untimed first: that run fills the compile cache.
    let cell_cmd = |extra: &[&str], wasm: &std::path::Path, wasm_args: &[&str]| {
        let mut c = Command::new(&env.cell);
        c.arg("run")
            .args(["--cache-dir", &cache])
            .args(extra)
            .arg(wasm)
            .args(wasm_args);
        c
    };
    if env.has_plain {
        let plain = time_process(runs, || cell_cmd(&["--plain"], &hello, &[]))?;
        s.row(vs_wasmtime(
            Row::new(
                "`cell run --plain bench-hello.wasm`: p50 / p99",
                p50_p99(plain),
            ),
            plain,
            wasmtime_of(&hello, &[])?,
        ));
    } else {
        s.row(Row::new(
            "`cell run --plain bench-hello.wasm`",
            "pending: this build has no `--plain`",
        ));
        s.note(
            "`cell run --plain` is not in this build yet; the row appears (measured the same \
             way) as soon as `cell run --help` lists the flag.",
        );
    }
    let rpc = time_process(runs, || cell_cmd(&[], &pid0, &["nop"]))?;
    s.row(vs_wasmtime(
        Row::new(
            "`cell run bench-pid0.wasm nop` (RPC pid0): p50 / p99",
            p50_p99(rpc),
        ),
        rpc,
        wasmtime_of(&pid0, &["nop"])?,
    ));
    let nop = env.guest("bench-nop");
    let small = time_process(runs, || cell_cmd(&[], &nop, &[]))?;
    s.row(vs_wasmtime(
        Row::new(
            "`cell run bench-nop.wasm` (std `main(){}`, no stdio): p50 / p99",
            p50_p99(small),
        ),
        small,
        wasmtime_of(&nop, &[])?,
    ));
    let version = time_process(runs, || {
        let mut c = Command::new(&env.cell);
        c.arg("--version");
        c
    })?;
    s.row(Row::new(
        "floor: `cell --version` (loading the binary): p50 / p99",
        p50_p99(version),
    ));
    let native = time_process(runs, || Command::new("true"))?;
    s.row(Row::new(
        "floor: native `true` process: p50 / p99",
        p50_p99(native),
    ));
    s.note(format!(
        "{runs} runs each after one untimed run that fills the compile cache (a fresh \
         `--cache-dir`). `--plain bench-hello` is an ordinary std hello world (prints one line, \
         no RPC): the same file `wasmtime run` would run. `bench-pid0 nop` bootstraps the RPC \
         connection, calls `Session.info` and exits: the smallest real cell pid0. `bench-nop` \
         (64 KiB, a std `main` that returns at once) never touches stdin/stdout, so it runs as \
         an RPC pid0 that never speaks. The wasmtime column runs the same file with the same \
         arguments; `bench-pid0` under `wasmtime run` finds no host on its stdin and exits with \
         an error right after starting, so its time covers loading, instantiating and starting \
         the same component (and none of the RPC session cell's run includes)."
    ));
    if env.wasmtime.is_none() {
        s.note("`wasmtime` is not on PATH: the wasmtime baseline column is skipped.");
    }
    Ok(s)
}
