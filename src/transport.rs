//! Bounded in-memory byte pipes between a guest's WASI stdio and the host.
//!
//! A process's stdin and stdout are each one [`pipe`]: the guest holds one end as a WASI
//! stream (through [`GuestInput`] / [`GuestOutput`], which implement wasmtime-wasi's
//! `StdinStream` / `StdoutStream`), the host holds the other end as a `futures` async reader or
//! writer ([`HostReader`] / [`HostWriter`]) that capnp-rpc (or a `ByteStream` server) drives.
//!
//! Invariants:
//! - A pipe never holds more than its capacity: the guest's `check-write` budget is exactly the
//!   free space, so a guest that writes faster than the host reads is slowed down, never
//!   buffered without bound, and the host end's writes wait (backpressure) the same way.
//! - Each end closes when its last handle is dropped; the other end then sees end-of-stream
//!   (reader) or a broken pipe (writer). Dropping a guest's `Store` therefore ends its RPC
//!   connection.
//! - Both ends live on the supervisor's single thread; the `Mutex` is never contended and only
//!   exists because wasmtime-wasi requires `Send` streams.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{InputStream, OutputStream, StreamError, StreamResult};

/// What a pipe allocates for its first write after it was empty. A drained pipe gives its
/// buffer back, whatever its size, rather than hold it while idle: an idle process's two pipes
/// then hold nothing (keeping 4 KiB each cost 8 KiB per idle SDK guest; allocating again on
/// the next write is one `malloc` per burst, not measurable in an echo).
const IDLE_BUFFER: usize = 4 * 1024;
/// The shared state of one pipe.
struct PipeState {
    buf: BytesMut,
    capacity: usize,
    reader_closed: bool,
    writer_closed: bool,
    /// Why the writer closed, when it failed (e.g. the host's stdin is a directory): the
    /// reader sees this error after the data, instead of a clean end of stream.
    failure: Option<String>,
    /// Woken when data arrives or the writer closes.
    reader_waker: Option<Waker>,
    /// Woken when space frees up or the reader closes.
    writer_waker: Option<Waker>,
    /// Like `writer_waker`, for a [`SpaceProbe`] (which is not the writer).
    probe_waker: Option<Waker>,
}

/// A handle on a pipe's state.
#[derive(Clone)]
struct Pipe(Arc<Mutex<PipeState>>);

/// What a non-blocking read found.
enum ReadOutcome {
    Data(Bytes),
    Empty,
    Eof,
    /// The writer failed (after all its data was read); the message says why.
    Failed(String),
}

impl Pipe {
    fn lock(&self) -> MutexGuard<'_, PipeState> {
        // A poisoned lock means a panic while holding it; the state is still consistent (every
        // critical section is a few field updates), so keep going rather than cascade the panic.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends as much of `data` as fits; returns how much was taken.
    fn try_write(&self, data: &[u8]) -> io::Result<usize> {
        let mut s = self.lock();
        if s.reader_closed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let n = data.len().min(s.capacity - s.buf.len());
        if n > 0 {
            if s.buf.capacity() == 0 {
                // One allocation for this write and what usually follows it, not a doubling
                // series from zero.
                let want = n.max(IDLE_BUFFER).min(s.capacity);
                s.buf.reserve(want);
            }
            s.buf.extend_from_slice(&data[..n]);
            if let Some(w) = s.reader_waker.take() {
                w.wake();
            }
        }
        Ok(n)
    }

    /// Free space, or `None` once the reader is gone.
    fn free(&self) -> Option<usize> {
        let s = self.lock();
        (!s.reader_closed).then(|| s.capacity - s.buf.len())
    }

    fn try_read(&self, max: usize) -> ReadOutcome {
        let mut s = self.lock();
        if s.buf.is_empty() {
            return match (&s.failure, s.writer_closed) {
                (Some(why), _) => ReadOutcome::Failed(why.clone()),
                (None, true) => ReadOutcome::Eof,
                (None, false) => ReadOutcome::Empty,
            };
        }
        let n = max.min(s.buf.len());
        let data = s.buf.split_to(n).freeze();
        if s.buf.is_empty() && s.buf.capacity() > 0 {
            // Drained: let the allocation go with the last `Bytes` read from it, so an idle
            // pipe (most of a process's life) holds no buffer; the next write allocates again.
            s.buf = BytesMut::new();
        }
        s.wake_writers();
        ReadOutcome::Data(data)
    }

