//! Outgoing `wasi:http` under the network policy, through the real binary: `guests/http-get`
//! (a plain wstd client, no cell SDK) against an HTTP/1.1 server on 127.0.0.1 in this test.
//! Denied requests are checked to reach no socket: the server counts its connections.

mod common;

use std::net::TcpListener;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::http::Server;
use common::{Cell, Daemon};
use serde_json::Value;

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &Value| v["op"] == "http")
        .collect()
}

/// An allowed GET: status, headers and body as the server sent them; one audit line with the
/// method and the path's length, and never the path (it may carry secrets).
#[test]
fn an_allowed_request_is_answered_and_audited_without_its_path() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let audit = dir.path().join("audit.jsonl");
    let path = "/hello?token=s3cret";
    let out = Cell::run("http-get")
        .net(&[&server.rule()])
        .flags(&["--audit", audit.to_str().unwrap()])
        .arg(server.url(path))
        .finish();
    out.assert_code(0)
        .assert_stderr_has("http-get: status: 200")
        .assert_stderr_has("http-get: header: x-test: yes")
        .assert_stderr_has("http-get: body: hello from the test server");
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].line, format!("GET {path} HTTP/1.1"));
    let lines = audit_lines(&audit);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(line["allowed"], true);
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path_len"], path.len());
    assert_eq!(line["host"], format!("127.0.0.1:{}", server.port));
    assert_eq!(line["via"], "wasi");
    assert!(!std::fs::read_to_string(&audit).unwrap().contains("s3cret"));
}

/// Without a Network, or with one that has no connect rule for the target, the request is
/// refused with `HTTP-request-denied` and no connection is ever made.
#[test]
fn denied_requests_never_reach_a_socket() {
    let server = Server::start();
    let dir = tempfile::tempdir().unwrap();
    let other_port = format!("connect=127.0.0.1:{}", server.port.wrapping_add(1).max(1));
    let listen_only = format!("listen=127.0.0.1:{}", server.port);
    let cases: [&[&str]; 3] = [&[], &[&listen_only], &[&other_port]];
    for (i, rules) in cases.into_iter().enumerate() {
        let audit = dir.path().join(format!("audit{i}.jsonl"));
        Cell::run("http-get")
            .net(rules)
            .flags(&["--audit", audit.to_str().unwrap()])
            .arg(server.url("/hello"))
            .finish()
            .assert_code(1)
            .assert_stderr_has("http-get: error: ErrorCode::HttpRequestDenied");
        let lines = audit_lines(&audit);
        assert_eq!(lines.len(), 1, "{rules:?}: {lines:?}");
        assert_eq!(lines[0]["allowed"], false);
        assert_eq!(lines[0]["method"], "GET");
    }
    assert_eq!(server.connections(), 0);
}

/// A name is resolved only under a name rule, and a name rule never grants loopback: a name
/// that resolves to 127.0.0.1 (here by `--resolve`, as a rebinding DNS server would) is denied
/// unless an address rule names loopback too. Then the request goes to the address cell
/// checked, with the name in its Host header.
#[test]
fn names_resolve_only_under_name_rules_and_never_into_special_ranges() {
    let server = Server::start();
    let port = server.port;
    let resolve = ["--resolve", "api.test=127.0.0.1"];
    let name_rule = format!("connect=api.test:{port}");
    let url = format!("http://api.test:{port}/hello");
    // No name rule: no lookup, denied.
    Cell::run("http-get")
        .net(&[&server.rule()])
        .flags(&resolve)
        .arg(&url)
        .finish()
        .assert_code(1)
        .assert_stderr_has("HttpRequestDenied");
    // A name rule alone: the answer is loopback, which a name rule never grants.
    Cell::run("http-get")
        .net(&[&name_rule])
        .flags(&resolve)
        .arg(&url)
        .finish()
        .assert_code(1)
        .assert_stderr_has("HttpRequestDenied");
    assert_eq!(server.connections(), 0);
    // Both: allowed, to 127.0.0.1, asking for api.test.
    Cell::run("http-get")
        .net(&[&name_rule, &server.rule()])
        .flags(&resolve)
        .arg(&url)
        .finish()
        .assert_code(0)
        .assert_stderr_has("http-get: body: hello from the test server");
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].host, format!("api.test:{port}"));
}

/// Bodies stream both ways: a 4 MiB upload arrives whole, an 8 MiB download is counted as it
/// streams through the host's bounded buffers.
#[test]
fn bodies_stream_both_ways() {
    let server = Server::start();
    Cell::run("http-get")
        .net(&[&server.rule()])
        .args(&["--method", "POST", "--send-bytes", "4194304"])
        .arg(server.url("/upload"))
        .finish()
        .assert_code(0)
        .assert_stderr_has("http-get: body: got 4194304 bytes");
    assert_eq!(server.seen.lock().unwrap()[0].body_len, 4 << 20);
    Cell::run("http-get")
        .net(&[&server.rule()])
        .arg(server.url("/big"))
        .finish()
        .assert_code(0)
        .assert_stderr_has(&format!("http-get: body-bytes: {}", 8 << 20));
}

