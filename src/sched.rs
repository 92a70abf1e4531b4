//! Foreground before background on one runtime thread.
//!
//! Every process of a thread shares that thread, and a guest spinning in wasm holds it until
//! its epoch slice ends (≤ `EPOCH_TICK`). Yielding to the back of tokio's queue at every slice
//! end is fair in turns but not in latency: a process whose RPC call needs three scheduling
//! hops waits behind every spinner three times (measured: echo p50 24 µs alone, ~121 ms beside
//! four spinners). So a process that ends a slice (it used its whole slice: *background*) does
//! not run again while any *foreground* process of its thread — one that was woken and has not
//! run yet — is waiting; it parks on the thread's [`Gate`] and is released when the thread's
//! foreground work rests. A process is foreground again as soon as it waits for something by
//! itself (a poll that returns pending without a slice end).
//!
//! Bounds: background work is never starved — whatever foreground does, one parked process
//! gets a turn at least every [`BACKGROUND_TURN`]; a parked process holds one waiter in a
//! `Notify` and one timer, and nothing else. Ownership: a [`Gate`] is per thread (a
//! `thread_local`, so each shard thread has its own); a [`Turn`] is per process, created on
//! its thread and shared (`Arc`, since wakers and wasmtime's yield futures are `Send`) by the
//! process's task wrapper ([`Scheduled`]) and its store's epoch callback.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use wasmtime::UpdateDeadline;

/// The longest foreground work that never rests can hold every background process back: then
/// one of them gets a slice anyway.
pub(crate) const BACKGROUND_TURN: Duration = Duration::from_millis(100);

/// A slice end this soon after the process was resumed is a deadline that passed while it was
/// waiting (epoch deadlines are absolute), not a slice it used up.
const STALE_DEADLINE: Duration = Duration::from_millis(1);

/// One thread's foreground count and its parked background processes.
struct Gate {
    base: Instant,
    /// Foreground processes woken and not yet polled.
    woken: AtomicUsize,
    /// Background processes parked until `woken` is 0.
    parked: AtomicUsize,
    rested: Arc<Notify>,
    /// When background work last got a slice, in ns since `base`.
    last_turn: AtomicU64,
}

impl Gate {
    fn now(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Releases the parked processes once no foreground process is waiting to run.
    fn rest_if_idle(&self) {
        if self.woken.load(Ordering::Acquire) == 0 && self.parked.load(Ordering::Acquire) > 0 {
            self.rested.notify_waiters();
        }
    }

    /// Whether a parked process may run now: foreground rests, or background's turn is due.
    fn may_run(&self) -> bool {
        let now = self.now();
        if self.woken.load(Ordering::Acquire) == 0 {
            self.last_turn.store(now, Ordering::Release);
            return true;
        }
        let last = self.last_turn.load(Ordering::Acquire);
        now.saturating_sub(last) >= turn_ns()
            && self
                .last_turn
                .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
    }

    /// When the next background turn is due.
    fn next_turn(&self) -> tokio::time::Instant {
        let last = self.last_turn.load(Ordering::Acquire);
        let at = self.base + Duration::from_nanos(last.saturating_add(turn_ns()));
        tokio::time::Instant::from_std(at)
    }
}

fn turn_ns() -> u64 {
    BACKGROUND_TURN.as_nanos() as u64
}

thread_local! {
    static GATE: Arc<Gate> = Arc::new(Gate {
        base: Instant::now(),
        woken: AtomicUsize::new(0),
        parked: AtomicUsize::new(0),
        rested: Arc::new(Notify::new()),
        last_turn: AtomicU64::new(0),
    });
}

const IDLE: u8 = 0;
const WOKEN: u8 = 1;
const CLOSED: u8 = 2;

/// One process's place on its thread's [`Gate`].
#[derive(Clone)]
pub(crate) struct Turn(Arc<TurnState>);

struct TurnState {
    gate: Arc<Gate>,
    /// `WOKEN` while counted in `gate.woken`; `CLOSED` once its task is gone.
    state: AtomicU8,
    /// Ended its last slice and has not waited for anything by itself since.
    background: AtomicBool,
    /// A slice ended (or it stayed parked) during the current poll.
    sliced: AtomicBool,
    /// When the current poll began, in ns since `gate.base`.
    resumed_at: AtomicU64,
}

impl Turn {
    /// A process's turn on the current thread's gate; create it on the thread that runs it.
    pub(crate) fn new() -> Turn {
        Turn(Arc::new(TurnState {
            gate: GATE.with(Arc::clone),
            state: AtomicU8::new(IDLE),
            background: AtomicBool::new(false),
            sliced: AtomicBool::new(false),
            resumed_at: AtomicU64::new(0),
        }))
    }

    /// What the store's epoch callback answers when the process's deadline passes.
    pub(crate) fn slice_end(&self) -> UpdateDeadline {
        let t = &self.0;
        let now = t.gate.now();
        if now.saturating_sub(t.resumed_at.load(Ordering::Acquire))
            < STALE_DEADLINE.as_nanos() as u64
        {
            return UpdateDeadline::Continue(1);
        }
        t.background.store(true, Ordering::Release);
        t.sliced.store(true, Ordering::Release);
        if t.gate.woken.load(Ordering::Acquire) == 0 {
            t.gate.last_turn.store(now, Ordering::Release);
            return UpdateDeadline::Yield(1);
        }
        UpdateDeadline::YieldCustom(1, Box::pin(park(self.0.clone())))
    }

    fn woken(&self) {
        let t = &self.0;
        if t.background.load(Ordering::Acquire) {
            return;
        }
        if t.state
            .compare_exchange(IDLE, WOKEN, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            t.gate.woken.fetch_add(1, Ordering::AcqRel);
        }
    }

