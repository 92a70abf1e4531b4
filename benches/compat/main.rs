//! `make compat`: cell side by side with the wasmtime CLI of the same version (48.0.8,
//! installed by `make bench-tools` into `target/tools/bin`), on the same components and the
//! same inputs: `wasmtime run -S http` against `cell run --net …` for outgoing requests
//! (`guests/http-get`), `wasmtime serve -Scli` against `cell serve --http` for serving
//! (`guests/http-hello`). Equal answers are asserted; where cell differs on purpose (the
//! README's lists), the test asserts both sides of the difference, so a change on either
//! side shows.
//!
//! A plain harness binary (`harness = false`), not part of `make test`: the CLI takes ~15
//! minutes to build. `make compat` builds it and runs this with `--bench`; `cargo test
//! --all-targets` only builds this and returns at once. A difference panics (exit non-zero).

#[path = "../../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::http::{request, Reply, Server};
use common::{cell, guest};

/// The wasmtime CLI: `target/tools/bin/wasmtime` (`make bench-tools`), else on PATH.
fn wasmtime() -> PathBuf {
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/tools/bin/wasmtime");
    if tools.exists() {
        return tools;
    }
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("wasmtime"))
            .find(|p| p.exists())
    });
    found.expect("no wasmtime CLI: run `make bench-tools` (or `make compat`, which does)")
}

/// The `http-get:` lines of a run's stderr, cell's own lines left out.
fn client_lines(out: &std::process::Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("http-get:"))
        .map(str::to_string)
        .collect()
}

/// What `wasmtime run -S http` sometimes answers instead (about one run in six here, on any
/// request, even to a closed port): an I/O error of its own sender, not a `wasi:http` code.
const WASMTIME_FLAKE: &str = "http-get: error: connection reset";

/// `http-get ARGS` under `wasmtime run -S http` (tried again, up to three times, when it hits
/// [`WASMTIME_FLAKE`]) and under `cell run` with `net` granted.
fn both_clients(net: &str, args: &[&str]) -> (Vec<String>, Vec<String>) {
    let wasm = guest("http-get");
    let run_wasmtime = || {
        Command::new(wasmtime())
            .args(["run", "-S", "http"])
            .arg(&wasm)
            .args(args)
            .output()
            .expect("wasmtime run")
    };
    let mut by_wasmtime = run_wasmtime();
    for _ in 0..2 {
        if client_lines(&by_wasmtime) != [WASMTIME_FLAKE] {
            break;
        }
        by_wasmtime = run_wasmtime();
    }
    let by_cell = cell()
        .args(["run", "--net", net])
        .arg(&wasm)
        .args(args)
        .output()
        .expect("cell run");
    assert_eq!(
        by_wasmtime.status.code(),
        by_cell.status.code(),
        "exit codes differ for {args:?}: wasmtime {:?}, cell {:?}",
        String::from_utf8_lossy(&by_wasmtime.stderr),
        String::from_utf8_lossy(&by_cell.stderr)
    );
    (client_lines(&by_wasmtime), client_lines(&by_cell))
}

fn outgoing_requests_get_the_same_answers() {
    let server = Server::start();
    let rule = server.rule();
    for args in [
        vec![server.url("/hello")],
        vec![
            "--method".into(),
            "POST".into(),
            "--send-bytes".into(),
            "100000".into(),
            server.url("/upload"),
        ],
        vec!["--header".into(), "x-a:1".into(), server.url("/hello")],
        vec![server.url("/big")],
        vec![
            "--first-byte-timeout-ms".into(),
            "300".into(),
            server.url("/slow"),
        ],
        vec![server.url("/missing")],
    ] {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (w, c) = both_clients(&rule, &args);
        assert!(!w.is_empty(), "{args:?}: wasmtime printed nothing");
        assert_eq!(w, c, "{args:?}");
    }
    // A port nothing listens on: the same error code.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("http://127.0.0.1:{port}/");
    let (w, c) = both_clients(&format!("connect=127.0.0.1:{port}"), &[&url]);
    assert_eq!(w, c);
    assert!(w.iter().any(|l| l.contains("ConnectionRefused")), "{w:?}");
}

