//! One process's store: how it is built from its grants and limits (its data is
//! [`crate::state::ProcState`]), and how the outcome of running it becomes an [`ExitStatus`].
//!
//! A process owns exactly one `Store`; nothing else reaches into it. The supervisor decides
//! *when* a process stops (kill, deadline, protocol violation) by dropping the future that
//! runs it; this module only decides *what* a finished run means.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::cli::{StdinStream, StdoutStream};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::engine::CellEngine;
use crate::grants::GrantedDir;
use crate::limits::{FuelGauge, Limits, MemoryLimiter, FUEL_SLICE};
use crate::net::audit::Audit;
use crate::net::count::{SocketTally, WasiSockets};
use crate::net::http::{HttpGrant, HttpOutgoing};
use crate::net::lookup::{NameLookup, Pins};
use crate::net::policy::NetPolicy;
use crate::sched::Turn;
use crate::state::ProcState;
use crate::status::ExitStatus;

/// What a process used, read from its store when it ends (for the run report).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Usage {
    /// The most linear memory and table bytes it held at once.
    pub peak_memory: u64,
    /// Fuel consumed by it and lent to children it did not get back, when metered.
    pub fuel_used: Option<u64>,
    /// Fuel left at the end, to give back to the parent it was lent from.
    pub fuel_left: Option<u64>,
}

/// What `store` used so far.
pub(crate) fn usage(store: &Store<ProcState>) -> Usage {
    let state = store.data();
    let left = state.fuel.as_ref().map(|gauge| {
        // Lending and repayments since the last epoch tick count too.
        gauge.settle(store.get_fuel().unwrap_or(0))
    });
    Usage {
        peak_memory: state.limiter.peak() as u64,
        fuel_used: state.fuel.as_ref().zip(left).map(|(g, left)| g.used(left)),
        fuel_left: left,
    }
}

/// Everything a new store needs: the guest's view of the world.
pub(crate) struct StoreSpec {
    /// argv[0] followed by the arguments.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: Box<dyn StdinStream>,
    pub stdout: Box<dyn StdoutStream>,
    pub stderr: Box<dyn StdoutStream>,
    /// Host directories preopened for the guest (pid0's `--dir`/`--dir-rw`, a child's
    /// `Grants.dirs`).
    pub dirs: Vec<GrantedDir>,
    /// The initial working directory reported to the guest (`--cwd`).
    pub cwd: Option<String>,
    pub limits: Limits,
    /// The process's pid, for audit records.
    pub pid: u32,
    /// Its network grant: `None` leaves `wasi:sockets` entirely disabled.
    pub network: Option<NetPolicy>,
    /// Where its `wasi:sockets` decisions are recorded.
    pub audit: Audit,
    /// Its sockets on both paths, against `max-sockets`.
    pub sockets: Arc<SocketTally>,
    /// `--resolve NAME=IP`: names its own lookups get answered without a query.
    pub pinned_names: Arc<HashMap<String, IpAddr>>,
}

/// Builds a store with no ambient authority: only the given env, only the preopens in
/// `spec.dirs`, and sockets only within the network grant (see [`crate::net::wasi`]).
///
/// # Errors
/// A granted directory cannot be opened (it vanished since the command line was checked).
pub(crate) fn build_store(
    engine: &CellEngine,
    spec: StoreSpec,
) -> anyhow::Result<Store<ProcState>> {
    let mut b = WasiCtxBuilder::new();
    b.args(&spec.argv)
        .envs(&spec.env)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    let lookup = spec.network.as_ref().map(|policy| {
        let pins = Arc::new(Pins::default());
        crate::net::wasi::apply(&mut b, policy, spec.pid, spec.audit.clone(), pins.clone());
        NameLookup::new(
            policy.clone(),
            spec.pid,
            spec.audit.clone(),
            spec.pinned_names.clone(),
            pins,
        )
    });
    if let Some(cwd) = &spec.cwd {
        b.initial_cwd(cwd);
    }
    b.stdin(BoxedStdin(spec.stdin));
    b.stdout(BoxedStdout(spec.stdout));
    b.stderr(BoxedStdout(spec.stderr));
    for granted in &spec.dirs {
        let perms = if granted.dir.writable() {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        // The handle's own directory, not a path looked up again (see `crate::hostdir`).
        b.preopened_dir(granted.dir.preopen_path(), &granted.guest, perms)
            .map_err(|e| anyhow::anyhow!("cannot open {:?}: {e}", granted.dir))?;
    }
    let state = ProcState {
        wasi: b.build(),
        table: {
            let mut table = ResourceTable::new();
            table.set_max_capacity(crate::limits::MAX_RESOURCES);
            table
        },
        http: HttpOutgoing::new(HttpGrant {
            policy: spec.network.clone(),
            pid: spec.pid,
            audit: spec.audit.clone(),
            pinned_names: spec.pinned_names.clone(),
            sockets: spec.sockets.clone(),
        }),
        sockets: WasiSockets::new(spec.sockets),
        lookup,
        limiter: MemoryLimiter::new(spec.limits.max_memory),
        fuel: None,
        turn: Turn::new(),
    };
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|s| &mut s.limiter);
    // At every epoch tick the guest yields to the other processes, behind whatever
    // foreground work waits (see `crate::sched`); the supervisor checks kills and deadlines
    // whenever the guest yields.
    store.set_epoch_deadline(1);
    let turn = store.data().turn.clone();
    // Fails only when the engine does not meter fuel (no `--fuel`): the limit then does not
    // apply, as documented for `SpawnRequest.limits.fuel`.
    let gauge = match spec.limits.fuel.filter(|&f| store.set_fuel(f).is_ok()) {
        Some(fuel) => {
            let gauge = FuelGauge::new(fuel);
            store.data_mut().fuel = Some(gauge.clone());
            // Running wasm keeps the fuel of its current slice in a register, which a change
            // made from the epoch callback does not reach; the rest waits in the store's
            // reserve, which it does. Slicing the fuel makes `settle` below exact to within
            // one slice.
            store.fuel_async_yield_interval(Some(FUEL_SLICE))?;
            Some(gauge)
        }
        None => None,
    };
    store.epoch_deadline_callback(move |mut ctx| {
        // Settle the fuel lent to and repaid by children.
        if let (Some(gauge), Ok(left)) = (&gauge, ctx.get_fuel()) {
            let now = gauge.settle(left);
            if now != left {
                ctx.set_fuel(now)?;
            }
        }
        Ok(turn.slice_end())
    });
    Ok(store)
}

