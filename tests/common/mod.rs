//! The one harness of the integration tests: run the real `cell` binary on real guests built
//! from `guests/` (by `make test`, through `guests/build.sh`).
//!
//! ```ignore
//! let out = Cell::run("scenarios").flag("--max-procs").flag("8").arg("tree").report().finish();
//! out.assert_code(0);
//! assert_eq!(out.report()["pid0"]["status"], "exited");
//! let mut running = Cell::run("net-std").flags(&["--net", rule]).args(&["serve"]).spawn();
//! let addr = running.wait_for("net-std: listening on ");
//! running.signal("TERM");
//! ```
//!
//! Statuses are read from the `--report` (`Finished::report`, `Finished::statuses`), not from
//! log text. Every run is killed after [`RUN_TIMEOUT`], so no test can hang CI.
#![allow(dead_code)]

use std::ffi::{OsStr, OsString};
use std::io::{BufRead as _, BufReader, Read, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod daemon_rpc;
pub mod http;
pub mod pki;

/// The longest any single `cell` run may take in a test before it is killed and the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Path of a guest's wasm, failing with a hint if the guests were not built.
pub fn guest(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("guests/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the guests first (`make guests`)",
        path.display()
    );
    path
}

/// A compile cache shared by all tests of one `cargo test` run.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cell-cache")
}

/// A `cell` command with a clean environment: no RUST_LOG from the caller's shell.
pub fn cell() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cell"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// Reads a JSON file, panicking with its text if it does not parse.
pub fn read_json(path: &Path) -> Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("bad JSON ({e}):\n{text}"))
}

/// A `cell run` to be started: `cell run --cache-dir <shared> FLAGS WASM ARGS`.
#[must_use = "nothing runs until finish() or spawn()"]
pub struct Cell {
    wasm: PathBuf,
    flags: Vec<OsString>,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    env_removed: Vec<OsString>,
    stdin: Option<Vec<u8>>,
    report: Option<tempfile::TempDir>,
    shared_cache: bool,
    /// `cell run`, or `cell exec --connect ADDR` for a job on a [`Daemon`].
    via: Option<String>,
}

impl Cell {
    /// Runs the guest `name` from `guests/` as pid0.
    pub fn run(name: &str) -> Cell {
        Cell::run_path(guest(name))
    }

    /// Runs the component at `wasm` as pid0.
    pub fn run_path(wasm: impl Into<PathBuf>) -> Cell {
        Cell {
            wasm: wasm.into(),
            flags: Vec::new(),
            args: Vec::new(),
            envs: Vec::new(),
            env_removed: Vec::new(),
            stdin: None,
            report: None,
            shared_cache: true,
            via: None,
        }
    }

    /// The same run as a job on the daemon at `addr`: `cell exec --connect ADDR …`.
    pub fn via(mut self, addr: &str) -> Self {
        self.via = Some(addr.to_string());
        self.shared_cache = false;
        self
    }

    /// Leaves out the shared `--cache-dir` (for tests that pass their own, or `--no-cache`).
    pub fn own_cache(mut self) -> Self {
        self.shared_cache = false;
        self
    }

    /// One of cell's flags (before the wasm path).
    pub fn flag(mut self, flag: impl AsRef<OsStr>) -> Self {
        self.flags.push(flag.as_ref().to_owned());
        self
    }

    /// Several of cell's flags.
    pub fn flags<S: AsRef<OsStr>>(mut self, flags: &[S]) -> Self {
        self.flags
            .extend(flags.iter().map(|f| f.as_ref().to_owned()));
        self
    }

    /// `--net RULE` for each rule.
    pub fn net(mut self, rules: &[&str]) -> Self {
        for rule in rules {
            self = self.flag("--net").flag(rule);
        }
        self
    }

    /// One argument for pid0 (after the wasm path).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Several arguments for pid0.
    pub fn args<S: AsRef<OsStr>>(mut self, args: &[S]) -> Self {
        self.args.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// An environment variable of the `cell` process itself (e.g. `RUST_LOG`).
    pub fn env(mut self, key: &str, value: impl AsRef<OsStr>) -> Self {
        self.envs.push((key.into(), value.as_ref().to_owned()));
        self
    }

    /// Removes a variable from the `cell` process's environment.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.env_removed.push(key.into());
        self
    }