/// A server process, killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn start(mut cmd: Command, addr: &str) -> Proc {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the server");
    let proc = Proc(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "{addr} did not come up");
        std::thread::sleep(Duration::from_millis(20));
    }
    proc
}

/// What is compared of an answer: status, headers but `date`, and the body.
fn seen(r: &Reply) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut headers: Vec<_> = r
        .headers
        .iter()
        .filter(|(k, _)| k != "date")
        .cloned()
        .collect();
    headers.sort();
    (r.status, headers, r.body.clone())
}

/// Method, path, headers, body.
type Case<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>, &'a [u8]);

fn served_components_give_the_same_answers() {
    let upstream = Server::start();
    let wasm = guest("http_hello");
    let w_addr = free_addr();
    let mut w = Command::new(wasmtime());
    w.args(["serve", "-Scli", "-Wtimeout=1s", "--addr", &w_addr])
        .arg(&wasm);
    let _w = start(w, &w_addr);
    let c_addr = free_addr();
    let mut c = cell();
    c.args(["serve", "--net", &upstream.rule(), "--http", &c_addr])
        .arg(&wasm);
    let _c = start(c, &c_addr);
    let body: Vec<u8> = (0..200_000).map(|i| (i % 251) as u8).collect();
    let fetch = upstream.url("/hello");
    let cases: Vec<Case> = vec![
        ("GET", "/", vec![], b""),
        ("GET", "/hello?x=1&y=2", vec![], b""),
        (
            "POST",
            "/echo",
            vec![("content-type", "application/x-test")],
            &body,
        ),
        ("GET", "/big?100000", vec![], b""),
        ("GET", "/log", vec![], b""),
        ("GET", "/fetch", vec![("x-fetch", fetch.as_str())], b""),
    ];
    for (method, path, headers, body) in &cases {
        let by_wasmtime = request(&w_addr, method, path, headers, body);
        let by_cell = request(&c_addr, method, path, headers, body);
        assert_eq!(seen(&by_wasmtime), seen(&by_cell), "{method} {path}");
    }
    // A handler that fails: the same 500 page, signed by each server.
    for path in ["/trap", "/none", "/error"] {
        let mut by_wasmtime = request(&w_addr, "GET", path, &[], b"");
        let by_cell = request(&c_addr, "GET", path, &[], b"");
        assert_eq!(by_wasmtime.status, 500, "{path}");
        let signed = by_wasmtime.text().replace("wasmtime", "cell");
        by_wasmtime.body = signed.into_bytes();
        let length = by_wasmtime.body.len().to_string();
        for (k, v) in &mut by_wasmtime.headers {
            if k == "content-length" {
                *v = length.clone();
            }
        }
        assert_eq!(seen(&by_wasmtime), seen(&by_cell), "{path}");
    }
    // Deliberate: past its timeout cell answers 504, wasmtime 500.
    assert_eq!(request(&w_addr, "GET", "/spin", &[], b"").status, 500);
    assert_eq!(request(&c_addr, "GET", "/spin", &[], b"").status, 504);
}

fn main() {
    // `cargo test --all-targets` (hence `make test`) runs this binary without `--bench`.
    if !std::env::args().any(|a| a == "--bench") {
        eprintln!("compat: skipped (not run by `cargo bench`); run `make compat`");
        return;
    }
    let cases: [(&str, fn()); 2] = [
        ("outgoing requests", outgoing_requests_get_the_same_answers),
        ("served components", served_components_give_the_same_answers),
    ];
    for (name, case) in cases {
        eprintln!("compat: {name} ...");
        case();
        eprintln!("compat: {name}: the same answers as wasmtime");
    }
}
