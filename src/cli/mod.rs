//! Command-line interface: clap definitions and turning flags into typed configuration.
//! Flag structs hold no logic beyond parsing; [`Cli::execute`] does the work.
//!
//! `cell run`'s flags come in groups, one file each, flattened into [`RunArgs`]:
//! [`grants`] (what pid0 may do), [`limits`] (how much it may use), [`cache`] (compile cache).

pub mod cache;
pub mod grants;
pub mod limits;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::engine::EngineConfig;
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
    #[command(flatten)]
    pub grants: grants::GrantArgs,

    #[command(flatten)]
    pub limits: limits::LimitArgs,

    #[command(flatten)]
    pub cache: cache::CacheArgs,

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
    pub fn into_config(self) -> RunConfig {
        let limits = self.limits.into_limits();
        let audit = self.grants.audit.clone();
        RunConfig {
            audit,
            wasm: self.wasm,
            args: self.args,
            env: self.grants.env.clone(),
            grants: self.grants.into_grants(),
            engine: EngineConfig {
                cache_dir: self.cache.dir(),
                fuel: limits.fuel.is_some(),
            },
            limits,
        }
    }
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
