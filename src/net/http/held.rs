//! The header bytes a process's `wasi:http` resources hold, charged to its memory limit.
//!
//! wasmtime-wasi-http caps one header set at [`HTTP_FIELD_BYTES`](crate::limits), but a guest
//! may hold as many sets as its resource table has entries: 4,096 × 64 KiB would be 256 MiB of
//! host memory that no limit charges. So cell shadows every `wasi:http` function that makes,
//! grows, moves or ends a resource holding a header map, and charges each such resource its
//! bytes against the same [`MemoryLimiter`] as the process's linear memory (`max-memory`). A
//! charge that does not fit traps the guest and its status is `out-of-memory`, as when its own
//! memory cannot grow.
//!
//! What is charged, and for how long (each entry is keyed by the resource's table index):
//! - a `fields` resource: its map's bytes, recomputed after every `set`/`append`/`delete`;
//!   one that shares its map with another (`clone`, `headers()` of a request or response) is
//!   charged as if it were a copy, because it outlives the original;
//! - an `outgoing-request` / `outgoing-response`: the bytes of the `fields` it consumed, until
//!   it is dropped, sent (`outgoing-handler.handle`) or answered (`response-outparam.set`);
//! - a `future-incoming-response`: its request's bytes plus a response head at most
//!   [`RESPONSE_HEAD_BYTES`] (hyper's read buffer and header count), until `get` hands over the
//!   `incoming-response`, which is then charged its real head;
//! - a `future-trailers`: at most [`TRAILER_BYTES`] until `get` hands over the trailers.
//!
//! The ledger holds one `usize` per charged resource, so it is itself bounded by the table's
//! capacity. An incoming request (serving) is made by the host, one per invocation, under
//! hyper's limits; its `headers()` are charged like any other `fields`.

use std::collections::HashMap;
use std::mem::size_of;

use http::{HeaderMap, HeaderName, HeaderValue};
use wasmtime::component::{
    ComponentNamedList, Lift, Linker, LinkerInstance, Lower, Resource, ResourceType,
};
use wasmtime_wasi_http::p2::bindings::http::outgoing_handler::Host as _;
use wasmtime_wasi_http::p2::bindings::http::types::{self as wit, ErrorCode, HeaderError};
use wasmtime_wasi_http::p2::body::{HostFutureTrailers, HostIncomingBody, HostOutgoingBody};
use wasmtime_wasi_http::p2::types::{
    HostFutureIncomingResponse, HostIncomingRequest, HostIncomingResponse, HostOutgoingRequest,
    HostOutgoingResponse, HostResponseOutparam,
};
use wasmtime_wasi_http::{FieldMap, WasiHttpCtxView};

use crate::limits::{MemoryLimiter, HTTP_MAX_HEADERS, HTTP_READ_BUF_BYTES};

/// The `wasi:http` version wasmtime-wasi-http defines (guests' 0.2.x imports resolve to it).
const TYPES: &str = "wasi:http/types@0.2.12";
const OUTGOING_HANDLER: &str = "wasi:http/outgoing-handler@0.2.12";

/// What one header entry costs besides its bytes (the accounting wasmtime-wasi-http's own
/// per-set limit uses).
const ENTRY_BYTES: usize = size_of::<HeaderName>() + size_of::<HeaderValue>();
/// The most a response head read by cell's sender can hold: its read buffer and header count.
pub(crate) const RESPONSE_HEAD_BYTES: usize = HTTP_READ_BUF_BYTES + HTTP_MAX_HEADERS * ENTRY_BYTES;
/// hyper's own limit on a chunked body's trailer bytes, with the same header count.
const HYPER_TRAILER_LIMIT: usize = 16 << 10;
/// The most one body's trailers can hold.
pub(crate) const TRAILER_BYTES: usize = HYPER_TRAILER_LIMIT + HTTP_MAX_HEADERS * ENTRY_BYTES;

