//! `cell run`: boot pid0 from a file, serve it until it ends, tear the tree down, and say how
//! it went. The library entry point; the binary only parses flags and maps the outcome to an
//! exit code.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use thiserror::Error;

use crate::engine::{CellEngine, EngineConfig, LoadError};
use crate::grants::Grants;
use crate::limits::{Limits, TEARDOWN_GRACE};
use crate::net::audit::{Audit, AuditEvent};
use crate::report::{NetworkStats, Pid0Status, Report, SCHEMA};
use crate::shard::ShardSet;
use crate::spec::{ProcessSpec, SpawnError, StderrMode, StdioMode};
use crate::status::{ExitStatus, KilledBy};
use crate::supervisor::{ChildPlacement, ShardPlace, SharedParts, Supervisor};
use crate::tree::{Tree, TreeSpec};

/// Exit codes of `cell` itself. Any other code is pid0's own exit code, passed through.
pub mod exit_code {
    /// pid0 ran past `--timeout` (as `timeout(1)`).
    pub const TIMED_OUT: u8 = 124;
    /// `cell` could not do its job: bad flags, or a failure of the host itself.
    pub const HOST_ERROR: u8 = 125;
    /// The wasm file is not a runnable component (not wasm, core module, missing import,
    /// instantiation failed).
    pub const CANNOT_RUN: u8 = 126;
    /// The wasm file could not be read.
    pub const NOT_FOUND: u8 = 127;
    /// pid0 trapped (as `wasmtime run`, 128 + SIGABRT), ran out of memory or fuel, or broke its
    /// RPC channel.
    pub const TRAPPED: u8 = 134;
    /// pid0 was killed other than by a signal to `cell`.
    pub const KILLED: u8 = 137;
}

/// What `cell run` runs, with what authority and within what limits.
#[derive(Debug)]
pub struct RunConfig {
    pub wasm: PathBuf,
    /// pid0's argv[0] (default: the file name).
    pub argv0: Option<String>,
    /// pid0's initial working directory (a guest path).
    pub cwd: Option<String>,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub grants: Grants,
    /// pid0's `--dir`/`--dir-rw` directories, opened just before it starts.
    pub dirs: Vec<crate::grants::DirGrant>,
    pub limits: Limits,
    pub engine: EngineConfig,
    /// `--audit FILE`: network decisions as JSON lines, to this file (opened before pid0
    /// starts, see [`crate::hostfiles`]).
    pub audit: Option<std::fs::File>,
    /// `--resolve NAME=IP`: names the host answers itself, without a query.
    pub resolve: std::collections::HashMap<String, std::net::IpAddr>,
    /// How pid0's stdio is used: decided by the file unless a flag says so.
    pub mode: ModeChoice,
    /// `--remote`: nodes pid0 may spawn on, linked before it starts.
    pub remotes: Vec<crate::remote::RemoteSpec>,
    /// How this host shows itself to them (set whenever `remotes` is not empty).
    pub remote_tls: Option<crate::remote::RemoteTls>,
    /// `--shards`: threads the tree runs on (1: all of it on this one).
    pub shards: usize,
    /// `--placement`: which shard a new child goes to.
    pub placement: ChildPlacement,
}

/// `cell run`'s mode: a cell guest speaks RPC on its stdio; an ordinary WASI program gets the
/// host's stdio (`--plain`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModeChoice {
    /// By the file: RPC for a component built with the `cell-guest` SDK (it carries the SDK
    /// marker), plain for anything else (noted under `-v`).
    Auto,
    /// `--plain`: an ordinary WASI program. Refused for a cell guest, whose RPC bytes would go
    /// to the terminal.
    Plain,
    /// `--rpc`: a cell guest, even without the SDK marker (written without the SDK).
    Rpc,
}

