//! A process tree's shared record: the history of its ended processes ([`RunStats`]), how
//! many of its processes are still in the table, and where its descendants' forwarded stderr
//! goes. `cell run` has one tree (pid0's); a daemon has one per job and service.
//!
//! Ownership: every [`crate::handle::ProcessHandle`] of the tree holds an `Rc<Tree>` (a child
//! inherits its parent's); the job that started the root holds one to wait for the tree to
//! unwind and to build its report. `Send + Sync` (`Arc`, short `Mutex` sections, none held
//! across an await): a `cell run --shards N` tree spans shards, a child on another shard
//! recording into its parent's tree. Each lock is taken once per process start or end.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::watch;

use crate::limits::{PROCESS_HISTORY, PROCESS_HISTORY_BYTES};
use crate::net::audit::DecisionCounts;
use crate::status::ExitStatus;
use crate::stderr::CaptureSink;

/// A process id (`crate::handle::Pid`, which sits above this module).
type Pid = u32;

/// The final facts of one ended process.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct ProcessSummary {
    pub pid: Pid,
    pub parent: Option<Pid>,
    pub name: String,
    pub sha256: Option<String>,
    pub status: ExitStatus,
    pub start_ms: u64,
    pub end_ms: u64,
    pub peak_memory_bytes: u64,
    pub fuel_used: Option<u64>,
    /// The shard (thread) it ran on: 0 unless the run has several (`--shards`).
    pub shard: u32,
}

/// Network decisions made by the host for the whole tree.
impl ProcessSummary {
    /// What this entry costs the host: its fixed fields plus its strings (the name is at most
    /// `text::GUEST_TEXT_MAX` bytes; a trap message is one line of the host's own making).
    pub(crate) fn approx_bytes(&self) -> usize {
        let status = match &self.status {
            ExitStatus::Trapped(m) | ExitStatus::ProtocolViolation(m) => m.len(),
            _ => 0,
        };
        std::mem::size_of::<Self>()
            + self.name.len()
            + self.sha256.as_ref().map_or(0, String::len)
            + status
    }
}

/// What the supervisor records about a tree while it runs. Bounded: at most `entries`
/// summaries and `bytes` of them are kept (the first ones, pid0's children usually); later
/// ones are only counted. `cell run` keeps [`PROCESS_HISTORY`]; a daemon job less
/// ([`crate::limits::JOB_HISTORY`]), as many jobs live side by side.
#[derive(Debug)]
pub(crate) struct RunStats {
    started: Instant,
    history: VecDeque<ProcessSummary>,
    /// What `history` holds, by [`ProcessSummary::approx_bytes`].
    history_bytes: usize,
    not_listed: u64,
    max_entries: usize,
    max_bytes: usize,
}

impl Default for RunStats {
    fn default() -> Self {
        RunStats::bounded(PROCESS_HISTORY, PROCESS_HISTORY_BYTES)
    }
}

impl RunStats {
    /// A history keeping at most `max_entries` summaries and `max_bytes` of them.
    pub(crate) fn bounded(max_entries: usize, max_bytes: usize) -> Self {
        RunStats {
            started: Instant::now(),
            history: VecDeque::new(),
            history_bytes: 0,
            not_listed: 0,
            max_entries,
            max_bytes,
        }
    }

    /// Milliseconds since the run started, for `at`.
    pub(crate) fn ms_since_start(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_millis() as u64
    }

    /// Records an ended process.
    pub(crate) fn record(&mut self, summary: ProcessSummary) {
        let bytes = summary.approx_bytes();
        if self.history.len() < self.max_entries && self.history_bytes + bytes <= self.max_bytes {
            self.history_bytes += bytes;
            self.history.push_back(summary);
        } else {
            self.not_listed += 1;
        }
    }

    pub(crate) fn processes(&self) -> impl Iterator<Item = &ProcessSummary> {
        self.history.iter()
    }

    pub(crate) fn not_listed(&self) -> u64 {
        self.not_listed
    }
}

/// What a new tree is made with.
#[derive(Default)]
pub(crate) struct TreeSpec {
    /// Its history's bounds: `None` = [`RunStats::default`].
    pub history: Option<(usize, usize)>,
    /// Where its descendants' `stderr = forward` lines go; `None` = the host's stderr. Held
    /// until the tree has unwound, so a reader of that stream sees its end only then.
    pub stderr: Option<CaptureSink>,
    /// The `--service` it runs, and how often that service has been restarted (for `ps`).
    pub service: Option<(String, u32)>,
    /// The mutual-TLS identity of the daemon client that started it (audit, report).
    pub client: Option<std::sync::Arc<str>>,
}

/// One process tree's shared record (see the module documentation).
pub(crate) struct Tree {
    root: Mutex<Option<Pid>>,
    history: Mutex<RunStats>,
    /// Processes of this tree in the process table (running, or exited and not yet reaped).
    live: watch::Sender<u32>,
    stderr: Mutex<Option<CaptureSink>>,
    service: Option<(String, u32)>,
    client: Option<std::sync::Arc<str>>,
    /// Its network decisions (for its report).
    decisions: Arc<DecisionCounts>,
}

