//! A new process's stdio: pipes to the host (its RPC connection or its `Process` streams),
//! the host's own stdio for a plain pid0, and where its stderr goes.

use wasmtime_wasi::cli::{StdinStream, StdoutStream};

use super::Supervisor;
use crate::handle::PlainStdio;
use crate::limits::{Limits, PIPE_CAPACITY};
use crate::spec::{ProcessSpec, StderrMode, StdioMode};
use crate::stderr;
use crate::table::Pid;
use crate::transport::pipe;
use crate::tree::Tree;

impl Supervisor {
    /// The stdio of a new process: pipes to the host (or the host's own stdio for a plain
    /// pid0) and its stderr sink.
    pub(super) fn stdio_for(
        &self,
        pid: Pid,
        spec: &ProcessSpec,
        limits: &Limits,
        tree: &Tree,
    ) -> NewStdio {
        let (stdin_w, stdin_r) = pipe(PIPE_CAPACITY);
        let (stdout_w, stdout_r) = pipe(PIPE_CAPACITY);
        let mut captured = None;
        let stderr = match spec.stderr {
            StderrMode::Inherit => Box::new(wasmtime_wasi::cli::stderr()) as _,
            StderrMode::Forward => stderr::forward(pid, tree.stderr_tap()),
            StderrMode::Tree => match tree.stderr_tap() {
                Some(tap) => tap.stream(),
                None => Box::new(wasmtime_wasi::cli::stderr()) as _,
            },
            StderrMode::Discard => Box::new(tokio::io::empty()) as _,
            StderrMode::Capture => {
                let cap = usize::try_from(limits.stderr_capture_bytes).unwrap_or(usize::MAX);
                let (sink, buffer) = stderr::capture(cap);
                captured = Some(buffer);
                sink
            }
        };
        let (stdin, stdout): (Box<dyn StdinStream>, Box<dyn StdoutStream>) = match spec.stdio {
            StdioMode::Host => (
                Box::new(self.0.host_stdio.guest_stdin()),
                Box::new(self.0.host_stdio.guest_stdout()),
            ),
            StdioMode::Rpc | StdioMode::Plain => (
                Box::new(stdin_r.into_guest()),
                Box::new(stdout_w.into_guest()),
            ),
        };
        NewStdio {
            guest: GuestStdio {
                stdin,
                stdout,
                stderr,
            },
            host: PlainStdio {
                stdin: stdin_w,
                stdout: stdout_r,
            },
            captured,
        }
    }
}

/// The guest's ends of a new process's stdio, for its store.
pub(super) struct GuestStdio {
    pub(super) stdin: Box<dyn StdinStream>,
    pub(super) stdout: Box<dyn StdoutStream>,
    pub(super) stderr: Box<dyn StdoutStream>,
}

/// Both ends of a new process's stdio, and its stderr capture buffer.
pub(super) struct NewStdio {
    pub(super) guest: GuestStdio,
    pub(super) host: PlainStdio,
    pub(super) captured: Option<crate::stderr::CapturedStderr>,
}
