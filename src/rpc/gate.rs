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
