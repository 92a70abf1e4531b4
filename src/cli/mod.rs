//! Command-line interface: clap definitions and turning flags into typed configuration.
//! Flag structs hold no logic beyond parsing; [`Cli::execute`] does the work.
//!
//! `cell run`'s flags come in groups, one file each, flattened into [`RunArgs`]:
//! [`grants`] (what pid0 may do), [`limits`] (how much it may use), [`cache`] (compile cache).
//! The other subcommands have a file each: [`inspect`], [`compile`].

pub(crate) mod argv;
pub(crate) mod cache;
pub(crate) mod ceiling;
pub(crate) mod client;
pub(crate) mod compile;
pub(crate) mod config;
pub(crate) mod grants;
pub(crate) mod inspect;
pub(crate) mod limits;
pub(crate) mod remote;
pub(crate) mod serve;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::EngineConfig;
use crate::hostfiles;
use crate::net::policy::check_rule_count;
use crate::report::Report;
use crate::run::{self, ModeChoice, RunConfig, RunError};

/// `cell --version`: cell's own version and the wasmtime it embeds (`concat!` takes literals
/// only, so wasmtime's version is written here; a unit test checks it against Cargo.lock).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (wasmtime 48.0.8)");

/// cell: run WebAssembly components with no ambient authority.
///
/// `cell run app.wasm` boots a WASI 0.2 component as pid0. A cell guest (built with the
/// cell-guest SDK) gets authority only as Cap'n Proto capabilities served over its own
/// stdin/stdout; any other WASI program runs like `wasmtime run` on the terminal's stdio. Either
/// way nothing is granted unless a flag says so.
#[derive(Debug, Parser)]
#[command(
    name = "cell",
    version = VERSION,
    propagate_version = true,
    after_help = "\
Examples:
  cell run app.wasm                          run a cell guest (RPC over its stdio)
  cell run --plain --dir .::/src tool.wasm   run an ordinary WASI program, ./ read-only as /src
  cell run --report report.json app.wasm     also write a JSON run report
  cell inspect app.wasm                      what it imports and exports, and how to run it
  cell compile app.wasm                      fill the compile cache (e.g. in a CI image)

Run `cell help run` for the exit codes."
)]
pub struct Cli {
    /// More host logging on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

// Built once per invocation: the size difference between variants costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a component as pid0 (a cell guest over RPC, or an ordinary WASI program).
    Run(RunArgs),
    /// Show what a component imports and exports, whether it is a cell guest, its size and hash.
    Inspect(inspect::InspectArgs),
    /// Compile components into the on-disk cache, so later runs start without compiling.
    Compile(compile::CompileArgs),
    /// Run the supervisor as a daemon: jobs from clients (`cell exec`), with warm caches.
    Serve(serve::ServeArgs),
    /// Run a component as a job on a daemon, with `cell run`'s flags and exit codes.
    Exec(client::ExecArgs),
    /// List the daemon's processes.
    Ps(client::PsArgs),
    /// Kill a process of the daemon (and its subtree).
    Kill(client::KillArgs),
    /// Follow the daemon's events: spawns, exits, denials.
    Logs(client::LogsArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cell run app.wasm --flag value
  cell run --plain --dir ./data::/data --dir-rw ./out::/out prog.wasm
  cell run --env MODE=ci --env-inherit TZ --report report.json app.wasm
  echo hi | cell run --plain prog.wasm

Exit status:
  N    pid0 exited with code N (0-255, exactly as it said)
  124  pid0 ran past --timeout
  125  cell itself failed: bad flag, unusable --dir, --plain for a cell guest, host error
  126  the file is not a runnable component (not wasm, core module, missing import)
  (with --report, every ending writes the report, a failure to start included)
  127  the file cannot be read
  134  pid0 trapped, ran out of memory or fuel, or broke its RPC channel
  137  pid0 was killed (other than by a signal to cell)
  130  cell was stopped by SIGINT (128+2), 143 by SIGTERM (128+15)")]
pub struct RunArgs {
    /// Run an ordinary WASI program (no RPC): its stdin, stdout and stderr are cell's own,
    /// as with `wasmtime run`. The default for anything not built with the cell-guest SDK;
    /// refused for a cell guest.
    #[arg(long, conflicts_with = "rpc")]
    pub plain: bool,

    /// Run pid0 as a cell guest (RPC over its stdio) even if it was not built with the SDK.
    #[arg(long)]
    pub rpc: bool,

    /// pid0's argv[0] [default: the wasm file's name].
    #[arg(long, value_name = "NAME")]
    pub argv0: Option<String>,

    /// pid0's initial working directory, a path inside its grants (e.g. `/src` with
    /// `--dir ./src::/src`), reported as `wasi:cli/environment.initial-cwd`.
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<String>,

    /// Write a JSON run report to FILE once the run ends (`-` = stderr). Schema: README, "The run report".
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    #[command(flatten)]
    pub grants: grants::GrantArgs,

    #[command(flatten)]
    pub limits: limits::LimitArgs,

    #[command(flatten)]
    pub cache: cache::CacheArgs,

    #[command(flatten)]
    pub remote: remote::RemoteArgs,

    /// Threads the tree runs on, each with its own runtime and process table: a process's
    /// store and RPC stay on one; a new child goes to the least loaded unless its parent's is
    /// within a margin of it [default: one per core; 1 runs everything on one thread].
    #[arg(
        long,
        value_name = "N",
        env = "CELL_SHARDS",
        value_parser = clap::value_parser!(u16).range(1..=256)
    )]
    pub shards: Option<u16>,

