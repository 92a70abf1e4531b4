//! One process: its store state, how its store is built from its grants and limits, and how
//! the outcome of running it becomes an [`ExitStatus`].
//!
//! A process owns exactly one `Store`; nothing else reaches into it. The supervisor decides
//! *when* a process stops (kill, deadline, protocol violation) by dropping the future that
//! runs it; this module only decides *what* a finished run means.

use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap};
use wasmtime_wasi::cli::StdoutStream;
use wasmtime_wasi::p2::bindings::CommandPre;
use wasmtime_wasi::{I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::engine::CellEngine;
use crate::limits::{FuelGauge, Limits, MemoryLimiter};
use crate::status::ExitStatus;
use crate::transport::{GuestInput, GuestOutput};

/// The data of one process's store.
pub struct ProcState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    /// Where the remaining fuel is published, when fuel is metered.
    fuel: Option<FuelGauge>,
}

impl WasiView for ProcState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// Everything a new store needs: the guest's view of the world.
pub struct StoreSpec {
    /// argv[0] followed by the arguments.
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub stdin: GuestInput,
    pub stdout: GuestOutput,
    pub stderr: Box<dyn StdoutStream>,
    pub limits: Limits,
}

/// Builds a store with no ambient authority: no preopens, no sockets, only the given env.
pub fn build_store(engine: &CellEngine, spec: StoreSpec) -> Store<ProcState> {
    let mut b = WasiCtxBuilder::new();
    b.args(&spec.argv)
        .envs(&spec.env)
        .stdin(spec.stdin)
        .stdout(spec.stdout)
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
    b.stderr(BoxedStdout(spec.stderr));
    let state = ProcState {
        wasi: b.build(),
        table: ResourceTable::new(),
        limiter: MemoryLimiter::new(spec.limits.max_memory),
        fuel: None,
    };
    let mut store = Store::new(engine.engine(), state);
    store.limiter(|s| &mut s.limiter);
    // Yield to the other processes on every epoch tick; the supervisor checks kills and
    // deadlines whenever the guest yields.
    store.set_epoch_deadline(1);
    store.epoch_deadline_async_yield_and_update(1);
    // Fails only when the engine does not meter fuel (no `--fuel`): the limit then does not
    // apply, as documented for `SpawnRequest.limits.fuel`.
    if let Some(fuel) = spec.limits.fuel.filter(|&f| store.set_fuel(f).is_ok()) {
        let gauge = FuelGauge::new(fuel);
        store.data_mut().fuel = Some(gauge.clone());
        // Same yield as above, and publish the fuel left for spawns to clamp children to.
        store.epoch_deadline_callback(move |ctx| {
            if let Ok(left) = ctx.get_fuel() {
                gauge.set(left);
            }
            Ok(wasmtime::UpdateDeadline::Yield(1))
        });
    }
    store
}

/// The gauge of a store's remaining fuel, when fuel is metered.
pub fn fuel_gauge(store: &Store<ProcState>) -> Option<FuelGauge> {
    store.data().fuel.clone()
}

/// Instantiates the component in `store` and runs its `wasi:cli/run` export to completion.
///
/// Cancel-safe in the sense the supervisor needs: dropping the future abandons the guest, and
/// the store must then be dropped too.
pub async fn run_command(
    store: &mut Store<ProcState>,
    pre: &CommandPre<ProcState>,
) -> wasmtime::Result<Result<(), ()>> {
    let command = pre.instantiate_async(&mut *store).await?;
    command.wasi_cli_run().call_run(&mut *store).await
}

/// What a finished run means.
pub fn classify(outcome: wasmtime::Result<Result<(), ()>>, store: &Store<ProcState>) -> ExitStatus {
    let err = match outcome {
        Ok(Ok(())) => return ExitStatus::Exited(0),
        Ok(Err(())) => return ExitStatus::Exited(1),
        Err(e) => e,
    };
    if let Some(exit) = err.downcast_ref::<I32Exit>() {
        return ExitStatus::Exited(exit.0);
    }
    if store.data().limiter.hit() {
        // The guest was refused memory and then died: that refusal is the cause.
        return ExitStatus::OutOfMemory;
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => ExitStatus::OutOfFuel,
        Some(trap) => ExitStatus::Trapped(describe_trap(trap, &err)),
        None => ExitStatus::Trapped(one_line(&format!("{err:#}"))),
    }
}

/// "wasm `unreachable` instruction executed in child_trap::main" style one-liners.
fn describe_trap(trap: &Trap, err: &wasmtime::Error) -> String {
    let frame = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .and_then(|bt| {
            bt.frames()
                .iter()
                .find_map(|f| f.func_name().map(str::to_owned))
        });
    match frame {
        Some(func) => format!("{trap} in {func}"),
        None => trap.to_string(),
    }
}

fn one_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
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
