//! `CallGate`: the bound on RPC calls in progress at once on one process's connection
//! (`--max-outstanding-calls`).
//!
//! Every server method starts with `let _call = self.gate.enter()?;`. The guard lives as long
//! as the method's future, so a call that waits (`Process.wait`, `ByteStream.read`, `spawn`)
//! holds its slot until it answers or is cancelled. A call arriving while all slots are taken
//! fails at once with `limit: max-outstanding-calls N reached`; the caller is not terminated.
//!
//! Whose gate: each gate belongs to one process's connection, created in [`super::serve`] and
//! handed to every server issued *on* that connection (Session → Executor → Process →
//! ByteStream). A capability is served by the object it was created as, so if a process ever
//! passes a host capability on to another process, calls on it keep counting against the
//! process it was issued to. Servers that re-issue a capability for a child (e.g. a restricted
//! Network granted at spawn) must build it with the child's gate.

use std::cell::Cell;
use std::rc::Rc;

use crate::rpc::failed;

/// A per-connection counter of calls in progress. Cheap to clone; clones share the count.
#[derive(Clone, Debug)]
pub struct CallGate {
    in_flight: Rc<Cell<u32>>,
    limit: u32,
}

/// One call in progress; frees its slot when dropped.
#[derive(Debug)]
#[must_use = "the slot is freed as soon as the guard is dropped"]
pub struct InFlight {
    in_flight: Rc<Cell<u32>>,
}

impl CallGate {
    pub fn new(limit: u32) -> Self {
        CallGate {
            in_flight: Rc::new(Cell::new(0)),
            limit,
        }
    }

    /// Takes a slot for one call.
    ///
    /// # Errors
    /// `limit: max-outstanding-calls N reached` when every slot is taken.
    pub fn enter(&self) -> Result<InFlight, capnp::Error> {
        let n = self.in_flight.get();
        if n >= self.limit {
            return Err(failed(
                "limit",
                format!("max-outstanding-calls {} reached", self.limit),
            ));
        }
        self.in_flight.set(n + 1);
        Ok(InFlight {
            in_flight: self.in_flight.clone(),
        })
    }

    /// Calls in progress now.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.get()
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
    }
}

/// A per-process budget of bytes held in the host while they wait to be written to a socket
/// (TCP writes and UDP sends queued behind a slow peer). Each call reserves its payload's size
/// for as long as it waits; a call that would exceed the budget fails at once with
/// `limit: max in-flight bytes N reached`, so a guest cannot park unbounded data in the host by
/// pipelining writes to a peer that does not read.
#[derive(Clone, Debug)]
pub struct ByteBudget {
    used: Rc<Cell<usize>>,
    limit: usize,
}

/// Bytes reserved by one call; returned to the budget when dropped.
#[derive(Debug)]
#[must_use = "the bytes are returned as soon as the guard is dropped"]
pub struct Reserved {
    used: Rc<Cell<usize>>,
    bytes: usize,
}

impl ByteBudget {
    pub fn new(limit: usize) -> Self {
        ByteBudget {
            used: Rc::new(Cell::new(0)),
            limit,
        }
    }

    /// Reserves `bytes` until the guard is dropped.
    ///
    /// # Errors
    /// `limit: max in-flight bytes N reached` when the reservation does not fit.
    pub fn reserve(&self, bytes: usize) -> Result<Reserved, capnp::Error> {
        let used = self.used.get();
        if used.saturating_add(bytes) > self.limit {
            return Err(failed(
                "limit",
                format!(
                    "max in-flight bytes {} reached ({used} bytes already waiting to be sent)",
                    self.limit
                ),
            ));
        }
        self.used.set(used + bytes);
        Ok(Reserved {
            used: self.used.clone(),
            bytes,
        })
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.used.set(self.used.get().saturating_sub(self.bytes));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
