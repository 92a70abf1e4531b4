//! `Budget`: a counter with a limit, shared by clones and given back by an RAII guard — the
//! one mechanism behind every per-process bound on what the host holds for a guest (calls in
//! progress, bytes waiting to be written). [`ByteBudget`] is the byte-sized one.
//!
//! Single-threaded by design (`Rc<Cell>`): a budget belongs to one process, whose store, RPC
//! connection and servers live on one thread.

use std::cell::Cell;
use std::rc::Rc;

use cell_proto::{CellError, Reason};

/// A counter with a limit. Cheap to clone; clones share the count.
#[derive(Clone, Debug)]
pub(crate) struct Budget {
    used: Rc<Cell<usize>>,
    limit: usize,
}

/// An amount taken from a [`Budget`]; given back when dropped.
#[derive(Debug)]
#[must_use = "the amount is given back as soon as the guard is dropped"]
pub(crate) struct Taken {
    used: Rc<Cell<usize>>,
    amount: usize,
}

impl Budget {
    pub(crate) fn new(limit: usize) -> Self {
        Budget {
            used: Rc::new(Cell::new(0)),
            limit,
        }
    }

    /// Takes `amount` until the guard is dropped, or `None` if it does not fit.
    pub(crate) fn take(&self, amount: usize) -> Option<Taken> {
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
    pub(crate) fn used(&self) -> usize {
        self.used.get()
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        self.used.set(self.used.get().saturating_sub(self.amount));
    }
}

/// A [`Budget`] shared by threads (the daemon's `max-jobs`, counted over every shard):
/// the same take-or-refuse and give-back-on-drop, on an atomic counter.
#[derive(Clone, Debug)]
pub(crate) struct SharedBudget {
    used: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    limit: usize,
}

/// An amount taken from a [`SharedBudget`]; given back when dropped, on whichever thread.
#[derive(Debug)]
#[must_use = "the amount is given back as soon as the guard is dropped"]
pub(crate) struct SharedTaken {
    used: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    amount: usize,
}

impl SharedBudget {
    pub(crate) fn new(limit: usize) -> Self {
        SharedBudget {
            used: Default::default(),
            limit,
        }
    }

    /// Takes `amount` until the guard is dropped, or `None` if it does not fit (never more
    /// than the limit, however many threads take at once).
    pub(crate) fn take(&self, amount: usize) -> Option<SharedTaken> {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(amount).filter(|n| *n <= self.limit)
            })
            .ok()?;
        Some(SharedTaken {
            used: self.used.clone(),
            amount,
        })
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

impl Drop for SharedTaken {
    fn drop(&mut self) {
        self.used
            .fetch_sub(self.amount, std::sync::atomic::Ordering::AcqRel);
    }
}

/// A per-process budget of bytes held in the host while they wait to be written to a socket.
/// Each call reserves its payload's size for as long as it waits.
#[derive(Clone, Debug)]
pub(crate) struct ByteBudget(Budget);

impl ByteBudget {
    pub(crate) fn new(limit: usize) -> Self {
        ByteBudget(Budget::new(limit))
    }

    /// Reserves `bytes` until the guard is dropped.
    ///
    /// # Errors
    /// `limit: max in-flight bytes N reached` when the reservation does not fit.
    pub(crate) fn reserve(&self, bytes: usize) -> Result<Taken, capnp::Error> {
        self.0.take(bytes).ok_or_else(|| {
            capnp::Error::from(CellError::new(
                Reason::Limit,
                format!(
                    "max in-flight bytes {} reached ({} bytes already waiting to be sent)",
                    self.0.limit(),
                    self.0.used()
                ),
            ))
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
    fn shared_budget_never_overshoots_across_threads() {
        let b = SharedBudget::new(8);
        let held: Vec<_> = std::thread::scope(|s| {
            let takers: Vec<_> = (0..4)
                .map(|_| s.spawn(|| (0..10).filter_map(|_| b.take(1)).collect::<Vec<_>>()))
                .collect();
            takers.into_iter().flat_map(|t| t.join().unwrap()).collect()
        });
        assert_eq!(held.len(), 8);
        assert_eq!(b.used(), 8);
        drop(held);
        assert_eq!(b.used(), 0);
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
}
