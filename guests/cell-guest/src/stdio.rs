//! `futures::io` adapters over the WASI stdin/stdout streams, for capnp-rpc.
//!
//! Why not `std::io::stdin()`/`stdout()`: they block the whole (single-threaded) guest inside
//! a read while the RPC system still has messages to write, or inside a write while the host
//! waits for us to read — a deadlock. These adapters never block: when a stream cannot make
//! progress they register interest with the [`runtime`](crate::runtime) and return `Pending`.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::io::{AsyncRead, AsyncWrite};
use wasip2::io::streams::StreamError;

use crate::runtime::{register, stdio, Interest};

fn stream_error(what: &str, e: StreamError) -> io::Error {
    match e {
        StreamError::Closed => io::Error::new(io::ErrorKind::BrokenPipe, format!("{what}: closed")),
        StreamError::LastOperationFailed(e) => {
            io::Error::other(format!("{what}: {}", e.to_debug_string()))
        }
    }
}

/// The read half of the RPC connection: the process's stdin.
pub(crate) struct StdinReader;

impl AsyncRead for StdinReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let max = u64::try_from(buf.len()).unwrap_or(u64::MAX);
        match stdio().stdin.read(max) {
            Ok(bytes) if bytes.is_empty() => {
                // Nothing available right now: wait until stdin is readable (or closed).
                register(Interest::StdinReadable, cx.waker());
                Poll::Pending
            }
            Ok(bytes) if bytes.len() > buf.len() => Poll::Ready(Err(io::Error::other(format!(
                "stdin: read returned {} bytes for a {}-byte buffer",
                bytes.len(),
                buf.len()
            )))),
            Ok(bytes) => {
                buf[..bytes.len()].copy_from_slice(&bytes);
                Poll::Ready(Ok(bytes.len()))
            }
            // End of stream: the host closed our connection. Reporting EOF (rather than an
            // error, or `Pending`) lets capnp-rpc shut down cleanly.
            Err(StreamError::Closed) => Poll::Ready(Ok(0)),
            Err(e) => Poll::Ready(Err(stream_error("stdin", e))),
        }
    }
}

/// The write half of the RPC connection: the process's stdout.
///
/// Every write is bounded by `check-write` (writing past that budget traps the guest), and a
/// budget of 0 means "wait for the stream's pollable".
#[derive(Default)]
pub(crate) struct StdoutWriter {
    /// A `flush` was requested and has not been seen to complete yet.
    flushing: bool,
}

impl AsyncWrite for StdoutWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let out = &stdio().stdout;
        match out.check_write() {
            Ok(0) => {
                register(Interest::StdoutWritable, cx.waker());
                Poll::Pending
            }
            Ok(budget) => {
                // A non-zero budget also means any earlier flush has completed.
                self.flushing = false;
                let n = usize::try_from(budget).unwrap_or(usize::MAX).min(buf.len());
                match out.write(&buf[..n]) {
                    Ok(()) => Poll::Ready(Ok(n)),
                    Err(e) => Poll::Ready(Err(stream_error("stdout", e))),
                }
            }
            Err(e) => Poll::Ready(Err(stream_error("stdout", e))),
        }
    }

    /// Requests a flush, then waits until the stream accepts writes again, which is how WASI
    /// signals that the flush completed.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let out = &stdio().stdout;
        if !self.flushing {
            if let Err(e) = out.flush() {
                return Poll::Ready(Err(stream_error("stdout", e)));
            }
            self.flushing = true;
        }
        match out.check_write() {
            Ok(0) => {
                register(Interest::StdoutWritable, cx.waker());
                Poll::Pending
            }
            Ok(_) => {
                self.flushing = false;
                Poll::Ready(Ok(()))
            }
            Err(e) => Poll::Ready(Err(stream_error("stdout", e))),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}
