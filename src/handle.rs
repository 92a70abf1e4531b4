//! `ProcessHandle`: the shared, long-lived face of one process.
//!
//! Held by the process table, by the task running the process, and by every `Process`
//! capability that names it. It outlives the process: `wait` on a handle of a process that
//! ended long ago returns its status at once.

use std::time::Instant;

use tokio::sync::watch;

use crate::engine::ContentHash;
use crate::limits::{FuelGauge, MemoryGauge};
use crate::status::{ExitStatus, KilledBy};
use crate::stderr::CapturedStderr;
use crate::transport::{PipeReader, PipeWriter};
use crate::tree::{Tree, TreeSpec};

/// A process id: not reused until the 32-bit space wraps (and never while its holder lives); pid0 is 0.
pub type Pid = u32;

/// Fixed facts about a process.
#[derive(Clone, Debug)]
pub struct ProcessInfo {
    pub pid: Pid,
    pub parent: Option<Pid>,
    pub name: String,
    pub depth: u32,
    pub hash: Option<ContentHash>,
}

impl ProcessInfo {
    #[cfg(test)]
    pub fn test(pid: Pid, parent: Option<Pid>) -> Self {
        ProcessInfo {
            pid,
            parent,
            name: format!("p{pid}"),
            depth: 0,
            hash: None,
        }
    }
}

/// Asks a running RPC guest for the capability it serves; `None` once its connection is gone.
/// With it comes whether its connection is over yet (see `grants::GuestService::gone`).
pub(crate) type ServiceFn =
    Box<dyn Fn() -> Option<(capnp::capability::Client, std::rc::Rc<dyn Fn() -> bool>)>>;

/// The host ends of a plain (non-RPC) child's stdin and stdout.
#[derive(Clone)]
pub struct PlainStdio {
    pub stdin: PipeWriter,
    pub stdout: PipeReader,
}

pub struct ProcessHandle {
    pub pid: Pid,
    pub parent: Option<Pid>,
    pub info: ProcessInfo,
    pub started: Instant,
    /// Set exactly once, by the task running the process.
    status: watch::Sender<Option<ExitStatus>>,
    /// The first kill request wins; later ones are ignored.
    kill: watch::Sender<Option<KilledBy>>,
    /// Present when spawned with `stderr = capture`.
    pub stderr: Option<CapturedStderr>,
    /// Present for a plain child.
    pub plain: Option<PlainStdio>,
    /// The fuel it has left, when fuel is metered (children are clamped to it).
    pub fuel: Option<FuelGauge>,
    /// The capability it serves, for an RPC guest (see `Process.service`).
    pub service: Option<ServiceFn>,
    /// The tree it belongs to (its job's, for a daemon): shared with its whole tree.
    pub(crate) tree: std::sync::Arc<Tree>,
    /// Its memory use now.
    pub(crate) memory: MemoryGauge,
}

/// What a handle is made of besides its channels: everything is known before the process
/// runs, so a handle is built whole and never changed afterwards (only its status and kill
/// channels move).
#[derive(Default)]
pub struct HandleParts {
    /// Its captured stderr, when spawned with `stderr = capture`.
    pub stderr: Option<CapturedStderr>,
    /// The host ends of its stdio, for a plain child.
    pub plain: Option<PlainStdio>,
    /// Its fuel gauge, when fuel is metered.
    pub fuel: Option<FuelGauge>,
    /// How to reach what it serves, for an RPC guest.
    pub service: Option<ServiceFn>,
    /// The tree it joins (its parent's; a new one for a root). `None`: a tree of its own.
    pub(crate) tree: Option<std::sync::Arc<Tree>>,
    /// Its store's memory gauge.
    pub(crate) memory: MemoryGauge,
}

impl HandleParts {
    /// The parts of a plain child with these stdio ends (for hosts other than the supervisor,
    /// e.g. in-process tests).
    pub fn with_plain(plain: PlainStdio) -> Self {
        HandleParts {
            plain: Some(plain),
            ..HandleParts::default()
        }
    }
}

impl ProcessHandle {
    /// A handle with nothing captured, no plain stdio and no fuel gauge.
    pub fn new(info: ProcessInfo) -> Self {
        Self::with(info, HandleParts::default())
    }

    /// A handle of the process `info` with `parts`.
    pub fn with(info: ProcessInfo, parts: HandleParts) -> Self {
        let HandleParts {
            stderr,
            plain,
            fuel,
            service,
            tree,
            memory,
        } = parts;
        ProcessHandle {
            pid: info.pid,
            parent: info.parent,
            info,
            started: Instant::now(),
            status: watch::channel(None).0,
            kill: watch::channel(None).0,
            stderr,
            plain,
            fuel,
            service,
            tree: tree.unwrap_or_else(|| Tree::new(TreeSpec::default())),
            memory,
        }
    }

    /// The status, once the process has ended.
    pub fn status(&self) -> Option<ExitStatus> {
        self.status.borrow().clone()
    }

    /// Waits until the process has ended.
    pub async fn wait(&self) -> ExitStatus {
        let mut rx = self.status.subscribe();
        loop {
            if let Some(s) = rx.borrow_and_update().clone() {
                return s;
            }
            // The sender lives in `self`, so the channel cannot close while we wait.
            if rx.changed().await.is_err() {
                return ExitStatus::Killed(KilledBy::Cascade);
            }
        }
    }

    /// Asks the process to stop. Idempotent; a no-op once it has ended.
    pub fn kill(&self, by: KilledBy) {
        self.kill.send_if_modified(|k| {
            if k.is_none() {
                *k = Some(by);
                true
            } else {
                false
            }
        });
    }

    /// Resolves with the reason once a kill was requested.
    pub async fn killed(&self) -> KilledBy {
        let mut rx = self.kill.subscribe();
        loop {
            if let Some(by) = *rx.borrow_and_update() {
                return by;
            }
            if rx.changed().await.is_err() {
                return KilledBy::Cascade;
            }
        }
    }

    /// Records the final status. Only whoever runs the process calls this: the supervisor's
    /// task for it, or a test [`crate::rpc::host::Host`].
    pub fn set_status(&self, status: ExitStatus) {
        self.status.send_replace(Some(status));
    }
}
