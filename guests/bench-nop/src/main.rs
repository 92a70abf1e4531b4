//! bench-nop: the trivial child of the spawn and scale benchmarks. A plain std program that
//! never speaks RPC, so a spawn of it measures only what the host does per process.
//!
//! - no arguments: exits at once with code 0 (spawn → exit).
//! - `idle`: blocks reading stdin until end of stream, i.e. until it is killed or its parent's
//!   end cascades to it (the scale benchmark's idle child). Nothing is ever written to it.
//! - `spin`: burns CPU forever without a host call (the fairness row's spinning sibling); only
//!   the epoch interruption lets anything else run on its thread.

use std::io::Read as _;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("spin") {
        let mut n: u64 = 0;
        loop {
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    if std::env::args().nth(1).as_deref() == Some("idle") {
        let mut buf = [0u8; 1];
        // Blocks in the host (an async wait on the pipe, no thread) until stdin closes.
        let _ = std::io::stdin().read(&mut buf);
    }
}