/// The bytes `map` holds, as wasmtime-wasi-http counts them.
fn map_bytes(map: &HeaderMap) -> usize {
    let names: usize = map
        .keys()
        .map(|k| k.as_str().len() + size_of::<HeaderName>())
        .sum();
    let values: usize = map
        .values()
        .map(|v| v.len() + size_of::<HeaderValue>())
        .sum();
    names + values
}

/// The charge of every resource that holds header bytes, by table index. Owned by the
/// process's [`HttpOutgoing`](super::HttpOutgoing); at most one entry per table entry.
#[derive(Debug, Default)]
pub(crate) struct HeldHeaders {
    charges: HashMap<u32, usize>,
}

/// What the shadowed functions need from a store's data.
pub(crate) struct HeldView<'a> {
    pub http: WasiHttpCtxView<'a>,
    pub held: &'a mut HeldHeaders,
    /// The process's memory limit, which the charges count against.
    pub memory: &'a mut MemoryLimiter,
}

impl HeldView<'_> {
    /// Sets the charge of resource `rep` to `bytes`; traps (out of memory) if it does not fit.
    fn charge(&mut self, rep: u32, bytes: usize) -> wasmtime::Result<()> {
        let before = self.held.charges.get(&rep).copied().unwrap_or(0);
        if !self.memory.host_bytes(before, bytes) {
            wasmtime::bail!(
                "HTTP header fields held for this process would exceed its memory limit \
                 ({bytes} bytes more for one resource)"
            );
        }
        match bytes {
            0 => self.held.charges.remove(&rep),
            _ => self.held.charges.insert(rep, bytes),
        };
        Ok(())
    }

    /// Gives back the charge of resource `rep`, if it has one.
    fn release(&mut self, rep: u32) -> usize {
        let before = self.held.charges.remove(&rep).unwrap_or(0);
        // Shrinking always fits.
        let _ = self.memory.host_bytes(before, 0);
        before
    }

    /// Moves the charge of `from` (consumed) to `to`, plus `extra`.
    fn moved(&mut self, from: u32, to: u32, extra: usize) -> wasmtime::Result<()> {
        let bytes = self.release(from);
        self.charge(to, bytes.saturating_add(extra))
    }

    /// Charges the `fields` resource `fields` what its map holds now.
    fn charge_fields(&mut self, fields: &Resource<FieldMap>) -> wasmtime::Result<()> {
        let bytes = map_bytes(self.http.table.get(fields)?);
        self.charge(fields.rep(), bytes)
    }

    fn header_result<R>(
        &mut self,
        r: Result<R, wasmtime_wasi_http::p2::HeaderError>,
    ) -> wasmtime::Result<Result<R, HeaderError>> {
        match r {
            Ok(r) => Ok(Ok(r)),
            Err(e) => Ok(Err(wit::Host::convert_header_error(&mut self.http, e)?)),
        }
    }

    fn http_result<R>(
        &mut self,
        r: Result<R, wasmtime_wasi_http::p2::HttpError>,
    ) -> wasmtime::Result<Result<R, ErrorCode>> {
        match r {
            Ok(r) => Ok(Ok(r)),
            Err(e) => Ok(Err(wit::Host::convert_error_code(&mut self.http, e)?)),
        }
    }
}

type Fields = Resource<FieldMap>;
type HeaderResult<T> = wasmtime::Result<(Result<T, HeaderError>,)>;

fn fields_new(v: &mut HeldView<'_>, (): ()) -> wasmtime::Result<(Fields,)> {
    Ok((wit::HostFields::new(&mut v.http)?,))
}

fn fields_from_list(
    v: &mut HeldView<'_>,
    (entries,): (Vec<(String, Vec<u8>)>,),
) -> HeaderResult<Fields> {
    let made = wit::HostFields::from_list(&mut v.http, entries);
    if let Ok(fields) = &made {
        v.charge_fields(fields)?;
    }
    v.header_result(made).map(|r| (r,))
}