/// The gauge of a store's remaining fuel, when fuel is metered.
/// The store's memory use now, for `Daemon.ps`.
pub(crate) fn memory_gauge(store: &Store<ProcState>) -> crate::limits::MemoryGauge {
    store.data().limiter.gauge()
}

pub(crate) fn fuel_gauge(store: &Store<ProcState>) -> Option<FuelGauge> {
    store.data().fuel.clone()
}

/// Whether a failed instantiation was the guest's own doing (its start code trapped or ran out
/// of fuel, or a memory growth was refused), rather than a component that cannot be set up.
pub(crate) fn guest_ended_it(err: &wasmtime::Error, store: &Store<ProcState>) -> bool {
    store.data().limiter.hit() || err.downcast_ref::<Trap>().is_some()
}

/// What a finished run means.
pub(crate) fn classify(
    outcome: wasmtime::Result<Result<(), ()>>,
    store: &Store<ProcState>,
) -> ExitStatus {
    let err = match outcome {
        Ok(Ok(())) => return ExitStatus::Exited(0),
        Ok(Err(())) => return ExitStatus::Exited(1),
        Err(e) => e,
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return ExitStatus::Exited(exit.0);
    }
    // The one-line status is what the operator sees; the whole story (with the wasm backtrace)
    // only with -v.
    tracing::info!(target: "cell::proc", "guest failed: {err:?}");
    if store.data().limiter.hit() {
        // The guest was refused memory and then died: that refusal is the cause.
        return ExitStatus::OutOfMemory;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => ExitStatus::OutOfFuel,
        Some(trap) => ExitStatus::Trapped(in_function(trap.to_string(), &err)),
        // A host call failed and took the guest down: the cause is the innermost error (the
        // outer ones are "error while executing at wasm backtrace:" and the frames).
        None => ExitStatus::Trapped(in_function(one_line(&err.root_cause().to_string()), &err)),
    }
}

/// `cause in func`: "wasm `unreachable` instruction executed in child_trap::main", "empty
/// poll list in wasi:io/poll#poll" — the innermost named wasm frame, when there is one.
fn in_function(cause: String, err: &wasmtime::Error) -> String {
    let frame = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| {
            bt.frames()
                .iter()
                .find_map(|f| f.func_name().map(str::to_owned))
        });
    match frame {
        Some(func) => format!("{cause} in {func}"),
        None => cause,
    }
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// Adapts a boxed stdin stream to the `impl StdinStream` the WASI builder takes.
struct BoxedStdin(Box<dyn StdinStream>);

impl wasmtime_wasi::cli::IsTerminal for BoxedStdin {
    fn is_terminal(&self) -> bool {
        self.0.is_terminal()
    }
}

impl StdinStream for BoxedStdin {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi_io::streams::InputStream> {
        self.0.p2_stream()
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        self.0.async_stream()
    }
}

/// Adapts a boxed stdout stream to the `impl StdoutStream` the WASI builder takes.
struct BoxedStdout(Box<dyn StdoutStream>);

impl wasmtime_wasi::cli::IsTerminal for BoxedStdout {
    fn is_terminal(&self) -> bool {
        self.0.is_terminal()
    }
}

impl StdoutStream for BoxedStdout {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi_io::streams::OutputStream> {
        self.0.p2_stream()
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        self.0.async_stream()
    }
}
