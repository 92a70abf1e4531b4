//! Benchmark 3: Start-up: whole-process wall time of `cell run`, with a warm compile cache, against
//! `wasmtime run` of the same hello world (when on PATH) and, as a floor, a native process.

use std::process::Command;

use crate::env::{time_process, Env};
use crate::report::{Row, Section};
use crate::stats::{p50_p99, ratio, Summary};

const TITLE: &str = "3. Start-up, whole process, warm compile cache";

pub fn run(env: &Env) -> Section {
    measure(env).unwrap_or_else(|e| Section::failed(TITLE, format!("{e:#}")))
}

fn measure(env: &Env) -> anyhow::Result<Section> {
    let baseline = if env.wasmtime.is_some() {
        "`wasmtime run bench-hello.wasm`"
    } else {
        "`wasmtime run` (not on PATH: skipped)"
    };
    let mut s = Section::new(TITLE, baseline);
    let runs = env.n(30, 5);
    let cache = env.fresh_cache("startup");
    let hello = env.guest("bench-hello");
    let pid0 = env.guest("bench-pid0");

    let wasmtime = match &env.wasmtime {
        Some(w) => Some(time_process(runs, || {
            let mut c = Command::new(w);
            c.arg("run").arg(&hello);
            c
        })?),
        None => None,
    };
    let vs_wasmtime = |row: Row, cell: Summary| match wasmtime {
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
    ));
    let nop = env.guest("bench-nop");
    let small = time_process(runs, || cell_cmd(&[], &nop, &[]))?;
    s.row(vs_wasmtime(
        Row::new(
            "`cell run bench-nop.wasm` (std `main(){}`, no stdio): p50 / p99",
            p50_p99(small),
        ),
        small,
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
         an RPC pid0 that never speaks."
    ));
    if env.wasmtime.is_none() {
        s.note("`wasmtime` is not on PATH: the wasmtime baseline column is skipped.");
    }
    Ok(s)
}
