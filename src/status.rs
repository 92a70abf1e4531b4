//! How a process ended, as the host sees it and as `Process.wait` reports it.

use std::fmt;

use serde::Serialize;

use crate::cell_capnp::{exit_status, KilledBy as WireKilledBy};

/// Who killed a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum KilledBy {
    /// `Process.kill` by a holder of the process's capability (normally its parent).
    Parent,
    /// Its parent or an ancestor ended, and the subtree went with it.
    Cascade,
    /// The operator stopped `cell` (SIGINT/SIGTERM).
    Operator,
}

/// The final state of a process. Set exactly once, by the task that ran it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "kebab-case")]
pub enum ExitStatus {
    /// The program returned (or called `exit`) with this code.
    Exited(i32),
    /// A wasm trap, with a one-line description.
    Trapped(String),
    Killed(KilledBy),
    TimedOut,
    OutOfMemory,
    OutOfFuel,
    /// The process broke its RPC channel (e.g. wrote garbage on stdout); the reason is the
    /// RPC layer's error.
    ProtocolViolation(String),
}

impl ExitStatus {
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited(0))
    }

    /// Writes this status into its wire form.
    pub fn write_to(&self, mut b: exit_status::Builder<'_>) {
        match self {
            ExitStatus::Exited(code) => b.set_exited(*code),
            ExitStatus::Trapped(msg) => b.set_trapped(msg.as_str()),
            ExitStatus::Killed(by) => b.set_killed(match by {
                KilledBy::Parent => WireKilledBy::Parent,
                KilledBy::Cascade => WireKilledBy::Cascade,
                KilledBy::Operator => WireKilledBy::Operator,
            }),
            ExitStatus::TimedOut => b.set_timed_out(()),
            ExitStatus::OutOfMemory => b.set_out_of_memory(()),
            ExitStatus::OutOfFuel => b.set_out_of_fuel(()),
            ExitStatus::ProtocolViolation(msg) => b.set_protocol_violation(msg.as_str()),
        }
    }
}

impl fmt::Display for KilledBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KilledBy::Parent => "its parent",
            KilledBy::Cascade => "cascade (an ancestor ended)",
            KilledBy::Operator => "the operator",
        })
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExitStatus::Exited(code) => write!(f, "exited with code {code}"),
            ExitStatus::Trapped(msg) => write!(f, "trapped: {msg}"),
            ExitStatus::Killed(by) => write!(f, "killed by {by}"),
            ExitStatus::TimedOut => f.write_str("timed out"),
            ExitStatus::OutOfMemory => f.write_str("out of memory"),
            ExitStatus::OutOfFuel => f.write_str("out of fuel"),
            ExitStatus::ProtocolViolation(msg) => write!(f, "protocol violation: {msg}"),
        }
    }
}