    /// Bytes written to cell's stdin (then closed); without it stdin is `/dev/null`.
    pub fn stdin(mut self, input: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(input.into());
        self
    }

    /// Asks for `--report` into a temporary file, parsed by [`Finished::report`].
    pub fn report(mut self) -> Self {
        self.report = Some(tempfile::tempdir().expect("temp dir"));
        self
    }

    /// The command this run would execute, for tests that drive stdio themselves (the
    /// report, if asked for, is then theirs to read).
    pub fn command(&self) -> Command {
        let mut cmd = cell();
        match &self.via {
            None => cmd.arg("run"),
            Some(addr) => cmd.args(["exec", "--connect", addr]),
        };
        if self.shared_cache {
            cmd.arg("--cache-dir").arg(cache_dir());
        }
        if let Some(dir) = &self.report {
            cmd.arg("--report").arg(dir.path().join("report.json"));
        }
        cmd.args(&self.flags).arg(&self.wasm).args(&self.args);
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        for k in &self.env_removed {
            cmd.env_remove(k);
        }
        cmd
    }

    /// Runs to the end (killed after [`RUN_TIMEOUT`]) and collects the output.
    pub fn finish(self) -> Finished {
        let cmd = self.command();
        let mut out = run_to_end(cmd, self.stdin);
        out.attach_report(self.report);
        out
    }

    /// Runs to the end with stdout discarded, sampling cell's peak resident memory (VmHWM,
    /// KiB) from /proc.
    pub fn finish_with_peak_rss(self) -> (Finished, u64) {
        let cmd = self.command();
        let (mut out, peak) = run_sampling_rss(cmd);
        out.attach_report(self.report);
        (out, peak)
    }

    /// Starts the run and returns at once; stderr is read line by line (see
    /// [`Running::wait_for`]).
    pub fn spawn(self) -> Running {
        let cmd = self.command();
        spawn_running(cmd, self.stdin, self.report)
    }
}

/// Starts `cmd`, reading its stderr line by line.
fn spawn_running(
    mut cmd: Command,
    stdin: Option<Vec<u8>>,
    report: Option<tempfile::TempDir>,
) -> Running {
    let mut child = cmd
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cell");
    if let (Some(mut pipe), Some(input)) = (child.stdin.take(), stdin) {
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let stdout = drain(child.stdout.take());
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    Running {
        watchdog: Watchdog::arm(child.id()),
        child,
        lines,
        seen: Vec::new(),
        stdout,
        report,
    }
}

/// What a finished `cell` process left behind.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    report: Option<Value>,
    report_text: Option<String>,
}

impl Finished {
    /// A result collected by a test that ran `cell` itself.
    pub fn new(code: Option<i32>, stdout: String, stderr: String) -> Finished {
        Finished {
            code,
            stdout,
            stderr,
            report: None,
            report_text: None,
        }
    }

    fn attach_report(&mut self, dir: Option<tempfile::TempDir>) {
        if let Some(dir) = dir {
            let text = std::fs::read_to_string(dir.path().join("report.json")).unwrap_or_default();
            self.report = serde_json::from_str(&text).ok();
            self.report_text = Some(text);
        }
    }

    /// Panics with the whole stderr unless `cell` exited with `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Panics with the whole stderr unless it contains `needle`.
    pub fn assert_stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Lines of stderr containing `needle`.
    pub fn stderr_lines_with(&self, needle: &str) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.contains(needle)).collect()
    }

    /// The parsed `--report` (the run must have asked for one with [`Cell::report`]).
    pub fn report(&self) -> &Value {
        let text = self
            .report_text
            .as_deref()
            .expect("this run did not ask for a report (Cell::report)");
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("the report is not JSON: {text:?}; stderr:\n{}", self.stderr))
    }

    /// pid0's status in the report, e.g. `("exited", 0)` or `("killed", "operator")`.
    pub fn pid0_status(&self) -> (String, Value) {
        status_of(&self.report()["pid0"])
    }

    /// `(pid, status, detail)` of every ended process in the report, in the order they ended.
    pub fn statuses(&self) -> Vec<(u64, String, Value)> {
        self.report()["processes"]
            .as_array()
            .expect("report.processes is a list")
            .iter()
            .map(|p| {
                let (s, d) = status_of(&p["status"]);
                (p["pid"].as_u64().expect("a pid"), s, d)
            })
            .collect()
    }

    /// How many ended processes have `status` (and `detail`, unless it is `Value::Null`).
    pub fn count_status(&self, status: &str, detail: Value) -> usize {
        self.statuses()
            .iter()
            .filter(|(_, s, d)| s == status && (detail.is_null() || *d == detail))
            .count()
    }
}

