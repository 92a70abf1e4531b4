//! The process table: who is alive, who is whose parent, and how many processes each subtree
//! holds. Pure bookkeeping, no I/O; the supervisor drives it.
//!
//! Lifecycle of an entry: inserted when a process starts (`Running`); marked `Exited` when its
//! task ends; removed ("reaped") once it has exited *and* all its children have been reaped.
//! Keeping an exited parent until its subtree is gone keeps every subtree count exact.
//!
//! Subtree counts are [`Seat`]s in `room.rs`'s atomic rooms, not numbers in this table: a
//! `cell run --shards N` child may live in another shard's table than its parent, and its
//! parent's `max-procs` still counts it (and its descendants) exactly. A child on another
//! shard shows in its parent's table as a *shadow* entry (no seat: the real entry on the
//! child's shard holds it), so the cascade reaches it.

use std::collections::{BTreeSet, HashMap};
use std::rc::Rc;
use std::sync::Arc;

pub(crate) use crate::handle::Pid;
use crate::handle::ProcessHandle;
use crate::limits::{FuelGauge, LimitError, Limits};
use crate::room::{Room, Seat};

/// One row of the table.
pub(crate) struct Entry {
    pub handle: Rc<ProcessHandle>,
    pub limits: Limits,
    children: BTreeSet<Pid>,
    /// Its place in every ancestor's count (`None`: a shadow of a process on another shard).
    seat: Option<Seat>,
    /// Whom its unused fuel goes back to when it ends (its parent's gauge, wherever the
    /// parent runs).
    pub lender: Option<FuelGauge>,
    exited: bool,
}

/// What a new entry is: its handle and limits, where it counts, whose fuel it runs on.
pub(crate) struct Admit {
    pub handle: Rc<ProcessHandle>,
    pub limits: Limits,
    /// The parent's room (`None` for a root). Taken from the parent's entry when the parent
    /// is in this table; given by the parent's shard when it is not.
    pub above: Option<Arc<Room>>,
    pub lender: Option<FuelGauge>,
    /// A shadow: the process runs on another shard (see the module docs).
    pub shadow: bool,
}

pub(crate) struct ProcessTable {
    entries: HashMap<Pid, Entry>,
    next_pid: Pid,
    /// Which pids are this table's: those `≡ first (mod stride)`. One table per shard, so
    /// pids are unique across shards by construction (no shared counter to contend on) and
    /// `pid % stride` names the shard that owns a process.
    pids: PidPlan,
    /// Instead of `pids`, one sequence shared by every shard of a `cell run --shards N`:
    /// one tree spans them, and its pids read as they always have (pid0's first child is
    /// pid 1). One atomic add per spawn.
    shared: Option<Arc<std::sync::atomic::AtomicU32>>,
}

/// The residue class of pids one table hands out (see [`ProcessTable::next_pid`]).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PidPlan {
    pub first: Pid,
    pub stride: Pid,
}

impl PidPlan {
    /// Every pid: one table, no shards.
    pub(crate) const ALL: PidPlan = PidPlan {
        first: 0,
        stride: 1,
    };

    /// The shard that owns `pid` in a run of `stride` shards.
    pub(crate) fn shard_of(pid: Pid, shards: usize) -> usize {
        (pid as usize) % shards.max(1)
    }
}

impl Default for ProcessTable {
    fn default() -> Self {
        ProcessTable::with_pids(PidPlan::ALL)
    }
}

impl ProcessTable {
    /// A table giving out the pids of `plan` (shard `first` of `stride`).
    pub(crate) fn with_pids(plan: PidPlan) -> Self {
        let stride = plan.stride.max(1);
        let plan = PidPlan {
            first: plan.first % stride,
            stride,
        };
        ProcessTable {
            entries: HashMap::new(),
            next_pid: plan.first,
            pids: plan,
            shared: None,
        }
    }

    /// A table giving out pids from `sequence`, shared with the other shards' tables.
    pub(crate) fn with_shared_pids(sequence: Arc<std::sync::atomic::AtomicU32>) -> Self {
        ProcessTable {
            shared: Some(sequence),
            ..ProcessTable::default()
        }
    }

    /// Whether `pid` is in this table (a pid chosen by another shard for a child placed
    /// here is checked against it: after the 32-bit space wrapped, an old process may
    /// still hold it).
    pub(crate) fn holds(&self, pid: Pid) -> bool {
        self.entries.contains_key(&pid)
    }