    /// Leaves the count: the task is being polled (`to` = `IDLE`) or is gone (`CLOSED`).
    fn leave(&self, to: u8) {
        let t = &self.0;
        let was = if to == CLOSED {
            t.state.swap(CLOSED, Ordering::AcqRel)
        } else {
            match t
                .state
                .compare_exchange(WOKEN, IDLE, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(w) | Err(w) => w,
            }
        };
        if was == WOKEN {
            t.gate.woken.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Waits, parked, until the process may run again.
async fn park(t: Arc<TurnState>) {
    struct Parked(Arc<Gate>);
    impl Drop for Parked {
        fn drop(&mut self) {
            self.0.parked.fetch_sub(1, Ordering::AcqRel);
        }
    }
    let gate = t.gate.clone();
    gate.parked.fetch_add(1, Ordering::AcqRel);
    let _parked = Parked(gate.clone());
    loop {
        // Still within the slice that ended: the process stays background.
        t.sliced.store(true, Ordering::Release);
        let notified = gate.rested.clone().notified_owned();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if gate.may_run() {
            return;
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep_until(gate.next_turn()) => {}
        }
    }
}

/// A process's task, counted on its thread's gate whenever it is woken while foreground.
pub(crate) struct Scheduled<F> {
    inner: Pin<Box<F>>,
    turn: Turn,
    /// The waker the task was last polled with and the tracked waker wrapping it.
    waker: Option<(Waker, Waker)>,
}

impl<F: Future> Scheduled<F> {
    pub(crate) fn new(inner: F, turn: Turn) -> Self {
        Scheduled {
            inner: Box::pin(inner),
            turn,
            waker: None,
        }
    }
}

struct Tracked {
    turn: Turn,
    inner: Waker,
}

impl Wake for Tracked {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.turn.woken();
        self.inner.wake_by_ref();
    }
}

impl<F: Future> Future for Scheduled<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        this.turn.leave(IDLE);
        let t = &this.turn.0;
        t.sliced.store(false, Ordering::Release);
        t.resumed_at.store(t.gate.now(), Ordering::Release);
        let waker = match &this.waker {
            Some((given, tracked)) if given.will_wake(cx.waker()) => tracked.clone(),
            _ => {
                let tracked = Waker::from(Arc::new(Tracked {
                    turn: this.turn.clone(),
                    inner: cx.waker().clone(),
                }));
                this.waker = Some((cx.waker().clone(), tracked.clone()));
                tracked
            }
        };
        let polled = this.inner.as_mut().poll(&mut Context::from_waker(&waker));
        if polled.is_pending() && !t.sliced.load(Ordering::Acquire) {
            t.background.store(false, Ordering::Release);
        }
        t.gate.rest_if_idle();
        polled
    }
}

impl<F> Drop for Scheduled<F> {
    fn drop(&mut self) {
        self.turn.leave(CLOSED);
        self.turn.0.gate.rest_if_idle();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A future that counts its polls and wakes itself the first `n` times.
    struct SelfWaking(Arc<AtomicUsize>, usize);
    impl Future for SelfWaking {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            let polls = self.0.fetch_add(1, Ordering::AcqRel);
            if polls >= self.1 {
                return Poll::Ready(());
            }
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }

    fn woken() -> usize {
        GATE.with(|g| g.woken.load(Ordering::Acquire))
    }

    #[test]
    fn foreground_wakes_are_counted_until_polled_and_given_back_when_dropped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut task = Box::pin(Scheduled::new(SelfWaking(polls.clone(), 3), Turn::new()));
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert_eq!(woken(), 0);
        assert!(task.as_mut().poll(&mut cx).is_pending());
        assert_eq!(woken(), 1, "a self-wake while foreground is counted");
        assert!(task.as_mut().poll(&mut cx).is_pending());
        assert_eq!(woken(), 1, "counted once per wake, given back by the poll");
        drop(task);
        assert_eq!(woken(), 0, "a dropped task leaves the count");
        // A background process's wakes are not counted: it does not hold anyone back.
        let turn = Turn::new();
        turn.0.background.store(true, Ordering::Release);
        let mut task = Box::pin(Scheduled::new(SelfWaking(polls, 100), turn.clone()));
        turn.0.sliced.store(true, Ordering::Release);
        let _ = task.as_mut().poll(&mut cx);
        assert_eq!(woken(), 0);
        // Its poll returned pending without a slice end: it waits by itself, so foreground.
        assert!(!turn.0.background.load(Ordering::Acquire));
        drop(task);
        assert_eq!(woken(), 0);
        drop(rt);
    }

    #[test]
    fn a_parked_process_runs_when_foreground_rests_and_is_never_starved() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            // Foreground waiting: the parked process waits for it to rest.
            let turn = Turn::new();
            let gate = turn.0.gate.clone();
            gate.woken.fetch_add(1, Ordering::AcqRel);
            gate.last_turn.store(gate.now(), Ordering::Release);
            let parked = tokio::task::spawn(park(turn.0.clone()));
            tokio::task::yield_now().await;
            assert!(!parked.is_finished());
            assert_eq!(gate.parked.load(Ordering::Acquire), 1);
            gate.woken.fetch_sub(1, Ordering::AcqRel);
            gate.rest_if_idle();
            parked.await.unwrap();
            assert_eq!(gate.parked.load(Ordering::Acquire), 0);
            // Foreground that never rests still lets background have its turn.
            gate.woken.fetch_add(1, Ordering::AcqRel);
            gate.last_turn.store(gate.now(), Ordering::Release);
            park(turn.0.clone()).await;
            gate.woken.fetch_sub(1, Ordering::AcqRel);
        });
    }
}
