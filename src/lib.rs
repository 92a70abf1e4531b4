//! cell: a Wasmtime-based capability supervisor.
//!
//! `cell run pid0.wasm` boots a WASI 0.2 component as pid0 and hands it authority only as Cap'n
//! Proto capabilities, served over the guest's own stdin/stdout. A process can do nothing beyond
//! pure computation except through what it was granted.
//!
//! The library is the binary's implementation; its modules are `pub(crate)` and their layering
//! is PLAN.md's (checked by `tests/layering.rs`). What is public is the small facade below:
//! [`Cli`] and [`exit_code`] for the `cell` binary, and [`inproc`] for benches and in-process
//! tests that serve a guest connection over pipes without wasm.

#![warn(unreachable_pub)]

pub(crate) mod budget;
pub(crate) mod cli;
pub(crate) mod client;
pub(crate) mod engine;
pub(crate) mod events;
pub(crate) mod grants;
pub(crate) mod handle;
pub(crate) mod hostdir;
pub(crate) mod hostfiles;
pub(crate) mod hoststdio;
pub(crate) mod inspect;
pub(crate) mod limits;
pub(crate) mod net;
pub(crate) mod process;
pub(crate) mod remote;
pub(crate) mod report;
pub(crate) mod room;
pub(crate) mod rpc;
pub(crate) mod run;
pub(crate) mod sched;
pub(crate) mod serve;
pub(crate) mod shard;
pub(crate) mod spec;
pub(crate) mod stacks;
pub(crate) mod state;
pub(crate) mod status;
pub(crate) mod stderr;
pub(crate) mod supervisor;
pub(crate) mod table;
pub(crate) mod text;
pub(crate) mod tls;
pub(crate) mod transport;
pub(crate) mod tree;

/// Bindings generated from `capnp/cell.capnp`, from the wire crate shared with guests and
/// clients.
pub use cell_proto::cell_capnp;

pub use cli::Cli;
pub use limits::EXIT_GRACE;
pub use run::exit_code;

/// In-process access to the host, for benches and tests: serve one guest connection over
/// in-memory pipes (no wasm), with a real [`Supervisor`] or any [`Host`].
pub mod inproc {
    pub use crate::engine::{CellEngine, EngineConfig, LoadedComponent};
    pub use crate::grants::Grants;
    pub use crate::handle::{HandleParts, Pid, PlainStdio, ProcessHandle, ProcessInfo};
    pub use crate::hoststdio::HostStdio;
    pub use crate::limits::{LimitRequest, PIPE_CAPACITY};
    pub use crate::net::audit::Audit;
    pub use crate::net::count::SocketTally;
    pub use crate::net::policy::NetPolicy;
    pub use crate::rpc::host::Host;
    pub use crate::rpc::{serve, Connection, ServeSpec, Transport};
    pub use crate::spec::{Code, ProcessSpec, SpawnError, StderrMode, StdioMode};
    pub use crate::status::{ExitStatus, KilledBy};
    pub use crate::supervisor::Supervisor;
    pub use crate::transport::{pipe, HostReader, HostWriter, PipeReader, PipeWriter};
}
