//! `futures::io` adapters over the WASI stdin/stdout streams, for capnp-rpc.
//!
//! Why not `std::io::stdin()`/`stdout()`: they block the whole (single-threaded) guest inside
//! a read while the RPC system still has messages to write, or inside a write while the host
//! waits for us to read — a deadlock. These adapters never block: when a stream cannot make
//! progress they register interest with the [`runtime`](crate::runtime) and return `Pending`.
//!
//! Both adapters buffer, because every WASI stream call is a round trip through the component
//! model (and capnp-rpc writes and flushes every message separately):
//! - [`StdinReader`] reads whatever is available (up to [`READ_CHUNK`]) in one call and hands it
//!   out from the returned buffer, without copying it again.
//! - [`StdoutWriter`] collects messages in the *outbox* (at most [`OUTBOX_CAPACITY`] bytes) and
//!   its `flush` does not touch the stream: the runtime [`drain`]s the outbox once, right before
//!   it blocks, so all the messages of one loop iteration leave in one write. Writes larger than
//!   [`DIRECT_WRITE`] into an empty outbox go straight to the stream instead of being copied.

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use wasip2::io::streams::{OutputStream, StreamError};

use crate::runtime::{register, stdio, Interest};

fn stream_error(what: &str, e: StreamError) -> io::Error {
    match e {
        StreamError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, format!("{what}: closed")),
        StreamError::LastOperationFailed(e) => {
            io::Error::other(format!("{what}: {}", e.to_debug_string()))
        }
    }
}

/// The most one read from stdin asks for: a whole pipe's worth (the host's stdio pipes hold
/// 64 KiB), so that everything that arrived while the guest was busy is read in one call.
pub(crate) const READ_CHUNK: u64 = 64 * 1024;

/// The read half of the RPC connection: the process's stdin.
///
/// Holds the bytes of the last read not yet handed out (`pending[pos..]`); at most
/// [`READ_CHUNK`] bytes.
#[derive(Default)]
pub(crate) struct StdinReader {
    pending: Vec<u8>,
    pos: usize,
}

impl AsyncRead for StdinReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if self.pos == self.pending.len() {
            match stdio().stdin.read(READ_CHUNK) {
                Ok(bytes) if bytes.is_empty() => {
                    // Nothing available right now: wait until stdin is readable (or closed).
                    register(Interest::StdinReadable, cx.waker());
                    return Poll::Pending;
                }
                Ok(bytes) => {
                    self.pending = bytes;
                    self.pos = 0;
                }
                // End of stream: the host closed our connection. Reporting EOF (rather than an
                // error, or `Pending`) lets capnp-rpc shut down cleanly.
                Err(StreamError::Closed) => return Poll::Ready(Ok(0)),
                Err(e) => return Poll::Ready(Err(stream_error("stdin", e))),
            }
        }
        let this = &mut *self;
        let n = buf.len().min(this.pending.len() - this.pos);
        buf[..n].copy_from_slice(&this.pending[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(n))
    }
}

/// The most the outbox holds. A full outbox is drained first; what does not fit makes the
/// writer wait for the stream's pollable.
pub(crate) const OUTBOX_CAPACITY: usize = 64 * 1024;

/// Writes at least this large, into an empty outbox, are written to the stream directly (as far
/// as the `check-write` budget allows) rather than copied into the outbox first.
pub(crate) const DIRECT_WRITE: usize = 16 * 1024;

/// Bytes written to stdout by the RPC system and not yet handed to the stream.
struct Outbox {
    buf: Vec<u8>,
    /// The stream failed (e.g. the host closed it) while draining: reported by the next write
    /// or flush; nothing is written after it.
    failed: Option<(io::ErrorKind, String)>,
}

thread_local! {
    static OUTBOX: RefCell<Outbox> = const {
        RefCell::new(Outbox { buf: Vec::new(), failed: None })
    };
}

impl Outbox {
    fn check(&self) -> io::Result<()> {
        match &self.failed {
            Some((kind, what)) => Err(io::Error::new(*kind, what.clone())),
            None => Ok(()),
        }
    }

