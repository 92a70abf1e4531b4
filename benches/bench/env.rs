//! Where things are and how to run them: the release `cell` binary, the guests, an optional
//! `wasmtime` on PATH, what this build of `cell` supports, and helpers to run processes.

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};

use crate::stats::Summary;

/// The benchmark's environment, fixed for a run.
pub struct Env {
    /// The `cell` binary of this build (the bench profile is the release profile).
    pub cell: PathBuf,
    /// `guests/target/wasm32-wasip2/release`.
    pub guests: PathBuf,
    /// `wasmtime` on PATH, for the baselines that need it.
    pub wasmtime: Option<PathBuf>,
    /// Whether `cell run` has `--plain` (a plain WASI program as pid0).
    pub has_plain: bool,
    /// Whether `cell run` has `--max-procs N` (raising the default 1024).
    pub has_max_procs: bool,
    /// Smaller iteration counts, for trying the harness out (CELL_BENCH_QUICK=1).
    pub quick: bool,
    /// Scratch space (compile caches), removed at the end.
    pub scratch: tempfile::TempDir,
}

impl Env {
    pub fn detect() -> anyhow::Result<Env> {
        let cell = PathBuf::from(env!("CARGO_BIN_EXE_cell"));
        let guests =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("guests/target/wasm32-wasip2/release");
        for g in ["bench-pid0", "bench-nop", "bench-hello"] {
            let p = guests.join(format!("{g}.wasm"));
            if !p.exists() {
                bail!(
                    "{} is missing: build the guests first (`make bench` does)",
                    p.display()
                );
            }
        }
        let help = Command::new(&cell)
            .args(["run", "--help"])
            .output()
            .context("running `cell run --help`")?;
        let help = String::from_utf8_lossy(&help.stdout).into_owned();
        Ok(Env {
            cell,
            guests,
            wasmtime: on_path("wasmtime"),
            has_plain: help.contains("--plain"),
            has_max_procs: help.contains("--max-procs"),
            quick: std::env::var_os("CELL_BENCH_QUICK").is_some_and(|v| v != "0"),
            scratch: tempfile::tempdir().context("creating a scratch directory")?,
        })
    }

    pub fn guest(&self, name: &str) -> PathBuf {
        self.guests.join(format!("{name}.wasm"))
    }

    /// A fresh, empty compile-cache directory.
    pub fn fresh_cache(&self, name: &str) -> String {
        let dir = self.scratch.path().join(name);
        let _ = std::fs::remove_dir_all(&dir);
        dir.to_string_lossy().into_owned()
    }

    /// `full` normally, `quick` with CELL_BENCH_QUICK=1.
    pub fn n(&self, full: usize, quick: usize) -> usize {
        if self.quick {
            quick
        } else {
            full
        }
    }

