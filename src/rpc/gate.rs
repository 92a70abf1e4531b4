//! Per-process bounds on what a connection may hold in the host at once, all built on one
//! [`Budget`] (a counter with a limit, shared by clones, given back by an RAII guard):
//!
//! - [`CallGate`]: RPC calls in progress on one process's connection (`--max-outstanding-calls`).
//!   Every server method starts with `let _call = self.gate.enter()?;`; the guard lives as long
//!   as the method's future, so a call that waits (`Process.wait`, `ByteStream.read`, `spawn`)
//!   holds its slot until it answers or is cancelled. A call arriving while all slots are taken
//!   fails at once with `limit: max-outstanding-calls N reached`; the caller is not terminated.
//! - [`ByteBudget`]: bytes of socket writes and UDP sends waiting in the host for a slow peer
//!   (`NET_MAX_IN_FLIGHT`), so pipelining writes cannot park unbounded data in the host.
//! - sockets held open through RPC (`--max-sockets`), in `rpc::network`.
//!
//! Whose gate: each gate belongs to one process's connection, created in [`super::serve`] and
//! handed to every server issued *on* that connection (Session → Executor → Process →
//! ByteStream, and the network caps through `NetCaps`). A capability is served by the object it
//! was created as, so if a process passes a host capability on to another process, calls on it
//! keep counting against the process it was issued to.

use std::cell::Cell;
use std::rc::Rc;

use crate::rpc::failed;
use crate::rpc::flow::Flow;
use cell_proto::Reason;

/// A counter with a limit. Cheap to clone; clones share the count.
#[derive(Clone, Debug)]
pub struct Budget {
    used: Rc<Cell<usize>>,
    limit: usize,
}

/// An amount taken from a [`Budget`]; given back when dropped.
#[derive(Debug)]
#[must_use = "the amount is given back as soon as the guard is dropped"]
pub struct Taken {
    used: Rc<Cell<usize>>,
    amount: usize,
}

impl Budget {
    pub fn new(limit: usize) -> Self {
        Budget {
            used: Rc::new(Cell::new(0)),
            limit,
        }
    }

    /// Takes `amount` until the guard is dropped, or `None` if it does not fit.
    pub fn take(&self, amount: usize) -> Option<Taken> {
        let used = self.used.get();
        if used.saturating_add(amount) > self.limit {
            return None;
        }
        self.used.set(used + amount);
        Some(Taken {
            used: self.used.clone(),
            amount,
        })
    }

    /// How much is taken now.
    pub fn used(&self) -> usize {
        self.used.get()
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.used.set(self.used.get().saturating_sub(self.amount));
    }
}

/// One call in progress; frees its slot when dropped.
pub type InFlight = Taken;

/// The bound on RPC calls in progress on one connection, and the connection's flow control
/// (see [`crate::rpc::flow`]) for servers whose replies are large.
#[derive(Clone, Debug)]
pub struct CallGate(Budget, Option<Rc<Flow>>);

impl CallGate {
    pub fn new(limit: u32) -> Self {
        CallGate(Budget::new(limit as usize), None)
    }

    /// A gate whose [`CallGate::reply_room`] waits on `flow`.
    pub fn with_flow(limit: u32, flow: Rc<Flow>) -> Self {
        CallGate(Budget::new(limit as usize), Some(flow))
    }

    /// Waits until the connection's unsent replies are within their bound. A server about to
    /// produce a large reply (a read of up to 64 KiB) waits here first, so a guest that has
    /// many reads in progress but does not read its replies cannot make the host queue them.
    pub async fn reply_room(&self) {
        if let Some(flow) = &self.1 {
            flow.room().await;
        }
    }

    /// Takes a slot for one call.
    ///
    /// # Errors
    /// `limit: max-outstanding-calls N reached` when every slot is taken.
    pub fn enter(&self) -> Result<InFlight, capnp::Error> {
        self.0.take(1).ok_or_else(|| {
            failed(
                Reason::Limit,
                format!("max-outstanding-calls {} reached", self.0.limit()),
            )
        })
    }

    /// Calls in progress now.
    pub fn in_flight(&self) -> u32 {
        self.0.used() as u32
    }
}

/// A per-process budget of bytes held in the host while they wait to be written to a socket.
/// Each call reserves its payload's size for as long as it waits.
#[derive(Clone, Debug)]
pub struct ByteBudget(Budget);

impl ByteBudget {
    pub fn new(limit: usize) -> Self {
        ByteBudget(Budget::new(limit))
    }

    /// Reserves `bytes` until the guard is dropped.
    ///
    /// # Errors
    /// `limit: max in-flight bytes N reached` when the reservation does not fit.
    pub fn reserve(&self, bytes: usize) -> Result<Taken, capnp::Error> {
        self.0.take(bytes).ok_or_else(|| {
            failed(
                Reason::Limit,
                format!(
                    "max in-flight bytes {} reached ({} bytes already waiting to be sent)",
                    self.0.limit(),
                    self.0.used()
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_takes_and_gives_back() {
        let b = Budget::new(10);
        let a = b.take(6).unwrap();
        assert!(b.clone().take(5).is_none());
        drop(a);
        assert_eq!(b.used(), 0);
        assert!(b.take(10).is_some());
    }

    #[test]
    fn bytes_are_reserved_and_returned() {
        let budget = ByteBudget::new(10);
        let a = budget.reserve(6).unwrap();
        let err = budget.clone().reserve(5).unwrap_err();
        assert!(err
            .to_string()
            .contains("limit: max in-flight bytes 10 reached"));
        drop(a);
        assert!(budget.reserve(10).is_ok());
    }

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
