//! Raw WASI stdout, for guests that break the RPC protocol on purpose (child-garbage, some
//! hostile modes): they must not run the SDK's RPC system, which would speak on stdout first.

use wasip2::io::streams::OutputStream;

/// Writes all of `data` to `out`, never more than `check-write` allows at a time (more would
/// trap). Returns quietly if the stream is closed. Does not flush.
pub fn write_all(out: &OutputStream, mut data: &[u8]) {
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
}

/// Blocks forever (in a host call, so the host can still kill or time out the guest).
pub fn wait_forever() -> ! {
    loop {
        wasip2::clocks::monotonic_clock::subscribe_duration(3_600_000_000_000).block();
    }
}