    /// Which shard a new child goes to: `load` (the least loaded, unless its parent's is
    /// within a margin of it) or `spread` (always another than its parent's, round-robin).
    /// A child granted the terminal, remotes or proxied components stays with its parent.
    #[arg(
        long,
        value_name = "HOW",
        env = "CELL_PLACEMENT",
        default_value = "load"
    )]
    pub placement: crate::supervisor::ChildPlacement,

    /// The component to run as pid0 (a WASI 0.2 command component).
    #[arg(value_name = "WASM")]
    pub wasm: PathBuf,

    /// Arguments passed to pid0 (argv[1..]).
    #[arg(
        value_name = "ARGS",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

impl RunArgs {
    /// # Errors
    /// A `--remote` without its TLS flags, or two remotes with one name.
    pub fn into_config(self) -> anyhow::Result<RunConfig> {
        let (remotes, remote_tls) = self.remote.into_remotes()?;
        let limits = self.limits.into_limits();
        let grants = self.grants;
        let env = grants.env_vars();
        let mode = match (self.plain, self.rpc) {
            (true, _) => ModeChoice::Plain,
            (_, true) => ModeChoice::Rpc,
            _ => ModeChoice::Auto,
        };
        let resolve = grants.resolve.iter().cloned().collect();
        let (grants, dirs) = grants.into_grants();
        Ok(RunConfig {
            remotes,
            remote_tls,
            audit: None,
            dirs,
            resolve,
            argv0: self.argv0,
            shards: self
                .shards
                .map_or_else(crate::shard::default_count, usize::from),
            placement: self.placement,
            cwd: self.cwd,
            wasm: self.wasm,
            args: self.args,
            env,
            mode,
            grants,
            engine: EngineConfig {
                cache_dir: self.cache.dir(),
                fuel: limits.fuel.is_some(),
            },
            limits,
        })
    }
}

impl Cli {
    /// Parses cell's own command line: everything after `cell run`'s wasm path is the guest's
    /// (see [`argv`]).
    ///
    /// # Errors
    /// A usage error, or `--help`/`--version` (clap's convention: print it and exit).
    pub fn parse_command_line() -> Result<Cli, clap::Error> {
        use clap::Parser as _;
        Cli::try_parse_from(argv::protect_guest_args(std::env::args_os().collect()))
    }

    /// After a usage error of `cell run` (exit 125): writes a `not-started` report with the
    /// error to the line's `--report FILE`, if it has one, so a CI script reading the report
    /// sees why. Best effort: cell is exiting with the usage error anyway.
    pub fn report_usage_error(error: &clap::Error) {
        let argv: Vec<_> = std::env::args_os().collect();
        let Some(path) = argv::report_flag(&argv) else {
            return;
        };
        let wasm = argv::wasm_path(&argv).unwrap_or_default();
        let rendered = error.to_string();
        let first = rendered.lines().next().unwrap_or("usage error");
        let why = format!("usage: {}", first.trim_start_matches("error: "));
        let report = Report::not_started(&wasm, "rpc", why, run::exit_code::HOST_ERROR, 0);
        if let Ok(Some(mut out)) = hostfiles::open_report(&[], Some(&path)) {
            let _ = report.write(&mut out);
        }
    }

    /// Runs the command. Must be called inside a `LocalSet` on a current-thread runtime.
    pub async fn execute(self) -> Result<u8, RunError> {
        match self.command {
            Command::Run(args) => run_command(args).await,
            Command::Inspect(args) => args.execute(),
            Command::Compile(args) => args.execute(),
            Command::Serve(args) => {
                let config = args.into_config()?;
                Ok(crate::serve::serve(config, shutdown_signal()).await?)
            }
            Command::Exec(args) => {
                let config = args.into_config()?;
                crate::client::exec::exec(config, shutdown_signal()).await
            }
            Command::Ps(args) => args.execute().await,
            Command::Kill(args) => args.execute().await,
            Command::Logs(args) => args.execute().await,
        }
    }
}

