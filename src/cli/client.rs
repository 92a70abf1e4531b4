//! The daemon's clients: `cell exec` (the flags of `cell run`, plus where the daemon is),
//! `cell ps`, `cell kill`, `cell logs`.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::RunArgs;
use crate::client::addr::ConnectAddr;
use crate::client::exec::ExecConfig;
use crate::client::ps::PsFormat;
use crate::run::RunError;
use cell_proto::{JobCode, JobDir, JobLimits, JobMode, JobRequest};

/// Where the daemon is.
#[derive(Debug, Args)]
#[command(next_help_heading = "Daemon")]
pub struct ConnectArgs {
    /// The daemon's address: unix:PATH, tcp:HOST:PORT or tls:HOST:PORT (HOST an IP or a
    /// name, e.g. tls:cell.cell.svc:7443).
    #[arg(long, value_name = "ADDR", env = "CELL_CONNECT")]
    pub connect: ConnectAddr,

    /// The token of a TCP daemon (a file holding it).
    #[arg(long, value_name = "FILE", env = "CELL_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,

    /// Speak TLS to a TCP daemon, trusting the certificate(s) in FILE (PEM).
    #[arg(long, value_name = "FILE", env = "CELL_TLS_CA")]
    pub tls_ca: Option<PathBuf>,

    /// The name the daemon's certificate must carry [default: the address's host].
    #[arg(long, value_name = "NAME", requires = "tls_ca")]
    pub tls_name: Option<String>,

    /// Show this certificate (PEM chain) to a daemon that takes client certificates
    /// (`cell serve --client-ca`); no --token-file is needed then.
    #[arg(long, value_name = "FILE", env = "CELL_TLS_CERT", requires_all = ["tls_ca", "tls_key"])]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", env = "CELL_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
}

impl ConnectArgs {
    pub(crate) fn endpoint(self) -> crate::client::Endpoint {
        crate::client::Endpoint {
            addr: self.connect,
            token_file: self.token_file,
            tls_ca: self.tls_ca,
            tls_name: self.tls_name,
            tls_cert: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| crate::tls::CertPair { cert, key }),
        }
    }
}

#[derive(Debug, Args)]
#[command(after_help = "\
`cell exec` takes the flags of `cell run` and has its exit codes: switching a CI script
between the two is changing one word. The job's grants are narrowed to the daemon's ceiling.

Examples:
  cell exec --connect unix:/run/cell/cell.sock app.wasm --flag
  CELL_CONNECT=unix:/run/cell/cell.sock cell exec --attached --timeout 30s app.wasm")]
pub struct ExecArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// Kill the job if this client goes away (otherwise it runs on).
    #[arg(long)]
    pub attached: bool,

    #[command(flatten)]
    pub run: RunArgs,
}

