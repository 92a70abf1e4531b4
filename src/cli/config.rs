//! `cell serve --config cell.toml`: the daemon's flags as a TOML file, plus `[[service]]`
//! tables with per-service options. Keys are the flags' long names with `_` for `-`
//! (`max_memory = "256M"`, `dir_rw = ["/srv/out"]`); a flag on the command line wins over the
//! file for single values, and adds to it for lists. SIGHUP re-reads the `[[service]]` tables
//! (the rest needs a restart, and a changed value is said so in the log).
//!
//! ```toml
//! listen = ["unix:/run/cell/cell.sock"]
//! net = ["connect=127.0.0.1:8080"]
//! dir = ["/srv/jobs"]
//! max_memory = "512M"
//!
//! [[service]]
//! name = "kv"
//! wasm = "/srv/kv.wasm"
//! args = ["--port", "7000"]
//! restart = "always"          # never | on-failure | always (default: --restart)
//! max_restarts = 10           # default: --max-restarts
//! net = ["connect=127.0.0.1:7000"]
//! ```

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::net::policy::NetRule;
use crate::serve::http::HttpSpec;
use crate::serve::services::{Restart, ServiceSpec};

/// The file, as written. (Unknown keys are refused by [`ConfigFile::as_flags`], which knows
/// the flags; serde's `deny_unknown_fields` does not work with `flatten`.)
#[derive(Debug, Default, Deserialize)]
pub(crate) struct ConfigFile {
    /// Every other key: a flag of `cell serve` and its value(s).
    #[serde(flatten)]
    flags: BTreeMap<String, toml::Value>,
    #[serde(default)]
    service: Vec<ServiceTable>,
    #[serde(default)]
    http: Vec<HttpTable>,
}

/// One `[[http]]`: a wasi:http proxy component served on `listen`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpTable {
    /// Its name in logs and metrics; default: the file's stem.
    name: Option<String>,
    listen: String,
    wasm: PathBuf,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    net: Vec<String>,
    #[serde(default)]
    dir: Vec<String>,
    #[serde(default)]
    dir_rw: Vec<String>,
    max_memory: Option<String>,
    timeout: Option<String>,
    fuel: Option<u64>,
    max_concurrency: Option<usize>,
}

/// One `[[service]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceTable {
    name: String,
    wasm: PathBuf,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    restart: Option<Restart>,
    max_restarts: Option<u32>,
    #[serde(default)]
    net: Vec<String>,
    #[serde(default)]
    dir: Vec<String>,
    #[serde(default)]
    dir_rw: Vec<String>,
    max_memory: Option<String>,
    timeout: Option<String>,
    fuel: Option<u64>,
}

/// The keys that are flags of the file itself or make no sense in it.
const NOT_IN_FILE: [&str; 3] = ["config", "service", "http"];

