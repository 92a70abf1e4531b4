//! Flags that grant pid0 authority. Nothing is granted unless a flag says so, except the
//! Executor: pid0 is the root of the tree and may always spawn (within its limits).
//!
//! The terminal is pid0's alone. pid0's directories become `Directory` capabilities, which it
//! may narrow and pass on to children (`Grants.dirs`); nothing else reaches a child.

use std::path::PathBuf;

use clap::Args;

use crate::grants::{DirGrant, Grants};
use crate::net::policy::{parse_rule, NetPolicy, NetRule};

#[derive(Debug, Args)]
#[command(next_help_heading = "Grants (nothing is granted unless named here)")]
pub struct GrantArgs {
    /// Set an environment variable for pid0 (repeatable); `--env KEY` alone copies KEY from
    /// the host (as `wasmtime run` does). Nothing is inherited unless named.
    #[arg(long = "env", value_name = "KEY[=VALUE]", value_parser = parse_env)]
    pub env: Vec<(String, Option<String>)>,

    /// Grant pid0 a Network allowing RULE (repeatable). RULE is OP=HOST:PORT: OP is connect,
    /// listen or udp; HOST an IPv4 address or CIDR, a bracketed IPv6 one ([::1], [2001:db8::/32]),
    /// a host name (example.com, *.example.com) or *; PORT is N, N-M or *. Loopback, private,
    /// link-local and other special ranges are reached only by rules that name them.
    /// Without --net, pid0 has no network at all.
    #[arg(long = "net", value_name = "RULE", value_parser = parse_net_rule)]
    pub net: Vec<NetRule>,

    /// Write every network allow/deny decision to FILE as JSON lines.
    #[arg(long = "audit", value_name = "FILE")]
    pub audit: Option<PathBuf>,

    /// Copy one variable from the host's environment (repeatable; skipped if unset there).
    #[arg(long = "env-inherit", value_name = "KEY", value_parser = parse_key)]
    pub env_inherit: Vec<String>,

    /// Preopen a host directory read-only, named GUEST inside (default: HOST as given).
    #[arg(long = "dir", value_name = "HOST[::GUEST]", value_parser = parse_dir_read_only)]
    pub dirs: Vec<DirGrant>,

    /// Preopen a host directory read-write, named GUEST inside (default: HOST as given).
    #[arg(long = "dir-rw", value_name = "HOST[::GUEST]", value_parser = parse_dir_read_write)]
    pub dirs_rw: Vec<DirGrant>,

    /// Give pid0 the terminal (the host's stdin/stdout) through `Session.terminal`.
    #[arg(long, conflicts_with = "plain")]
    pub tty: bool,

    /// Answer the host name NAME with the address IP, without any DNS query (repeatable, as
    /// curl's --resolve): for every name the host resolves for a guest. Rules still decide.
    #[arg(long = "resolve", value_name = "NAME=IP", value_parser = parse_resolve)]
    pub resolve: Vec<(String, std::net::IpAddr)>,
}

impl GrantArgs {
    /// pid0's whole environment: the inherited variables, then `--env` (which wins).
    pub fn env_vars(&self) -> Vec<(String, String)> {
        let set: Vec<(String, String)> = self
            .env
            .iter()
            .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
            .collect();
        let inherited = self
            .env_inherit
            .iter()
            .chain(self.env.iter().filter(|(_, v)| v.is_none()).map(|(k, _)| k));
        let mut vars: Vec<(String, String)> = Vec::new();
        for k in inherited {
            if set.iter().any(|(s, _)| s == k) || vars.iter().any(|(s, _)| s == k) {
                continue;
            }
            if let Ok(v) = std::env::var(k) {
                vars.push((k.clone(), v));
            }
        }
        vars.extend(set);
        vars
    }

    /// pid0's grants, and the directories to open for it (opened by `run`, just before pid0
    /// starts).
    pub fn into_grants(self) -> (Grants, Vec<DirGrant>) {
        let mut dirs = self.dirs;
        dirs.extend(self.dirs_rw);
        let grants = Grants {
            executor: true,
            terminal: self.tty,
            network: (!self.net.is_empty()).then(|| NetPolicy::new(self.net)),
            ..Grants::default()
        };
        (grants, dirs)
    }
}

