//! `ExitStatus`: how a process ended, one type for the host (which sets it), the wire
//! (`Process.wait`) and guests and clients (which read it).

use std::fmt;

use crate::cell_capnp::{exit_status, KilledBy as WireKilledBy};

/// Who killed a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "kebab-case"))]
pub enum KilledBy {
    /// `Process.kill` by a holder of the process's capability (normally its parent).
    Parent,
    /// Its parent or an ancestor ended, and the subtree went with it.
    Cascade,
    /// The operator stopped the host (SIGINT/SIGTERM).
    Operator,
    /// A remote child whose node, or the link to it, was lost (serialised `link-lost`).
    LinkLost,
}

/// The final state of a process. The host sets it exactly once.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(
    feature = "serde",
    serde(tag = "status", content = "detail", rename_all = "kebab-case")
)]
pub enum ExitStatus {
    /// The program returned (or called `exit`) with this code.
    Exited(i32),
    /// A wasm trap, with a one-line description.
    Trapped(String),
    /// Killed, and by whom.
    Killed(KilledBy),
    /// Its wall-clock deadline passed.
    TimedOut,
    /// It tried to grow memory past its limit.
    OutOfMemory,
    /// It used up its CPU fuel.
    OutOfFuel,
    /// It broke its RPC channel (e.g. wrote garbage on stdout); the reason is the RPC layer's.
    ProtocolViolation(String),
}

impl ExitStatus {
    /// Exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited(0))
    }

    /// Writes this status into its wire form.
    pub fn write(&self, mut b: exit_status::Builder<'_>) {
        match self {
            ExitStatus::Exited(code) => b.set_exited(*code),
            ExitStatus::Trapped(msg) => b.set_trapped(msg.as_str()),
            ExitStatus::Killed(by) => b.set_killed((*by).into()),
            ExitStatus::TimedOut => b.set_timed_out(()),
            ExitStatus::OutOfMemory => b.set_out_of_memory(()),
            ExitStatus::OutOfFuel => b.set_out_of_fuel(()),
            ExitStatus::ProtocolViolation(msg) => b.set_protocol_violation(msg.as_str()),
        }
    }

    /// Reads a status from its wire form. Fails on a union member or enumerant this version
    /// does not know, and on text that is not UTF-8.
    pub fn read(r: exit_status::Reader<'_>) -> capnp::Result<Self> {
        use exit_status::Which;
        Ok(match r.which()? {
            Which::Exited(code) => ExitStatus::Exited(code),
            Which::Trapped(t) => ExitStatus::Trapped(t?.to_string()?),
            Which::Killed(by) => ExitStatus::Killed(by?.into()),
            Which::TimedOut(()) => ExitStatus::TimedOut,
            Which::OutOfMemory(()) => ExitStatus::OutOfMemory,
            Which::OutOfFuel(()) => ExitStatus::OutOfFuel,
            Which::ProtocolViolation(t) => ExitStatus::ProtocolViolation(t?.to_string()?),
        })
    }
}

impl From<KilledBy> for WireKilledBy {
    fn from(by: KilledBy) -> Self {
        match by {
            KilledBy::Parent => WireKilledBy::Parent,
            KilledBy::Cascade => WireKilledBy::Cascade,
            KilledBy::Operator => WireKilledBy::Operator,
            KilledBy::LinkLost => WireKilledBy::LinkLost,
        }
    }
}

impl From<WireKilledBy> for KilledBy {
    fn from(by: WireKilledBy) -> Self {
        match by {
            WireKilledBy::Parent => KilledBy::Parent,
            WireKilledBy::Cascade => KilledBy::Cascade,
            WireKilledBy::Operator => KilledBy::Operator,
            WireKilledBy::LinkLost => KilledBy::LinkLost,
        }
    }
}

impl fmt::Display for KilledBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KilledBy::Parent => "its parent",
            KilledBy::Cascade => "cascade (an ancestor ended)",
            KilledBy::Operator => "the operator",
            KilledBy::LinkLost => "the loss of its node or of the link to it (link-lost)",
        })
    }
}

/// The one human form, used by the host's log and by guests alike: `exited with code 0`,
/// `killed by its parent`, `trapped: …`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_status_round_trips_through_the_wire() {
        let all = [
            ExitStatus::Exited(-3),
            ExitStatus::Trapped("unreachable".into()),
            ExitStatus::Killed(KilledBy::Parent),
            ExitStatus::Killed(KilledBy::Cascade),
            ExitStatus::Killed(KilledBy::Operator),
            ExitStatus::Killed(KilledBy::LinkLost),
            ExitStatus::TimedOut,
            ExitStatus::OutOfMemory,
            ExitStatus::OutOfFuel,
            ExitStatus::ProtocolViolation("garbage".into()),
        ];
        for status in all {
            let mut message = capnp::message::Builder::new_default();
            status.write(message.init_root());
            let reader = message.get_root_as_reader().expect("root");
            assert_eq!(ExitStatus::read(reader).expect("read"), status);
        }
    }
}
