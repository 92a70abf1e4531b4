//! The run report (`cell run --report FILE`): what ran, how it ended, what it used, as JSON for
//! scripts. [`crate::tree::RunStats`] is what the supervisor records for a tree while it runs;
//! [`Report`] is what is written at the end.
//!
//! Schema `cell-report/1` (every field always present; `null` where noted):
//!
//! ```text
//! {
//!   "schema": "cell-report/1",
//!   "wasm": "app.wasm",                 // the path given on the command line
//!   "sha256": "9f2c…" | null,           // of pid0's component; null if it never loaded
//!   "mode": "rpc" | "plain",
//!   "exit_code": 0,                     // cell's own exit code (see the README, "Exit codes")
//!   "pid0": {"status": "exited", "detail": 0},   // an ExitStatus, see below, or
//!           {"status": "not-started", "detail": "cannot read app.wasm: …"}  (exit 125/126/127)
//!   "signal": null | 2 | 15,            // the signal that stopped the run, if any
//!   "wall_ms": 812,                     // from the start of the run to the end of teardown
//!   "processes": [ {                    // ended processes, in the order they ended
//!       "pid": 0, "parent": null, "name": "app.wasm", "sha256": "9f2c…",
//!       "status": {"status": "exited", "detail": 0},
//!       "start_ms": 3, "end_ms": 810,   // since the start of the run
//!       "peak_memory_bytes": 1179648,   // linear memories + tables, all of the store's
//!       "fuel_used": null | 123456      // only when fuel is metered
//!   } ],
//!   "processes_not_listed": 0,          // ended processes beyond the first PROCESS_HISTORY
//!   "compile_cache": {"enabled": true, "hits": 1, "misses": 0},   // wasmtime's disk cache
//!   "components_compiled": 1,           // components loaded this run (disk hits included)
//!   "network": {"allowed": 0, "denied": 0},  // network decisions made by the host
//!   "client": "ci-runner"                    // only a daemon job of a mutual-TLS client
//! }
//! ```
//!
//! An ExitStatus is `{"status": S}` or `{"status": S, "detail": D}` with S one of `exited`
//! (D = exit code), `trapped` (D = one-line message), `killed` (D = `parent`, `cascade` or
//! `operator`), `timed-out`, `out-of-memory`, `out-of-fuel`, `protocol-violation` (D = reason).

use serde::Serialize;

pub(crate) use crate::engine::CompileCacheStats;
use crate::status::ExitStatus;
pub(crate) use crate::tree::ProcessSummary;

/// The schema name and version written in every report.
pub(crate) const SCHEMA: &str = "cell-report/1";

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub(crate) struct NetworkStats {
    pub allowed: u64,
    pub denied: u64,
}

/// The whole report; see the module documentation for the schema.
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Report {
    pub schema: &'static str,
    pub wasm: String,
    /// Of pid0's component; `None` when it never loaded.
    pub sha256: Option<String>,
    pub mode: &'static str,
    pub exit_code: u8,
    pub pid0: Pid0Status,
    pub signal: Option<i32>,
    pub wall_ms: u64,
    pub processes: Vec<ProcessSummary>,
    pub processes_not_listed: u64,
    pub compile_cache: CompileCacheStats,
    pub components_compiled: u64,
    pub network: NetworkStats,
    /// A daemon job's: the mutual-TLS identity of the client that started it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// pid0's entry in the report: how it ended, or why it never started.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
pub(crate) enum Pid0Status {
    /// It ran (an `ExitStatus`: `{"status": "exited", "detail": 0}`, …).
    Ran(ExitStatus),
    /// It never ran: `{"status": "not-started", "detail": "cannot read x.wasm: …"}`.
    NotStarted {
        status: &'static str,
        detail: String,
    },
}

impl Report {
    /// The report of a run whose pid0 never started (cell's exit codes 125, 126, 127), with
    /// `reason` as pid0's status detail.
    pub(crate) fn not_started(
        wasm: &std::path::Path,
        mode: &'static str,
        reason: String,
        exit_code: u8,
        wall_ms: u64,
    ) -> Report {
        Report {
            schema: SCHEMA,
            wasm: wasm.display().to_string(),
            sha256: None,
            mode,
            exit_code,
            pid0: Pid0Status::NotStarted {
                status: "not-started",
                detail: reason,
            },
            signal: None,
            wall_ms,
            processes: Vec::new(),
            processes_not_listed: 0,
            compile_cache: CompileCacheStats::default(),
            components_compiled: 0,
            network: NetworkStats::default(),
            client: None,
        }
    }

    /// Writes the report as pretty JSON to `out`, the handle opened before pid0 started (see
    /// [`crate::hostfiles`]): never a path looked up again at exit.
    ///
    /// # Errors
    /// Serialisation or writing failed.
    pub(crate) fn write(&self, out: &mut crate::hostfiles::ReportOut) -> std::io::Result<()> {
        use std::io::Write as _;
        let mut json = serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?;
        json.push(b'\n');
        match out {
            crate::hostfiles::ReportOut::Stderr => std::io::stderr().lock().write_all(&json),
            crate::hostfiles::ReportOut::File(file) => {
                file.write_all(&json)?;
                file.flush()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_serialize_as_documented() {
        let json = |s: ExitStatus| serde_json::to_string(&s).unwrap();
        assert_eq!(
            json(ExitStatus::Exited(3)),
            r#"{"status":"exited","detail":3}"#
        );
        assert_eq!(json(ExitStatus::TimedOut), r#"{"status":"timed-out"}"#);
        assert_eq!(
            json(ExitStatus::Killed(crate::status::KilledBy::Operator)),
            r#"{"status":"killed","detail":"operator"}"#
        );
    }
}