/// `KEY=VALUE`, or `KEY` alone: copy KEY from the host's environment (skipped if unset).
fn parse_env(s: &str) -> Result<(String, Option<String>), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("empty variable name in {s:?}")),
        Some((k, v)) => Ok((k.to_string(), Some(v.to_string()))),
        None => parse_key(s).map(|k| (k, None)),
    }
}

fn parse_key(s: &str) -> Result<String, String> {
    if s.is_empty() || s.contains('=') {
        return Err(format!("expected a variable name, got {s:?}"));
    }
    Ok(s.to_string())
}

pub(crate) fn parse_dir_read_only(s: &str) -> Result<DirGrant, String> {
    parse_dir(s, false)
}

pub(crate) fn parse_dir_read_write(s: &str) -> Result<DirGrant, String> {
    parse_dir(s, true)
}

/// `HOST[::GUEST]`, with HOST an existing directory (checked now, so a typo is a usage error
/// rather than a guest that cannot find its files).
pub(crate) fn parse_dir(s: &str, writable: bool) -> Result<DirGrant, String> {
    let (host, guest) = match s.split_once("::") {
        Some((host, guest)) => (host, guest),
        None => (s, s),
    };
    if host.is_empty() || guest.is_empty() {
        return Err(format!("expected HOST[::GUEST], got {s:?}"));
    }
    let path = PathBuf::from(host);
    match std::fs::metadata(&path) {
        Ok(m) if m.is_dir() => {
            check_access(&path, writable).map_err(|e| format!("{host}: {e}"))?;
            Ok(DirGrant {
                host: path,
                guest: guest.to_string(),
                writable,
            })
        }
        Ok(_) => Err(format!("{host} is not a directory")),
        Err(e) => Err(format!("{host}: {e}")),
    }
}

/// Whether cell (as the user running it) can list and read the directory, and for `--dir-rw`
/// write it: checked now, so the guest does not fail later on a grant it cannot use.
fn check_access(path: &std::path::Path, writable: bool) -> Result<(), String> {
    use std::os::unix::ffi::OsStrExt as _;
    let Ok(c_path) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return Err("the path contains a NUL byte".into());
    };
    let can = |mode: libc::c_int| {
        // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call.
        unsafe { libc::access(c_path.as_ptr(), mode) == 0 }
    };
    if !can(libc::R_OK | libc::X_OK) {
        let e = std::io::Error::last_os_error();
        return Err(format!("cell cannot read this directory ({e})"));
    }
    if writable && !can(libc::W_OK) {
        let e = std::io::Error::last_os_error();
        return Err(format!("cell cannot write this directory (--dir-rw) ({e})"));
    }
    Ok(())
}

/// `NAME=IP`: a host name (its canonical spelling) and an address.
pub(crate) fn parse_resolve(s: &str) -> Result<(String, std::net::IpAddr), String> {
    let (name, ip) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=IP, got {s:?}"))?;
    let name =
        crate::net::policy::canonical_name(name).map_err(|why| format!("{name:?}: {why}"))?;
    let ip = ip
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .map_err(|_| format!("{ip:?} is not an IP address"))?;
    Ok((name, ip))
}

/// A `--net` rule; the error quotes the rule and names the bad part.
pub(crate) fn parse_net_rule(s: &str) -> Result<NetRule, String> {
    parse_rule(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_mapping() {
        let tmp = std::env::temp_dir();
        let host = tmp.to_str().unwrap();
        let g = parse_dir(&format!("{host}::/data"), false).unwrap();
        assert_eq!(
            (g.host.as_path(), g.guest.as_str()),
            (tmp.as_path(), "/data")
        );
        let g = parse_dir(host, true).unwrap();
        assert_eq!(g.guest, host);
        assert!(g.writable);
        assert!(parse_dir("/definitely/not/here", false).is_err());
        assert!(parse_dir(&format!("{host}::"), false).is_err());
    }
}
