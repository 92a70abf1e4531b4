//! What a new process is, apart from its code ([`ProcessSpec`]: name, argv, env, grants, where
//! its stdio goes), and why starting one can fail ([`SpawnError`], with its wire reason). Shared
//! by the supervisor (which starts processes), the executor (which reads spawn requests into a
//! spec) and `run` (which builds pid0's); pure data, below all three.

use cell_proto::Reason;
use thiserror::Error;

use std::sync::Arc;

use crate::engine::{LoadError, LoadedComponent};
use crate::grants::Grants;
use crate::handle::Pid;
use crate::limits::LimitError;
use crate::status::ExitStatus;

/// Where a process's stderr goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StderrMode {
    /// The host's own stderr, untouched (pid0).
    Inherit,
    /// The host's stderr, each line prefixed with `[pid N] `.
    Forward,
    /// A bounded buffer read through `Process.stderr()`.
    Capture,
    Discard,
    /// Its tree's stderr (a daemon job's stream, shared with its descendants' forwarded
    /// lines), or the host's stderr when the tree has none.
    Tree,
}

/// How a process's stdin/stdout are used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StdioMode {
    /// Its own RPC connection to the host (a cell guest).
    Rpc,
    /// Plain byte streams, exposed on its `Process` capability.
    Plain,
    /// The host's own stdin/stdout (`cell run --plain`: an ordinary WASI program as pid0).
    Host,
}

/// What a new process is, apart from its code.
#[derive(Clone, Debug)]
pub struct ProcessSpec {
    /// argv[0]; also the name in logs.
    pub name: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub grants: Grants,
    pub stderr: StderrMode,
    pub stdio: StdioMode,
    /// The initial working directory (`--cwd`, pid0 only): relative paths resolve from it.
    pub cwd: Option<String>,
}

/// What a child runs: bytes to load (`Executor.spawn`), or a component loaded before
/// (`Executor.load`, then `Component.spawn`).
pub enum Code {
    Bytes(Arc<[u8]>),
    Loaded(Arc<LoadedComponent>),
}

/// Why a spawn failed. Returned to the caller of `spawn`; never affects anyone else.
#[derive(Debug, Error)]
pub enum SpawnError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error(transparent)]
    Limit(#[from] LimitError),
    #[error("process {0} has exited")]
    Dead(Pid),
    /// The component could not be instantiated (no guest code ran to its end: a link or
    /// resource error).
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// The guest's own code ended it while it was being instantiated (a trap in a start
    /// function, out of fuel, memory refused, killed, timed out): that is how it ended.
    #[error("instantiation failed: {0}")]
    EndedWhileStarting(ExitStatus),
    #[error("{0}")]
    Grant(String),
}

impl SpawnError {
    /// The stable reason word that prefixes the error on the wire (see capnp/cell.capnp).
    pub fn reason(&self) -> Reason {
        match self {
            SpawnError::Load(LoadError::MissingImport(_)) => Reason::MissingImport,
            SpawnError::Load(_) => Reason::BadWasm,
            SpawnError::Limit(_) => Reason::Limit,
            SpawnError::Dead(_) => Reason::Dead,
            SpawnError::Instantiate(_) | SpawnError::EndedWhileStarting(_) => Reason::Instantiate,
            SpawnError::Grant(_) => Reason::BadGrant,
        }
    }
}
