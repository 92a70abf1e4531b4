//! `ProcState`: the data of one process's store — its WASI context and resource table, its
//! counted sockets, its memory limiter and fuel gauge. Below the engine in the layering (the
//! engine's `Linker` is typed by it); built by [`crate::process::build_store`].

use wasmtime::component::ResourceTable;
use wasmtime_wasi::sockets::WasiSocketsCtxView;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtxView, WasiHttpView};

use crate::limits::{FuelGauge, MemoryLimiter};
use crate::net::count::{CountedView, WasiSockets};
use crate::net::http::held::HeldView;
use crate::net::http::HttpOutgoing;
use crate::net::lookup::{LookupView, NameLookup};

/// The data of one process's store.
pub struct ProcState {
    pub(crate) wasi: WasiCtx,
    pub(crate) table: ResourceTable,
    /// Its own `wasi:sockets` sockets, counted against `max-sockets` (see [`crate::net::count`]).
    pub(crate) sockets: WasiSockets,
    /// Its own name lookups, under its network policy (see [`crate::net::lookup`]).
    pub(crate) lookup: Option<NameLookup>,
    /// Its outgoing `wasi:http` requests, under its network policy (see [`crate::net::http`]).
    pub(crate) http: HttpOutgoing,
    pub(crate) limiter: MemoryLimiter,
    /// Where the remaining fuel is published, when fuel is metered.
    pub(crate) fuel: Option<FuelGauge>,
    /// Its place on its thread's foreground/background gate (see [`crate::sched`]).
    pub(crate) turn: crate::sched::Turn,
}

impl ProcState {
    /// The view the counting socket constructors need (see [`crate::net::count`]).
    pub fn counted_sockets(&mut self) -> CountedView<'_> {
        CountedView {
            view: WasiSocketsCtxView {
                ctx: self.wasi.sockets(),
                table: &mut self.table,
            },
            sockets: &mut self.sockets,
        }
    }
}

impl ProcState {
    /// The view cell's `wasi:sockets/ip-name-lookup` needs (see [`crate::net::lookup`]).
    pub(crate) fn name_lookup(&mut self) -> LookupView<'_> {
        LookupView {
            table: &mut self.table,
            lookup: self.lookup.as_ref(),
        }
    }
}

impl ProcState {
    /// The view cell's charged `wasi:http` header functions need (see
    /// [`crate::net::http::held`]).
    pub(crate) fn held_headers(&mut self) -> HeldView<'_> {
        HeldView {
            http: WasiHttpCtxView {
                ctx: &mut self.http.ctx,
                table: &mut self.table,
                hooks: &mut self.http.hooks,
            },
            held: &mut self.http.held,
            memory: &mut self.limiter,
        }
    }
}

impl WasiView for ProcState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for ProcState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http.ctx,
            table: &mut self.table,
            hooks: &mut self.http.hooks,
        }
    }
}