/// Runs `change` on the `fields` resource `this` and charges what its map holds after,
/// whatever `change` answered.
fn changed(
    v: &mut HeldView<'_>,
    this: Fields,
    change: impl FnOnce(
        &mut WasiHttpCtxView<'_>,
        Fields,
    ) -> Result<(), wasmtime_wasi_http::p2::HeaderError>,
) -> HeaderResult<()> {
    let done = change(&mut v.http, Resource::new_borrow(this.rep()));
    v.charge_fields(&this)?;
    v.header_result(done).map(|r| (r,))
}

fn fields_set(
    v: &mut HeldView<'_>,
    (this, name, values): (Fields, String, Vec<Vec<u8>>),
) -> HeaderResult<()> {
    changed(v, this, |http, f| {
        wit::HostFields::set(http, f, name, values)
    })
}

fn fields_append(
    v: &mut HeldView<'_>,
    (this, name, value): (Fields, String, Vec<u8>),
) -> HeaderResult<()> {
    changed(v, this, |http, f| {
        wit::HostFields::append(http, f, name, value)
    })
}

fn fields_delete(v: &mut HeldView<'_>, (this, name): (Fields, String)) -> HeaderResult<()> {
    changed(v, this, |http, f| wit::HostFields::delete(http, f, name))
}

/// Charges a `fields` resource just made (a clone, or a `headers()` view, counted as a copy).
fn charged(v: &mut HeldView<'_>, made: wasmtime::Result<Fields>) -> wasmtime::Result<(Fields,)> {
    let fields = made?;
    v.charge_fields(&fields)?;
    Ok((fields,))
}

/// Moves the charge of the `fields` resource `from`, consumed by `made`, to what it made.
fn consumed<R: 'static>(
    v: &mut HeldView<'_>,
    from: u32,
    made: wasmtime::Result<Resource<R>>,
) -> wasmtime::Result<(Resource<R>,)> {
    let made = made?;
    v.moved(from, made.rep(), 0)?;
    Ok((made,))
}

fn fields_clone(v: &mut HeldView<'_>, (this,): (Fields,)) -> wasmtime::Result<(Fields,)> {
    let made = wit::HostFields::clone(&mut v.http, this);
    charged(v, made)
}

fn request_new(
    v: &mut HeldView<'_>,
    (headers,): (Fields,),
) -> wasmtime::Result<(Resource<HostOutgoingRequest>,)> {
    let from = headers.rep();
    let made = wit::HostOutgoingRequest::new(&mut v.http, headers);
    consumed(v, from, made)
}

fn request_headers(
    v: &mut HeldView<'_>,
    (this,): (Resource<HostOutgoingRequest>,),
) -> wasmtime::Result<(Fields,)> {
    let made = wit::HostOutgoingRequest::headers(&mut v.http, this);
    charged(v, made)
}

fn response_new(
    v: &mut HeldView<'_>,
    (headers,): (Fields,),
) -> wasmtime::Result<(Resource<HostOutgoingResponse>,)> {
    let from = headers.rep();
    let made = wit::HostOutgoingResponse::new(&mut v.http, headers);
    consumed(v, from, made)
}

fn response_headers(
    v: &mut HeldView<'_>,
    (this,): (Resource<HostOutgoingResponse>,),
) -> wasmtime::Result<(Fields,)> {
    let made = wit::HostOutgoingResponse::headers(&mut v.http, this);
    charged(v, made)
}

fn incoming_request_headers(
    v: &mut HeldView<'_>,
    (this,): (Resource<HostIncomingRequest>,),
) -> wasmtime::Result<(Fields,)> {
    let made = wit::HostIncomingRequest::headers(&mut v.http, this);
    charged(v, made)
}

fn incoming_response_headers(
    v: &mut HeldView<'_>,
    (this,): (Resource<HostIncomingResponse>,),
) -> wasmtime::Result<(Fields,)> {
    let made = wit::HostIncomingResponse::headers(&mut v.http, this);
    charged(v, made)
}

type Ready<T> = Option<Result<Result<T, ErrorCode>, ()>>;

