//! `StackPool`: the fiber stacks stores run on, kept and reused instead of mapped and
//! unmapped per process.
//!
//! Why: every store runs its guest on a fiber stack of its own (async wasmtime). Wasmtime's
//! on-demand allocator maps a fresh one per store and unmaps it when the store is dropped;
//! with shards (several threads of this one process on several CPUs) every `munmap` must
//! shoot down the other CPUs' TLBs (an IPI each, dear under a hypervisor) and takes the
//! process's `mmap_lock` for writing, which serialises the shards: measured in `make bench`
//! (section 9's analysis). A stack taken from the pool is one `Mutex` pop; one given back,
//! a push.
//!
//! Reuse without zeroing is what wasmtime's own pooling allocator does by default: a stack
//! holds native frames only, which guest code cannot read (wasm locals start zeroed and
//! Cranelift writes a spill slot before reading it).
//!
//! Bounds: at most [`POOL_MAX`] idle stacks are kept (beyond it a returned stack is
//! unmapped); each keeps only the pages it touched resident (a guest's host calls run
//! mostly in the first tens of KiB). Shared by every shard (`Send + Sync`).

use std::ops::Range;
use std::sync::{Arc, Mutex};

use wasmtime::{StackCreator, StackMemory};

/// Idle stacks kept for reuse (the rest are unmapped when given back).
pub(crate) const POOL_MAX: usize = 256;

/// The engine's stack creator (see the module docs).
#[derive(Default)]
pub(crate) struct StackPool(Arc<Idle>);

#[derive(Default)]
struct Idle(Mutex<Vec<Mapping>>);

/// One stack's mapping: a guard page at the bottom (no access), then `size` bytes.
struct Mapping {
    base: usize,
    len: usize,
    page: usize,
}

impl Mapping {
    fn new(size: usize) -> anyhow::Result<Self> {
        // SAFETY: sysconf only reads a constant.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        let size = size.div_ceil(page) * page;
        let len = size + page;
        // SAFETY: a fresh anonymous private mapping owned by the `Mapping` we return; the
        // guard page stays PROT_NONE, the rest becomes read-write below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            anyhow::bail!("mapping a fiber stack: {}", std::io::Error::last_os_error());
        }
        let mapping = Mapping {
            base: base as usize,
            len,
            page,
        };
        // SAFETY: the range lies inside the mapping made above.
        let rw = unsafe {
            libc::mprotect(
                (mapping.base + page) as *mut libc::c_void,
                size,
                libc::PROT_READ | libc::PROT_WRITE,
            )
        };
        if rw != 0 {
            anyhow::bail!(
                "protecting a fiber stack: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(mapping)
    }

    fn size(&self) -> usize {
        self.len - self.page
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping is ours and nothing uses it any more (its stack was given back).
        unsafe {
            libc::munmap(self.base as *mut libc::c_void, self.len);
        }
    }
}

/// A stack lent to one store; back to the pool when wasmtime drops it.
struct PooledStack {
    mapping: Option<Mapping>,
    idle: Arc<Idle>,
}

impl Drop for PooledStack {
    fn drop(&mut self) {
        let Some(mapping) = self.mapping.take() else {
            return;
        };
        let mut idle = self
            .idle
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if idle.len() < POOL_MAX {
            idle.push(mapping);
        }
    }
}

impl PooledStack {
    fn mapping(&self) -> (usize, usize, usize) {
        self.mapping
            .as_ref()
            .map_or((0, 0, 0), |m| (m.base, m.len, m.page))
    }
}

// SAFETY: the memory is a page-aligned mapping this value owns until it is dropped, with a
// PROT_NONE guard page below `range()`; nothing else writes to it while wasmtime holds it.
unsafe impl StackMemory for PooledStack {
    fn top(&self) -> *mut u8 {
        let (base, len, _) = self.mapping();
        (base + len) as *mut u8
    }

    fn range(&self) -> Range<usize> {
        let (base, len, page) = self.mapping();
        base + page..base + len
    }

    fn guard_range(&self) -> Range<*mut u8> {
        let (base, _, page) = self.mapping();
        base as *mut u8..(base + page) as *mut u8
    }
}

// SAFETY: each stack handed out is exclusively the caller's until it is dropped (a mapping
// is in the idle list or in exactly one `PooledStack`).
unsafe impl StackCreator for StackPool {
    fn new_stack(&self, size: usize, zeroed: bool) -> wasmtime::Result<Box<dyn StackMemory>> {
        let reused = {
            let mut idle = self
                .0
                 .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let at = idle.iter().rposition(|m| m.size() >= size);
            at.map(|at| idle.swap_remove(at))
        };
        let mapping = match reused {
            Some(m) => {
                if zeroed {
                    // SAFETY: the range is the mapping's read-write part, ours alone now.
                    unsafe {
                        std::ptr::write_bytes((m.base + m.page) as *mut u8, 0, m.size());
                    }
                }
                m
            }
            None => Mapping::new(size).map_err(wasmtime::Error::msg)?,
        };
        Ok(Box::new(PooledStack {
            mapping: Some(mapping),
            idle: self.0.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stack_given_back_is_handed_out_again_and_the_pool_is_bounded() {
        let pool = StackPool::default();
        let a = pool.new_stack(64 * 1024, false).unwrap();
        let range = a.range();
        assert_eq!(range.end - range.start, 64 * 1024);
        assert_eq!(a.top() as usize, range.end);
        assert_eq!(a.guard_range().end as usize, range.start);
        // SAFETY: writing inside the stack's read-write range.
        unsafe { std::ptr::write_bytes(range.start as *mut u8, 7, 16) };
        drop(a);
        let b = pool.new_stack(64 * 1024, true).unwrap();
        assert_eq!(b.range(), range, "the same mapping, reused");
        // SAFETY: reading inside the stack's read-write range.
        assert_eq!(
            unsafe { *(range.start as *const u8) },
            0,
            "zeroed when asked"
        );
        let many: Vec<_> = (0..POOL_MAX + 8)
            .map(|_| pool.new_stack(16 * 1024, false).unwrap())
            .collect();
        drop(many);
        assert_eq!(pool.0 .0.lock().unwrap().len(), POOL_MAX);
    }
}
