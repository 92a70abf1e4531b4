//! child-garbage: breaks the RPC protocol on purpose.
//!
//! It writes bytes that are not a Cap'n Proto message to stdout (the RPC channel), then waits
//! forever without ever reading or exiting, so the host has to detect the violation and
//! terminate it (expected status: `protocolViolation`). It uses the raw WASI streams, not
//! cell-guest, so that no valid RPC message is ever sent first.

use wasip2::cli::{stderr, stdin, stdout};
use wasip2::clocks::monotonic_clock;
use wasip2::io::streams::OutputStream;

/// A segment count of 2^31 in the first word: no Cap'n Proto reader accepts this framing.
const GARBAGE: &[u8] = b"\xff\xff\xff\x7fTHIS IS NOT CAP'N PROTO, THIS IS GARBAGE\n";

/// Writes all of `data`, never more than `check-write` allows at a time (more would trap).
/// Stops quietly if the stream is closed.
fn write_all(out: &OutputStream, mut data: &[u8]) {
    while !data.is_empty() {
        match out.check_write() {
            Ok(0) => out.subscribe().block(), // the pollable is dropped before `out`
            Ok(budget) => {
                let n = usize::try_from(budget)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                if out.write(&data[..n]).is_err() {
                    return;
                }
                data = &data[n..];
            }
            Err(_) => return,
        }
    }
    let _ = out.flush();
}

fn main() {
    let log = stderr::get_stderr();
    let _ = log.blocking_write_and_flush(b"garbage: writing non-capnp bytes to stdout\n");

    let out = stdout::get_stdout();
    for _ in 0..16 {
        write_all(&out, GARBAGE);
    }

    // Wait to be terminated: drain stdin until the host closes it, then sleep forever.
    let input = stdin::get_stdin();
    while input.blocking_read(64 * 1024).is_ok() {}
    loop {
        monotonic_clock::subscribe_duration(3_600_000_000_000).block();
    }
}
