//! `cell compile`: fill the on-disk compile cache ahead of time (e.g. while building a CI
//! image), so that later `cell run`s of the same components do not compile.

use std::path::PathBuf;

use clap::Args;

use crate::engine::{CellEngine, EngineConfig};
use crate::run::RunError;

use super::cache::default_cache_dir;

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  cell compile app.wasm tools/*.wasm
  cell compile --cache-dir /ci/cell-cache app.wasm && cell run --cache-dir /ci/cell-cache app.wasm

The cache is keyed by the component's bytes and by how the engine is set up: pass --fuel when
the runs will use a fuel limit (`cell run --fuel N`), whose code is compiled differently.
Prints one line per file: `cached` (already there) or `compiled`.")]
pub struct CompileArgs {
    /// Directory of the on-disk compile cache [default: $XDG_CACHE_HOME/cell or ~/.cache/cell].
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Compile for runs with fuel metering (`cell run --fuel N`).
    #[arg(long)]
    pub fuel: bool,

    /// The components to compile.
    #[arg(value_name = "WASM", required = true)]
    pub wasm: Vec<PathBuf>,
}

impl CompileArgs {
    /// Compiles every file into the cache; stops at the first that fails.
    ///
    /// # Errors
    /// No cache directory can be found, a file cannot be read or is not a component.
    pub fn execute(self) -> Result<u8, RunError> {
        let dir = self.cache_dir.or_else(default_cache_dir).ok_or_else(|| {
            RunError::Host(anyhow::anyhow!(
                "no cache directory: set XDG_CACHE_HOME or HOME, or pass --cache-dir"
            ))
        })?;
        let engine = CellEngine::new(&EngineConfig {
            cache_dir: Some(dir.clone()),
            fuel: self.fuel,
        })?;
        for path in self.wasm {
            let bytes = std::fs::read(&path).map_err(|source| RunError::Read {
                path: path.clone(),
                source,
            })?;
            let before = engine.compile_cache_stats();
            engine
                .compile_blocking(&bytes)
                .map_err(|source| RunError::Load {
                    path: path.clone(),
                    source,
                })?;
            let after = engine.compile_cache_stats();
            let what = if after.misses > before.misses {
                "compiled"
            } else {
                "cached"
            };
            super::print_stdout(&format!("{what} {}\n", path.display()));
        }
        tracing::info!("compile cache: {}", dir.display());
        Ok(0)
    }
}
