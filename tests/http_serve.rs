//! `cell serve --http`: a `wasi:http/proxy` component (`guests/http-hello`, no cell SDK)
//! served by the real daemon on 127.0.0.1, driven by a plain HTTP/1.1 client in this test.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::http::{request, Reply, Server};
use common::{guest, Daemon};

/// A served front: the daemon and the address it serves on.
struct Front {
    daemon: Daemon,
    addr: String,
}

impl Front {
    fn start(flags: &[&str]) -> Front {
        let wasm = guest("http_hello");
        let wasm = wasm.to_str().expect("utf-8 path");
        let mut all = vec!["--http", "127.0.0.1:0", wasm];
        all.extend_from_slice(flags);
        Front::with(&all)
    }

    fn with(flags: &[&str]) -> Front {
        let mut daemon = Daemon::start(flags);
        let line = daemon.wait_for("cell: serving ");
        let addr = line
            .rsplit_once("on http://")
            .map(|(_, a)| a.to_string())
            .expect("the address served on");
        Front { daemon, addr }
    }

    fn get(&self, path: &str) -> Reply {
        request(&self.addr, "GET", path, &[], b"")
    }
}

#[test]
fn a_proxy_component_answers_streams_and_echoes() {
    let front = Front::start(&[]);
    let hello = front.get("/hello?x=1");
    assert_eq!(hello.status, 200, "{hello:?}");
    assert_eq!(hello.text(), "hello from http-hello: GET /hello?x=1\n");
    assert_eq!(hello.header("x-hello"), Some("1"));
    assert_eq!(hello.header("content-type"), Some("text/plain"));

    let upload: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
    let echoed = request(
        &front.addr,
        "POST",
        "/echo",
        &[("content-type", "application/octet-stream")],
        &upload,
    );
    assert_eq!(echoed.status, 200);
    assert_eq!(
        echoed.header("content-type"),
        Some("application/octet-stream")
    );
    assert!(echoed.body == upload, "the 4 MiB body came back changed");

    let big = front.get(&format!("/big?{}", 8 << 20));
    assert_eq!(big.status, 200);
    assert!(big.complete);
    assert_eq!(big.body.len(), 8 << 20);
    assert!(big.body.iter().all(|b| *b == b'x'));

    // Its stdout and stderr are the daemon's log, each line with the request's pid.
    assert_eq!(front.get("/log").status, 200);
    let mut daemon = front.daemon;
    daemon.wait_for_line(|l| l.contains("] http-hello: a line on stdout"));
    daemon.wait_for_line(|l| l.contains("] http-hello: a line on stderr"));
}

