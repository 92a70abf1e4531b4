//! Command-line interface: clap definitions and turning flags into typed configuration.
//! Flag structs hold no logic beyond parsing; [`Cli::execute`] does the work.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::EngineConfig;
use crate::grants::Grants;
use crate::limits::Limits;
use crate::run::{self, RunConfig, RunError};

/// cell: run WebAssembly components with no ambient authority.
///
/// pid0 receives authority only as Cap'n Proto capabilities served over its own stdin/stdout.
#[derive(Debug, Parser)]
#[command(name = "cell", version, propagate_version = true)]
pub struct Cli {
    /// More host logging on stderr (-v info, -vv debug, -vvv trace). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a component as pid0.
    Run(RunArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Set an environment variable for pid0 (repeatable). Nothing is inherited from the host.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Directory of the on-disk compile cache [default: $XDG_CACHE_HOME/cell or ~/.cache/cell].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache_dir: Option<PathBuf>,

    /// Do not use the on-disk compile cache.
    #[arg(long)]
    pub no_cache: bool,

    /// The component to run as pid0 (a WASI 0.2 command component).
    #[arg(value_name = "WASM")]
    pub wasm: PathBuf,

    /// Arguments passed to pid0 (argv[1..]).
    #[arg(value_name = "ARGS", trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, _)) if k.is_empty() => Err(format!("empty variable name in {s:?}")),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// The default on-disk cache directory, if the environment names a home.
pub fn default_cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))?;
    Some(base.join("cell"))
}

impl RunArgs {
    pub fn into_config(self) -> RunConfig {
        let cache_dir = if self.no_cache {
            None
        } else {
            self.cache_dir.or_else(default_cache_dir)
        };
        RunConfig {
            wasm: self.wasm,
            args: self.args,
            env: self.env,
            grants: Grants {
                executor: true,
                terminal: false,
            },
            limits: Limits::default(),
            engine: EngineConfig {
                cache_dir,
                fuel: false,
            },
        }
    }
}

/// What the binary should do after a command finished.
pub enum Finished {
    Code(u8),
}

impl Cli {
    /// Runs the command. Must be called inside a `LocalSet` on a current-thread runtime.
    pub async fn execute(self) -> Result<u8, RunError> {
        match self.command {
            Command::Run(args) => {
                let outcome = run::run(args.into_config(), shutdown_signal()).await?;
                if !outcome.status.success() && outcome.signal.is_none() {
                    tracing::info!("pid0 {}", outcome.status);
                }
                report_abnormal(&outcome);
                Ok(outcome.exit_code())
            }
        }
    }
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

/// Resolves with the signal number on SIGINT or SIGTERM.
async fn shutdown_signal() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut int), Ok(mut term)) = (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) else {
        tracing::warn!("cannot install signal handlers; Ctrl-C will not tear down cleanly");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = int.recv() => 2,
        _ = term.recv() => 15,
    }
}
