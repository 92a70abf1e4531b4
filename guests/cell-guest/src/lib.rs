//! The guest side of cell: write a guest as an async function of its capabilities.
//!
//! ```no_run
//! // fn main() {
//! cell_guest::run(|caps| async move {
//!     let info = caps.info().await?;
//!     cell_guest::log!("hello from pid {} at depth {}", info.pid, info.depth);
//!     let executor = caps.executor().await?; // only if the parent granted one
//!     assert_eq!(executor.echo("hi").await?, "hi");
//!     Ok(())
//! })
//! // }
//! ```
//!
//! A guest is a WASI preview-2 component whose stdin/stdout carry one two-party Cap'n Proto RPC
//! connection to the host (the host serves a `Session` as the bootstrap capability; the guest is
//! the client). stderr is the guest's log. Consequences:
//!
//! - **Never use `std::io::stdin()`/`stdout()`** (or `println!`): stdout *is* the RPC stream,
//!   and std's blocking stdio deadlocks against the RPC system. Log with [`log!`] / [`log`].
//! - Everything runs on one thread, driven by the small poll loop in [`run`]; async code must
//!   not block (use [`sleep`], not `std::thread::sleep`).
//! - The process ends through [`exit`] (WASI `exit-with-code`), which reports the exact code;
//!   std's `process::exit(n)` turns every non-zero code into 1 on wasm32-wasip2.

mod caps;
mod dirs;
pub mod io;
pub mod net;
mod remote;
mod runtime;
mod service;
mod stdio;

/// The Rust bindings of `capnp/cell.capnp` (from `cell-proto`), for raw access to the
/// capabilities.
pub use cell_proto::cell_capnp;

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::str::FromStr;

use anyhow::Context as _;
use capnp_rpc::{rpc_twoparty_capnp, twoparty, RpcSystem};
use futures::FutureExt as _;

pub use caps::{ByteStream, Caps, Component, Executor, Info, Process, SpawnBuilder, Terminal};
pub use cell_proto::{CellError, ExitStatus, KilledBy, ProcessMode, Reason, Socket, StderrMode};
pub use dirs::{Directory, GrantedDir};
pub use remote::Remote;
pub use runtime::{sleep, timeout, Elapsed, Sleep};
pub use service::{serve, Service};

// Re-exported so guests can name the types in the raw API without extra dependencies.
pub use anyhow;
pub use capnp;
pub use capnp_rpc;
pub use cell_proto;

/// Runs a guest: connects to the host, hands `f` its [`Caps`] and drives the resulting future
/// together with the RPC connection until it completes, then exits the process.
///
/// `Ok(())` exits with code 0; `Err(e)` prints `error: {e:#}` to stderr and exits with code 1.
/// For any other code, call [`exit`].
pub fn run<F, Fut>(f: F) -> !
where
    F: FnOnce(Caps) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    run_serving(None, f)
}

/// [`run`], offering `bootstrap` to the host as this process's service (see [`serve`]).
pub(crate) fn run_serving<F, Fut>(bootstrap: Option<capnp::capability::Client>, f: F) -> !
where
    F: FnOnce(Caps) -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let network = twoparty::VatNetwork::new(
        stdio::StdinReader::default(),
        stdio::StdoutWriter,
        rpc_twoparty_capnp::Side::Client,
        capnp::message::ReaderOptions::new(),
    );
    let mut rpc = RpcSystem::new(Box::new(network), bootstrap);
    let session = rpc.bootstrap(rpc_twoparty_capnp::Side::Server);
    // The RPC system ends when the host closes our stdin (or the connection breaks); calls
    // still in flight then fail with "disconnected", which the user code sees as errors.
    let mut rpc: Option<Pin<Box<dyn Future<Output = ()>>>> = Some(Box::pin(rpc.map(|r| {
        if let Err(e) = r {
            log(&format!("cell-guest: RPC connection failed: {e}"));
        }
    })));
    let mut user = std::pin::pin!(f(Caps::new(session)));
    let result = match runtime::run_until(user.as_mut(), &mut rpc) {
        Ok(result) => result,
        Err(runtime::Stuck) => Err(anyhow::anyhow!(
            "the guest is waiting for something that can never happen \
             (the RPC connection has ended and no timer is running)"
        )),
    };
    let code = match result {
        Ok(()) => 0,
        Err(e) => {
            log(&format!("error: {e:#}"));
            1
        }
    };
    // What the RPC system already wrote still goes out (as far as stdout has room now), as it
    // would have without the outbox.
    stdio::drain(futures::task::noop_waker_ref());
    // Exit with the user future and the RPC system still alive: nothing is torn down inside
    // the guest (no capability releases racing a closing connection); the host cleans up.
    exit(code)
}

