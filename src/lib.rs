//! cell: a Wasmtime-based capability supervisor.
//!
//! `cell run pid0.wasm` boots a WASI 0.2 component as pid0 and hands it authority only as Cap'n
//! Proto capabilities, served over the guest's own stdin/stdout. A process can do nothing beyond
//! pure computation except through what it was granted.
//!
//! Layout (one concept per module):
//! - [`cli`]: clap definitions; flags into typed configuration.
//! - [`run`]: the `cell run` entry point: boot pid0, wait, tear down, exit codes.
//! - [`engine`]: the wasmtime engine, linker, compile caches, import checks.
//! - [`supervisor`]: starting, running and ending processes; the one place that decides when a
//!   process stops.
//! - [`table`]: the process table (parents, children, subtree counts, reaping).
//! - [`handle`]: `ProcessHandle`, the shared face of one process (status, kill, stdio ends).
//! - [`process`]: one process's store: building it from grants/limits, classifying outcomes.
//! - [`grants`]: what a process may do; deny by default.
//! - [`hostfiles`]: the report, audit log and compile cache, kept out of every guest's reach.
//! - [`hoststdio`]: the host's own stdin/stdout lent to a guest (plain pid0, `--tty`), through
//!   plain threads.
//! - [`net`]: network policy (`NetPolicy`: deny by default, special ranges, attenuation).
//! - [`limits`]: per-process limits, how children's derive from parents', fixed buffer bounds.
//! - [`status`]: `ExitStatus`, how a process ended.
//! - [`transport`]: bounded in-memory pipes between guest stdio and the host.
//! - [`stderr`]: where a child's stderr goes (forwarded, captured, discarded).
//! - [`text`]: guest-supplied text made safe to print and store (bounded, controls escaped).
//! - [`report`]: the JSON run report (`--report`) and what the supervisor records for it.
//! - [`inspect`]: `cell inspect`: what a component imports and exports.
//! - [`rpc`]: the capability servers, one file each, and the per-process RPC connection.

pub mod budget;
pub mod cli;
pub mod engine;
pub mod grants;
pub mod handle;
pub mod hostfiles;
pub mod hoststdio;
pub mod inspect;
pub mod limits;
pub mod net;
pub mod process;
pub mod report;
pub mod rpc;
pub mod run;
pub mod spec;
pub mod state;
pub mod status;
pub mod stderr;
pub mod supervisor;
pub mod table;
pub mod text;
pub mod transport;

/// Bindings generated from `capnp/cell.capnp`, from the wire crate shared with guests and
/// clients.
pub use cell_proto::cell_capnp;