    /// Hands as much of the outbox to the stream as its `check-write` budget allows, then asks
    /// the stream to flush. Never blocks; returns whether the outbox is now empty.
    fn drain(&mut self, out: &OutputStream) -> io::Result<bool> {
        self.check()?;
        let mut sent = 0;
        let result = loop {
            if sent == self.buf.len() {
                break Ok(());
            }
            match out.check_write() {
                Ok(0) => break Ok(()),
                Ok(budget) => {
                    let n = usize::try_from(budget)
                        .unwrap_or(usize::MAX)
                        .min(self.buf.len() - sent);
                    match out.write(&self.buf[sent..sent + n]) {
                        Ok(()) => sent += n,
                        Err(e) => break Err(stream_error("stdout", e)),
                    }
                }
                Err(e) => break Err(stream_error("stdout", e)),
            }
        };
        let result = result.and_then(|()| match sent {
            0 => Ok(()),
            _ => out.flush().map_err(|e| stream_error("stdout", e)),
        });
        self.buf.drain(..sent);
        if let Err(e) = result {
            self.buf = Vec::new();
            self.failed = Some((e.kind(), e.to_string()));
            return Err(e);
        }
        Ok(self.buf.is_empty())
    }
}

impl Outbox {
    /// Takes some of `buf` (a non-empty write): into the outbox, or straight to the stream
    /// when it is large and the outbox empty. `None` (after registering `cx`) when neither the
    /// outbox nor the stream has room.
    fn write(
        &mut self,
        out: &OutputStream,
        buf: &[u8],
        cx: &Context<'_>,
    ) -> io::Result<Option<usize>> {
        self.check()?;
        if self.buf.len() + buf.len() > OUTBOX_CAPACITY {
            self.drain(out)?;
        }
        if self.buf.is_empty() && buf.len() >= DIRECT_WRITE {
            let budget = out.check_write().map_err(|e| stream_error("stdout", e))?;
            if budget > 0 {
                let n = usize::try_from(budget).unwrap_or(usize::MAX).min(buf.len());
                out.write(&buf[..n])
                    .map_err(|e| stream_error("stdout", e))?;
                return Ok(Some(n));
            }
        }
        let n = (OUTBOX_CAPACITY - self.buf.len()).min(buf.len());
        if n == 0 {
            register(Interest::StdoutWritable, cx.waker());
            return Ok(None);
        }
        self.buf.extend_from_slice(&buf[..n]);
        Ok(Some(n))
    }
}

/// Pushes the outbox to stdout before the runtime blocks. If bytes remain (the stream is full),
/// registers `waker` for stdout becoming writable, so the loop drains again once it is.
/// A stream error is kept for the RPC system's next write (which then fails).
pub(crate) fn drain(waker: &std::task::Waker) {
    OUTBOX.with(|o| {
        let mut o = o.borrow_mut();
        if !o.buf.is_empty() && matches!(o.drain(&stdio().stdout), Ok(false)) {
            register(Interest::StdoutWritable, waker);
        }
    });
}

/// The write half of the RPC connection: the process's stdout, through the outbox.
///
/// Every write to the stream is bounded by `check-write` (writing past that budget traps the
/// guest), and a budget of 0 means "wait for the stream's pollable".
#[derive(Default)]
pub(crate) struct StdoutWriter;

impl AsyncWrite for StdoutWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        match OUTBOX.with(|o| o.borrow_mut().write(&stdio().stdout, buf, cx)) {
            Ok(Some(n)) => Poll::Ready(Ok(n)),
            Ok(None) => Poll::Pending,
            Err(e) => Poll::Ready(Err(e)),
        }
    }

    /// Does not touch the stream: the runtime drains the outbox right before it blocks (that
    /// is, once every message this iteration produced is in it). Reports an earlier failure.
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(OUTBOX.with(|o| o.borrow().check()))
    }

    /// Drains the outbox, waiting for the stream as needed.
    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        OUTBOX.with(|o| match o.borrow_mut().drain(&stdio().stdout) {
            Ok(true) => Poll::Ready(Ok(())),
            Ok(false) => {
                register(Interest::StdoutWritable, cx.waker());
                Poll::Pending
            }
            Err(e) => Poll::Ready(Err(e)),
        })
    }
}