/// The guest's first-byte timeout is honoured (cell only ever shortens timeouts).
#[test]
fn a_server_that_never_answers_times_out() {
    let server = Server::start();
    Cell::run("http-get")
        .net(&[&server.rule()])
        .args(&["--first-byte-timeout-ms", "300"])
        .arg(server.url("/stall"))
        .finish()
        .assert_code(1)
        .assert_stderr_has("http-get: error: ErrorCode::ConnectionReadTimeout");
}

/// Each request in flight holds one of the process's `max-sockets`: past it,
/// `connection-limit-reached`, before any connection is made.
#[test]
fn requests_in_flight_count_against_max_sockets() {
    let server = Server::start();
    let out = Cell::run("http-get")
        .net(&[&server.rule()])
        .flags(&["--max-sockets", "2"])
        .args(&["--parallel", "4"])
        .arg(server.url("/slow"))
        .finish();
    out.assert_code(1);
    assert_eq!(
        out.stderr_lines_with("status: 200").len(),
        2,
        "{}",
        out.stderr
    );
    assert_eq!(
        out.stderr_lines_with("error: ErrorCode::ConnectionLimitReached")
            .len(),
        2,
        "{}",
        out.stderr
    );
    assert_eq!(server.connections(), 2);
}

/// A request ends with its process: a job killed by its deadline while waiting on a server
/// that never answers closes that connection, and the daemon that ran it stays up.
#[test]
fn a_request_ends_with_its_process() {
    let server = Server::start();
    let rule = server.rule();
    let daemon = Daemon::start(&["--net", &rule]);
    let started = Instant::now();
    let out = daemon
        .exec("http-get")
        .net(&[&rule])
        .flags(&["--timeout", "1s"])
        .arg(server.url("/stall"))
        .finish();
    assert_ne!(out.code, Some(0), "{}", out.stderr);
    let closed = server
        .closed
        .recv_timeout(Duration::from_secs(20))
        .expect("the stalled connection was never closed");
    assert!(closed.duration_since(started) < Duration::from_secs(20));
    assert_eq!(server.connections(), 1);
    // The daemon is still serving.
    daemon
        .exec("http-get")
        .net(&[&rule])
        .arg(server.url("/hello"))
        .finish()
        .assert_code(0);
    daemon.stop();
}

/// `https` goes through TLS with the request's host as the server name, and the server's
/// certificate is checked against the webpki roots: a self-signed one (all a test can make
/// without the internet) is refused with the error code wasmtime gives, after the server saw
/// the name.
#[test]
fn https_checks_the_certificate_against_the_request_host() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let cert = rcgen::generate_simple_self_signed(vec!["api.test".to_string()]).unwrap();
    let chain = vec![cert.cert.der().clone()];
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let config = Arc::new(config);
    let (sni_tx, sni_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut tcp, _) = listener.accept().unwrap();
        let mut conn = rustls::ServerConnection::new(config).unwrap();
        let mut failed = false;
        while conn.is_handshaking() {
            if conn.complete_io(&mut tcp).is_err() {
                failed = true;
                break;
            }
        }
        let _ = sni_tx.send((conn.server_name().map(str::to_string), failed));
    });
    let url = format!("https://api.test:{port}/hello");
    Cell::run("http-get")
        .net(&[
            &format!("connect=api.test:{port}"),
            &format!("connect=127.0.0.1:{port}"),
        ])
        .flags(&["--resolve", "api.test=127.0.0.1"])
        .arg(&url)
        .finish()
        .assert_code(1)
        .assert_stderr_has("http-get: error: ErrorCode::TlsProtocolError");
    let (sni, failed) = sni_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert_eq!(sni.as_deref(), Some("api.test"));
    assert!(
        failed,
        "the client must refuse a certificate no root signed"
    );
}

/// Each hoarding run would make the host hold 4,000 × ~60 KiB (~240 MiB) of header fields if
/// nothing charged them; charged to `--max-memory 32M`, the guest is stopped long before.
const HOARD_RSS_BOUND_KIB: u64 = 128 * 1024;

#[test]
fn header_fields_the_host_holds_are_charged_to_the_memory_limit() {
    let hoard = ["--sets", "4000", "--bytes", "60000", "--via"];
    for via in ["new", "clone", "request"] {
        let mut args = hoard.to_vec();
        args.push(via);
        let (out, peak) = Cell::run("http-hoard")
            .flags(&["--max-memory", "32M"])
            .args(&args)
            .finish_with_peak_rss();
        out.assert_code(134)
            .assert_stderr_has("cell: pid0 out of memory");
        assert!(
            !out.stderr.contains("held all"),
            "--via {via}: the guest held every set:\n{}",
            out.stderr
        );
        assert!(
            peak < HOARD_RSS_BOUND_KIB,
            "--via {via}: cell peaked at {peak} KiB (bound {HOARD_RSS_BOUND_KIB} KiB)"
        );
    }
    // Dropped sets give their charge back: 4,000 made and dropped fit in the same limit.
    let mut args = hoard.to_vec();
    args.push("churn");
    Cell::run("http-hoard")
        .flags(&["--max-memory", "32M"])
        .args(&args)
        .finish()
        .assert_code(0)
        .assert_stderr_has("http-hoard: held all 4000");
}
