//! Flags that grant pid0 authority. Nothing is granted unless a flag says so, except the
//! Executor: pid0 is the root of the tree and may always spawn (within its limits).

use std::path::PathBuf;

use clap::Args;

use crate::grants::Grants;
use crate::net::policy::{parse_rule, NetPolicy, NetRule};

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Set an environment variable for pid0 (repeatable). Nothing is inherited from the host.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

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
}

impl GrantArgs {
    pub fn into_grants(self) -> Grants {
        Grants {
            executor: true,
            terminal: false,
            network: (!self.net.is_empty()).then(|| NetPolicy::new(self.net)),
            sockets: Vec::new(),
        }
    }
}

fn parse_env(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some(("", _)) => Err(format!("empty variable name in {s:?}")),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        None => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// A `--net` rule; the error quotes the rule and names the bad part.
fn parse_net_rule(s: &str) -> Result<NetRule, String> {
    parse_rule(s).map_err(|e| e.to_string())
}
