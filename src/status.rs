//! How a process ended: `ExitStatus` and `KilledBy` are the wire crate's (one type and one
//! human form for the host's log, the report, `Process.wait` and guests).

pub use cell_proto::{ExitStatus, KilledBy};
