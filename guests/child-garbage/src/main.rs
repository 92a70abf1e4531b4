//! child-garbage: breaks the RPC protocol on purpose.
//!
//! It writes bytes that are not a Cap'n Proto message to stdout (the RPC channel), then waits
//! forever without ever reading or exiting, so the host has to detect the violation and
//! terminate it (expected status: `protocolViolation`). It uses the raw WASI streams, not
//! cell-guest's RPC system, so that no valid RPC message is ever sent first.

use cell_testkit::raw;
use wasip2::cli::{stderr, stdin, stdout};

/// A segment count of 2^31 in the first word: no Cap'n Proto reader accepts this framing.
const GARBAGE: &[u8] = b"\xff\xff\xff\x7fTHIS IS NOT CAP'N PROTO, THIS IS GARBAGE\n";

fn main() {
    let log = stderr::get_stderr();
    let _ = log.blocking_write_and_flush(b"garbage: writing non-capnp bytes to stdout\n");

    let out = stdout::get_stdout();
    for _ in 0..16 {
        raw::write_all(&out, GARBAGE);
        let _ = out.flush();
    }

    // Wait to be terminated: drain stdin until the host closes it, then sleep forever.
    let input = stdin::get_stdin();
    while input.blocking_read(64 * 1024).is_ok() {}
    raw::wait_forever()
}