    /// Ready when there is data to read or the writer has closed.
    fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if !s.buf.is_empty() || s.writer_closed {
            return Poll::Ready(());
        }
        s.reader_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    /// Ready when there is space to write or the reader has closed.
    fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.buf.len() < s.capacity || s.reader_closed {
            return Poll::Ready(());
        }
        s.writer_waker = Some(cx.waker().clone());
        Poll::Pending
    }

    fn fail_writer(&self, why: String) {
        self.lock().failure = Some(why);
        self.close_writer();
    }

    fn close_writer(&self) {
        let mut s = self.lock();
        s.writer_closed = true;
        if let Some(w) = s.reader_waker.take() {
            w.wake();
        }
    }

    fn close_reader(&self) {
        let mut s = self.lock();
        s.reader_closed = true;
        s.buf.clear();
        s.wake_writers();
    }

    /// Ready when there is space or the reader has closed; uses the probe's own waker slot.
    fn poll_space(&self, cx: &mut Context<'_>) -> Poll<()> {
        let mut s = self.lock();
        if s.buf.len() < s.capacity || s.reader_closed {
            return Poll::Ready(());
        }
        s.probe_waker = Some(cx.waker().clone());
        Poll::Pending
    }
}

impl PipeState {
    fn wake_writers(&mut self) {
        for w in [self.writer_waker.take(), self.probe_waker.take()]
            .into_iter()
            .flatten()
        {
            w.wake();
        }
    }
}

/// Closes one side of a pipe when the last handle on that side is dropped.
struct WriteSide(Pipe);
impl Drop for WriteSide {
    fn drop(&mut self) {
        self.0.close_writer();
    }
}
struct ReadSide(Pipe);
impl Drop for ReadSide {
    fn drop(&mut self) {
        self.0.close_reader();
    }
}

/// Creates a pipe holding at most `capacity` bytes; returns its writing and reading ends.
pub fn pipe(capacity: usize) -> (PipeWriter, PipeReader) {
    let p = Pipe(Arc::new(Mutex::new(PipeState {
        buf: BytesMut::new(),
        capacity: capacity.max(1),
        reader_closed: false,
        writer_closed: false,
        failure: None,
        reader_waker: None,
        writer_waker: None,
        probe_waker: None,
    })));
    (
        PipeWriter(Arc::new(WriteSide(p.clone()))),
        PipeReader(Arc::new(ReadSide(p))),
    )
}

/// The writing end of a pipe. Clones share the end; it closes when the last clone drops.
#[derive(Clone)]
pub struct PipeWriter(Arc<WriteSide>);

/// The reading end of a pipe. Clones share the end; it closes when the last clone drops.
#[derive(Clone)]
pub struct PipeReader(Arc<ReadSide>);

impl PipeWriter {
    fn pipe(&self) -> &Pipe {
        &self.0 .0
    }

    /// Waits for space, then writes as much of `data` as fits.
    pub async fn write(&self, data: &[u8]) -> io::Result<usize> {
        std::future::poll_fn(|cx| self.pipe().poll_writable(cx)).await;
        self.pipe().try_write(data)
    }

    /// Writes all of `data`, waiting for space as needed.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let n = self.write(data).await?;
            data = &data[n..];
        }
        Ok(())
    }

    /// Writes as much of `data` as fits right now, without waiting.
    ///
    /// # Errors
    /// `BrokenPipe` once the reader is gone.
    pub fn try_write_now(&self, data: &[u8]) -> io::Result<usize> {
        self.pipe().try_write(data)
    }

    /// Marks the end of the stream for the reader, even while other clones of this end live.
    pub fn close(&self) {
        self.pipe().close_writer();
    }

    /// Ends the stream with an error: a guest reading its stdin sees `why` as a failed read
    /// (after what was written before), not end of input.
    pub(crate) fn fail(&self, why: String) {
        self.pipe().fail_writer(why);
    }

    /// Converts into the host-side `futures` writer.
    pub fn into_host(self) -> HostWriter {
        HostWriter(self)
    }

    /// Converts into the guest-side WASI stdout/stdin stream factory.
    pub fn into_guest(self) -> GuestOutput {
        GuestOutput(self)
    }
}

impl PipeReader {
    fn pipe(&self) -> &Pipe {
        &self.0 .0
    }

