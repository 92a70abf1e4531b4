//! A minimal single-threaded, poll-driven executor for one guest process.
//!
//! A guest has exactly two things to drive: the RPC system (which reads stdin and writes stdout)
//! and the user's future. Neither may block the other, so all waiting goes through one place:
//! a future that cannot make progress registers an [`Interest`] (stdin readable, stdout
//! writable, or a monotonic-clock deadline) together with its waker, and when *nothing* can make
//! progress any more the loop turns every interest into a WASI pollable and blocks in
//! `wasi:io/poll.poll` until one of them is ready.
//!
//! Invariants (each one prevents a bug seen in practice):
//! - **Quiescence before blocking.** Every iteration polls the user future and *then* the RPC
//!   system, and the loop only blocks once an iteration ended without any waker being woken.
//!   Calls the user code just queued are therefore always written out before we sleep (a loop
//!   that blocked right after polling user code would leave them unsent and deadlock).
//! - **Everything written goes out before blocking.** The RPC system's writes collect in the
//!   outbox (see [`crate::stdio`]); [`block`] is only entered after [`crate::stdio::drain`]
//!   handed the outbox to stdout (or registered to finish once stdout has room).
//! - **Pollables never outlive their streams.** The stdio streams and their two pollables are
//!   created once and leaked together (`&'static`, see [`stdio`]), so they are never dropped at
//!   all (dropping a stream with a live pollable traps with "resource has children"), and
//!   subscribing to them is not repeated on every block. The one clock pollable a block may
//!   need is created right before `poll` and dropped right after it.
//! - **No stale registrations.** After `poll` returns, *every* registered waker is woken and
//!   the registry is emptied; futures that still cannot progress simply register again. With a
//!   handful of interests this costs nothing and means no bookkeeping can go wrong.
//! - **No silent hangs.** If the user future is pending but nothing is registered (the RPC
//!   system has ended and no timer is running), nothing could ever wake it: [`run_until`]
//!   reports that instead of blocking forever.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use wasip2::clocks::monotonic_clock;
use wasip2::io::poll::Pollable;
use wasip2::io::streams::{InputStream, OutputStream};

/// This process's stdin and stdout (the two halves of its RPC connection) and their pollables.
pub(crate) struct Stdio {
    /// Ready when `stdin` has data or is closed. Declared before the streams, so that even a
    /// drop would drop it first.
    stdin_ready: Pollable,
    /// Ready when `stdout` accepts writes (or is closed).
    stdout_ready: Pollable,
    pub(crate) stdin: InputStream,
    pub(crate) stdout: OutputStream,
}

/// The process-wide stdio streams and their pollables, created on first use and never dropped.
///
/// Leaking them is deliberate: it makes "a pollable outlives its stream" impossible, and they
/// would live until exit anyway (the guest always ends through `exit_with_code`).
pub(crate) fn stdio() -> &'static Stdio {
    thread_local! {
        static STDIO: &'static Stdio = {
            let stdin = wasip2::cli::stdin::get_stdin();
            let stdout = wasip2::cli::stdout::get_stdout();
            Box::leak(Box::new(Stdio {
                stdin_ready: stdin.subscribe(),
                stdout_ready: stdout.subscribe(),
                stdin,
                stdout,
            }))
        };
    }
    STDIO.with(|s| *s)
}

/// Something a pending future is waiting for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Interest {
    /// stdin has data or is closed.
    StdinReadable,
    /// stdout accepts writes (or a flush finished, or it is closed).
    StdoutWritable,
    /// The monotonic clock reached this instant (nanoseconds).
    Deadline(monotonic_clock::Instant),
}

thread_local! {
    static WAITING: RefCell<Vec<(Interest, Waker)>> = const { RefCell::new(Vec::new()) };
}

/// Asks to be woken (through `waker`) once `interest` may be ready.
pub(crate) fn register(interest: Interest, waker: &Waker) {
    WAITING.with(|w| {
        let mut w = w.borrow_mut();
        if !w.iter().any(|(i, k)| *i == interest && k.will_wake(waker)) {
            w.push((interest, waker.clone()));
        }
    });
}

