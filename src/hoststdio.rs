//! The host's own stdin and stdout, handed to a guest: a plain pid0's stdio (`cell run --plain`)
//! and the terminal capability (`cell run --tty`).
//!
//! Both directions go through a bounded [`pipe`] and a plain OS thread, never through the
//! supervisor's runtime:
//! - stdin is read by a blocking thread. tokio's stdin would put a terminal into `O_NONBLOCK`
//!   mode, and a read that finds nothing then looks like end of input to the guest.
//! - stdout is written by a thread draining a pipe. A host stdout nobody reads (a full pipe)
//!   then blocks only that thread; the guest is slowed by backpressure and can still be killed
//!   or time out.
//!
//! Bounds: at most [`PIPE_CAPACITY`] bytes wait in each pipe, plus one [`IO_CHUNK`] in the
//! thread. The stdin thread starts only when a guest first asks for its stdin (so a guest that
//! never reads does not consume what the operator types), and ends at end of input or once
//! the guest side is gone; a thread blocked reading a terminal ends with the process.

use std::cell::RefCell;
use std::io::{Read as _, Write as _};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};

use crate::limits::PIPE_CAPACITY;
use crate::transport::{pipe, GuestInput, GuestOutput, PipeReader, PipeWriter};

/// Bytes moved per read or write by the bridge threads.
const IO_CHUNK: usize = 16 * 1024;

/// Starts the thread copying the host's stdin into a bounded pipe; returns the reading end.
fn bridge_stdin() -> PipeReader {
    let (writer, reader) = pipe(PIPE_CAPACITY);
    let spawned = std::thread::Builder::new()
        .name("cell-stdin".into())
        .spawn(move || copy_stdin(writer));
    if let Err(e) = spawned {
        // The writer was dropped with the closure: the guest sees end of input.
        tracing::error!("cannot start the stdin thread ({e}); the guest's stdin is empty");
    }
    reader
}

fn copy_stdin(writer: PipeWriter) {
    let mut stdin = std::io::stdin().lock();
    let mut buf = vec![0u8; IO_CHUNK];
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                // Passed on: the guest's read fails with it (e.g. EISDIR for `< /tmp`), as a
                // native program's would, instead of seeing end of input.
                tracing::debug!("reading the host's stdin: {e}");
                writer.fail(e.to_string());
                return;
            }
        };
        if futures::executor::block_on(writer.write_all(&buf[..n])).is_err() {
            // The guest side is gone; nobody will read more.
            break;
        }
    }
    writer.close();
}

/// The host's stdin, started on first use.
#[derive(Default)]
struct LazyStdin(OnceLock<PipeReader>);

impl LazyStdin {
    fn reader(&self) -> PipeReader {
        self.0.get_or_init(bridge_stdin).clone()
    }
}

/// The host's stdin and stdout, lent to the guests of one run: as a plain pid0's WASI stdio,
/// or as the `Session.terminal` streams. Nothing starts until first used; each direction is
/// started at most once and shared by every user.
#[derive(Default)]
pub struct HostStdio {
    stdin: Arc<LazyStdin>,
    stdout: RefCell<Option<StdoutDrain>>,
}

impl HostStdio {
    /// The reading end of the host's stdin.
    pub fn input(&self) -> PipeReader {
        self.stdin.reader()
    }

    /// The writing end of the pipe to the host's stdout.
    pub fn output(&self) -> PipeWriter {
        self.drain(|d| d.writer.clone())
    }

    /// The host's stdin as a guest's WASI stdin.
    pub fn guest_stdin(&self) -> HostStdin {
        HostStdin {
            stdin: self.stdin.clone(),
            tty: std::io::IsTerminal::is_terminal(&std::io::stdin()),
        }
    }

    /// The host's stdout as a guest's WASI stdout.
    pub fn guest_stdout(&self) -> HostStdout {
        self.drain(|d| HostStdout {
            out: d.writer.clone().into_guest(),
            tty: d.tty,
        })
    }

    fn drain<T>(&self, f: impl FnOnce(&StdoutDrain) -> T) -> T {
        let mut slot = self.stdout.borrow_mut();
        f(slot.get_or_insert_with(StdoutDrain::start))
    }

    /// Ends the stdout stream and waits up to `grace` until everything written so far reached
    /// the host's stdout. Call once the run has ended.
    pub fn finish(&self, grace: Duration) {
        let drain = self.stdout.borrow_mut().take();
        if let Some(drain) = drain {
            drain.finish(grace);
        }
    }
}

/// A plain pid0's stdin: the host's stdin (started when the guest first asks for it),
/// reporting whether it is a terminal as `wasmtime run` does.
pub struct HostStdin {
    stdin: Arc<LazyStdin>,
    tty: bool,
}

impl HostStdin {
    fn guest(&self) -> GuestInput {
        self.stdin.reader().into_guest()
    }
}

impl IsTerminal for HostStdin {
    fn is_terminal(&self) -> bool {
        self.tty
    }
}

impl StdinStream for HostStdin {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi_io::streams::InputStream> {
        self.guest().p2_stream()
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncRead + Send + Sync> {
        self.guest().async_stream()
    }
}

/// A bounded pipe drained to the host's stdout by its own thread.
struct StdoutDrain {
    writer: PipeWriter,
    thread: Option<JoinHandle<()>>,
    /// Signalled (or disconnected) when the thread is done, so that [`StdoutDrain::finish`]
    /// waits exactly as long as the thread takes rather than polling.
    done: std::sync::mpsc::Receiver<()>,
    tty: bool,
}

impl StdoutDrain {
    fn start() -> Self {
        let (writer, reader) = pipe(PIPE_CAPACITY);
        let (signal, done) = std::sync::mpsc::sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("cell-stdout".into())
            .spawn(move || {
                copy_to_stdout(reader);
                let _ = signal.send(());
            });
        let thread = match thread {
            Ok(t) => Some(t),
            Err(e) => {
                // The reader was dropped with the closure: guest writes fail as a closed stream.
                tracing::error!("cannot start the stdout thread ({e}); guest output is lost");
                None
            }
        };
        StdoutDrain {
            writer,
            thread,
            done,
            tty: std::io::IsTerminal::is_terminal(&std::io::stdout()),
        }
    }

    fn finish(mut self, grace: Duration) {
        self.writer.close();
        let Some(thread) = self.thread.take() else {
            return;
        };
        // Disconnected means the thread ended without signalling (it panicked): join it too.
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = self.done.recv_timeout(grace) {
            tracing::warn!("the host's stdout did not take the guest's output within {grace:?}");
            return;
        }
        let _ = thread.join();
    }
}

fn copy_to_stdout(reader: PipeReader) {
    let mut stdout = std::io::stdout().lock();
    loop {
        let data = futures::executor::block_on(reader.read(IO_CHUNK));
        if data.is_empty() {
            break;
        }
        if let Err(e) = stdout.write_all(&data).and_then(|()| stdout.flush()) {
            // E.g. EPIPE (`cell run … | head`): dropping the reader makes the guest's next
            // write fail as a closed stream, as a native program's would.
            tracing::debug!("writing the host's stdout: {e}");
            break;
        }
    }
}

/// A guest's WASI stdout that ends up on the host's stdout.
#[derive(Clone)]
pub struct HostStdout {
    out: GuestOutput,
    tty: bool,
}

impl IsTerminal for HostStdout {
    fn is_terminal(&self) -> bool {
        self.tty
    }
}

impl StdoutStream for HostStdout {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi_io::streams::OutputStream> {
        self.out.p2_stream()
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        self.out.async_stream()
    }
}