#[test]
fn a_failing_handler_fails_only_its_own_request() {
    let front = Front::start(&["--timeout", "1s"]);
    for (path, status) in [("/trap", 500), ("/none", 500), ("/error", 500)] {
        let reply = front.get(path);
        assert_eq!(reply.status, status, "{path}: {reply:?}");
        assert_eq!(front.get("/").status, 200, "after {path}");
    }
    // A spinning handler is stopped at its timeout; a request served meanwhile is not held up
    // behind it.
    let addr = front.addr.clone();
    let spin = std::thread::spawn(move || {
        let started = Instant::now();
        (request(&addr, "GET", "/spin", &[], b""), started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(front.get("/").status, 200);
    let beside = started.elapsed();
    let (spun, took) = spin.join().unwrap();
    assert_eq!(spun.status, 504, "{spun:?}");
    assert!(took >= Duration::from_secs(1), "504 after {took:?}");
    assert!(
        beside < took,
        "a request beside the spinner took {beside:?}, the spinner {took:?}"
    );
    assert_eq!(front.get("/slow").status, 504);
    let mut daemon = front.daemon;
    daemon.wait_for_line(|l| l.contains("trapped: wasm trap"));
    daemon.wait_for_line(|l| l.contains("timed out"));
}

#[test]
fn requests_beyond_max_concurrency_get_503_at_once() {
    let front = Front::start(&["--http-max-concurrency", "2", "--timeout", "3s"]);
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let addr = front.addr.clone();
            std::thread::spawn(move || request(&addr, "GET", "/slow", &[], b"").status)
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    let busy = front.get("/");
    assert_eq!(busy.status, 503, "{busy:?}");
    assert_eq!(busy.header("retry-after"), Some("1"));
    assert!(started.elapsed() < Duration::from_secs(2));
    for t in slow {
        assert_eq!(t.join().unwrap(), 504);
    }
    assert_eq!(front.get("/").status, 200, "slots are given back");
}

#[test]
fn a_handler_reaches_only_what_its_grants_allow() {
    let upstream = Server::start();
    let (port, url) = (upstream.port, upstream.url("/hello"));
    // Nothing by default: no network.
    let front = Front::start(&[]);
    let denied = request(&front.addr, "GET", "/fetch", &[("x-fetch", &url)], b"");
    assert_eq!(denied.status, 502);
    assert!(
        denied.text().contains("HttpRequestDenied"),
        "{}",
        denied.text()
    );
    assert_eq!(upstream.connections(), 0);
    drop(front);

    // Granted in a [[http]] table, audited under the request's pid.
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let config = dir.path().join("cell.toml");
    std::fs::write(
        &config,
        format!(
            "net = [\"connect=127.0.0.1:{port}\"]\n\n[[http]]\nname = \"hello\"\nlisten = \
             \"127.0.0.1:0\"\nwasm = {:?}\nnet = [\"connect=127.0.0.1:{port}\"]\n",
            guest("http_hello")
        ),
    )
    .unwrap();
    let front = Front::with(&[
        "--config",
        config.to_str().unwrap(),
        "--audit",
        audit.to_str().unwrap(),
    ]);
    let fetched = request(&front.addr, "GET", "/fetch", &[("x-fetch", &url)], b"");
    assert_eq!(fetched.status, 200, "{}", fetched.text());
    assert_eq!(fetched.text(), "fetched 200 26\n");
    assert_eq!(upstream.connections(), 1);
    let lines = std::fs::read_to_string(&audit).unwrap();
    let line = lines
        .lines()
        .find(|l| l.contains("\"op\":\"http\""))
        .unwrap_or_else(|| panic!("no http audit line in:\n{lines}"));
    let line: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(line["allowed"], true, "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert!(line["pid"].as_u64().is_some(), "{line}");
    // Another port is still denied.
    let other = request(
        &front.addr,
        "GET",
        "/fetch",
        &[("x-fetch", "http://127.0.0.1:9/")],
        b"",
    );
    assert_eq!(other.status, 502);
}

#[test]
fn answers_show_in_the_metrics() {
    let front = Front::start(&["--metrics", "127.0.0.1:0"]);
    assert_eq!(front.get("/").status, 200);
    assert_eq!(front.get("/trap").status, 500);
    // Printed before the front's own line.
    let log = front.daemon.log();
    let addr = log
        .lines()
        .find_map(|l| l.strip_prefix("cell: metrics on http://"))
        .map(|url| url.trim().trim_end_matches("/metrics").to_string())
        .unwrap_or_else(|| panic!("no metrics line in:\n{log}"));
    let text = request(&addr, "GET", "/metrics", &[], b"").text();
    for needle in [
        "cell_http_responses_total{service=\"http_hello\",code=\"200\"} 1",
        "cell_http_responses_total{service=\"http_hello\",code=\"500\"} 1",
        "cell_http_in_flight{service=\"http_hello\"} 0",
        "cell_http_response_head_seconds_count{service=\"http_hello\"} 2",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

#[test]
fn what_cannot_be_served_is_refused_at_start() {
    let command = guest("http-get");
    let out = common::cell()
        .args(["serve", "--http", "127.0.0.1:0"])
        .arg(&command)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not an HTTP proxy"), "{err}");

    let out = common::cell()
        .args(["serve", "--http", "localhost:80"])
        .arg(&command)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected IP:PORT"));
}

#[test]
fn a_client_that_never_sends_a_request_is_disconnected() {
    let front = Front::start(&[]);
    let mut idle = TcpStream::connect(&front.addr).unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nhost").unwrap();
    // Served beside it meanwhile.
    assert_eq!(front.get("/").status, 200);
    // The head never completes: the daemon closes the connection (after its 10 s header
    // timeout), rather than holding it open for as long as the client likes.
    idle.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 64];
    let n = idle.read(&mut buf).expect("closed, not timed out");
    assert_eq!(n, 0, "answered {:?}", String::from_utf8_lossy(&buf[..n]));
}

#[test]
fn sigterm_lets_requests_in_flight_finish() {
    let front = Front::start(&[]);
    let addr = front.addr.clone();
    let sleeping = std::thread::spawn(move || request(&addr, "GET", "/sleep?1500", &[], b""));
    std::thread::sleep(Duration::from_millis(300));
    let out = front.daemon.stop();
    let reply = sleeping.join().unwrap();
    assert_eq!(reply.status, 200, "{reply:?}");
    assert_eq!(reply.text(), "slept 1500\n");
    out.assert_code(0);
}

#[test]
fn a_client_that_goes_away_frees_its_slot() {
    let front = Front::start(&["--http-max-concurrency", "1"]);
    let mut gone = TcpStream::connect(&front.addr).unwrap();
    gone.write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        front.get("/").status,
        503,
        "the slow request holds the one slot"
    );
    drop(gone);
    // Its handler is stopped, not left to run its 10 s.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let status = front.get("/").status;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(Instant::now() < deadline, "the slot was not freed");
        std::thread::sleep(Duration::from_millis(50));
    }
}