impl Tree {
    pub(crate) fn new(spec: TreeSpec) -> Arc<Self> {
        let history = match spec.history {
            Some((entries, bytes)) => RunStats::bounded(entries, bytes),
            None => RunStats::default(),
        };
        Arc::new(Tree {
            root: Mutex::new(None),
            history: Mutex::new(history),
            live: watch::channel(0).0,
            stderr: Mutex::new(spec.stderr),
            service: spec.service,
            client: spec.client,
            decisions: Arc::default(),
        })
    }

    /// The pid of the tree's root, once it has one.
    pub(crate) fn root(&self) -> Option<Pid> {
        *lock(&self.root)
    }

    /// The service this tree runs, with its restart count.
    pub(crate) fn service(&self) -> Option<(&str, u32)> {
        self.service.as_ref().map(|(n, r)| (n.as_str(), *r))
    }

    /// A process of the tree entered the table (the first one is its root).
    pub(crate) fn entered(&self, pid: Pid) {
        lock(&self.root).get_or_insert(pid);
        self.live.send_modify(|n| *n += 1);
    }

    /// A process of the tree was reaped. When the last one goes, its stderr tap is dropped,
    /// which ends the stream it feeds.
    pub(crate) fn left(&self) {
        self.live.send_modify(|n| *n = n.saturating_sub(1));
        if *self.live.borrow() == 0 {
            lock(&self.stderr).take();
        }
    }

    /// Resolves once every process of the tree has been reaped.
    pub(crate) async fn unwound(&self) {
        let mut rx = self.live.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Where a descendant's forwarded stderr goes (`None`: the host's stderr).
    pub(crate) fn stderr_tap(&self) -> Option<CaptureSink> {
        lock(&self.stderr).clone()
    }

    /// The identity of the client that started it, if it showed a certificate.
    pub(crate) fn client(&self) -> Option<&std::sync::Arc<str>> {
        self.client.as_ref()
    }

    /// Where its processes' network decisions are counted.
    pub(crate) fn decisions(&self) -> Arc<DecisionCounts> {
        self.decisions.clone()
    }

    /// Records an ended process of the tree.
    pub(crate) fn record(&self, summary: ProcessSummary) {
        lock(&self.history).record(summary);
    }

    /// What was recorded so far.
    pub(crate) fn history(&self) -> MutexGuard<'_, RunStats> {
        lock(&self.history)
    }
}

/// Locks `m`; a panic elsewhere while it was held leaves data that is still whole (every
/// section is a plain update), so a poisoned lock is used as it is.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future as _;

    fn summary(pid: Pid) -> ProcessSummary {
        ProcessSummary {
            pid,
            parent: None,
            name: "p".into(),
            sha256: None,
            status: ExitStatus::Exited(0),
            start_ms: 0,
            end_ms: 0,
            peak_memory_bytes: 0,
            fuel_used: None,
            shard: 0,
        }
    }

    #[test]
    fn history_is_bounded_and_counts_the_rest() {
        let mut stats = RunStats::default();
        for pid in 0..(PROCESS_HISTORY as u32 + 5) {
            stats.record(summary(pid));
        }
        assert_eq!(stats.processes().count(), PROCESS_HISTORY);
        assert_eq!(stats.not_listed(), 5);
    }

    #[test]
    fn history_is_bounded_in_bytes_too() {
        let mut stats = RunStats::default();
        let big = ProcessSummary {
            name: "n".repeat(crate::text::GUEST_TEXT_MAX),
            status: ExitStatus::Trapped("t".repeat(4096)),
            ..summary(0)
        };
        let per = big.approx_bytes();
        for _ in 0..PROCESS_HISTORY {
            stats.record(big.clone());
        }
        assert_eq!(stats.processes().count(), PROCESS_HISTORY_BYTES / per);
        assert!(stats.not_listed() > 0);
    }

    #[test]
    fn a_tree_unwinds_when_its_last_process_leaves() {
        let tree = Tree::new(TreeSpec::default());
        tree.entered(4);
        tree.entered(5);
        assert_eq!(tree.root(), Some(4));
        tree.left();
        let unwound = tree.unwound();
        futures::pin_mut!(unwound);
        let waker = futures::task::noop_waker();
        let mut cx = std::task::Context::from_waker(&waker);
        assert!(unwound.as_mut().poll(&mut cx).is_pending());
        tree.left();
        assert!(unwound.as_mut().poll(&mut cx).is_ready());
    }

    #[test]
    fn a_job_history_has_its_own_bounds() {
        let mut stats = RunStats::bounded(2, usize::MAX);
        for pid in 0..5 {
            stats.record(summary(pid));
        }
        assert_eq!(stats.processes().count(), 2);
        assert_eq!(stats.not_listed(), 3);
    }
}
