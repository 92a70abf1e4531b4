//! `cell serve`'s flags: where to listen, the grant ceiling of its jobs (the same `--net`,
//! `--dir`, `--dir-rw` and limit flags as `cell run`), and the daemon's own bounds.

use std::path::PathBuf;

use clap::{Args, FromArgMatches as _};

use super::config::{self, ConfigFile};
use crate::serve::services::Restart;

use super::cache::CacheArgs;
use super::grants::{parse_dir_read_only, parse_dir_read_write, parse_net_rule, parse_resolve};
use super::limits::LimitArgs;
use crate::engine::EngineConfig;
use crate::grants::DirGrant;
use crate::hostfiles;
use crate::net::policy::NetRule;
use crate::serve::listen::ListenAddr;
use crate::serve::{CeilingConfig, ServeConfig};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cell serve --listen unix:$XDG_RUNTIME_DIR/cell.sock
  cell serve --listen unix:/run/cell/cell.sock --dir /srv/jobs --net connect=127.0.0.1:8080
  cell serve --listen unix:/run/cell/cell.sock --listen tcp:127.0.0.1:7070 --token-file tok
  cell serve --http 127.0.0.1:8080 hello.wasm --net connect=127.0.0.1:9000 --timeout 5s

Clients: cell exec --connect ADDR app.wasm, cell ps, cell kill PID, cell logs --follow.
SIGTERM or SIGINT stops every job (killed by the operator) and exits 0.
Exit status: 0 after a graceful stop, 125 when the daemon cannot start.")]
pub struct ServeArgs {
    /// Where clients connect (repeatable; at least one, here or as `listen` in --config):
    /// unix:PATH (created 0600, in a directory only you can write) or tcp:IP:PORT (needs
    /// --token-file; loopback only unless --tls-cert/--tls-key).
    #[arg(long = "listen", value_name = "ADDR")]
    pub listen: Vec<ListenAddr>,

    /// The token TCP clients must present first (the file's contents, whitespace trimmed).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// TCP listeners speak TLS with this certificate (PEM, the chain); needed for a
    /// non-loopback address.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Mutual TLS: accept only TCP clients showing a certificate signed by a CA in FILE
    /// (PEM); a client is then who its certificate says (its common name, else its first
    /// subject-alternative name), recorded in the audit log and its jobs' reports. No
    /// --token-file is needed then (with one, clients must show both).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub client_ca: Option<PathBuf>,

    /// Clients whose certificate carries NAME (common name or alternative name) get the
    /// grant ceiling in FILE (TOML: net, dir, dir_rw and limit keys, as in --config)
    /// instead of the daemon's own; the first match wins (repeatable).
    #[arg(
        long = "ceiling",
        value_name = "NAME=FILE",
        value_parser = super::ceiling::parse_ceiling_arg,
        requires = "client_ca"
    )]
    pub ceilings: Vec<(String, PathBuf)>,

    /// Threads jobs run on, each with its own runtime and process table: a job's whole tree
    /// stays on one; each client connection goes to the least loaded and runs its jobs there
    /// [default: one per core; 1 runs everything on one thread].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: Option<u16>,

    /// Jobs running at once; more are refused with "limit: max-jobs …".
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_jobs: usize,

    /// Start FILE as the supervised service NAME at boot, and restart it by --restart
    /// (repeatable). It gets nothing but an Executor; `[[service]]` in --config grants more.
    #[arg(long = "service", value_name = "NAME=FILE", value_parser = parse_service)]
    pub services: Vec<(String, PathBuf)>,

    /// When a service that ended is started again (per service in --config).
    #[arg(long, value_enum, default_value = "on-failure")]
    pub restart: Restart,

    /// How often a service is restarted before the daemon gives up on it.
    #[arg(long, value_name = "N", default_value_t = 5)]
    pub max_restarts: u32,

    /// Serve the wasi:http proxy component FILE on ADDR (IP:PORT), a fresh instance per
    /// request, granted what --net, --dir, --dir-rw and the limit flags give (repeatable;
    /// `[[http]]` in --config grants each its own).
    #[arg(long = "http", num_args = 2, value_names = ["ADDR", "FILE"])]
    pub http: Vec<String>,

    /// Requests one --http front handles at once; more are answered 503 at once.
    #[arg(long, value_name = "N", default_value_t = crate::limits::HTTP_MAX_CONCURRENCY)]
    pub http_max_concurrency: usize,

    /// Serve Prometheus metrics at http://ADDR/metrics (a loopback IP:PORT).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,

    /// Let --metrics use a non-loopback address (its plain, unauthenticated HTTP then leaves
    /// the machine: guard the port, e.g. with a Kubernetes NetworkPolicy).
    #[arg(long, requires = "metrics")]
    pub metrics_public: bool,

    /// Read the daemon's flags and `[[service]]` tables from FILE (TOML; see the README).
    /// Flags on the command line win. SIGHUP re-reads its services.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    pub ceiling: CeilingArgs,

    #[command(flatten)]
    pub limits: LimitArgs,

    #[command(flatten)]
    pub cache: CacheArgs,

    #[command(flatten)]
    pub remote: ServeRemoteArgs,
}