fn future_response_get(
    v: &mut HeldView<'_>,
    (this,): (Resource<HostFutureIncomingResponse>,),
) -> wasmtime::Result<(Ready<Resource<HostIncomingResponse>>,)> {
    let rep = this.rep();
    let ready = wit::HostFutureIncomingResponse::get(&mut v.http, this)?;
    if ready.is_some() {
        v.release(rep);
    }
    if let Some(Ok(Ok(response))) = &ready {
        let bytes = map_bytes(&v.http.table.get(response)?.headers);
        v.charge(response.rep(), bytes)?;
    }
    Ok((ready,))
}

fn incoming_body_finish(
    v: &mut HeldView<'_>,
    (this,): (Resource<HostIncomingBody>,),
) -> wasmtime::Result<(Resource<HostFutureTrailers>,)> {
    let trailers = wit::HostIncomingBody::finish(&mut v.http, this)?;
    v.charge(trailers.rep(), TRAILER_BYTES)?;
    Ok((trailers,))
}

fn future_trailers_get(
    v: &mut HeldView<'_>,
    (this,): (Resource<HostFutureTrailers>,),
) -> wasmtime::Result<(Ready<Option<Fields>>,)> {
    let rep = this.rep();
    let ready = wit::HostFutureTrailers::get(&mut v.http, this)?;
    if ready.is_some() {
        v.release(rep);
    }
    if let Some(Ok(Ok(Some(fields)))) = &ready {
        v.charge_fields(fields)?;
    }
    Ok((ready,))
}

fn outgoing_body_finish(
    v: &mut HeldView<'_>,
    (this, trailers): (Resource<HostOutgoingBody>, Option<Fields>),
) -> wasmtime::Result<(Result<(), ErrorCode>,)> {
    if let Some(t) = &trailers {
        v.release(t.rep());
    }
    let done = wit::HostOutgoingBody::finish(&mut v.http, this, trailers);
    v.http_result(done).map(|r| (r,))
}

fn outparam_set(
    v: &mut HeldView<'_>,
    (this, response): (
        Resource<HostResponseOutparam>,
        Result<Resource<HostOutgoingResponse>, ErrorCode>,
    ),
) -> wasmtime::Result<()> {
    if let Ok(r) = &response {
        v.release(r.rep());
    }
    wit::HostResponseOutparam::set(&mut v.http, this, response)
}

fn handle(
    v: &mut HeldView<'_>,
    (request, options): (
        Resource<HostOutgoingRequest>,
        Option<Resource<wasmtime_wasi_http::RequestOptions>>,
    ),
) -> wasmtime::Result<(Result<Resource<HostFutureIncomingResponse>, ErrorCode>,)> {
    let from = request.rep();
    let sent = v.http.handle(request, options);
    let sent = v.http_result(sent)?;
    match &sent {
        // The request's headers live on in the task until they are written.
        Ok(future) => v.moved(from, future.rep(), RESPONSE_HEAD_BYTES)?,
        Err(_) => drop(v.release(from)),
    }
    Ok((sent,))
}

/// Defines `name` in `inst` as `f` over the store's [`HeldView`].
fn define<T, P, R>(
    inst: &mut LinkerInstance<'_, T>,
    name: &str,
    view: fn(&mut T) -> HeldView<'_>,
    f: fn(&mut HeldView<'_>, P) -> wasmtime::Result<R>,
) -> wasmtime::Result<()>
where
    T: Send + 'static,
    P: ComponentNamedList + Lift + 'static,
    R: ComponentNamedList + Lower + 'static,
{
    inst.func_wrap(
        name,
        move |mut store: wasmtime::StoreContextMut<'_, T>, params: P| {
            f(&mut view(store.data_mut()), params)
        },
    )
}

