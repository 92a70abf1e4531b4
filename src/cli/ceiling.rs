//! `cell serve --ceiling NAME=FILE`: the grant ceiling of the mutual-TLS clients whose
//! certificates carry NAME (`serve/identity.rs`), instead of the daemon's own.
//!
//! FILE is TOML whose keys are the daemon's ceiling flags, written as in `--config`
//! (`net`, `dir`, `dir_rw`, the limit flags: `max_memory`, `timeout`, `fuel`, …, and
//! `remote`: names of the daemon's `--remote` nodes these clients' jobs may get); a key
//! left out takes the default of its flag, *not* the daemon's own value — the file is the
//! whole ceiling of those clients, so what it says is all they may get:
//!
//! ```toml
//! # /etc/cell/ceilings/ci-runner.toml
//! net = ["connect=10.0.0.0/8:443"]
//! dir = ["/srv/ci/cache"]
//! max_memory = "256M"
//! timeout = "30m"
//! ```

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::{Args, FromArgMatches as _};

use super::config::ConfigFile;
use super::grants::{parse_dir_read_only, parse_dir_read_write, parse_net_rule};
use super::limits::LimitArgs;
use crate::grants::DirGrant;
use crate::net::policy::NetRule;
use crate::serve::CeilingConfig;

/// The flags a ceiling file may set.
#[derive(Debug, Args)]
struct CeilingFileArgs {
    #[arg(long = "net", value_parser = parse_net_rule)]
    net: Vec<NetRule>,
    #[arg(long = "dir", value_parser = parse_dir_read_only)]
    dirs: Vec<DirGrant>,
    #[arg(long = "dir-rw", value_parser = parse_dir_read_write)]
    dirs_rw: Vec<DirGrant>,
    #[command(flatten)]
    limits: LimitArgs,
    #[arg(long = "remote", value_parser = parse_remote_name)]
    remotes: Vec<String>,
}

/// A name of one of the daemon's `--remote` nodes.
fn parse_remote_name(s: &str) -> Result<String, String> {
    crate::remote::check_name(s).map(|()| s.to_string())
}

/// `NAME=FILE`: a name a client certificate may carry, and its ceiling file.
///
/// # Errors
/// Not `NAME=FILE`.
pub(crate) fn parse_ceiling_arg(s: &str) -> Result<(String, PathBuf), String> {
    match s.split_once('=') {
        Some((name, file)) if !name.is_empty() && !file.is_empty() => {
            Ok((name.to_string(), PathBuf::from(file)))
        }
        _ => Err(format!(
            "expected NAME=FILE (a certificate's name and its ceiling file), got {s:?}"
        )),
    }
}

/// Reads the ceiling file of `name`.
///
/// # Errors
/// The file cannot be read, is not TOML, has a key that is not a ceiling flag, a value that
/// does not parse, or `[[service]]`/`[[http]]` tables.
pub(crate) fn read(name: &str, path: &Path) -> anyhow::Result<CeilingConfig> {
    let what = format!("--ceiling {name}={}", path.display());
    let text = std::fs::read_to_string(path).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let file: ConfigFile = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    anyhow::ensure!(
        !file.has_tables(),
        "{what}: a ceiling file has no [[service]] or [[http]] tables"
    );
    let command = CeilingFileArgs::augment_args(clap::Command::new("ceiling"))
        .no_binary_name(true)
        .args_override_self(true);
    let argv: Vec<OsString> = file
        .as_flags(&command)
        .map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    let matches = command
        .try_get_matches_from(argv)
        .map_err(|e| anyhow::anyhow!("{what}: {}", e.render().to_string().trim()))?;
    let args =
        CeilingFileArgs::from_arg_matches(&matches).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    crate::net::policy::check_rule_count(args.net.len())
        .map_err(|e| anyhow::anyhow!("{what}: net: {e}"))?;
    let mut dirs = args.dirs;
    dirs.extend(args.dirs_rw);
    Ok(CeilingConfig {
        net: args.net,
        dirs,
        limits: args.limits.into_limits(),
        remotes: args.remotes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(text: &str) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, text).unwrap();
        (dir, path)
    }

    #[test]
    fn a_ceiling_file_sets_the_ceiling_flags() {
        let (_d, path) = file(
            "net = [\"connect=127.0.0.1:80\"]\ndir = [\"/srv\"]\nmax_memory = \"64M\"\nfuel = 5\n",
        );
        let c = read("ci", &path).unwrap();
        assert_eq!(c.net.len(), 1);
        assert_eq!(c.dirs.len(), 1);
        assert!(!c.dirs[0].writable);
        assert_eq!(c.limits.max_memory, 64 << 20);
        assert_eq!(c.limits.fuel, Some(5));
    }

    #[test]
    fn what_is_not_a_ceiling_flag_is_refused_with_the_file_named() {
        for (text, says) in [
            ("listen = [\"unix:/x\"]", "unknown key \"listen\""),
            ("max_memory = \"lots\"", "lots"),
            ("net = [\"connect=nonsense\"]", "nonsense"),
            (
                "[[service]]\nname = \"a\"\nwasm = \"a.wasm\"",
                "no [[service]]",
            ),
            ("not toml", "--ceiling ci="),
        ] {
            let (_d, path) = file(text);
            let err = format!("{:#}", read("ci", &path).unwrap_err());
            assert!(err.contains("--ceiling ci="), "{text}: {err}");
            assert!(err.contains(says), "{text}: {err}");
        }
        let err = read("ci", Path::new("/nonexistent/c.toml")).unwrap_err();
        assert!(err.to_string().contains("No such file"), "{err}");
        assert!(parse_ceiling_arg("=x").is_err());
        assert!(parse_ceiling_arg("a=").is_err());
        assert_eq!(parse_ceiling_arg("a=b=c").unwrap().1, PathBuf::from("b=c"));
    }
}
