//! Shards: the threads a run's processes live on. Each shard is one thread running a
//! current-thread tokio runtime and a `LocalSet`, and a context `C` of its own (the daemon's:
//! a supervisor, a ceiling), so everything a process owns — its store, its RPC system, its
//! capability servers — stays on one thread for its whole life, and the per-call path stays
//! single-threaded and lock-free (`Rc`, `RefCell`).
//!
//! Ownership: a shard's context is `Rc` and never leaves its thread. What crosses shards is
//! `Send`: a [`Shard`] handle (a bounded command queue and two load counters), the closures
//! sent through it, and what they return. A closure runs as a local task of the target shard.
//!
//! Shard 0 is the thread that called [`ShardSet::start`] (its `LocalSet` must be running);
//! the others are threads of their own, which end when the set is dropped (their tasks are
//! dropped with their runtime: stop the work on them first).
//!
//! Bounds: each queue holds at most [`QUEUE`] commands and a sender waits while it is full;
//! every command comes from a call already bounded by its caller's call gate.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};

/// A closure to run on a shard, given its context.
type Command<C> = Box<dyn FnOnce(Rc<C>) + Send>;

/// Commands waiting for one shard.
pub(crate) const QUEUE: usize = 1024;

/// The most shards a run may have (a thread, a runtime and a supervisor each).
pub(crate) const MAX_SHARDS: usize = 256;

/// One shard per core the process may use (at least one, at most [`MAX_SHARDS`]).
pub(crate) fn default_count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_SHARDS))
}

/// A handle on one shard, usable from any thread.
pub(crate) struct Shard<C> {
    index: usize,
    tx: mpsc::Sender<Command<C>>,
    /// Processes in the shard's table now (published by its supervisor).
    procs: Arc<AtomicUsize>,
    /// Work placed on the shard that has not reached its table yet (see [`Placed`]).
    placed: Arc<AtomicUsize>,
}

impl<C> Clone for Shard<C> {
    fn clone(&self) -> Self {
        Shard {
            index: self.index,
            tx: self.tx.clone(),
            procs: self.procs.clone(),
            placed: self.placed.clone(),
        }
    }
}

/// Every shard of a run, in index order.
pub(crate) type Shards<C> = Arc<[Shard<C>]>;

impl<C: 'static> Shard<C> {
    pub(crate) fn index(&self) -> usize {
        self.index
    }

    /// The counter the shard's supervisor publishes its process count to.
    pub(crate) fn procs(&self) -> Arc<AtomicUsize> {
        self.procs.clone()
    }

    /// How loaded the shard is: its processes plus the work placed on it and not yet started.
    pub(crate) fn load(&self) -> usize {
        self.procs
            .load(Ordering::Relaxed)
            .saturating_add(self.placed.load(Ordering::Relaxed))
    }

    /// Counts one piece of work as placed here until the guard is dropped (once it is in
    /// the shard's table, or has failed), so a burst of placements spreads before any of them
    /// has started.
    pub(crate) fn place(&self) -> Placed {
        self.placed.fetch_add(1, Ordering::Relaxed);
        Placed(self.placed.clone())
    }

    /// Runs `f` on this shard, as a local task there, and returns what its future resolves
    /// to; `None` when the shard has stopped. Waits while the shard's queue is full. If the
    /// caller stops waiting, the task still runs to its end on the shard.
    pub(crate) async fn call<R, F, Fut>(&self, f: F) -> Option<R>
    where
        F: FnOnce(Rc<C>) -> Fut + Send + 'static,
        Fut: Future<Output = R> + 'static,
        R: Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let command: Command<C> = Box::new(move |ctx| {
            tokio::task::spawn_local(async move {
                let _ = tx.send(f(ctx).await);
            });
        });
        self.tx.send(command).await.ok()?;
        rx.await.ok()
    }
}

/// Work counted as placed on a shard (see [`Shard::place`]).
pub(crate) struct Placed(Arc<AtomicUsize>);

