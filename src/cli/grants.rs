//! Flags that grant pid0 authority. Nothing is granted unless a flag says so, except the
//! Executor: pid0 is the root of the tree and may always spawn (within its limits).

use clap::Args;

use crate::grants::Grants;

#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Set an environment variable for pid0 (repeatable). Nothing is inherited from the host.
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    pub env: Vec<(String, String)>,
}

impl GrantArgs {
    pub fn into_grants(self) -> Grants {
        Grants {
            executor: true,
            terminal: false,
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
