//! `futures::io::AsyncRead`/`AsyncWrite` over a host `ByteStream`, so guest code can use the
//! ecosystem's readers and writers (`read_to_end`, `copy`, codecs) on TCP streams and pipes.
//!
//! Each side keeps at most one call in flight: a read asks for up to [`READ_CHUNK`] bytes and
//! keeps what the caller's buffer could not take; a write is accepted as soon as its call is
//! sent (up to [`WRITE_CHUNK`] bytes of the caller's buffer), and its result is reported by the
//! next `poll_write`, `poll_flush` or `poll_close`. So the guest holds at most one chunk per
//! direction, and the host's backpressure (a write resolves once the data is accepted) holds.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use cell_proto::CellError;
use futures::io::{AsyncRead, AsyncWrite};

use crate::cell_capnp::byte_stream;

/// Bytes asked for per read call.
pub const READ_CHUNK: u32 = 64 * 1024;
/// Bytes sent per write call at most (the host refuses writes over 1 MiB).
pub const WRITE_CHUNK: usize = 64 * 1024;

type Call<T> = Pin<Box<dyn Future<Output = Result<T, capnp::Error>>>>;

/// A `ByteStream` as an `AsyncRead + AsyncWrite`. Not `Clone`: the in-flight calls are its own
/// (make another with `ByteStream::async_io`).
pub struct AsyncStream {
    client: byte_stream::Client,
    reading: Option<Call<Vec<u8>>>,
    /// Read but not yet handed out, and how much of it has been.
    unread: Vec<u8>,
    unread_from: usize,
    eof: bool,
    writing: Option<Call<()>>,
    closing: Option<Call<()>>,
}

/// A host error as an `io::Error`, keeping the typed [`CellError`] as its source.
fn io_error(e: capnp::Error) -> io::Error {
    let kind = match e.kind {
        capnp::ErrorKind::Disconnected => io::ErrorKind::BrokenPipe,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, CellError::from(e))
}

impl AsyncStream {
    /// Wraps a raw `ByteStream` client.
    pub fn new(client: byte_stream::Client) -> Self {
        AsyncStream {
            client,
            reading: None,
            unread: Vec::new(),
            unread_from: 0,
            eof: false,
            writing: None,
            closing: None,
        }
    }

    fn start_write(&self, data: &[u8]) -> Call<()> {
        let mut request = self.client.write_request();
        request.get().set_data(data);
        let promise = request.send().promise;
        Box::pin(async move {
            promise.await?;
            Ok(())
        })
    }

    /// Drives the write in flight, if any, to its end.
    fn poll_written(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(call) = self.writing.as_mut() {
            let result = futures::ready!(call.as_mut().poll(cx));
            self.writing = None;
            result.map_err(io_error)?;
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for AsyncStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        while this.unread_from == this.unread.len() {
            if this.eof {
                return Poll::Ready(Ok(0));
            }
            let call = this.reading.get_or_insert_with(|| read_call(&this.client));
            let result = futures::ready!(call.as_mut().poll(cx));
            this.reading = None;
            let data = result.map_err(io_error)?;
            this.eof = data.is_empty();
            this.unread = data;
            this.unread_from = 0;
        }
        let n = buf.len().min(this.unread.len() - this.unread_from);
        buf[..n].copy_from_slice(&this.unread[this.unread_from..this.unread_from + n]);
        this.unread_from += n;
        Poll::Ready(Ok(n))
    }
}

/// One read call of up to [`READ_CHUNK`] bytes.
fn read_call(client: &byte_stream::Client) -> Call<Vec<u8>> {
    let mut request = client.read_request();
    request.get().set_max_bytes(READ_CHUNK);
    let promise = request.send().promise;
    Box::pin(async move { Ok(promise.await?.get()?.get_data()?.to_vec()) })
}

impl AsyncWrite for AsyncStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        futures::ready!(this.poll_written(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(WRITE_CHUNK);
        this.writing = Some(this.start_write(&buf[..n]));
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_written(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        futures::ready!(this.poll_written(cx))?;
        let client = this.client.clone();
        let call = this.closing.get_or_insert_with(|| {
            let promise = client.close_request().send().promise;
            Box::pin(async move {
                promise.await?;
                Ok(())
            })
        });
        let result = futures::ready!(call.as_mut().poll(cx));
        this.closing = None;
        Poll::Ready(result.map_err(io_error))
    }
}
