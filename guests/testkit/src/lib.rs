//! cell_testkit: what the test guests would otherwise each write again. Not part of the SDK
//! (`cell-guest`): these helpers exist for the integration tests, which read the guests' stderr,
//! so every line they print is part of a test's contract and must not change wording.
//!
//! - [`Report`]: the `ok: …` / `fail: …` check lines and the `--- N passed, M failed` summary.
//! - [`tree`]: where a guest sits in the process tree (`--expect-depth` / `--expect-parent`),
//!   the two-echo handshake, and "wait for my child, fail unless it exited 0".
//! - [`raw`]: stdout written through the raw WASI stream, for guests that must not run the
//!   SDK's RPC system because they break the protocol on purpose.
//! - [`err_text`], [`failed_with`], [`cell_error`]: outcomes for check lines, and the host's
//!   typed reason of a failure (match on `Reason`, never on the text).
//! - [`stress`]: one node of the process-tree stress (`stress-pid0`, `stress-node`).
//! - [`in_flight`]: N jobs, K at a time (the bench guests' pipelines and fan-outs).
//! - [`summary`]: latency samples as the bench harness reads them (p50, p99, mean).
//! - [`embed!`]: another guest's wasm, included at compile time (see `build.sh` for the stages).
//!
//! The demo guest `pid0` deliberately does not use this crate: it is meant to be read as an
//! example of the SDK alone.

pub mod raw;
mod report;
pub mod stress;
pub mod tree;

pub use report::Report;

use cell_guest::{CellError, Reason};

/// Runs `n` jobs made by `job`, at most `inflight` at a time (at least one), and returns
/// their results in the order they finished; the first error ends it.
pub async fn in_flight<F, Fut, T>(n: usize, inflight: usize, mut job: F) -> anyhow::Result<Vec<T>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    use futures::stream::{FuturesUnordered, StreamExt as _};
    let mut pending = FuturesUnordered::new();
    let mut done = Vec::with_capacity(n);
    let mut started = 0;
    while done.len() < n {
        while started < n && pending.len() < inflight.max(1) {
            pending.push(job());
            started += 1;
        }
        match pending.next().await {
            Some(r) => done.push(r?),
            None => break,
        }
    }
    Ok(done)
}

/// Samples → (p50, p99, mean), in their unit (nearest rank; zeros for none).
pub fn summary(mut samples: Vec<u64>) -> (u64, u64, u64) {
    if samples.is_empty() {
        return (0, 0, 0);
    }
    samples.sort_unstable();
    let at = |pct: usize| samples[(samples.len() * pct / 100).min(samples.len() - 1)];
    let mean = samples.iter().sum::<u64>() / samples.len() as u64;
    (at(50), at(99), mean)
}

/// An outcome as text for a check line: `succeeded`, or the error with its causes.
pub fn err_text<T>(r: &anyhow::Result<T>) -> String {
    match r {
        Ok(_) => "succeeded".into(),
        Err(e) => format!("{e:#}"),
    }
}

/// Whether `r` failed with the host's `reason` (typed, from the error's `capnp::Error`).
pub fn failed_with<T>(r: &anyhow::Result<T>, reason: Reason) -> bool {
    matches!(r, Err(e) if cell_guest::reason(e) == Some(reason))
}

/// The host's error of a raw capnp call, typed.
pub fn cell_error(e: &cell_guest::capnp::Error) -> CellError {
    CellError::from(e.clone())
}

/// The bytes of another guest of this workspace, by package name: `embed!("child-leaf")` is
/// `guests/target/wasm32-wasip2/release/child-leaf.wasm`, included at compile time. That guest
/// must be built first: list the embedding guest in a later stage of `guests/build.sh`.
#[macro_export]
macro_rules! embed {
    ($name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../target/wasm32-wasip2/release/",
            $name,
            ".wasm"
        ))
    };
}