impl ModeChoice {
    /// The mode for a file, given whether it carries the SDK marker.
    ///
    /// # Errors
    /// `--plain` for a cell guest.
    pub(crate) fn decide(self, path: &std::path::Path, sdk_guest: bool) -> Result<bool, RunError> {
        match (self, sdk_guest) {
            (ModeChoice::Plain, true) => Err(RunError::WrongMode(format!(
                "{} is a cell guest (built with cell-guest): it speaks Cap'n Proto RPC on its \
                 stdout, which --plain would send to your terminal; run it without --plain",
                path.display()
            ))),
            (ModeChoice::Plain, false) => Ok(true),
            (ModeChoice::Rpc, _) => Ok(false),
            (ModeChoice::Auto, guest) => {
                if !guest {
                    tracing::info!(
                        "{} is not a cell guest (no cell-guest marker): running it as an \
                         ordinary WASI program (--plain); --rpc forces RPC mode",
                        path.display()
                    );
                }
                Ok(!guest)
            }
        }
    }
}

/// How a run ended.
#[derive(Debug)]
pub(crate) struct RunOutcome {
    pub status: ExitStatus,
    /// The signal that stopped the run, if the operator sent one.
    pub signal: Option<i32>,
    /// Everything `--report` writes.
    pub report: Report,
}

impl RunOutcome {
    /// The exit code `cell` should end with.
    pub(crate) fn exit_code(&self) -> u8 {
        if let Some(sig) = self.signal {
            return (128 + sig).clamp(0, 255) as u8;
        }
        exit_code_for(&self.status)
    }
}

/// The exit code `cell run` (and `cell exec`) ends with when pid0 ended with `status`.
pub(crate) fn exit_code_for(status: &ExitStatus) -> u8 {
    match status {
        ExitStatus::Exited(code) => (*code & 0xff) as u8,
        ExitStatus::TimedOut => exit_code::TIMED_OUT,
        ExitStatus::Killed(_) => exit_code::KILLED,
        ExitStatus::Trapped(_)
        | ExitStatus::OutOfMemory
        | ExitStatus::OutOfFuel
        | ExitStatus::ProtocolViolation(_) => exit_code::TRAPPED,
    }
}

/// Why pid0 could not be started.
#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {path}: {source}")]
    Load { path: PathBuf, source: LoadError },
    #[error("cannot start {path}: {source}")]
    Start { path: PathBuf, source: SpawnError },
    /// The mode asked for does not fit the file (`--plain` for a cell guest, `--tty` for an
    /// ordinary program).
    #[error("{0}")]
    WrongMode(String),
    #[error(transparent)]
    Host(#[from] anyhow::Error),
    /// The daemon refused the job (`cell exec`).
    #[error("cannot run {path}: {error}")]
    Daemon {
        path: PathBuf,
        error: cell_proto::CellError,
    },
}

impl RunError {
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Read { .. } => exit_code::NOT_FOUND,
            RunError::Load { .. } | RunError::Start { .. } => exit_code::CANNOT_RUN,
            RunError::Host(_) | RunError::WrongMode(_) => exit_code::HOST_ERROR,
            RunError::Daemon { error, .. } => match error.reason {
                cell_proto::Reason::BadWasm
                | cell_proto::Reason::MissingImport
                | cell_proto::Reason::Instantiate => exit_code::CANNOT_RUN,
                _ => exit_code::HOST_ERROR,
            },
        }
    }
}

