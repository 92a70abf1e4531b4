//! `ByteStream` over a host pipe end: captured stderr, plain children's stdio, the terminal.
//!
//! Calls on one stream are served one at a time (reads queue behind reads, writes behind
//! writes), which keeps byte order and means each pipe end has a single waiter.

use capnp::capability::Rc;
use tokio::sync::Mutex;

use crate::budget::ByteBudget;
use crate::cell_capnp::byte_stream;
use crate::limits::{MAX_READ_CHUNK, NET_MAX_WRITE};
use crate::rpc::conn::Conn;
use crate::rpc::fail::failed;
use crate::rpc::gate::{CallGate, InFlight};
use crate::transport::{PipeReader, PipeWriter};
use cell_proto::Reason;

/// Refuses a single write larger than [`NET_MAX_WRITE`] (a guest writes more in several calls).
///
/// # Errors
/// `limit: write of N bytes exceeds …`.
pub(crate) fn check_write_size(len: usize) -> Result<(), capnp::Error> {
    if len > NET_MAX_WRITE {
        return Err(failed(
            Reason::Limit,
            format!("write of {len} bytes exceeds the {NET_MAX_WRITE}-byte maximum"),
        ));
    }
    Ok(())
}

/// How many bytes a `ByteStream.read(max_bytes)` may return, the same for every stream (pipes
/// and TCP): `max_bytes` capped at [`MAX_READ_CHUNK`], and 0 meaning "as much as is there, up
/// to [`MAX_READ_CHUNK`]". A read always waits for at least one byte (or the end).
pub(crate) fn read_size(max_bytes: u32) -> usize {
    match max_bytes as usize {
        0 => MAX_READ_CHUNK,
        asked => asked.min(MAX_READ_CHUNK),
    }
}

pub(crate) struct ByteStreamServer {
    reader: Option<Mutex<PipeReader>>,
    writer: Option<Mutex<PipeWriter>>,
    /// The call bound of the connection this stream was issued on; `None` = unbounded (only
    /// for streams never handed to a guest).
    gate: Option<CallGate>,
    /// The owning process's budget of bytes waiting in the host to be written: writes queued
    /// behind a child that does not read its stdin hold their bytes against it.
    budget: Option<ByteBudget>,
}

impl ByteStreamServer {
    pub(crate) fn reader(r: PipeReader) -> Self {
        ByteStreamServer {
            reader: Some(Mutex::new(r)),
            writer: None,
            gate: None,
            budget: None,
        }
    }

    pub(crate) fn writer(w: PipeWriter) -> Self {
        ByteStreamServer {
            reader: None,
            writer: Some(Mutex::new(w)),
            gate: None,
            budget: None,
        }
    }

    /// Issues this stream on `conn`: its calls count against that connection's call gate,
    /// its queued writes against its in-flight budget.
    pub(crate) fn on(self, conn: &Conn) -> Self {
        self.gated(conn.gate().clone(), conn.in_flight().clone())
    }

    /// Issues this stream on a connection with this call bound and in-flight budget (a
    /// daemon client's, which has no `Conn`).
    pub(crate) fn gated(mut self, gate: CallGate, budget: ByteBudget) -> Self {
        self.gate = Some(gate);
        self.budget = Some(budget);
        self
    }

    fn enter(&self) -> Result<Option<InFlight>, capnp::Error> {
        self.gate.as_ref().map(CallGate::enter).transpose()
    }
}

impl byte_stream::Server for ByteStreamServer {
    async fn read(
        self: Rc<Self>,
        params: byte_stream::ReadParams,
        mut results: byte_stream::ReadResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.enter()?;
        let max = read_size(params.get()?.get_max_bytes());
        drop(params);
        let reader = self
            .reader
            .as_ref()
            .ok_or_else(|| failed(Reason::Unsupported, "this stream is write-only"))?;
        let reader = reader.lock().await;
        if let Some(gate) = &self.gate {
            gate.reply_room().await;
        }
        let data = reader.read(max).await;
        results.get().set_data(&data);
        Ok(())
    }

    async fn write(
        self: Rc<Self>,
        params: byte_stream::WriteParams,
        _: byte_stream::WriteResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.enter()?;
        let writer = self
            .writer
            .as_ref()
            .ok_or_else(|| failed(Reason::Unsupported, "this stream is read-only"))?;
        let data = params.get()?.get_data()?;
        check_write_size(data.len())?;
        // What waits is charged twice over: its bytes to the owner's in-flight budget, and the
        // call's message (held until the write is done) to the connection by `rpc::flow`.
        let _bytes = self
            .budget
            .as_ref()
            .map(|b| b.reserve(data.len()))
            .transpose()?;
        writer
            .lock()
            .await
            .write_all(data)
            .await
            .map_err(|e| failed(Reason::Closed, e))
    }

    async fn close(
        self: Rc<Self>,
        _: byte_stream::CloseParams,
        _: byte_stream::CloseResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.enter()?;
        if let Some(w) = &self.writer {
            w.lock().await.close();
        }
        Ok(())
    }
}