/// `cell run`: the report is opened first, so every ending — pid0's own, or a failure to
/// start it (125, 126, 127) — is written to it.
async fn run_command(args: RunArgs) -> Result<u8, RunError> {
    let started = std::time::Instant::now();
    let report_path = args.report.clone();
    let wasm = args.wasm.clone();
    // The file decides unless a flag does; a run that never started reports what was asked.
    let mode = if args.plain { "plain" } else { "rpc" };
    let dirs: Vec<_> = args.grants.dirs_rw.clone();
    // A report that cannot be opened cannot say anything either: that error is the only one
    // that leaves no report.
    let mut report = hostfiles::open_report(&dirs, report_path.as_deref())
        .map_err(|e| RunError::Host(e.into()))?;
    let result = start_and_run(args).await;
    let (code, written) = match &result {
        Ok(outcome) => (outcome.exit_code(), outcome.report.clone()),
        Err(e) => {
            let code = e.exit_code();
            let wall_ms = started.elapsed().as_millis() as u64;
            let why = format!("{e:#}");
            (code, Report::not_started(&wasm, mode, why, code, wall_ms))
        }
    };
    if let (Some(out), Some(dest)) = (report.as_mut(), &report_path) {
        if let Err(e) = written.write(out) {
            eprintln!("cell: cannot write the report to {}: {e}", dest.display());
            return Ok(run::exit_code::HOST_ERROR);
        }
    }
    result.map(|_| code)
}

/// Everything of `cell run` after the report is open: the remaining host files, pid0's run.
async fn start_and_run(args: RunArgs) -> Result<run::RunOutcome, RunError> {
    let audit = args.grants.audit.clone();
    let report = args.report.clone();
    let default_cache = args.cache.cache_dir.is_none();
    check_rule_count(args.grants.net.len())
        .map_err(|e| RunError::Host(anyhow::anyhow!("--net: {e}")))?;
    let mut config = args.into_config().map_err(RunError::Host)?;
    // The default cache is a convenience: if it cannot be used (no writable home, a grant
    // over it), say so once and run without it. A --cache-dir that cannot be used is an error.
    if let (true, Some(dir)) = (default_cache, config.engine.cache_dir.clone()) {
        if let Err(e) = hostfiles::check_cache(&config.dirs, &dir) {
            eprintln!(
                "cell: warning: {e}; running without the compile cache (choose one with \
                 --cache-dir DIR, or --no-cache)"
            );
            config.engine.cache_dir = None;
        }
    }
    // Every file cell writes is checked and opened before anything runs: a bad path fails
    // now (exit 125), and no guest can swap it for a symlink later.
    let mut files = hostfiles::prepare(&hostfiles::HostPaths {
        dirs: &config.dirs,
        report: report.as_deref(),
        audit: audit.as_deref(),
        cache: config.engine.cache_dir.as_deref(),
    })
    .map_err(|e| RunError::Host(e.into()))?;
    config.audit = files.audit.take();
    // Handlers go in before pid0 starts: a signal that arrives while it boots must tear the
    // tree down, not kill cell with the default action.
    let shutdown = shutdown_signal();
    let outcome = run::run(config, shutdown).await?;
    if !outcome.status.success() && outcome.signal.is_none() {
        tracing::info!("pid0 {}", outcome.status);
    }
    report_abnormal(&outcome);
    Ok(outcome)
}

/// Writes `text` to stdout; a closed stdout (`cell inspect x.wasm | head`) is not an error.
pub(crate) fn print_stdout(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// One line on stderr when pid0 did not simply exit, so a terminal user sees why.
fn report_abnormal(outcome: &run::RunOutcome) {
    use crate::status::ExitStatus;
    match (&outcome.status, outcome.signal) {
        (_, Some(sig)) => eprintln!("cell: stopped by signal {sig}"),
        (ExitStatus::Exited(_), None) => {}
        (status, None) => eprintln!("cell: pid0 {status}"),
    }
}

/// Installs SIGINT and SIGTERM handlers now, and returns a future resolving with the signal
/// number when one arrives.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = i32> {
    use tokio::signal::unix::{signal, SignalKind};
    // `signal()` installs the handler when called, not when the future is first polled.
    let handlers = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    );
    async move {
        let (Ok(mut int), Ok(mut term)) = handlers else {
            tracing::warn!("cannot install signal handlers; Ctrl-C will not tear down cleanly");
            return std::future::pending().await;
        };
        tokio::select! {
            _ = int.recv() => 2,
            _ = term.recv() => 15,
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_version_names_the_wasmtime_in_cargo_lock() {
        let lock = include_str!("../../Cargo.lock");
        let locked = lock
            .split("[[package]]")
            .find(|p| p.contains("\nname = \"wasmtime\"\n"))
            .and_then(|p| p.lines().find_map(|l| l.strip_prefix("version = ")))
            .map(|v| v.trim_matches('"'))
            .expect("wasmtime in Cargo.lock");
        assert!(
            super::VERSION.ends_with(&format!("(wasmtime {locked})")),
            "{} does not name wasmtime {locked}",
            super::VERSION
        );
    }
}