fn status_of(v: &Value) -> (String, Value) {
    let status = v["status"]
        .as_str()
        .unwrap_or_else(|| panic!("not an ExitStatus: {v}"))
        .to_string();
    (status, v["detail"].clone())
}

/// A `cell` started with [`Cell::spawn`]: read its stderr while it runs, signal it, finish it.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stdout: std::thread::JoinHandle<String>,
    report: Option<tempfile::TempDir>,
    watchdog: Watchdog,
}

impl Running {
    /// cell's pid.
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The rest of the first stderr line (from now on) starting with `prefix`.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        self.wait_until(|line| {
            line.strip_prefix(prefix)
                .map(|rest| rest.trim().to_string())
        })
    }

    /// Reads stderr lines until `pick` returns something for one of them.
    pub fn wait_until<T>(&mut self, mut pick: impl FnMut(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + RUN_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let picked = pick(&line);
                    self.seen.push(line);
                    if let Some(v) = picked {
                        return v;
                    }
                }
                Err(_) => {
                    let _ = self.child.kill();
                    panic!(
                        "the awaited line never came; stderr:\n{}",
                        self.seen.join("\n")
                    );
                }
            }
        }
    }

    /// Everything read from stderr so far.
    pub fn stderr_so_far(&self) -> String {
        self.seen.join("\n")
    }

    /// Sends `signal` (e.g. `"TERM"`, `"INT"`) to cell with kill(1).
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill(1)");
        assert!(sent.success(), "kill -{signal} failed");
    }

    /// Waits for cell to end (killing it after [`RUN_TIMEOUT`]) and collects the rest.
    pub fn finish(mut self) -> Finished {
        let deadline = Instant::now() + RUN_TIMEOUT;
        let status = loop {
            if let Some(s) = self.child.try_wait().expect("wait on cell") {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("cell did not finish; stderr:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(10)) {
            self.seen.push(line);
        }
        drop(self.watchdog);
        let mut out = Finished {
            code: status.code(),
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.seen.join("\n"),
            report: None,
            report_text: None,
        };
        out.attach_report(self.report);
        out
    }
}

fn run_to_end(mut cmd: Command, input: Option<Vec<u8>>) -> Finished {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cell");
    let feeder = child.stdin.take().zip(input).map(|(mut pipe, input)| {
        std::thread::spawn(move || {
            // cell may exit without reading everything; that is its business.
            let _ = pipe.write_all(&input);
        })
    });
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let status = wait_bounded(&mut child, || {});
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let Some(status) = status else {
        panic!("cell did not finish within {RUN_TIMEOUT:?}; stderr:\n{stderr}");
    };
    Finished {
        code: status.code(),
        stdout,
        stderr,
        report: None,
        report_text: None,
    }
}

/// Waits for `child`, calling `tick` every few milliseconds; kills it past [`RUN_TIMEOUT`].
fn wait_bounded(child: &mut Child, mut tick: impl FnMut()) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    loop {
        tick();
        if let Some(s) = child.try_wait().expect("wait on cell") {
            return Some(s);
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn run_sampling_rss(mut cmd: Command) -> (Finished, u64) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cell");
    let pid = child.id();
    let err = drain(child.stderr.take());
    let mut peak = 0;
    let status = wait_bounded(&mut child, || {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
    });
    let stderr = err.join().unwrap_or_default();
    let Some(status) = status else {
        panic!("cell did not finish within {RUN_TIMEOUT:?}; stderr:\n{stderr}");
    };
    assert!(peak > 0, "no VmHWM sample");
    let out = Finished {
        code: status.code(),
        stdout: String::new(),
        stderr,
        report: None,
        report_text: None,
    };
    (out, peak)
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    })
}

/// Kills process `pid` if it is still running [`RUN_TIMEOUT`] after this was created, so a
/// test that reads a child's output line by line cannot hang CI. Dropping it disarms it.
pub struct Watchdog(Option<mpsc::Sender<()>>);