    /// The pid the next process (or `cell serve --http` request) will get: the next of this
    /// table's residue class, so a pid is not given again until the 32-bit space has wrapped
    /// (a daemon serving 10,000 requests a second wraps in about five days), and never while
    /// its holder is still in the table.
    pub(crate) fn next_pid(&mut self) -> Pid {
        if let Some(sequence) = &self.shared {
            loop {
                let pid = sequence.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if !self.entries.contains_key(&pid) {
                    return pid;
                }
            }
        }
        let PidPlan { first, stride } = self.pids;
        loop {
            let pid = self.next_pid;
            // Wrapping must land in the same residue class, whatever the stride.
            self.next_pid = match pid.checked_add(stride) {
                Some(next) => next,
                None => first,
            };
            if !self.entries.contains_key(&pid) {
                return pid;
            }
        }
    }

    pub(crate) fn get(&self, pid: Pid) -> Option<&Entry> {
        self.entries.get(&pid)
    }

    /// A running (not exited) process.
    pub(crate) fn running(&self, pid: Pid) -> Option<&Entry> {
        self.entries.get(&pid).filter(|e| !e.exited)
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Checks that one more process fits under `parent` in every ancestor's `max_procs`.
    ///
    /// # Errors
    /// [`LimitError::Procs`] naming the ancestor whose subtree is full.
    pub(crate) fn check_room(&self, parent: Pid) -> Result<(), LimitError> {
        match self.room_of(parent) {
            Some(room) => room.check(),
            None => Ok(()),
        }
    }

    /// The room `pid`'s children take seats in (`None` for a shadow or an unknown pid).
    pub(crate) fn room_of(&self, pid: Pid) -> Option<Arc<Room>> {
        let seat = self.entries.get(&pid)?.seat.as_ref()?;
        Some(seat.room().clone())
    }

    /// Adds a started process under its parent (if any), taking its seat in every
    /// ancestor's room (none for a shadow).
    ///
    /// # Errors
    /// [`LimitError::Procs`]: an ancestor's subtree filled up since it was checked (another
    /// shard's spawn took the last place); nothing was added.
    pub(crate) fn insert(&mut self, admit: Admit) -> Result<(), LimitError> {
        let Admit {
            handle,
            limits,
            above,
            lender,
            shadow,
        } = admit;
        let pid = handle.pid;
        let parent = handle.parent;
        let seat = if shadow {
            None
        } else {
            let above = above.or_else(|| parent.and_then(|p| self.room_of(p)));
            Some(Seat::take(pid, limits.max_procs, above)?)
        };
        self.entries.insert(
            pid,
            Entry {
                handle,
                limits,
                children: BTreeSet::new(),
                seat,
                lender,
                exited: false,
            },
        );
        if let Some(p) = parent {
            if let Some(e) = self.entries.get_mut(&p) {
                e.children.insert(pid);
            }
        }
        Ok(())
    }

    /// Marks `pid` exited; returns its children, which the caller must terminate.
    pub(crate) fn mark_exited(&mut self, pid: Pid) -> Vec<Rc<ProcessHandle>> {
        let Some(e) = self.entries.get_mut(&pid) else {
            return Vec::new();
        };
        e.exited = true;
        let children: Vec<Pid> = e.children.iter().copied().collect();
        children
            .iter()
            .filter_map(|c| self.entries.get(c).map(|e| e.handle.clone()))
            .collect()
    }

    /// Removes `pid` and then its ancestors, as far as each has exited and has no children.
    /// Returns the handles removed.
    pub(crate) fn reap(&mut self, pid: Pid) -> Vec<Rc<ProcessHandle>> {
        let mut reaped = Vec::new();
        let mut at = Some(pid);
        while let Some(p) = at {
            let reapable = self
                .entries
                .get(&p)
                .is_some_and(|e| e.exited && e.children.is_empty());
            if !reapable {
                return reaped;
            }
            let removed = self.entries.remove(&p).map(|e| e.handle);
            let parent = removed.as_ref().and_then(|h| h.parent);
            reaped.extend(removed);
            if let Some(parent) = parent {
                if let Some(pe) = self.entries.get_mut(&parent) {
                    pe.children.remove(&p);
                }
            }
            at = parent;
        }
        reaped
    }

    /// Every entry (running or exited, not reaped), in pid order.
    pub(crate) fn entries(&self) -> Vec<&Entry> {
        let mut all: Vec<&Entry> = self.entries.values().collect();
        all.sort_by_key(|e| e.handle.pid);
        all
    }

    /// Whether this entry's process has exited (it stays until its subtree is reaped).
    pub(crate) fn exited(&self, pid: Pid) -> bool {
        self.entries.get(&pid).is_some_and(|e| e.exited)
    }

    /// Every process that has not exited yet.
    pub(crate) fn running_handles(&self) -> Vec<Rc<ProcessHandle>> {
        self.entries
            .values()
            .filter(|e| !e.exited)
            .map(|e| e.handle.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handle::ProcessInfo;

    #[test]
    fn pids_wrap_around_but_skip_live_ones() {
        let mut t = ProcessTable::default();
        assert_eq!(add(&mut t, None, 10), 0);
        t.next_pid = Pid::MAX;
        assert_eq!(t.next_pid(), Pid::MAX);
        assert_eq!(t.next_pid(), 1, "pid 0 is still in the table");
    }

    #[test]
    fn sharded_tables_give_disjoint_pids_and_wrap_within_their_class() {
        let plan = |first| PidPlan { first, stride: 3 };
        let mut tables: Vec<ProcessTable> =
            (0..3).map(|s| ProcessTable::with_pids(plan(s))).collect();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..100 {
            for (shard, t) in tables.iter_mut().enumerate() {
                let pid = t.next_pid();
                assert_eq!(PidPlan::shard_of(pid, 3), shard);
                assert!(seen.insert(pid), "pid {pid} given twice");
            }
        }
        let t = &mut tables[2];
        t.next_pid = Pid::MAX - 1; // the last pid of class 2 (Pid::MAX is divisible by 3)
        assert_eq!(t.next_pid(), Pid::MAX - 1);
        let wrapped = t.next_pid();
        assert_eq!(wrapped, 2, "wraps to the first pid of its class");
    }

    fn add(t: &mut ProcessTable, parent: Option<Pid>, max_procs: u32) -> Pid {
        let pid = t.next_pid();
        let info = ProcessInfo::test(pid, parent);
        let limits = Limits {
            max_procs,
            ..Limits::default()
        };
        t.insert(Admit {
            handle: Rc::new(ProcessHandle::new(info)),
            limits,
            above: None,
            lender: None,
            shadow: false,
        })
        .unwrap();
        pid
    }

    #[test]
    fn subtree_limit_counts_all_descendants() {
        let mut t = ProcessTable::default();
        let root = add(&mut t, None, 3);
        let a = add(&mut t, Some(root), 10);
        assert!(t.check_room(a).is_ok());
        add(&mut t, Some(a), 10);
        // root now holds 3 processes: root, a, a's child.
        assert_eq!(
            t.check_room(a),
            Err(LimitError::Procs {
                pid: root,
                limit: 3
            })
        );
    }

    #[test]
    fn exited_parent_is_kept_until_children_are_reaped() {
        let mut t = ProcessTable::default();
        let root = add(&mut t, None, 10);
        let a = add(&mut t, Some(root), 10);
        let b = add(&mut t, Some(a), 10);
        let orphans = t.mark_exited(a);
        assert_eq!(orphans.iter().map(|h| h.pid).collect::<Vec<_>>(), vec![b]);
        t.reap(a);
        assert!(t.get(a).is_some(), "a still has a live child");
        t.mark_exited(b);
        t.reap(b);
        assert!(t.get(a).is_none() && t.get(b).is_none());
        assert_eq!(t.len(), 1);
        assert!(t.check_room(root).is_ok());
    }

    #[test]
    fn a_child_on_another_shard_counts_there_and_its_shadow_does_not_count_twice() {
        let sequence = Arc::new(std::sync::atomic::AtomicU32::new(0));
        let mut home = ProcessTable::with_shared_pids(sequence.clone());
        let mut other = ProcessTable::with_shared_pids(sequence);
        let root = add(&mut home, None, 3);
        // The child runs on the other shard: its real entry there takes the seat under
        // root's room; home holds a shadow of it under root.
        let pid = home.next_pid();
        let child = |pid| Rc::new(ProcessHandle::new(ProcessInfo::test(pid, Some(root))));
        other
            .insert(Admit {
                handle: child(pid),
                limits: Limits::default(),
                above: home.room_of(root),
                lender: None,
                shadow: false,
            })
            .unwrap();
        home.insert(Admit {
            handle: child(pid),
            limits: Limits::default(),
            above: None,
            lender: None,
            shadow: true,
        })
        .unwrap();
        assert_eq!(
            other.next_pid(),
            pid + 1,
            "one pid sequence for both tables"
        );
        assert!(home.room_of(pid).is_none(), "a shadow has no room");
        // root, its child elsewhere, and one more: root's max-procs 3 is full.
        add(&mut other, Some(pid), 10);
        assert_eq!(
            home.check_room(root),
            Err(LimitError::Procs {
                pid: root,
                limit: 3
            })
        );
        let orphans = home.mark_exited(root);
        assert_eq!(orphans.len(), 1, "the cascade reaches the shadow");
    }
}