impl Drop for Placed {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The least loaded shard; among equals `prefer` (the caller's own: no hop), then the lowest.
pub(crate) fn least_loaded<C: 'static>(shards: &[Shard<C>], prefer: usize) -> usize {
    let mut best = prefer.min(shards.len().saturating_sub(1));
    let mut best_load = shards.get(best).map_or(0, Shard::load);
    for shard in shards {
        let load = shard.load();
        if load < best_load {
            (best, best_load) = (shard.index, load);
        }
    }
    best
}

/// Where work arising on shard `own` should go: `own` unless another shard is lighter by more
/// than a margin (1, plus a quarter of `own`'s load), so that swings between equally busy
/// shards do not make work hop threads (a forwarded job costs the front about as much again as
/// running it: measured in `make bench`, section 6).
pub(crate) fn place_from<C: 'static>(shards: &[Shard<C>], own: usize) -> usize {
    let best = least_loaded(shards, own);
    let (Some(mine), Some(other)) = (shards.get(own), shards.get(best)) else {
        return best;
    };
    let mine = mine.load();
    if other.load().saturating_add(1 + mine / 4) < mine {
        best
    } else {
        own
    }
}

/// A run's shards; dropping it stops the threads of shards 1.. (see the module docs).
pub(crate) struct ShardSet<C> {
    shards: Shards<C>,
    /// Shard 0's context (this thread's).
    local: Rc<C>,
    stops: Vec<Arc<Notify>>,
}

impl<C: 'static> ShardSet<C> {
    /// Starts `n` shards (at least one, at most [`MAX_SHARDS`]): shard 0 on this thread, which
    /// must be inside a `LocalSet`; each other one on a thread named `cell-shard-N`. `make`
    /// builds each shard's context on that shard's own thread, given its index and every
    /// shard's handle. Returns once every context is made.
    ///
    /// # Errors
    /// `n` is out of range, a thread or runtime cannot be started, or `make` fails for a
    /// shard (the first error; the shards already started are stopped).
    pub(crate) fn start<M>(n: usize, make: M) -> anyhow::Result<Self>
    where
        M: Fn(usize, Shards<C>) -> anyhow::Result<C> + Send + Sync + 'static,
    {
        if n == 0 || n > MAX_SHARDS {
            anyhow::bail!("--shards {n}: give 1 to {MAX_SHARDS}");
        }
        let mut receivers = Vec::with_capacity(n);
        let mut handles = Vec::with_capacity(n);
        for index in 0..n {
            let (tx, rx) = mpsc::channel(QUEUE);
            receivers.push(rx);
            handles.push(Shard {
                index,
                tx,
                procs: Arc::default(),
                placed: Arc::default(),
            });
        }
        let shards: Shards<C> = handles.into();
        let make = Arc::new(make);
        let mut receivers = receivers.into_iter();
        let Some(first) = receivers.next() else {
            anyhow::bail!("no shard");
        };
        let local = Rc::new(make(0, shards.clone())?);
        let stop = Arc::new(Notify::new());
        tokio::task::spawn_local(serve_commands(first, local.clone(), stop.clone()));
        let mut set = ShardSet {
            shards: shards.clone(),
            local,
            stops: vec![stop],
        };
        // Every thread starts at once and the set waits for all of them: start-up costs one
        // runtime's set-up, not N of them in a row (a 64-core default must not add 64).
        let mut ready = Vec::with_capacity(n.saturating_sub(1));
        for (index, rx) in (1..n).zip(receivers) {
            let stop = Arc::new(Notify::new());
            set.stops.push(stop.clone());
            let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel(1);
            let (make, shards) = (make.clone(), shards.clone());
            std::thread::Builder::new()
                .name(format!("cell-shard-{index}"))
                .spawn(move || run_shard(index, rx, stop, ready_tx, move || make(index, shards)))
                .map_err(|e| anyhow::anyhow!("cannot start shard {index}: {e}"))?;
            ready.push((index, ready_rx));
        }
        for (index, ready_rx) in ready {
            // Startup only, before anything is served: waiting here blocks nobody.
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.context(format!("starting shard {index}"))),
                Err(_) => anyhow::bail!("shard {index} ended while starting"),
            }
        }
        Ok(set)
    }

    pub(crate) fn shards(&self) -> &Shards<C> {
        &self.shards
    }

    /// Shard 0's context: the calling thread's.
    pub(crate) fn local(&self) -> &Rc<C> {
        &self.local
    }
}

impl<C> Drop for ShardSet<C> {
    fn drop(&mut self) {
        for stop in &self.stops {
            // A permit is stored if the loop is not waiting right now: no stop is lost.
            stop.notify_one();
        }
    }
}