/// Blocks until at least one registered interest is ready, then wakes every registered waker.
/// Returns `false` (without blocking) if nothing is registered.
///
/// One `poll` over at most three pollables: stdin's and stdout's (reused, see [`Stdio`]) and
/// one for the earliest deadline (every waker is woken afterwards, so later deadlines simply
/// register again).
fn block() -> bool {
    let mut waiting = WAITING.with(|w| std::mem::take(&mut *w.borrow_mut()));
    if waiting.is_empty() {
        return false;
    }
    let (mut stdin, mut stdout, mut deadline) = (false, false, None);
    for (interest, _) in &waiting {
        match *interest {
            Interest::StdinReadable => stdin = true,
            Interest::StdoutWritable => stdout = true,
            Interest::Deadline(when) => {
                deadline = Some(deadline.map_or(when, |d: monotonic_clock::Instant| d.min(when)))
            }
        }
    }
    {
        let io = stdio();
        let clock = deadline.map(monotonic_clock::subscribe_instant);
        let mut refs: [&Pollable; 3] = [&io.stdin_ready; 3];
        let mut n = 0;
        for p in [
            stdin.then_some(&io.stdin_ready),
            stdout.then_some(&io.stdout_ready),
            clock.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            refs[n] = p;
            n += 1;
        }
        wasip2::io::poll::poll(&refs[..n]);
        // `clock` is dropped here: before anything else runs.
    }
    for (_, waker) in waiting.drain(..) {
        waker.wake();
    }
    // Keep the vector's allocation for the next registrations (waking registers nothing).
    WAITING.with(|w| {
        let mut w = w.borrow_mut();
        if w.is_empty() {
            *w = waiting;
        }
    });
    true
}

/// The top-level waker: it only records that something was woken.
#[derive(Default)]
struct Flag(AtomicBool);

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Nothing could ever wake the main future: it is waiting for something that cannot happen.
#[derive(Debug)]
pub(crate) struct Stuck;

/// Drives `main` and `background` together until `main` completes.
///
/// `background` (the RPC system) is dropped once it completes (it must not be polled again);
/// `main` keeps running without it. Whatever is left is still alive when this returns.
pub(crate) fn run_until<T>(
    mut main: Pin<&mut dyn Future<Output = T>>,
    background: &mut Option<Pin<Box<dyn Future<Output = ()>>>>,
) -> Result<T, Stuck> {
    let flag = Arc::new(Flag::default());
    let waker = Waker::from(flag.clone());
    let mut cx = Context::from_waker(&waker);
    loop {
        flag.0.store(false, Ordering::SeqCst);
        // User code first, then the RPC system, so that whatever the user just queued is
        // written out in the same iteration.
        if let Poll::Ready(out) = main.as_mut().poll(&mut cx) {
            return Ok(out);
        }
        if let Some(bg) = background.as_mut() {
            if bg.as_mut().poll(&mut cx).is_ready() {
                *background = None;
                continue; // let `main` see the end of the connection before anything blocks
            }
        }
        if flag.0.load(Ordering::SeqCst) {
            continue; // something was woken while polling: go round again before blocking
        }
        // Quiescent: everything this iteration wrote goes out before we wait for replies.
        crate::stdio::drain(&waker);
        if !block() {
            return Err(Stuck);
        }
    }
}

/// A future that completes once `duration` has passed (on the monotonic clock).
///
/// It is timed by the same poll loop as the RPC connection, so sleeping never stalls RPC.
pub fn sleep(duration: Duration) -> Sleep {
    let nanos = u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX);
    Sleep {
        deadline: monotonic_clock::now().saturating_add(nanos),
    }
}

/// The future returned by [`sleep`].
#[derive(Debug)]
#[must_use = "futures do nothing unless awaited"]
pub struct Sleep {
    deadline: monotonic_clock::Instant,
}

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if monotonic_clock::now() >= self.deadline {
            Poll::Ready(())
        } else {
            register(Interest::Deadline(self.deadline), cx.waker());
            Poll::Pending
        }
    }
}

/// The error of [`timeout`]: the future did not complete in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed(pub Duration);

impl std::fmt::Display for Elapsed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "timed out after {:?}", self.0)
    }
}

impl std::error::Error for Elapsed {}

/// Runs `future`, giving up (and dropping it) after `duration`.
pub async fn timeout<F: Future>(duration: Duration, future: F) -> Result<F::Output, Elapsed> {
    let future = std::pin::pin!(future);
    match futures::future::select(future, sleep(duration)).await {
        futures::future::Either::Left((out, _)) => Ok(out),
        futures::future::Either::Right(((), _)) => Err(Elapsed(duration)),
    }
}