impl ExecArgs {
    /// The job to ask for.
    ///
    /// # Errors
    /// A flag only the daemon can set (`--tty`, `--audit`, `--resolve`, `--shards`), or a `--dir` that
    /// cannot be resolved to an absolute host path.
    pub(crate) fn into_config(self) -> Result<ExecConfig, RunError> {
        let run = self.run;
        let refuse = |flag: &str, why: &str| {
            Err(RunError::Host(anyhow::anyhow!(
                "{flag} is not available through the daemon: {why}"
            )))
        };
        if run.grants.tty {
            return refuse("--tty", "the terminal is the daemon's, not this client's");
        }
        if run.grants.audit.is_some() {
            return refuse(
                "--audit",
                "the audit log is the daemon's (cell serve --audit)",
            );
        }
        if !run.grants.resolve.is_empty() {
            return refuse(
                "--resolve",
                "names are pinned by the daemon (cell serve --resolve)",
            );
        }
        // `CELL_SHARDS` in the environment is `cell run`'s default, not a request: only a
        // `--shards` on this command line is refused.
        let from_env = std::env::var("CELL_SHARDS")
            .ok()
            .and_then(|v| v.parse().ok());
        if run.shards.is_some() && run.shards != from_env {
            return refuse(
                "--shards",
                "a job runs on the daemon's shards (cell serve --shards)",
            );
        }
        let remotes = run.remote.into_names().map_err(RunError::Host)?;
        let env = run.grants.env_vars();
        let mut dirs = Vec::new();
        for d in run.grants.dirs.iter().chain(&run.grants.dirs_rw) {
            let host = d
                .host
                .canonicalize()
                .map_err(|e| RunError::Host(anyhow::anyhow!("--dir {}: {e}", d.host.display())))?;
            dirs.push(JobDir {
                host: host.display().to_string(),
                guest: d.guest.clone(),
                writable: d.writable,
            });
        }
        let l = &run.limits;
        let limits = JobLimits {
            max_memory: l.max_memory,
            timeout_ms: l.timeout.map(|t| t.as_millis() as u64),
            fuel: l.fuel,
            max_procs: l.max_procs,
            max_depth: l.max_depth,
            max_wasm_bytes: l.max_wasm_size,
            max_message_bytes: l.max_message_size,
            max_outstanding_calls: l.max_outstanding_calls,
            max_sockets: l.max_sockets,
            stderr_capture_bytes: l.stderr_capture,
        };
        let mut request = JobRequest::new(JobCode::Wasm(Arc::from(Vec::new())));
        request.name = run.argv0.unwrap_or_default();
        request.args = run.args;
        request.env = env;
        request.cwd = run.cwd;
        request.network = (!run.grants.net.is_empty()).then(|| run.grants.net.clone());
        request.dirs = dirs;
        request.limits = limits;
        request.mode = match (run.plain, run.rpc) {
            (true, _) => JobMode::Plain,
            (_, true) => JobMode::Rpc,
            _ => JobMode::Auto,
        };
        request.attached = self.attached;
        request.remotes = remotes;
        Ok(ExecConfig {
            connect: self.connect.endpoint(),
            wasm: run.wasm,
            request,
            report: run.report,
        })
    }
}

#[derive(Debug, Args)]
pub struct PsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// One JSON array of processes, for scripts.
    #[arg(long, conflicts_with = "tree")]
    pub json: bool,

    /// Each process under its parent.
    #[arg(long)]
    pub tree: bool,
}

impl PsArgs {
    pub(crate) async fn execute(self) -> Result<u8, RunError> {
        let daemon = connect(self.connect).await?;
        let rows = crate::client::ps::rows(&daemon).await?;
        let format = match (self.json, self.tree) {
            (true, _) => PsFormat::Json,
            (_, true) => PsFormat::Tree,
            _ => PsFormat::Table,
        };
        super::print_stdout(&crate::client::ps::render(&rows, format));
        Ok(0)
    }
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// The process to kill, with its subtree (its pid in `cell ps`).
    #[arg(value_name = "PID")]
    pub pid: u32,
}

impl KillArgs {
    pub(crate) async fn execute(self) -> Result<u8, RunError> {
        let daemon = connect(self.connect).await?;
        match crate::client::ps::kill(&daemon, self.pid).await {
            Ok(()) => Ok(0),
            Err(e) => {
                eprintln!("cell: kill {}: {e}", self.pid);
                Ok(1)
            }
        }
    }
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,

    /// Follow the daemon's events (spawns, exits, denials) as they happen. The daemon keeps
    /// no history, so this is the only mode.
    #[arg(long, short)]
    pub follow: bool,

    /// One JSON object per event.
    #[arg(long)]
    pub json: bool,
}

impl LogsArgs {
    pub(crate) async fn execute(self) -> Result<u8, RunError> {
        if !self.follow {
            return Err(RunError::Host(anyhow::anyhow!(
                "the daemon keeps no event history: `cell logs --follow` shows events as they \
                 happen"
            )));
        }
        let daemon = connect(self.connect).await?;
        crate::client::logs::follow(&daemon, self.json, super::shutdown_signal()).await?;
        Ok(0)
    }
}

async fn connect(args: ConnectArgs) -> Result<crate::cell_capnp::daemon::Client, RunError> {
    Ok(crate::client::connect(&args.endpoint()).await?)
}