/// Other machines' daemons the jobs may spawn on.
#[derive(Debug, Args)]
#[command(
    next_help_heading = "Remote nodes (jobs may spawn children there: cell exec --remote NAME)"
)]
pub struct ServeRemoteArgs {
    /// The `cell serve` at HOST:PORT (mutual TLS), under NAME (repeatable): a job that asks
    /// for NAME (`cell exec --remote NAME`) finds it in its pid0's Session.remotes, if its
    /// client's ceiling lists it (the daemon's own ceiling lists every --remote; a --ceiling
    /// file lists its own, `remote = ["NAME"]`). Connected when a job first asks for it, and
    /// again after its link is lost; this daemon shows --remote-cert.
    #[arg(long = "remote", value_name = "NAME=tls://HOST:PORT")]
    pub remotes: Vec<crate::remote::RemoteSpec>,

    #[command(flatten)]
    pub tls: super::remote::RemoteTlsArgs,
}

/// The most a job may get: a client's request is narrowed to it, never widened.
#[derive(Debug, Args)]
#[command(next_help_heading = "Grant ceiling (the most any job may get)")]
pub struct CeilingArgs {
    /// Jobs may get a Network allowing at most RULE (repeatable; the `cell run --net` syntax).
    /// Without --net, no job gets a network.
    #[arg(long = "net", value_name = "RULE", value_parser = parse_net_rule)]
    pub net: Vec<NetRule>,

    /// Jobs may get this host directory, or directories inside it, read-only (repeatable).
    #[arg(long = "dir", value_name = "HOST", value_parser = parse_dir_read_only)]
    pub dirs: Vec<DirGrant>,

    /// Jobs may get this host directory, or directories inside it, read-write (repeatable).
    #[arg(long = "dir-rw", value_name = "HOST", value_parser = parse_dir_read_write)]
    pub dirs_rw: Vec<DirGrant>,

    /// Write every network allow/deny decision of every job to FILE as JSON lines.
    #[arg(long = "audit", value_name = "FILE")]
    pub audit: Option<PathBuf>,

    /// Answer NAME with IP for every job, without any DNS query (repeatable).
    #[arg(long = "resolve", value_name = "NAME=IP", value_parser = parse_resolve)]
    pub resolve: Vec<(String, std::net::IpAddr)>,
}

/// `NAME=FILE`.
fn parse_service(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!("expected NAME=FILE.wasm, got {s:?}")),
    }
}

impl ServeArgs {
    /// The daemon's configuration (the `--config` file's flags under the command line's),
    /// with its host files (audit, cache) checked and opened.
    ///
    /// # Errors
    /// The config or token file cannot be read, or a host file lies inside a writable
    /// ceiling directory.
    pub fn into_config(self) -> anyhow::Result<ServeConfig> {
        let Some(path) = self.config.clone() else {
            return self.configured(None);
        };
        let file = ConfigFile::read(&path)?;
        let command = ServeArgs::augment_args(clap::Command::new("serve")).args_override_self(true);
        let mut argv: Vec<std::ffi::OsString> = vec!["serve".into()];
        argv.extend(file.as_flags(&command)?);
        // The real command line's own flags come after the file's, so they win.
        let real: Vec<_> = std::env::args_os()
            .skip_while(|a| a != "serve")
            .skip(1)
            .collect();
        argv.extend(real);
        let matches = command.try_get_matches_from(argv)?;
        let merged = ServeArgs::from_arg_matches(&matches)?;
        merged.configured(Some((path, file)))
    }