impl ConfigFile {
    /// Reads and parses `path`.
    ///
    /// # Errors
    /// It cannot be read or is not valid TOML of this shape.
    pub(crate) fn read(path: &Path) -> anyhow::Result<ConfigFile> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))
    }

    /// The file's flags as command-line arguments (`--max-memory 512M`, one `--net` per rule),
    /// to be parsed before the real command line's.
    ///
    /// # Errors
    /// A key that is not a flag of `cell serve`, or a value of the wrong type.
    pub(crate) fn as_flags(&self, known: &clap::Command) -> anyhow::Result<Vec<OsString>> {
        let mut out = Vec::new();
        for (key, value) in &self.flags {
            let flag = key.replace('_', "-");
            let arg = known
                .get_arguments()
                .find(|a| a.get_long() == Some(flag.as_str()))
                .filter(|_| !NOT_IN_FILE.contains(&flag.as_str()))
                .ok_or_else(|| anyhow::anyhow!("unknown key {key:?} (not a cell serve flag)"))?;
            let takes_value = arg.get_action().takes_values();
            let values = match value {
                toml::Value::Array(items) => items.clone(),
                other => vec![other.clone()],
            };
            for v in values {
                match (takes_value, v) {
                    (false, toml::Value::Boolean(true)) => out.push(format!("--{flag}").into()),
                    (false, toml::Value::Boolean(false)) => {}
                    (false, other) => anyhow::bail!("{key} = {other}: expected true or false"),
                    (true, toml::Value::String(s)) => {
                        out.push(format!("--{flag}").into());
                        out.push(s.into());
                    }
                    (true, toml::Value::Integer(n)) => {
                        out.push(format!("--{flag}").into());
                        out.push(n.to_string().into());
                    }
                    (true, other) => anyhow::bail!("{key} = {other}: expected a string or number"),
                }
            }
        }
        Ok(out)
    }

    /// Whether it has `[[service]]` or `[[http]]` tables (a `--ceiling` file may not).
    pub(crate) fn has_tables(&self) -> bool {
        !self.service.is_empty() || !self.http.is_empty()
    }

    /// The `[[http]]` tables as fronts, `max_concurrency` unless a table says otherwise.
    ///
    /// # Errors
    /// An address, rule, directory or size that does not parse.
    pub(crate) fn http(&self, max_concurrency: usize) -> anyhow::Result<Vec<HttpSpec>> {
        self.http.iter().map(|t| t.spec(max_concurrency)).collect()
    }

    /// The `[[service]]` tables as services, with `restart`/`max_restarts` defaulting to the
    /// given ones.
    ///
    /// # Errors
    /// A rule, directory or size that does not parse, or two services with one name.
    pub(crate) fn services(
        &self,
        restart: Restart,
        max_restarts: u32,
    ) -> anyhow::Result<Vec<ServiceSpec>> {
        let mut names = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for t in &self.service {
            if !names.insert(t.name.clone()) {
                anyhow::bail!("two [[service]] tables are named {:?}", t.name);
            }
            out.push(t.spec(restart, max_restarts)?);
        }
        Ok(out)
    }
}

impl ServiceTable {
    fn spec(&self, restart: Restart, max_restarts: u32) -> anyhow::Result<ServiceSpec> {
        let what = |e: String| anyhow::anyhow!("[[service]] {:?}: {e}", self.name);
        let mut spec = service(&self.name, self.wasm.clone(), restart, max_restarts);
        spec.args = self.args.clone();
        spec.env = self.env.clone().into_iter().collect();
        spec.restart = self.restart.unwrap_or(restart);
        spec.max_restarts = self.max_restarts.unwrap_or(max_restarts);
        let grants = TableGrants {
            net: &self.net,
            dir: &self.dir,
            dir_rw: &self.dir_rw,
            max_memory: self.max_memory.as_deref(),
            timeout: self.timeout.as_deref(),
            fuel: self.fuel,
        };
        (spec.net, spec.dirs, spec.limits) = grants.parse().map_err(what)?;
        Ok(spec)
    }
}

impl HttpTable {
    fn spec(&self, max_concurrency: usize) -> anyhow::Result<HttpSpec> {
        let name = self.name.clone().unwrap_or_else(|| stem(&self.wasm));
        let what = |e: String| anyhow::anyhow!("[[http]] {name:?}: {e}");
        let listen = parse_listen(&self.listen).map_err(what)?;
        let grants = TableGrants {
            net: &self.net,
            dir: &self.dir,
            dir_rw: &self.dir_rw,
            max_memory: self.max_memory.as_deref(),
            timeout: self.timeout.as_deref(),
            fuel: self.fuel,
        };
        let (net, dirs, limits) = grants.parse().map_err(what)?;
        Ok(HttpSpec {
            name: name.clone(),
            listen,
            wasm: self.wasm.clone(),
            env: self.env.clone().into_iter().collect(),
            net,
            dirs,
            limits,
            max_concurrency: self.max_concurrency.unwrap_or(max_concurrency),
        })
    }
}

/// The grant and limit keys a `[[service]]` and an `[[http]]` table share.
struct TableGrants<'a> {
    net: &'a [String],
    dir: &'a [String],
    dir_rw: &'a [String],
    max_memory: Option<&'a str>,
    timeout: Option<&'a str>,
    fuel: Option<u64>,
}

