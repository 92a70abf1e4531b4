//! Where a child's stderr goes. It is always drained, never left to fill: a child blocked on a
//! full stderr would look hung. The three sinks never apply backpressure:
//!
//! - [`forward`]: copied to the host's stderr line by line, each line prefixed `[pid N] `.
//! - [`capture`]: kept in a bounded buffer the parent reads through `Process.stderr()`; bytes
//!   arriving while the buffer is full are dropped and counted, so a flood costs the host at
//!   most the buffer's size.
//! - discard: `tokio::io::empty()`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi_io::poll::Pollable;
use wasmtime_wasi_io::streams::{OutputStream, StreamError, StreamResult};

use crate::limits::STDERR_LINE_MAX;
use crate::transport::{pipe, PipeReader, PipeWriter};

/// A guest may always write this much at once to a non-blocking sink.
const SINK_BUDGET: usize = 64 * 1024;

/// Forwards a child's stderr line by line, prefixed with its pid: to the host's stderr, or
/// `into` a job's captured stderr (a daemon's jobs each have their own).
pub(crate) fn forward(pid: u32, into: Option<CaptureSink>) -> Box<dyn StdoutStream> {
    Box::new(SinkStream(ForwardSink(Arc::new(Mutex::new(
        LineForwarder {
            prefix: format!("[pid {pid}] "),
            partial: Vec::new(),
            into,
        },
    )))))
}

/// Writes bytes to the host's stderr line by line, each line prefixed with `prefix` and
/// escaped like a local child's (a remote child's forwarded stderr, `rpc/remote_child.rs`).
pub(crate) fn lines(prefix: String) -> Lines {
    Lines(LineForwarder {
        prefix,
        partial: Vec::new(),
        into: None,
    })
}

/// See [`lines`]; a partial last line is written when it is dropped.
pub(crate) struct Lines(LineForwarder);

impl Lines {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.0.push(data);
    }
}

/// Captures a child's stderr into a buffer of `capacity` bytes.
pub(crate) fn capture(capacity: usize) -> (Box<dyn StdoutStream>, CapturedStderr) {
    let (sink, captured) = capture_sink(capacity);
    (sink.stream(), captured)
}

/// A capture buffer of `capacity` bytes as a sink more than one writer may share (a job's
/// pid0 and its descendants' forwarded lines). The reader sees the end once every clone of
/// the sink is gone.
pub(crate) fn capture_sink(capacity: usize) -> (CaptureSink, CapturedStderr) {
    let (writer, reader) = pipe(capacity);
    let dropped = Arc::new(AtomicU64::new(0));
    let sink = CaptureSink {
        writer,
        dropped: dropped.clone(),
    };
    (sink, CapturedStderr { reader, dropped })
}

/// The reading side of a captured stderr.
#[derive(Clone)]
pub struct CapturedStderr {
    pub reader: PipeReader,
    dropped: Arc<AtomicU64>,
}

impl CapturedStderr {
    /// Bytes lost because the buffer was full when they arrived.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

struct LineForwarder {
    prefix: String,
    partial: Vec<u8>,
    /// `None`: the host's stderr.
    into: Option<CaptureSink>,
}

impl LineForwarder {
    fn push(&mut self, mut data: &[u8]) {
        while let Some(nl) = data.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&data[..=nl]);
            self.emit();
            data = &data[nl + 1..];
        }
        self.partial.extend_from_slice(data);
        if self.partial.len() >= STDERR_LINE_MAX {
            self.partial.push(b'\n');
            self.emit();
        }
    }

    fn emit(&mut self) {
        if self.partial.is_empty() {
            return;
        }
        // Escaped, so a child cannot forge another process's line (`\r[pid 0] cell: …`) or
        // drive the operator's terminal (ANSI/OSC sequences).
        let mut line = Vec::with_capacity(self.prefix.len() + self.partial.len());
        line.extend_from_slice(self.prefix.as_bytes());
        line.extend_from_slice(&crate::text::escape_line(&self.partial));
        self.partial.clear();
        match &self.into {
            Some(sink) => sink.accept(&line),
            // The host's stderr failing (closed terminal) must not fail the guest.
            None => {
                let _ = std::io::stderr().lock().write_all(&line);
            }
        }
    }
}

impl Drop for LineForwarder {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.partial.push(b'\n');
            self.emit();
        }
    }
}

/// What a non-blocking stderr sink does with each write. Implementors never wait and never
/// fail: a guest's stderr must not be able to stall it or the host.
trait Sink: Clone + Send + Sync + 'static {
    fn accept(&self, bytes: &[u8]);
}

/// Adapts a [`Sink`] to wasmtime-wasi's stream traits: always ready, with a fixed budget.
#[derive(Clone)]
struct SinkStream<S>(S);

impl<S: Sink> IsTerminal for SinkStream<S> {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl<S: Sink> StdoutStream for SinkStream<S> {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        // Only WASIp3 bindings use this, and cell does not link them.
        Box::new(tokio::io::sink())
    }
}

#[async_trait::async_trait]
impl<S: Sink> Pollable for SinkStream<S> {
    async fn ready(&mut self) {}
}

impl<S: Sink> OutputStream for SinkStream<S> {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        if bytes.len() > SINK_BUDGET {
            return Err(StreamError::trap("write exceeds the check-write budget"));
        }
        self.0.accept(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(SINK_BUDGET)
    }
}

#[derive(Clone)]
struct ForwardSink(Arc<Mutex<LineForwarder>>);

impl Sink for ForwardSink {
    fn accept(&self, bytes: &[u8]) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).push(bytes);
    }
}

/// The writing side of a capture buffer: never waits, drops and counts what does not fit.
#[derive(Clone)]
pub(crate) struct CaptureSink {
    writer: PipeWriter,
    dropped: Arc<AtomicU64>,
}

impl CaptureSink {
    /// The sink as a guest's stderr stream.
    pub(crate) fn stream(&self) -> Box<dyn StdoutStream> {
        Box::new(SinkStream(self.clone()))
    }
}

impl Sink for CaptureSink {
    fn accept(&self, bytes: &[u8]) {
        // A reader that went away (parent dropped the stream) just means nobody listens.
        let taken = self.writer.try_write_now(bytes).unwrap_or(bytes.len());
        let lost = (bytes.len() - taken) as u64;
        if lost > 0 {
            self.dropped.fetch_add(lost, Ordering::Relaxed);
        }
    }
}