/// Runs pid0 to completion. Must be called inside a `tokio::task::LocalSet` on a
/// current-thread runtime.
///
/// `shutdown` resolves with a signal number when the operator asks to stop; the whole tree is
/// then killed (`killed by the operator`) and the outcome carries the signal.
///
/// # Errors
/// [`RunError`] when pid0 cannot be started; once started, every ending is an [`RunOutcome`].
pub(crate) async fn run(
    config: RunConfig,
    shutdown: impl Future<Output = i32>,
) -> Result<RunOutcome, RunError> {
    let started = std::time::Instant::now();
    crate::net::count::raise_fd_limit();
    let path = config.wasm.clone();
    let bytes = std::fs::read(&path).map_err(|source| RunError::Read {
        path: path.clone(),
        source,
    })?;
    let engine = CellEngine::new(&config.engine)?;
    let audit = match config.audit {
        Some(file) => Audit::to_writer(file),
        None => Audit::tracing_only(),
    };
    let sdk_guest = crate::inspect::has_sdk_marker(&bytes);
    let plain = config.mode.decide(&path, sdk_guest)?;
    let mut shared = SharedParts::new(engine, audit);
    shared.pinned = Arc::new(config.resolve.clone());
    // A plain pid0 has no Executor: its tree is itself, one thread is all it can use.
    let shard_count = if plain { 1 } else { config.shards };
    let shards = start_shards(shard_count, config.placement, shared)?;
    let sup = shards.home();
    if plain && config.grants.terminal {
        return Err(RunError::WrongMode(format!(
            "--tty lends the terminal to a cell guest through Session.terminal; {} is an \
             ordinary WASI program (its stdio is the terminal already: drop --tty)",
            path.display()
        )));
    }
    let mut grants = config.grants;
    // A plain program has no Session, so nothing to hand an Executor through.
    grants.executor = !plain;
    grants.remotes =
        link_remotes(&config.remotes, config.remote_tls.as_ref(), plain, &path).await?;
    grants.dirs = open_dirs(&config.dirs)?;
    for granted in &grants.dirs {
        let rule = format!(
            "{} {} (--dir)",
            granted.dir.rights(),
            granted.dir.shown().display()
        );
        sup.audit()
            .event(AuditEvent::directory(0, "dir", &granted.guest, Ok(rule)));
    }
    let component = sup
        .engine()
        .load(Arc::from(bytes))
        .await
        .map_err(|source| RunError::Load {
            path: path.clone(),
            source,
        })?;
    let sha256 = component.hash.to_string();
    let spec = ProcessSpec {
        name: config.argv0.clone().unwrap_or_else(|| program_name(&path)),
        cwd: config.cwd.clone(),
        args: config.args,
        env: config.env,
        grants,
        stderr: StderrMode::Inherit,
        stdio: if plain {
            StdioMode::Host
        } else {
            StdioMode::Rpc
        },
    };
    tokio::pin!(shutdown);
    let tree = Tree::new(TreeSpec::default());
    let (status, signal) = match sup
        .spawn_root(component, spec, config.limits, tree.clone())
        .await
    {
        Ok(pid0) => tokio::select! {
            status = pid0.wait() => (status, None),
            sig = &mut shutdown => {
                shards.kill_all(KilledBy::Operator).await;
                (pid0.wait().await, Some(sig))
            }
        },
        // pid0's own code ended it while it started (out of fuel, a trap, …): it ran.
        Err(SpawnError::EndedWhileStarting(status)) => (status, None),
        Err(source) => {
            return Err(RunError::Start {
                path: path.clone(),
                source,
            })
        }
    };
    // pid0's exit takes its subtree with it (cascade); wait for the tree to unwind.
    if !shards.wait_all_reaped(TEARDOWN_GRACE).await {
        tracing::warn!("some processes did not stop within {TEARDOWN_GRACE:?}");
    }
    // Everything pid0 wrote to the host's stdout is out before cell says anything more.
    sup.host_stdio().finish(TEARDOWN_GRACE);
    let compiled = sup.engine().compiled_count();
    let mut outcome = RunOutcome {
        status: status.clone(),
        signal,
        report: {
            let stats = tree.history();
            Report {
                schema: SCHEMA,
                wasm: path.display().to_string(),
                sha256: Some(sha256),
                mode: if plain { "plain" } else { "rpc" },
                exit_code: 0,
                pid0: Pid0Status::Ran(status),
                signal,
                wall_ms: started.elapsed().as_millis() as u64,
                processes: stats.processes().cloned().collect(),
                processes_not_listed: stats.not_listed(),
                compile_cache: sup.engine().compile_cache_stats(),
                components_compiled: compiled,
                network: {
                    let (allowed, denied) = sup.audit().counts();
                    NetworkStats { allowed, denied }
                },
                client: None,
            }
        },
    };
    outcome.report.exit_code = outcome.exit_code();
    Ok(outcome)
}