/// Redefines resource `name` so dropping one gives back its charge before `destroy` runs.
fn define_resource<T: Send + 'static, R: 'static>(
    inst: &mut LinkerInstance<'_, T>,
    name: &str,
    view: fn(&mut T) -> HeldView<'_>,
    destroy: fn(&mut WasiHttpCtxView<'_>, Resource<R>) -> wasmtime::Result<()>,
) -> wasmtime::Result<()> {
    inst.resource(name, ResourceType::host::<R>(), move |mut store, rep| {
        let mut v = view(store.data_mut());
        v.release(rep);
        destroy(&mut v.http, Resource::new_own(rep))
    })
}

/// Replaces, in `linker`, every `wasi:http` function that makes, grows, moves or ends a
/// resource holding header bytes by one that also keeps the process's charge (see the module
/// docs). The rest of `wasi:http` stays wasmtime-wasi-http's.
///
/// # Errors
/// wasmtime refused the definitions.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> HeldView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let mut types = linker.instance(TYPES)?;
    define_resource::<T, FieldMap>(&mut types, "fields", view, |v, r| {
        wit::HostFields::drop(v, r)
    })?;
    define_resource::<T, HostOutgoingRequest>(&mut types, "outgoing-request", view, |v, r| {
        wit::HostOutgoingRequest::drop(v, r)
    })?;
    define_resource::<T, HostOutgoingResponse>(&mut types, "outgoing-response", view, |v, r| {
        wit::HostOutgoingResponse::drop(v, r)
    })?;
    define_resource::<T, HostIncomingResponse>(&mut types, "incoming-response", view, |v, r| {
        wit::HostIncomingResponse::drop(v, r)
    })?;
    define_resource::<T, HostFutureIncomingResponse>(
        &mut types,
        "future-incoming-response",
        view,
        |v, r| wit::HostFutureIncomingResponse::drop(v, r),
    )?;
    define_resource::<T, HostFutureTrailers>(&mut types, "future-trailers", view, |v, r| {
        wit::HostFutureTrailers::drop(v, r)
    })?;
    define(&mut types, "[constructor]fields", view, fields_new)?;
    define(
        &mut types,
        "[static]fields.from-list",
        view,
        fields_from_list,
    )?;
    define(&mut types, "[method]fields.set", view, fields_set)?;
    define(&mut types, "[method]fields.append", view, fields_append)?;
    define(&mut types, "[method]fields.delete", view, fields_delete)?;
    define(&mut types, "[method]fields.clone", view, fields_clone)?;
    define(
        &mut types,
        "[constructor]outgoing-request",
        view,
        request_new,
    )?;
    define(
        &mut types,
        "[method]outgoing-request.headers",
        view,
        request_headers,
    )?;
    define(
        &mut types,
        "[constructor]outgoing-response",
        view,
        response_new,
    )?;
    define(
        &mut types,
        "[method]outgoing-response.headers",
        view,
        response_headers,
    )?;
    define(
        &mut types,
        "[method]incoming-request.headers",
        view,
        incoming_request_headers,
    )?;
    define(
        &mut types,
        "[method]incoming-response.headers",
        view,
        incoming_response_headers,
    )?;
    define(
        &mut types,
        "[method]future-incoming-response.get",
        view,
        future_response_get,
    )?;
    define(
        &mut types,
        "[static]incoming-body.finish",
        view,
        incoming_body_finish,
    )?;
    define(
        &mut types,
        "[method]future-trailers.get",
        view,
        future_trailers_get,
    )?;
    define(
        &mut types,
        "[static]outgoing-body.finish",
        view,
        outgoing_body_finish,
    )?;
    define(
        &mut types,
        "[static]response-outparam.set",
        view,
        outparam_set,
    )?;
    let mut outgoing = linker.instance(OUTGOING_HANDLER)?;
    define(&mut outgoing, "handle", view, handle)?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_bytes_counts_names_values_and_entries() {
        let mut map = HeaderMap::new();
        map.append("x-a", HeaderValue::from_static("12345"));
        map.append("x-a", HeaderValue::from_static("1"));
        assert_eq!(
            map_bytes(&map),
            3 + size_of::<HeaderName>() + 5 + 1 + 2 * size_of::<HeaderValue>()
        );
    }
}