    /// Waits for data; returns at most `max` bytes, or an empty buffer at end of stream.
    pub async fn read(&self, max: usize) -> Bytes {
        loop {
            std::future::poll_fn(|cx| self.pipe().poll_readable(cx)).await;
            match self.pipe().try_read(max.max(1)) {
                ReadOutcome::Data(d) => return d,
                // A ByteStream has no error on read: a failed writer is an end of stream here.
                ReadOutcome::Eof | ReadOutcome::Failed(_) => return Bytes::new(),
                ReadOutcome::Empty => continue,
            }
        }
    }

    /// Converts into the host-side `futures` reader.
    pub fn into_host(self) -> HostReader {
        HostReader(self)
    }

    /// Converts into the guest-side WASI stdin stream factory.
    pub fn into_guest(self) -> GuestInput {
        GuestInput(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Host ends: `futures::io` traits, as capnp-rpc's two-party transport expects.

/// The host's reading end (a guest's stdout).
pub struct HostReader(PipeReader);

impl futures::io::AsyncRead for HostReader {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let pipe = self.0.pipe();
        loop {
            match pipe.try_read(out.len()) {
                ReadOutcome::Data(d) => {
                    out[..d.len()].copy_from_slice(&d);
                    return Poll::Ready(Ok(d.len()));
                }
                ReadOutcome::Eof => return Poll::Ready(Ok(0)),
                ReadOutcome::Failed(why) => return Poll::Ready(Err(io::Error::other(why))),
                ReadOutcome::Empty => {
                    if pipe.poll_readable(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

/// A host reader that reads only while a paired pipe has free space.
///
/// Used for a guest's RPC connection, paired with the guest's stdin: every call the host reads
/// may produce a reply written to the guest's stdin, and capnp-rpc queues replies it cannot
/// write yet without bound. A guest that sends calls but never reads its replies would grow that
/// queue forever; pacing stops reading its calls while its stdin is full, so the queue holds at
/// most the replies of calls already read (bounded by `max-outstanding-calls`). A guest that
/// reads its stdin (every cell-guest does, concurrently with writing) never notices.
pub struct PacedReader {
    inner: HostReader,
    pace: Pipe,
}

impl HostReader {
    /// This reader, reading only while `pace`'s pipe has free space.
    pub fn paced_by(self, pace: &HostWriter) -> PacedReader {
        PacedReader {
            inner: self,
            pace: pace.0.pipe().clone(),
        }
    }
}

impl futures::io::AsyncRead for PacedReader {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        if self.pace.poll_space(cx).is_pending() {
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, out)
    }
}

/// The host's writing end (a guest's stdin).
pub struct HostWriter(PipeWriter);

impl futures::io::AsyncWrite for HostWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let pipe = self.0.pipe();
        loop {
            match pipe.try_write(data) {
                Ok(0) if !data.is_empty() => {
                    if pipe.poll_writable(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
                other => return Poll::Ready(other),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // Written bytes are visible to the reader at once: there is nothing to flush.
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.close();
        Poll::Ready(Ok(()))
    }
}

// ---------------------------------------------------------------------------------------------
// Guest ends: wasmtime-wasi stdio stream factories.

/// A guest's stdin, reading from a pipe the host writes.
#[derive(Clone)]
pub struct GuestInput(PipeReader);

/// A guest's stdout (or stdin of the host side), writing into a pipe the host reads.
#[derive(Clone)]
pub struct GuestOutput(PipeWriter);

impl IsTerminal for GuestInput {
    fn is_terminal(&self) -> bool {
        false
    }
}
impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for GuestInput {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl Pollable for GuestInput {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.0.pipe().poll_readable(cx)).await
    }
}

impl InputStream for GuestInput {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        match self.0.pipe().try_read(size) {
            ReadOutcome::Data(d) => Ok(d),
            ReadOutcome::Empty => Ok(Bytes::new()),
            ReadOutcome::Eof => Err(StreamError::Closed),
            ReadOutcome::Failed(why) => {
                Err(StreamError::LastOperationFailed(wasmtime::Error::msg(why)))
            }
        }
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {
        std::future::poll_fn(|cx| self.0.pipe().poll_writable(cx)).await
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let pipe = self.0.pipe();
        match pipe.free() {
            None => Err(StreamError::Closed),
            Some(free) if bytes.len() > free => Err(StreamError::Trap(wasmtime::format_err!(
                "write of {} bytes exceeds the check-write budget of {free}",
                bytes.len()
            ))),
            Some(_) => match pipe.try_write(&bytes) {
                Ok(_) => Ok(()),
                Err(_) => Err(StreamError::Closed),
            },
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Bytes are handed to the reader on write; flushing has nothing left to do.
        match self.0.pipe().free() {
            Some(_) => Ok(()),
            None => Err(StreamError::Closed),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.0.pipe().free().ok_or(StreamError::Closed)
    }
}

// `StdinStream::async_stream` / `StdoutStream::async_stream` are only used by WASIp3 bindings,
// which cell does not link; they are implemented for completeness over the same pipe.
impl tokio::io::AsyncRead for GuestInput {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let pipe = self.0.pipe();
        loop {
            match pipe.try_read(buf.remaining()) {
                ReadOutcome::Data(d) => {
                    buf.put_slice(&d);
                    return Poll::Ready(Ok(()));
                }
                ReadOutcome::Eof => return Poll::Ready(Ok(())),
                ReadOutcome::Failed(why) => return Poll::Ready(Err(io::Error::other(why))),
                ReadOutcome::Empty => {
                    if pipe.poll_readable(cx).is_pending() {
                        return Poll::Pending;
                    }
                }
            }
        }
    }
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        futures::io::AsyncWrite::poll_write(Pin::new(&mut HostWriter(self.0.clone())), cx, data)
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.0.close();
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn a_drained_pipe_holds_no_buffer() {
        let (w, r) = pipe(64 * 1024);
        assert_eq!(
            w.pipe().lock().buf.capacity(),
            0,
            "nothing allocated before a write"
        );
        assert_eq!(w.try_write_now(&[7u8; 10_000]).ok(), Some(10_000));
        assert!(w.pipe().lock().buf.capacity() >= 10_000);
        let mut got = 0;
        while got < 10_000 {
            got += r.read(4096).await.len();
        }
        assert_eq!(
            w.pipe().lock().buf.capacity(),
            0,
            "the drained buffer was given back"
        );
        // And it works again after.
        assert_eq!(w.try_write_now(b"again").ok(), Some(5));
        assert_eq!(&r.read(16).await[..], b"again");
        assert_eq!(
            w.pipe().lock().buf.capacity(),
            0,
            "a small message's buffer is given back too (an idle RPC pipe)"
        );
    }

    #[tokio::test]
    async fn bytes_flow_and_eof_follows_writer_drop() {
        let (w, r) = pipe(4);
        let mut host = r.into_host();
        let mut guest = w.into_guest();
        assert_eq!(guest.check_write().ok(), Some(4));
        assert!(
            guest.write(Bytes::from_static(b"abcde")).is_err(),
            "past budget"
        );
        guest.write(Bytes::from_static(b"abcd")).ok();
        assert_eq!(guest.check_write().ok(), Some(0));
        let mut buf = [0u8; 8];
        assert_eq!(host.read(&mut buf).await.ok(), Some(4));
        assert_eq!(&buf[..4], b"abcd");
        drop(guest);
        assert_eq!(host.read(&mut buf).await.ok(), Some(0), "eof");
    }

    #[tokio::test]
    async fn writer_sees_broken_pipe_after_reader_drop() {
        let (w, r) = pipe(4);
        let mut host = w.into_host();
        drop(r);
        assert!(host.write_all(b"x").await.is_err());
    }

    #[tokio::test]
    async fn guest_input_reports_closed_at_eof() {
        let (w, r) = pipe(8);
        let mut guest = r.into_guest();
        w.write_all(b"hi").await.ok();
        assert_eq!(guest.read(8).ok().as_deref(), Some(&b"hi"[..]));
        assert_eq!(guest.read(8).ok().map(|b| b.len()), Some(0));
        drop(w);
        assert!(matches!(guest.read(8), Err(StreamError::Closed)));
    }

    #[tokio::test]
    async fn paced_reader_waits_while_the_paired_pipe_is_full() {
        use futures::FutureExt;
        let (out_w, out_r) = pipe(8);
        let (in_w, in_r) = pipe(2);
        let mut to_guest = in_w.into_host();
        let mut from_guest = out_r.into_host().paced_by(&to_guest);
        let mut guest_out = out_w.into_guest();
        guest_out.write(Bytes::from_static(b"call")).ok();
        to_guest.write_all(b"rr").await.unwrap(); // the guest's stdin is now full
        let mut buf = [0u8; 8];
        assert!(from_guest.read(&mut buf).now_or_never().is_none(), "paced");
        let guest_in = in_r.into_guest();
        let mut guest_in2 = guest_in.clone();
        assert!(matches!(InputStream::read(&mut guest_in2, 1), Ok(b) if b.len() == 1));
        assert_eq!(from_guest.read(&mut buf).await.ok(), Some(4));
    }
}