type Parsed = (Vec<NetRule>, Vec<cell_proto::JobDir>, cell_proto::JobLimits);

impl TableGrants<'_> {
    fn parse(&self) -> Result<Parsed, String> {
        let net = self
            .net
            .iter()
            .map(|rule| super::grants::parse_net_rule(rule))
            .collect::<Result<Vec<_>, _>>()?;
        let mut dirs = Vec::new();
        for (list, writable) in [(self.dir, false), (self.dir_rw, true)] {
            for d in list {
                let grant = super::grants::parse_dir(d, writable)?;
                dirs.push(job_dir(&grant)?);
            }
        }
        let mut limits = cell_proto::JobLimits::default();
        if let Some(m) = self.max_memory {
            limits.max_memory = Some(super::limits::parse_size(m)?);
        }
        if let Some(t) = self.timeout {
            let t = super::limits::parse_duration(t)?;
            limits.timeout_ms = Some(t.as_millis() as u64);
        }
        limits.fuel = self.fuel;
        Ok((net, dirs, limits))
    }
}

/// A directory flag as the ceiling's narrowing takes it: its canonical host path.
fn job_dir(grant: &crate::grants::DirGrant) -> Result<cell_proto::JobDir, String> {
    let host = grant
        .host
        .canonicalize()
        .map_err(|e| format!("{}: {e}", grant.host.display()))?;
    Ok(cell_proto::JobDir {
        host: host.display().to_string(),
        guest: grant.guest.clone(),
        writable: grant.writable,
    })
}

fn parse_listen(addr: &str) -> Result<std::net::SocketAddr, String> {
    addr.parse()
        .map_err(|e| format!("listen {addr:?}: expected IP:PORT ({e})"))
}

/// The file name without its extension, as a front's default name.
fn stem(wasm: &Path) -> String {
    wasm.file_stem()
        .map_or_else(|| "http".to_string(), |s| s.to_string_lossy().into_owned())
}

/// The `--http ADDR FILE` pairs of the command line as fronts, granted the daemon's own
/// `--net` rules, directories and limits (the ceiling itself).
///
/// # Errors
/// An address that is not IP:PORT, or a directory that cannot be resolved.
pub(crate) fn http_fronts(
    pairs: &[String],
    net: &[NetRule],
    dirs: &[crate::grants::DirGrant],
    max_concurrency: usize,
) -> anyhow::Result<Vec<HttpSpec>> {
    let dirs = dirs
        .iter()
        .map(job_dir)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("--dir {e}"))?;
    pairs
        .chunks(2)
        .map(|pair| {
            let [addr, file] = pair else {
                anyhow::bail!("--http needs an address and a file");
            };
            let wasm = PathBuf::from(file);
            Ok(HttpSpec {
                name: stem(&wasm),
                listen: parse_listen(addr).map_err(|e| anyhow::anyhow!("--http {e}"))?,
                wasm,
                env: Vec::new(),
                net: net.to_vec(),
                dirs: dirs.clone(),
                limits: cell_proto::JobLimits::default(),
                max_concurrency,
            })
        })
        .collect()
}

