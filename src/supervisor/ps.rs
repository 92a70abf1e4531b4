//! What the daemon shows of the supervisor: `Daemon.ps`'s view of the process table (one
//! [`PsEntry`] per process, read from the handles — memory and fuel gauges, the tree's root
//! and service — without touching any store) and the [`Counts`] behind `--metrics`.

use std::time::Duration;

use super::Supervisor;
use crate::status::ExitStatus;
use crate::table::Pid;

/// One row of `Daemon.ps`.
#[derive(Clone, Debug)]
pub(crate) struct PsEntry {
    pub pid: Pid,
    pub parent: Option<Pid>,
    /// The root of its tree (its job's pid0).
    pub job: Pid,
    pub name: String,
    pub sha256: Option<String>,
    pub running: bool,
    pub uptime: Duration,
    /// Bytes of linear memory and tables now.
    pub memory: u64,
    /// Fuel left, when metered.
    pub fuel_left: Option<u64>,
    /// The `--service` its tree runs, and its restart count.
    pub service: Option<(String, u32)>,
}

impl Supervisor {
    /// Every process in the table (running, or exited with a live subtree), in pid order.
    pub(crate) fn ps(&self) -> Vec<PsEntry> {
        let table = self.0.table.borrow();
        table
            .entries()
            .into_iter()
            .map(|e| {
                let h = &e.handle;
                PsEntry {
                    pid: h.pid,
                    parent: h.parent,
                    job: h.tree.root().unwrap_or(h.pid),
                    name: h.info.name.clone(),
                    sha256: h.info.hash.map(|x| x.to_string()),
                    running: !table.exited(h.pid),
                    uptime: h.started.elapsed(),
                    memory: h.memory.get(),
                    fuel_left: h.fuel.as_ref().map(|g| g.get()),
                    service: h.tree.service().map(|(n, r)| (n.to_string(), r)),
                }
            })
            .collect()
    }
}

/// What the supervisor has done so far.
#[derive(Clone, Debug, Default)]
pub(crate) struct Counts {
    /// Processes started (instantiated).
    pub spawns: u64,
    /// Processes ended, by the word of their status (`exited`, `trapped`, `killed`, …).
    pub exits: std::collections::BTreeMap<&'static str, u64>,
}

/// The report's word for how a process ended.
pub(super) fn status_word(status: &ExitStatus) -> &'static str {
    match status {
        ExitStatus::Exited(0) => "exited-0",
        ExitStatus::Exited(_) => "exited-nonzero",
        ExitStatus::Trapped(_) => "trapped",
        ExitStatus::Killed(_) => "killed",
        ExitStatus::TimedOut => "timed-out",
        ExitStatus::OutOfMemory => "out-of-memory",
        ExitStatus::OutOfFuel => "out-of-fuel",
        ExitStatus::ProtocolViolation(_) => "protocol-violation",
    }
}
