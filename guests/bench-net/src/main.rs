//! bench-net: TCP bulk throughput through the guest's own `wasi:sockets`, for `make bench`.
//!
//! A plain WASI program (no cell SDK, plain `std::net::TcpStream`), run as
//! `cell run --plain --net connect=127.0.0.1:PORT bench-net.wasm ADDR MIB CHUNK_KIB`: it
//! connects to ADDR (the harness's loopback sink), writes MIB MiB in CHUNK_KIB KiB `write_all`
//! calls, shuts the write half down and waits for the sink to close (so the last byte has been
//! read, not merely buffered), then prints one line on stderr:
//!
//! ```text
//! bench: kind=wasi-tcp bytes=268435456 chunk=262144 elapsed_ns=123456789
//! ```
//!
//! The time is measured inside the guest with `std::time::Instant` from just after the
//! connect to the sink's close. It never touches stdout.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Instant;

fn arg(i: usize) -> Result<String, String> {
    std::env::args()
        .nth(i)
        .ok_or_else(|| format!("argument {i} missing (usage: bench-net ADDR MIB CHUNK_KIB)"))
}

fn number(i: usize) -> Result<usize, String> {
    let a = arg(i)?;
    a.parse()
        .map_err(|_| format!("argument {i}: bad number {a:?}"))
}

fn run() -> Result<String, String> {
    let (addr, mib, chunk_kib) = (arg(1)?, number(2)?, number(3)?);
    let total = mib << 20;
    let chunk = vec![0x5au8; (chunk_kib << 10).max(1)];
    let mut s = TcpStream::connect(&addr).map_err(|e| format!("connect {addr}: {e}"))?;
    let t0 = Instant::now();
    let mut sent = 0;
    while sent < total {
        let n = chunk.len().min(total - sent);
        s.write_all(&chunk[..n])
            .map_err(|e| format!("write after {sent} bytes: {e}"))?;
        sent += n;
    }
    s.shutdown(Shutdown::Write)
        .map_err(|e| format!("shutdown: {e}"))?;
    // The sink closes once it has read everything: wait for that.
    let mut rest = Vec::new();
    s.read_to_end(&mut rest)
        .map_err(|e| format!("waiting for the sink: {e}"))?;
    let elapsed = t0.elapsed().as_nanos();
    Ok(format!(
        "bench: kind=wasi-tcp bytes={sent} chunk={} elapsed_ns={elapsed}",
        chunk.len()
    ))
}

fn main() {
    match run() {
        Ok(line) => eprintln!("{line}"),
        Err(e) => {
            eprintln!("bench-net: {e}");
            std::process::exit(1);
        }
    }
}