/// A service with nothing granted and the default limits.
pub(crate) fn service(name: &str, wasm: PathBuf, restart: Restart, max: u32) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        wasm,
        args: Vec::new(),
        env: Vec::new(),
        restart,
        max_restarts: max,
        net: Vec::new(),
        dirs: Vec::new(),
        limits: cell_proto::JobLimits::default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory as _;

    fn serve_command() -> clap::Command {
        crate::cli::Cli::command()
            .find_subcommand("serve")
            .cloned()
            .unwrap()
    }

    #[test]
    fn keys_become_flags_and_services_get_their_options() {
        let file: ConfigFile = toml::from_str(
            r#"
            listen = ["unix:/run/c.sock"]
            max_memory = "256M"
            net = ["connect=127.0.0.1:80", "udp=127.0.0.1:53"]
            [[service]]
            name = "kv"
            wasm = "/srv/kv.wasm"
            args = ["-x"]
            restart = "always"
            "#,
        )
        .unwrap();
        let flags = file.as_flags(&serve_command()).unwrap();
        let flags: Vec<String> = flags.iter().map(|f| f.to_string_lossy().into()).collect();
        assert_eq!(
            flags,
            [
                "--listen",
                "unix:/run/c.sock",
                "--max-memory",
                "256M",
                "--net",
                "connect=127.0.0.1:80",
                "--net",
                "udp=127.0.0.1:53"
            ]
        );
        let services = file.services(Restart::OnFailure, 3).unwrap();
        assert_eq!(services[0].restart, Restart::Always);
        assert_eq!(services[0].max_restarts, 3);
        assert_eq!(services[0].args, ["-x"]);
    }

    #[test]
    fn http_tables_and_flags_become_fronts() {
        let file: ConfigFile = toml::from_str(
            r#"
            [[http]]
            listen = "127.0.0.1:8080"
            wasm = "/srv/hello.wasm"
            net = ["connect=127.0.0.1:9000"]
            timeout = "5s"
            max_concurrency = 8
            "#,
        )
        .unwrap();
        // `http` is a table, never a flag.
        assert!(file.as_flags(&serve_command()).unwrap().is_empty());
        let fronts = file.http(64).unwrap();
        assert_eq!(fronts[0].name, "hello");
        assert_eq!(fronts[0].listen, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(fronts[0].net.len(), 1);
        assert_eq!(fronts[0].limits.timeout_ms, Some(5000));
        assert_eq!(fronts[0].max_concurrency, 8);
        for bad in [
            "listen = \"localhost:80\"",
            "listen = \"127.0.0.1:80\"\nbogus = 1",
        ] {
            let text = format!("[[http]]\nwasm = \"a.wasm\"\n{bad}");
            let parsed = toml::from_str::<ConfigFile>(&text);
            assert!(parsed.map_or(true, |f| f.http(1).is_err()), "{bad}");
        }
        let pairs = ["127.0.0.1:0".to_string(), "x/y.wasm".to_string()];
        let fronts = http_fronts(&pairs, &[], &[], 3).unwrap();
        assert_eq!(
            (fronts[0].name.as_str(), fronts[0].max_concurrency),
            ("y", 3)
        );
        assert!(http_fronts(&["::1".into(), "a.wasm".into()], &[], &[], 1).is_err());
    }

    #[test]
    fn the_deploy_examples_are_valid() {
        let file: ConfigFile = toml::from_str(include_str!("../../deploy/cell.toml")).unwrap();
        file.as_flags(&serve_command()).unwrap();
        assert_eq!(file.service.len(), 1);
        // The systemd unit's ExecStart is a command line `cell serve` accepts.
        let unit = include_str!("../../deploy/cell.service");
        let exec = unit
            .split("ExecStart=")
            .nth(1)
            .and_then(|rest| rest.split("\nExecStartPost").next())
            .unwrap()
            .replace("\\\n", " ");
        let argv: Vec<&str> = exec.split_whitespace().collect();
        assert_eq!(argv[..2], ["/usr/local/bin/cell", "serve"]);
        use clap::Parser as _;
        let parsed = crate::cli::Cli::try_parse_from(argv).unwrap();
        assert!(matches!(parsed.command, crate::cli::Command::Serve(_)));
    }

    #[test]
    fn unknown_keys_and_duplicate_services_are_refused() {
        let file: ConfigFile = toml::from_str("max_memroy = \"1G\"").unwrap();
        assert!(file.as_flags(&serve_command()).is_err());
        let file: ConfigFile = toml::from_str(
            "[[service]]\nname = \"a\"\nwasm = \"a.wasm\"\n[[service]]\nname = \"a\"\nwasm = \"b.wasm\"",
        )
        .unwrap();
        assert!(file.services(Restart::Never, 0).is_err());
        assert!(
            toml::from_str::<ConfigFile>("[[service]]\nname = \"a\"\nwasm = \"a\"\nbogus = 1")
                .is_err()
        );
    }
}