impl Watchdog {
    pub fn arm(pid: u32) -> Self {
        let (disarm, disarmed) = mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) = disarmed.recv_timeout(RUN_TIMEOUT) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        Watchdog(Some(disarm))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = d.send(());
        }
    }
}

/// Runs `cmd` (any `cell` subcommand) to the end and collects its output.
pub fn finish(cmd: Command) -> Finished {
    run_to_end(cmd, None)
}

/// A `cell serve` on a unix socket in a private temporary directory, for the daemon tests:
/// `cell serve --listen unix:DIR/cell.sock --cache-dir <shared> FLAGS` (the shared cache
/// unless `flags` name one). Stopped (SIGTERM) when
/// dropped, if [`Daemon::stop`] was not called.
pub struct Daemon {
    running: Option<Running>,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
}

impl Daemon {
    /// Starts a daemon with these extra flags and waits until it listens.
    pub fn start(flags: &[&str]) -> Daemon {
        let dir = tempfile::tempdir().expect("temp dir");
        let sock = dir.path().join("cell.sock");
        let mut cmd = cell();
        cmd.arg("serve")
            .arg("--listen")
            .arg(format!("unix:{}", sock.display()));
        if !flags.contains(&"--cache-dir") {
            cmd.arg("--cache-dir").arg(cache_dir());
        }
        cmd.args(flags);
        // `make test` runs the daemon tests with one shard and with two.
        if let Some(n) = shards_from_env() {
            if !flags.contains(&"--shards") {
                cmd.arg("--shards").arg(n);
            }
        }
        let mut running = spawn_running(cmd, None, None);
        running.wait_for("cell: listening on unix:");
        Daemon {
            running: Some(running),
            dir,
            sock,
        }
    }

    /// `unix:PATH`, for `--connect`.
    pub fn addr(&self) -> String {
        format!("unix:{}", self.sock.display())
    }

    /// The daemon's pid.
    pub fn pid(&self) -> u32 {
        self.running.as_ref().map_or(0, Running::id)
    }

    /// A job on this daemon: `cell exec --connect ADDR … GUEST`.
    pub fn exec(&self, name: &str) -> Cell {
        Cell::run(name).via(&self.addr())
    }

    /// `cell SUBCOMMAND --connect ADDR ARGS` (ps, kill, logs), run to the end.
    pub fn client(&self, subcommand: &str, args: &[&str]) -> Finished {
        let mut cmd = cell();
        cmd.arg(subcommand)
            .arg("--connect")
            .arg(self.addr())
            .args(args);
        finish(cmd)
    }

    /// `cell ps --json`, parsed.
    pub fn ps(&self) -> Vec<Value> {
        let out = self.client("ps", &["--json"]);
        out.assert_code(0);
        serde_json::from_str::<Vec<Value>>(&out.stdout)
            .unwrap_or_else(|e| panic!("ps --json ({e}):\n{}", out.stdout))
    }

    /// The daemon's resident memory (KiB) and open descriptors now.
    pub fn rss_and_fds(&self) -> (u64, usize) {
        let pid = self.pid();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
        (rss, fds)
    }

    /// The rest of the first line (from now on) the daemon logs starting with `prefix`.
    pub fn wait_for(&mut self, prefix: &str) -> String {
        self.running.as_mut().expect("running").wait_for(prefix)
    }

    /// Reads the daemon's log until a line satisfies `pred`.
    pub fn wait_for_line(&mut self, mut pred: impl FnMut(&str) -> bool) {
        self.running
            .as_mut()
            .expect("running")
            .wait_until(|l| pred(l).then_some(()));
    }

    /// Everything the daemon logged so far.
    pub fn log(&self) -> String {
        self.running
            .as_ref()
            .map(Running::stderr_so_far)
            .unwrap_or_default()
    }

    /// SIGTERM, then waits for it to end.
    pub fn stop(mut self) -> Finished {
        let running = self.running.take().expect("running");
        running.signal("TERM");
        running.finish()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(running) = self.running.take() {
            running.signal("KILL");
            let _ = running.finish();
        }
    }
}

/// `CELL_SHARDS`, if set: the `--shards` every daemon (and run) of the tests gets.
pub fn shards_from_env() -> Option<String> {
    std::env::var("CELL_SHARDS").ok().filter(|n| !n.is_empty())
}
