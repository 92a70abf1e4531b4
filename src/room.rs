//! `Room`: how many processes a subtree holds, against each ancestor's `max-procs`.
//!
//! Why atomics: with `cell run --shards N` one tree spans shards (a child's store on one
//! thread, its parent's on another), yet `max-procs` must count every descendant wherever it
//! runs. Each process has a [`Room`] (its subtree's count, its limit, its parent's room); a
//! new process takes a [`Seat`] in every ancestor's room at once or in none, and gives it
//! back when its seat drops (at reap). Rooms are `Arc`: a child on another shard holds its
//! parent's room, nothing else of it.
//!
//! Bounded: a seat walks the ancestor chain, at most `max-depth` + 1 rooms. Exact: a seat
//! is refused only when some ancestor's count is at its limit at the moment of the increment
//! (two spawns racing for one last place: one gets it, the other is refused; a seat rolled
//! back after a refusal never lets a third one in above the limit).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use crate::limits::LimitError;

/// A process id (`crate::handle::Pid`, which sits above this module).
type Pid = u32;

/// One process's subtree count (see the module docs).
#[derive(Debug)]
pub(crate) struct Room {
    pid: Pid,
    limit: u32,
    /// Unreaped processes in this subtree, this one included.
    count: AtomicU32,
    parent: Option<Arc<Room>>,
}

/// A process's place in its own room and every ancestor's; dropped when it is reaped.
#[derive(Debug)]
pub(crate) struct Seat(Arc<Room>);

impl Room {
    /// Checks, without taking anything, that one more process fits under this room and each
    /// of its ancestors (an early refusal before a spawn compiles anything).
    ///
    /// # Errors
    /// [`LimitError::Procs`] naming the first room that is full.
    pub(crate) fn check(&self) -> Result<(), LimitError> {
        let mut at = Some(self);
        while let Some(room) = at {
            if room.count.load(Ordering::Acquire) >= room.limit {
                return Err(room.full());
            }
            at = room.parent.as_deref();
        }
        Ok(())
    }

    /// The subtree count now, this process included.
    #[cfg(test)]
    pub(crate) fn count(&self) -> u32 {
        self.count.load(Ordering::Acquire)
    }

    fn full(&self) -> LimitError {
        LimitError::Procs {
            pid: self.pid,
            limit: self.limit,
        }
    }

    fn ancestors(&self) -> impl Iterator<Item = &Room> {
        std::iter::successors(self.parent.as_deref(), |r| r.parent.as_deref())
    }
}

impl Seat {
    /// Takes a seat for `pid` (whose own subtree may hold `limit`) under `parent`'s room.
    ///
    /// # Errors
    /// [`LimitError::Procs`] naming the ancestor whose subtree is full; nothing is taken.
    pub(crate) fn take(
        pid: Pid,
        limit: u32,
        parent: Option<Arc<Room>>,
    ) -> Result<Self, LimitError> {
        let room = Arc::new(Room {
            pid,
            limit,
            count: AtomicU32::new(1),
            parent,
        });
        for (taken, ancestor) in room.ancestors().enumerate() {
            let got = ancestor
                .count
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < ancestor.limit).then_some(n + 1)
                });
            if got.is_err() {
                let refusal = ancestor.full();
                for undo in room.ancestors().take(taken) {
                    undo.count.fetch_sub(1, Ordering::AcqRel);
                }
                return Err(refusal);
            }
        }
        Ok(Seat(room))
    }

    /// This process's own room (its children take seats under it).
    pub(crate) fn room(&self) -> &Arc<Room> {
        &self.0
    }
}

impl Drop for Seat {
    fn drop(&mut self) {
        for ancestor in self.0.ancestors() {
            ancestor.count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seat_counts_in_every_ancestor_and_is_given_back() {
        let root = Seat::take(0, 3, None).unwrap();
        let a = Seat::take(1, 10, Some(root.room().clone())).unwrap();
        let b = Seat::take(2, 10, Some(a.room().clone())).unwrap();
        assert_eq!((root.room().count(), a.room().count()), (3, 2));
        assert_eq!(
            a.room().check(),
            Err(LimitError::Procs { pid: 0, limit: 3 })
        );
        let refused = Seat::take(3, 10, Some(a.room().clone()));
        assert_eq!(refused.err(), Some(LimitError::Procs { pid: 0, limit: 3 }));
        assert_eq!(
            (root.room().count(), a.room().count()),
            (3, 2),
            "a refused seat takes nothing, not even in the rooms below the full one"
        );
        drop(b);
        assert_eq!((root.room().count(), a.room().count()), (2, 1));
        assert!(a.room().check().is_ok());
    }

    #[test]
    fn racing_threads_never_overfill_a_room() {
        let root = Seat::take(0, 101, None).unwrap();
        let mid = Arc::new(Seat::take(1, 1000, Some(root.room().clone())).unwrap());
        let seats: Vec<Vec<Seat>> = std::thread::scope(|s| {
            let workers: Vec<_> = (0..4)
                .map(|t| {
                    let mid = mid.clone();
                    s.spawn(move || {
                        (0..100)
                            .filter_map(|i| {
                                Seat::take(10 + t * 100 + i, 5, Some(mid.room().clone())).ok()
                            })
                            .collect()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let taken: usize = seats.iter().map(Vec::len).sum();
        assert_eq!(
            taken, 99,
            "root's 101 = root + mid + 99 children, however they race"
        );
        assert_eq!(root.room().count(), 101);
        drop(seats);
        assert_eq!(root.room().count(), 2);
    }
}