/// The threads of one run: shard 0 is this one (pid0's); with one shard, only it.
enum RunShards {
    One(Supervisor),
    Many(ShardSet<Supervisor>),
}

/// Starts `n` shards over `shared`, each supervisor placing children on the others.
///
/// # Errors
/// A shard's thread or runtime cannot be started.
fn start_shards(
    n: usize,
    placement: ChildPlacement,
    shared: SharedParts,
) -> Result<RunShards, RunError> {
    if n <= 1 {
        let place = ShardPlace {
            index: 0,
            of: 1,
            load: Arc::default(),
            pids: None,
        };
        return Ok(RunShards::One(Supervisor::for_shard(&shared, place)));
    }
    let pids = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let set = ShardSet::start(n, move |index, all| {
        let place = ShardPlace {
            index,
            of: n,
            load: all[index].procs(),
            pids: Some(pids.clone()),
        };
        Ok(Supervisor::for_shard(&shared, place).with_peers(index, all, placement))
    })?;
    Ok(RunShards::Many(set))
}

impl RunShards {
    /// Shard 0's supervisor (pid0's).
    fn home(&self) -> Supervisor {
        match self {
            RunShards::One(sup) => sup.clone(),
            RunShards::Many(set) => Supervisor::clone(set.local()),
        }
    }

    /// Kills every running process of every shard.
    async fn kill_all(&self, by: KilledBy) {
        match self {
            RunShards::One(sup) => sup.kill_all(by),
            RunShards::Many(set) => {
                for shard in set.shards().iter() {
                    let _ = shard.call(move |sup| async move { sup.kill_all(by) }).await;
                }
            }
        }
    }

    /// Waits until every shard's table is empty, or `grace` has passed; whether they are.
    /// Passes over the shards until one finds them all empty: a process being torn down on
    /// one shard may still have had a child start on another.
    async fn wait_all_reaped(&self, grace: std::time::Duration) -> bool {
        let set = match self {
            RunShards::One(sup) => return sup.wait_all_reaped(grace).await,
            RunShards::Many(set) => set,
        };
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            let empty = set
                .shards()
                .iter()
                .all(|s| s.procs().load(std::sync::atomic::Ordering::Relaxed) == 0);
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if empty || left.is_zero() {
                return empty;
            }
            for shard in set.shards().iter() {
                let _ = shard
                    .call(move |sup| async move { sup.wait_all_reaped(left).await })
                    .await;
            }
        }
    }
}

/// argv[0] for pid0: the file name, as a shell would pass it.
fn program_name(path: &std::path::Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pid0".into())
}

/// Opens pid0's directories (checked when the command line was parsed; one may have vanished
/// since).
/// Links every `--remote` (before pid0 starts: a node that cannot be reached fails the run
/// now, exit 125, not a spawn later).
///
/// # Errors
/// A plain pid0 (it has no Session to hand remotes through), or a node that cannot be
/// linked.
async fn link_remotes(
    remotes: &[crate::remote::RemoteSpec],
    tls: Option<&crate::remote::RemoteTls>,
    plain: bool,
    path: &std::path::Path,
) -> Result<Vec<std::rc::Rc<crate::remote::RemoteLink>>, RunError> {
    let Some(tls) = tls.filter(|_| !remotes.is_empty()) else {
        return Ok(Vec::new());
    };
    if plain {
        return Err(RunError::WrongMode(format!(
            "--remote grants a cell guest remote nodes through Session.remotes; {} is an \
             ordinary WASI program",
            path.display()
        )));
    }
    let mut links = Vec::with_capacity(remotes.len());
    for spec in remotes {
        links.push(crate::remote::RemoteLink::connect(spec, tls).await?);
    }
    Ok(links)
}

fn open_dirs(dirs: &[crate::grants::DirGrant]) -> Result<Vec<crate::grants::GrantedDir>, RunError> {
    dirs.iter()
        .map(|d| {
            let dir = crate::hostdir::HostDir::open_root(&d.host, d.writable)
                .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", d.host.display()))?;
            Ok(crate::grants::GrantedDir {
                guest: d.guest.clone(),
                dir,
            })
        })
        .collect()
}
