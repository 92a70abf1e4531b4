//! Per-process bounds on what a connection may hold in the host at once, all built on one
//! [`Budget`] (a counter with a limit, shared by clones, given back by an RAII guard):
//!
//! - [`CallGate`]: RPC calls in progress on one process's connection (`--max-outstanding-calls`).
//!   Every server method starts with `let _call = self.gate.enter()?;`; the guard lives as long
//!   as the method's future, so a call that waits (`Process.wait`, `ByteStream.read`, `spawn`)
//!   holds its slot until it answers or is cancelled. A call arriving while all slots are taken
//!   fails at once with `limit: max-outstanding-calls N reached`; the caller is not terminated.
//! - [`ByteBudget`] (in [`crate::budget`]): bytes of socket writes and UDP sends waiting in the
//!   host for a slow peer (`NET_MAX_IN_FLIGHT`), so pipelining writes cannot park unbounded
//!   data in the host.
//! - sockets held open (`--max-sockets`), in [`crate::net::count`].
//!
//! Whose gate: each gate belongs to one process's connection, created in [`super::serve`] and
//! handed to every server issued *on* that connection (Session → Executor → Process →
//! ByteStream, and the network caps through `NetCaps`). A capability is served by the object it
//! was created as, so if a process passes a host capability on to another process, calls on it
//! keep counting against the process it was issued to.

use std::rc::Rc;

use cell_proto::Reason;

pub(crate) use crate::budget::{Budget, Taken};
use crate::rpc::fail::failed;
use crate::rpc::flow::Flow;

/// One call in progress; frees its slot when dropped.
pub(crate) type InFlight = Taken;

/// Calls entered on every connection of this process (for `cell serve --metrics`).
static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// RPC calls served so far, by every connection of this host process.
pub(crate) fn calls_total() -> u64 {
    CALLS.load(std::sync::atomic::Ordering::Relaxed)
}

/// The bound on RPC calls in progress on one connection, and the connection's flow control
/// (see [`crate::rpc::flow`]) for servers whose replies are large.
#[derive(Clone, Debug)]
pub(crate) struct CallGate(Budget, Option<Rc<Flow>>);

impl CallGate {
    #[cfg(test)]
    pub(crate) fn new(limit: u32) -> Self {
        CallGate(Budget::new(limit as usize), None)
    }

    /// A gate whose [`CallGate::reply_room`] waits on `flow`.
    pub(crate) fn with_flow(limit: u32, flow: Rc<Flow>) -> Self {
        CallGate(Budget::new(limit as usize), Some(flow))
    }

    /// Waits until the connection's unsent replies are within their bound. A server about to
    /// produce a large reply (a read of up to 64 KiB) waits here first, so a guest that has
    /// many reads in progress but does not read its replies cannot make the host queue them.
    pub(crate) async fn reply_room(&self) {
        if let Some(flow) = &self.1 {
            flow.room().await;
        }
    }

    /// Takes a slot for one call.
    ///
    /// # Errors
    /// `limit: max-outstanding-calls N reached` when every slot is taken.
    pub(crate) fn enter(&self) -> Result<InFlight, capnp::Error> {
        CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.0.take(1).ok_or_else(|| {
            failed(
                Reason::Limit,
                format!("max-outstanding-calls {} reached", self.0.limit()),
            )
        })
    }

    /// Calls in progress now.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> u32 {
        self.0.used() as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_taken_and_freed() {
        let gate = CallGate::new(2);
        let a = gate.enter().unwrap();
        let _b = gate.clone().enter().unwrap();
        let err = gate.enter().unwrap_err();
        assert!(err
            .to_string()
            .contains("limit: max-outstanding-calls 2 reached"));
        drop(a);
        assert_eq!(gate.in_flight(), 1);
        assert!(gate.enter().is_ok());
    }
}