/// Marks a wasm binary as built with this SDK, so that `cell inspect` can tell a cell guest
/// from an ordinary WASI program: a custom section (no run-time cost) holding this text, which
/// names the capnp schema the guest speaks. Kept next to [`run`] so it is linked whenever `run`
/// is.
/// (The section name must be a literal; `cell_proto::SDK_MARKER_SECTION` is the same name, and
/// `cell inspect` looks for it.)
#[used]
#[link_section = "cell-guest"]
static SDK_MARKER: [u8; 43] = cell_proto::SDK_MARKER;

/// The typed reason of a failed call, e.g. `Some(Reason::NotGranted)` for the error of
/// `caps.executor()` without an Executor grant: the host's error (a `capnp::Error` somewhere in
/// `e`'s chain) read as a [`CellError`]. `None` if `e` did not come from an RPC call.
///
/// ```no_run
/// # async fn f(caps: cell_guest::Caps) -> anyhow::Result<()> {
/// match caps.executor().await {
///     Err(e) if cell_guest::reason(&e) == Some(cell_guest::Reason::NotGranted) => {}
///     other => { other?; }
/// }
/// # Ok(()) }
/// ```
pub fn reason(e: &anyhow::Error) -> Option<Reason> {
    cell_error(e).map(|e| e.reason)
}

/// The host's error in `e`'s chain, typed (see [`reason`]).
pub fn cell_error(e: &anyhow::Error) -> Option<CellError> {
    e.chain()
        .find_map(|cause| cause.downcast_ref::<capnp::Error>())
        .map(|c| CellError::from(c.clone()))
}

/// Ends the process now with exit code `code` (reported exactly to the parent).
pub fn exit(code: u8) -> ! {
    wasip2::cli::exit::exit_with_code(code);
    // exit-with-code does not return; if a host ever did, trapping is the only honest outcome.
    std::process::abort()
}

/// Writes `message` and a newline to stderr (the guest's log), ignoring errors: a guest whose
/// stderr is discarded or closed must not fail because of logging (`eprintln!` would panic).
pub fn log(message: &str) {
    let mut stderr = std::io::stderr().lock();
    let _ = stderr.write_all(message.as_bytes());
    let _ = stderr.write_all(b"\n");
    let _ = stderr.flush();
}

/// `format!`-style logging to stderr, one line per call: `log!("pid {}", info.pid)`.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        $crate::log(&::std::format!($($arg)*))
    };
}

/// The value following the command-line flag `name` (e.g. `arg::<u32>("--depth")` for
/// `--depth 3`), parsed; `Ok(None)` when the flag is absent.
pub fn arg<T>(name: &str) -> anyhow::Result<Option<T>>
where
    T: FromStr,
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let args: Vec<String> = std::env::args().collect();
    let Some(i) = args.iter().position(|a| a == name) else {
        return Ok(None);
    };
    let value = args
        .get(i + 1)
        .with_context(|| format!("{name} needs a value"))?;
    let parsed = value
        .parse()
        .with_context(|| format!("{name} {value}: invalid value"))?;
    Ok(Some(parsed))
}
