//! Benchmark 4: Sockets: TCP bulk throughput from a guest to a loopback sink through wasi:sockets under a
//! policy and through the RPC `TcpStream`, against a native Rust client.
//!
//! Pending: it needs the Network capability. When that lands, [`run`] measures (a guest mode
//! in bench-pid0 streaming N MiB to a sink this harness listens on at 127.0.0.1, and the same
//! transfer from a native `std::net::TcpStream`) and returns rows like the other sections.

use crate::env::Env;
use crate::report::{Row, Section};

const TITLE: &str = "4. Sockets, TCP bulk to a loopback sink";

pub fn run(_env: &Env) -> Section {
    let mut s = Section::new(TITLE, "native Rust client");
    s.row(
        Row::new(
            "wasi:sockets and RPC TcpStream throughput",
            "pending: needs the Network capability",
        )
        .target("≥ 70% of native", None),
    );
    s
}
