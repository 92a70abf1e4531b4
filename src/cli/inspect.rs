//! `cell inspect`: describe a component without running it.

use std::path::PathBuf;

use clap::Args;

use crate::engine::{CellEngine, EngineConfig};
use crate::inspect::inspect;
use crate::run::RunError;

use super::cache::CacheArgs;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cell inspect app.wasm
  cell inspect --json app.wasm | jq '.imports[].name'

Exit status: 0 when the file is a component (whatever it imports), 126 when it is not
(not wasm, a core module, invalid), 127 when it cannot be read.")]
pub struct InspectArgs {
    /// Print JSON (one object: file, size, sha256, command, rpc_guest, missing_import,
    /// imports, exports) instead of text.
    #[arg(long)]
    pub json: bool,

    #[command(flatten)]
    pub cache: CacheArgs,

    /// The component to inspect.
    #[arg(value_name = "WASM")]
    pub wasm: PathBuf,
}

impl InspectArgs {
    /// Prints the inspection on stdout.
    ///
    /// # Errors
    /// The file cannot be read or is not a component.
    pub fn execute(self) -> Result<u8, RunError> {
        let path = self.wasm;
        let bytes = std::fs::read(&path).map_err(|source| RunError::Read {
            path: path.clone(),
            source,
        })?;
        let engine = CellEngine::new(&EngineConfig {
            cache_dir: self.cache.dir(),
            fuel: false,
        })?;
        let found = inspect(&engine, &path.display().to_string(), &bytes).map_err(|source| {
            RunError::Load {
                path: path.clone(),
                source,
            }
        })?;
        let text = if self.json {
            let mut json = serde_json::to_string_pretty(&found)
                .map_err(|e| RunError::Host(anyhow::anyhow!("encoding JSON: {e}")))?;
            json.push('\n');
            json
        } else {
            found.to_text()
        };
        super::print_stdout(&text);
        Ok(0)
    }
}