    fn configured(self, file: Option<(PathBuf, ConfigFile)>) -> anyhow::Result<ServeConfig> {
        let (restart, max_restarts) = (self.restart, self.max_restarts);
        let from_flags: Vec<_> = self
            .services
            .iter()
            .map(|(name, wasm)| config::service(name, wasm.clone(), restart, max_restarts))
            .collect();
        let mut services = from_flags.clone();
        let mut reload: Option<crate::serve::Reload> = None;
        if let Some((path, file)) = &file {
            services.extend(file.services(restart, max_restarts)?);
            let path = path.clone();
            reload = Some(Box::new(move || {
                let mut specs = from_flags.clone();
                specs.extend(ConfigFile::read(&path)?.services(restart, max_restarts)?);
                Ok(specs)
            }));
        }
        let mut dirs = self.ceiling.dirs;
        dirs.extend(self.ceiling.dirs_rw);
        let mut http = config::http_fronts(
            &self.http,
            &self.ceiling.net,
            &dirs,
            self.http_max_concurrency,
        )?;
        if let Some((_, file)) = &file {
            http.extend(file.http(self.http_max_concurrency)?);
        }
        crate::net::policy::check_rule_count(self.ceiling.net.len())
            .map_err(|e| anyhow::anyhow!("--net: {e}"))?;
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("--token-file {}: {e}", path.display()))?;
                let token = text.trim().to_string();
                if token.is_empty() {
                    anyhow::bail!("--token-file {}: the file is empty", path.display());
                }
                Some(token)
            }
            None => None,
        };
        let (remotes, remote_tls) = super::remote::checked(self.remote.remotes, self.remote.tls)?;
        let mut ceilings = Vec::with_capacity(self.ceilings.len());
        for (name, path) in &self.ceilings {
            let ceiling = super::ceiling::read(name, path)?;
            if let Some(unknown) = ceiling
                .remotes
                .iter()
                .find(|r| !remotes.iter().any(|s| &s.name == *r))
            {
                anyhow::bail!(
                    "--ceiling {name}={}: remote {unknown:?} is not one of this daemon's --remote nodes",
                    path.display()
                );
            }
            ceilings.push((name.clone(), ceiling));
        }
        // Every directory some job may get writable, whichever ceiling it came through.
        let mut any_dirs = dirs.clone();
        any_dirs.extend(ceilings.iter().flat_map(|(_, c)| c.dirs.iter().cloned()));
        // A job with a writable grant over the socket could replace it.
        let roots = hostfiles::writable_roots(&any_dirs);
        for addr in &self.listen {
            if let ListenAddr::Unix(path) = addr {
                hostfiles::check_outside("daemon socket", path, &roots, false)?;
            }
        }
        let limits = self.limits.into_limits();
        let cache = self.cache.dir();
        let metered =
            limits.fuel.is_some() || ceilings.iter().any(|(_, c)| c.limits.fuel.is_some());
        let mut files = hostfiles::prepare(&hostfiles::HostPaths {
            dirs: &any_dirs,
            report: None,
            audit: self.ceiling.audit.as_deref(),
            cache: cache.as_deref(),
        })?;
        Ok(ServeConfig {
            listen: self.listen,
            token,
            engine: EngineConfig {
                cache_dir: cache,
                fuel: metered,
            },
            ceiling: CeilingConfig {
                net: self.ceiling.net,
                dirs,
                limits,
                remotes: remotes.iter().map(|r| r.name.clone()).collect(),
            },
            audit: files.audit.take(),
            resolve: self.ceiling.resolve.into_iter().collect(),
            max_jobs: self.max_jobs,
            services,
            reload,
            metrics: self.metrics,
            metrics_public: self.metrics_public,
            http,
            tls: self
                .tls_cert
                .zip(self.tls_key)
                .map(|(cert, key)| crate::tls::CertPair { cert, key }),
            client_ca: self.client_ca,
            ceilings,
            shards: self
                .shards
                .map_or_else(crate::shard::default_count, usize::from),
            remotes,
            remote_tls,
        })
    }
}