/// The thread of shard `index`: builds its runtime and context, reports readiness, and runs
/// commands until stopped.
fn run_shard<C: 'static>(
    index: usize,
    rx: mpsc::Receiver<Command<C>>,
    stop: Arc<Notify>,
    ready: std::sync::mpsc::SyncSender<anyhow::Result<()>>,
    make: impl FnOnce() -> anyhow::Result<C>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(anyhow::anyhow!("cannot build its runtime: {e}")));
            return;
        }
    };
    let local = tokio::task::LocalSet::new();
    let span = tracing::info_span!("shard", index);
    let _entered = span.enter();
    local.block_on(&runtime, async move {
        let ctx = match make() {
            Ok(ctx) => Rc::new(ctx),
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        serve_commands(rx, ctx, stop).await;
    });
    // Whatever still runs on this shard is dropped with its LocalSet; a compile still on a
    // blocking thread is not waited for.
    drop(local);
    runtime.shutdown_background();
}

/// Runs each command as it arrives, until `stop` is notified (or every sender is gone).
async fn serve_commands<C: 'static>(
    mut rx: mpsc::Receiver<Command<C>>,
    ctx: Rc<C>,
    stop: Arc<Notify>,
) {
    loop {
        tokio::select! {
            () = stop.notified() => return,
            command = rx.recv() => match command {
                Some(command) => command(ctx.clone()),
                None => return,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Ctx {
        index: usize,
        thread: std::thread::ThreadId,
    }

    #[tokio::test(flavor = "current_thread")]
    async fn commands_run_on_their_own_shard_thread() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let set = ShardSet::start(3, |index, _| {
                    Ok(Ctx {
                        index,
                        thread: std::thread::current().id(),
                    })
                })
                .unwrap();
                let mut threads = std::collections::HashSet::new();
                for shard in set.shards().iter() {
                    let (index, made_on, ran_on) =
                        shard
                            .call(|ctx| async move {
                                (ctx.index, ctx.thread, std::thread::current().id())
                            })
                            .await
                            .unwrap();
                    assert_eq!(index, shard.index());
                    assert_eq!(made_on, ran_on, "a context never leaves its thread");
                    threads.insert(ran_on);
                }
                assert_eq!(threads.len(), 3);
                assert!(
                    threads.contains(&std::thread::current().id()),
                    "shard 0 is the caller's thread"
                );
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_failing_shard_fails_the_start_and_bad_counts_are_refused() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let failed = ShardSet::<()>::start(2, |index, _| {
                    anyhow::ensure!(index == 0, "no ceiling here");
                    Ok(())
                });
                let e = failed.err().unwrap();
                assert!(
                    format!("{e:#}").contains("starting shard 1: no ceiling here"),
                    "{e:#}"
                );
                assert!(ShardSet::<()>::start(0, |_, _| Ok(())).is_err());
                assert!(ShardSet::<()>::start(MAX_SHARDS + 1, |_, _| Ok(())).is_err());
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn placement_spreads_a_burst_and_prefers_the_callers_shard() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let set = ShardSet::start(2, |_, _| Ok(())).unwrap();
                let shards = set.shards();
                assert_eq!(
                    least_loaded(shards, 1),
                    1,
                    "idle: stay on the caller's shard"
                );
                let a = shards[least_loaded(shards, 0)].place();
                let second = least_loaded(shards, 0);
                assert_eq!(
                    second, 1,
                    "shard 0 has work placed: the next goes to shard 1"
                );
                let b = shards[second].place();
                assert_eq!(least_loaded(shards, 0), 0);
                shards[0].procs().store(5, Ordering::Relaxed);
                drop((a, b));
                assert_eq!(least_loaded(shards, 0), 1, "processes count as load");
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread")]
    async fn work_stays_home_unless_another_shard_is_clearly_lighter() {
        let local = tokio::task::LocalSet::new();
        local
            .run_until(async {
                let set = ShardSet::start(2, |_, _| Ok(())).unwrap();
                let shards = set.shards();
                let _home = shards[1].place();
                assert_eq!(place_from(shards, 1), 1, "1 against 0: within the margin");
                shards[1].procs().store(31, Ordering::Relaxed);
                shards[0].procs().store(24, Ordering::Relaxed);
                let swing = place_from(shards, 1);
                assert_eq!(swing, 1, "32 against 24: a swing, not a reason");
                shards[0].procs().store(22, Ordering::Relaxed);
                assert_eq!(place_from(shards, 1), 0, "32 against 22: move");
                shards[0].procs().store(15, Ordering::Relaxed);
                shards[1].procs().store(0, Ordering::Relaxed);
                let home = place_from(shards, 1);
                assert_eq!(home, 1, "the caller's shard is the lighter");
                assert_eq!(place_from(shards, 0), 1, "15 against 1: move");
            })
            .await;
    }
}