    /// `cell run <args>`, stdout discarded, stderr piped.
    pub fn cell_run(&self, args: &[String]) -> Command {
        let mut cmd = Command::new(&self.cell);
        cmd.arg("run").args(args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd
    }

    /// Runs `cell run <args>` to completion (killing it after `limit`), calling `on_line` with
    /// each stderr line and the process id as they arrive. Returns the `bench:` lines.
    ///
    /// # Errors
    /// `cell` cannot start, times out, or exits non-zero.
    pub fn run_cell(
        &self,
        args: &[String],
        limit: Duration,
        mut on_line: impl FnMut(&str, u32),
    ) -> anyhow::Result<Vec<Fields>> {
        let mut child = self
            .cell_run(args)
            .spawn()
            .with_context(|| format!("starting {}", self.cell.display()))?;
        let pid = child.id();
        let done = Arc::new(AtomicBool::new(false));
        let watchdog = {
            let done = done.clone();
            std::thread::spawn(move || {
                let deadline = Instant::now() + limit;
                while !done.load(Ordering::SeqCst) {
                    if Instant::now() > deadline {
                        // Our own child, by pid: never a broad kill.
                        let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
                        return true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                false
            })
        };
        let mut log = Vec::new();
        let mut fields = Vec::new();
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                on_line(&line, pid);
                if let Some(f) = Fields::parse(&line) {
                    fields.push(f);
                }
                log.push(line);
            }
        }
        let status = child.wait().context("waiting for cell")?;
        done.store(true, Ordering::SeqCst);
        let timed_out = watchdog.join().unwrap_or(false);
        let tail = log[log.len().saturating_sub(8)..].join("\n");
        if timed_out {
            bail!(
                "`cell run {}` took longer than {limit:?}:\n{tail}",
                args.join(" ")
            );
        }
        if !status.success() {
            bail!("`cell run {}` failed ({status}):\n{tail}", args.join(" "));
        }
        Ok(fields)
    }

    /// Runs `cell run <args>` and returns its single `bench: kind=<kind>` result.
    pub fn cell_result(&self, args: &[String], kind: &str) -> anyhow::Result<Fields> {
        let limit = Duration::from_secs(180);
        self.run_cell(args, limit, |_, _| {})?
            .into_iter()
            .find(|f| f.get("kind") == Some(kind))
            .with_context(|| {
                format!(
                    "`cell run {}` printed no `kind={kind}` result",
                    args.join(" ")
                )
            })
    }
}

/// Wall time of a whole process, `n` times (after one untimed warm-up run): p50/p99/mean.
///
/// # Errors
/// A run fails to start or exits non-zero.
pub fn time_process(n: usize, make: impl FnMut() -> Command) -> anyhow::Result<Summary> {
    time_runs(n, make, true)
}

/// [`time_process`] for a command expected to fail (e.g. a cell guest run by `wasmtime run`,
/// which has no host on its stdin: it loads, instantiates and starts, then exits at once).
pub fn time_process_any_status(n: usize, make: impl FnMut() -> Command) -> anyhow::Result<Summary> {
    time_runs(n, make, false)
}

fn time_runs(
    n: usize,
    mut make: impl FnMut() -> Command,
    require_success: bool,
) -> anyhow::Result<Summary> {
    let mut samples = Vec::with_capacity(n);
    for i in 0..=n {
        let mut cmd = make();
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let t0 = Instant::now();
        let status = cmd
            .status()
            .with_context(|| format!("starting {:?}", cmd.get_program()))?;
        let took = t0.elapsed();
        if require_success && !status.success() {
            bail!("{cmd:?} failed: {status}");
        }
        if i > 0 {
            samples.push(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX));
        }
    }
    Ok(Summary::of(samples))
}

/// One `bench: key=value ...` line printed by bench-pid0.
#[derive(Debug, Clone)]
pub struct Fields(HashMap<String, String>);

impl Fields {
    pub fn parse(line: &str) -> Option<Fields> {
        let rest = line.trim().strip_prefix("bench: ")?;
        let map = rest
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Some(Fields(map))
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    pub fn u64(&self, key: &str) -> anyhow::Result<u64> {
        let v = self
            .get(key)
            .with_context(|| format!("no {key} in {:?}", self.0))?;
        v.parse()
            .with_context(|| format!("{key}={v}: not a number"))
    }

    /// The `p50_ns`/`p99_ns`/`mean_ns` triple.
    pub fn summary(&self) -> anyhow::Result<Summary> {
        Ok(Summary {
            p50: self.u64("p50_ns")?,
            p99: self.u64("p99_ns")?,
            mean: self.u64("mean_ns")?,
        })
    }
}

/// `VmRSS` and `VmHWM` of a process, in bytes.
pub fn rss(pid: u32) -> anyhow::Result<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    let field = |name: &str| -> anyhow::Result<u64> {
        let line = status
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("no {name} in /proc/{pid}/status"))?;
        let kb: u64 = line
            .split_whitespace()
            .nth(1)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("cannot parse {line:?}"))?;
        Ok(kb * 1024)
    };
    Ok((field("VmRSS:")?, field("VmHWM:")?))
}

/// How many memory mappings a process has (`/proc/<pid>/maps` lines): bounded per process by
/// `vm.max_map_count`, which can cap the number of live children before memory does.
pub fn mappings(pid: u32) -> anyhow::Result<u64> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))
        .with_context(|| format!("reading /proc/{pid}/maps"))?;
    Ok(maps.lines().count() as u64)
}

/// `vm.max_map_count`, when readable.
pub fn max_map_count() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// `s` as owned strings, for argument lists.
pub fn args<const N: usize>(s: [&str; N]) -> Vec<String> {
    s.iter().map(|a| a.to_string()).collect()
}
