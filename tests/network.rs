//! The Network capability end to end: real `cell` runs of real guests against servers these
//! tests start on 127.0.0.1 (port 0). Nothing here sends traffic to a non-loopback address:
//! denials of such addresses are asserted from the policy's decision (audit lines), which the
//! host makes before any socket exists.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::thread;
use std::time::Duration;

use common::{Cell, Finished};
use serde_json::Value;

/// A TCP server on 127.0.0.1 that answers every connection with `reply(request)`, where the
/// request is everything the client sent before shutting down its write half (or, for HTTP,
/// the header block).
fn server(reply: fn(&[u8]) -> Vec<u8>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            thread::spawn(move || {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                loop {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                    if request.ends_with(b"\r\n\r\n") {
                        break;
                    }
                }
                let _ = conn.write_all(&reply(&request));
            });
        }
    });
    port
}

/// Echoes what it was sent.
fn echo_server() -> u16 {
    server(|req| req.to_vec())
}

fn http_server() -> u16 {
    server(|_| {
        b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello from the test server".to_vec()
    })
}

fn temp_audit() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    (dir, path)
}

/// `cell run [--net RULE]... [--audit FILE] <guest> <args>`.
fn run_guest(name: &str, rules: &[String], audit: Option<&Path>, args: &[&str]) -> Finished {
    let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
    let mut run = Cell::run(name).net(&rules).args(args);
    if let Some(path) = audit {
        run = run.flag("--audit").flag(path);
    }
    run.finish()
}

fn probe(rules: &[String], audit: Option<&Path>, checks: &[&str]) -> Finished {
    let done = run_guest("net-probe", rules, audit, checks);
    assert!(
        !done.stderr.contains("fail:"),
        "a check failed; stderr:\n{}",
        done.stderr
    );
    done.assert_code(0);
    done
}

fn audit_lines(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad audit line {l:?}: {e}")))
        .collect()
}

/// Whether an audit line with every given field value exists.
fn has_line(lines: &[Value], fields: &[(&str, Value)]) -> bool {
    lines
        .iter()
        .any(|l| fields.iter().all(|(k, v)| &l[*k] == v))
}

#[track_caller]
fn assert_audited(lines: &[Value], fields: &[(&str, Value)]) {
    assert!(
        has_line(lines, fields),
        "no audit line with {fields:?}; lines:\n{}",
        lines
            .iter()
            .map(Value::to_string)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Sends `msg`, shuts down the write half, and returns everything the server answered.
fn exchange(addr: &str, msg: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(msg.as_bytes()).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    reply
}

// ------------------------------------------------------------------------------------------------

#[test]
fn net_fetch_fetches_through_its_granted_network() {
    let port = http_server();
    let done = run_guest(
        "net-fetch",
        &[format!("connect=127.0.0.1:{port}")],
        None,
        &["127.0.0.1", &port.to_string(), "/"],
    );
    done.assert_code(0)
        .assert_stderr_has("net-fetch: body: hello from the test server");
}

#[test]
fn no_net_flag_means_no_network() {
    let port = http_server();
    let p = port.to_string();
    let done = run_guest("net-fetch", &[], None, &["127.0.0.1", &p, "/"]);
    done.assert_code(1)
        .assert_stderr_has("not-granted: network");
    // pid0's own std::net has no sockets either.
    let addr = format!("127.0.0.1:{port}");
    run_guest("net-std", &[], None, &["deny", &addr])
        .assert_code(0)
        .assert_stderr_has("net-std: ok: connect");
}

#[test]
fn std_net_as_pid0_works_within_its_grant() {
    let (allowed, other) = (echo_server(), echo_server());
    let rules = [format!("connect=127.0.0.1:{allowed}")];
    let a = format!("127.0.0.1:{allowed}");
    run_guest("net-std", &rules, None, &["connect", &a, "hello"])
        .assert_code(0)
        .assert_stderr_has("round trip to");
    let o = format!("127.0.0.1:{other}");
    run_guest("net-std", &rules, None, &["deny", &o]).assert_code(0);
    run_guest("net-std", &rules, None, &["no-dns", "localhost"]).assert_code(0);
}

#[test]
fn connects_allowed_and_denied_on_both_paths_and_all_audited() {
    let (a, b) = (echo_server(), echo_server());
    let (_dir, audit) = temp_audit();
    let (a_s, b_s) = (a.to_string(), b.to_string());
    let rules = [format!("connect=127.0.0.1:{a}")];
    let std_a = format!("127.0.0.1:{a}");
    let std_b = format!("127.0.0.1:{b}");
    let std_mapped_b = format!("[::ffff:127.0.0.1]:{b}");
    let std_v6_a = format!("[::1]:{a}");
    #[rustfmt::skip]
    let checks = [
        "rpc-allow", "127.0.0.1", &a_s,
        "rpc-allow", "::ffff:127.0.0.1", &a_s, // the same address, spelled as IPv6
        "rpc-deny", "127.0.0.1", &b_s,         // a port the rule does not name
        "rpc-deny", "::ffff:127.0.0.1", &b_s,
        "rpc-deny", "::1", &a_s,               // IPv6 loopback is not 127.0.0.1
        "rpc-deny", "[::1]", &b_s,
        "rpc-deny", "localhost", &a_s,         // no name rule: no lookup at all
        "rpc-deny", "10.0.0.1", "80",          // denied by the policy before any socket exists
        "rpc-deny", "169.254.169.254", "80",
        "rpc-deny", "0.0.0.0", &a_s,
        "std-allow", &std_a,
        "std-deny", &std_b,
        "std-deny", &std_mapped_b,
        "std-deny", &std_v6_a,
        "std-no-dns", "localhost",
        "bad-grant",
        "max-sockets", "127.0.0.1", &a_s,
        "listen-deny", "127.0.0.1", "0",       // a connect grant is not a listen grant
    ];
    let done = probe(&rules, Some(&audit), &checks);
    done.assert_stderr_has("--- 19 passed, 0 failed");

    let lines = audit_lines(&audit);
    use serde_json::json;
    let deny_rpc = |ip: &str, port: u16| {
        vec![
            ("via", json!("rpc")),
            ("op", json!("connect")),
            ("ip", json!(ip)),
            ("port", json!(port)),
            ("allowed", json!(false)),
        ]
    };
    assert_audited(
        &lines,
        &[
            ("via", json!("rpc")),
            ("ip", json!("127.0.0.1")),
            ("port", json!(a)),
            ("allowed", json!(true)),
            ("rule", json!(format!("connect=127.0.0.1:{a}"))),
        ],
    );
    assert_audited(&lines, &deny_rpc("127.0.0.1", b));
    assert_audited(&lines, &deny_rpc("::ffff:127.0.0.1", b));
    assert_audited(&lines, &deny_rpc("::1", a));
    assert_audited(&lines, &deny_rpc("::1", b));
    let mut ten = deny_rpc("10.0.0.1", 80);
    ten.push(("reason", json!("no rule allows it")));
    assert_audited(&lines, &ten);
    let mut metadata = deny_rpc("169.254.169.254", 80);
    metadata.push(("reason", json!("no rule allows it")));
    assert_audited(&lines, &metadata);
    assert_audited(&lines, &deny_rpc("0.0.0.0", a));
    assert_audited(
        &lines,
        &[
            ("host", json!("localhost")),
            ("ip", Value::Null),
            ("allowed", json!(false)),
            ("reason", json!("no rule allows name lookups")),
        ],
    );
    // The children's own wasi:sockets decisions, with their pids.
    for (ip, port, allowed) in [
        ("127.0.0.1", a, true),
        ("127.0.0.1", b, false),
        ("::1", a, false),
    ] {
        assert_audited(
            &lines,
            &[
                ("via", json!("wasi")),
                ("op", json!("connect")),
                ("ip", json!(ip)),
                ("port", json!(port)),
                ("allowed", json!(allowed)),
            ],
        );
    }
    // Every denial the guests saw is in the audit, exactly once: 8 rpc-deny checks, the
    // std-deny connects that reached the check ([::ffff:…] is refused by wasi as an invalid
    // IPv6-socket argument before any check), and std's lookup of a name no rule names.
    let denials = |via: &str| {
        lines
            .iter()
            .filter(|l| l["allowed"] == false && l["via"] == via)
            .count()
    };
    assert_eq!(denials("rpc"), 9);
    assert_audited(
        &lines,
        &[
            ("op", json!("listen")),
            ("ip", json!("127.0.0.1")),
            ("port", json!(0)),
            ("allowed", json!(false)),
        ],
    );
    assert_eq!(denials("wasi"), 3);
    assert_audited(
        &lines,
        &[
            ("via", json!("wasi")),
            ("op", json!("resolve")),
            ("host", json!("localhost")),
            ("allowed", json!(false)),
        ],
    );
    for l in &lines {
        assert!(l["ts"].as_f64().unwrap() > 1.6e9, "{l}");
        assert!(l["pid"].is_u64(), "{l}");
        assert!(l["allowed"] == true || l["reason"].is_string(), "{l}");
        assert!(l["allowed"] == false || l["rule"].is_string(), "{l}");
    }
}

#[test]
fn broad_rules_do_not_cover_loopback() {
    let port = echo_server();
    let p = port.to_string();
    let addr = format!("127.0.0.1:{port}");
    let (_dir, audit) = temp_audit();
    let rules = [
        "connect=0.0.0.0/0:*".to_string(),
        "connect=[::/0]:*".to_string(),
    ];
    #[rustfmt::skip]
    let checks = [
        "rpc-deny", "127.0.0.1", &p,
        "rpc-deny", "::1", &p,
        "rpc-deny", "::ffff:127.0.0.1", &p,
        "rpc-deny", "10.0.0.1", "443",
        "rpc-deny", "169.254.169.254", "80",
        "std-deny", &addr,
    ];
    probe(&rules, Some(&audit), &checks);
    let lines = audit_lines(&audit);
    use serde_json::json;
    for (via, ip, port, reason) in [
        (
            "rpc",
            "127.0.0.1",
            port,
            "loopback address not named by any rule",
        ),
        ("rpc", "::1", port, "loopback address not named by any rule"),
        (
            "rpc",
            "::ffff:127.0.0.1",
            port,
            "loopback address not named by any rule",
        ),
        (
            "rpc",
            "10.0.0.1",
            443,
            "private (RFC 1918) address not named by any rule",
        ),
        (
            "rpc",
            "169.254.169.254",
            80,
            "link-local address not named by any rule",
        ),
        (
            "wasi",
            "127.0.0.1",
            port,
            "loopback address not named by any rule",
        ),
    ] {
        assert_audited(
            &lines,
            &[
                ("via", json!(via)),
                ("ip", json!(ip)),
                ("port", json!(port)),
                ("allowed", json!(false)),
                ("reason", json!(reason)),
            ],
        );
    }
    assert!(!has_line(
        &lines,
        &[("allowed", json!(true)), ("op", json!("connect"))]
    ));
}

#[test]
fn name_rules_resolve_on_the_host_but_never_launder_loopback() {
    let port = echo_server();
    let p = port.to_string();
    let (_dir, audit) = temp_audit();
    // A name rule alone: localhost resolves to loopback, a special range no rule names.
    probe(
        &[format!("connect=localhost:{port}")],
        Some(&audit),
        &["rpc-deny", "localhost", &p, "rpc-deny", "localhost", "1"],
    );
    let lines = audit_lines(&audit);
    use serde_json::json;
    assert_audited(
        &lines,
        &[
            ("host", json!("localhost")),
            ("ip", json!("127.0.0.1")),
            ("allowed", json!(false)),
            ("reason", json!("loopback address not named by any rule")),
        ],
    );
    // With loopback named explicitly, the resolved address is allowed.
    probe(
        &[
            format!("connect=localhost:{port}"),
            format!("connect=127.0.0.0/8:{port}"),
        ],
        None,
        &["rpc-allow", "localhost", &p],
    );
}

/// `--resolve NAME=IP` answers a name without any query (a `.test` name never resolves
/// otherwise); the policy still decides on the pinned address (loopback must be named).
#[test]
fn pinned_names_are_answered_without_a_query() {
    let port = echo_server();
    let p = port.to_string();
    let (_dir, audit) = temp_audit();
    let pin = |rules: &[String], checks: &[&str]| {
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        let done = Cell::run("net-probe")
            .flags(&["--resolve", "api.cell.test=127.0.0.1", "--audit"])
            .flag(&audit)
            .net(&rules)
            .args(checks)
            .finish();
        assert!(!done.stderr.contains("fail:"), "{}", done.stderr);
        done.assert_code(0);
    };
    pin(
        &[
            format!("connect=api.cell.test:{port}"),
            format!("connect=127.0.0.1:{port}"),
        ],
        &["rpc-allow", "api.cell.test", &p],
    );
    use serde_json::json;
    assert_audited(
        &audit_lines(&audit),
        &[
            ("host", json!("api.cell.test")),
            ("ip", json!("127.0.0.1")),
            ("allowed", json!(true)),
        ],
    );
    // The name rule alone does not name loopback: the pinned address is still denied.
    pin(
        &[format!("connect=api.cell.test:{port}")],
        &["rpc-deny", "api.cell.test", &p],
    );
    // A bad pin is a usage error.
    Cell::run("net-probe")
        .flags(&["--resolve", "api.cell.test=not-an-ip"])
        .finish()
        .assert_code(125);
}

/// A guest's own `std::net` resolves names under its name rules (cell's ip-name-lookup):
/// `--resolve` names without a query, `localhost` from /etc/hosts, nothing a rule does not
/// name, and a name rule alone never yields a special-range address.
#[test]
fn own_sockets_resolve_only_names_a_rule_allows() {
    let port = echo_server();
    let (_dir, audit) = temp_audit();
    let std_guest = |rules: &[String], args: &[&str]| {
        let rules: Vec<&str> = rules.iter().map(String::as_str).collect();
        Cell::run("net-std")
            .flags(&["--resolve", "api.cell.test=127.0.0.1", "--audit"])
            .flag(&audit)
            .net(&rules)
            .args(args)
            .finish()
    };
    let both = [
        format!("connect=api.cell.test:{port}"),
        format!("connect=127.0.0.1:{port}"),
    ];
    let named = format!("api.cell.test:{port}");
    std_guest(&both, &["connect", &named, "hello"])
        .assert_code(0)
        .assert_stderr_has("net-std: ok: round trip to api.cell.test");
    std_guest(&both, &["resolve", "api.cell.test"])
        .assert_code(0)
        .assert_stderr_has("net-std: ok: api.cell.test is [127.0.0.1]");
    use serde_json::json;
    let lines = audit_lines(&audit);
    assert_audited(
        &lines,
        &[
            ("via", json!("wasi")),
            ("op", json!("resolve")),
            ("host", json!("api.cell.test")),
            ("ip", json!("127.0.0.1")),
            ("allowed", json!(true)),
        ],
    );
    // A name no rule names is refused before any lookup, and audited.
    std_guest(&both, &["no-dns", "other.cell.test"]).assert_code(0);
    assert_audited(
        &audit_lines(&audit),
        &[
            ("op", json!("resolve")),
            ("host", json!("other.cell.test")),
            ("allowed", json!(false)),
        ],
    );
    // The name rule alone does not name loopback: the answer is dropped, and audited so.
    std_guest(
        &[format!("connect=api.cell.test:{port}")],
        &["resolve", "api.cell.test"],
    )
    .assert_code(0)
    .assert_stderr_has("net-std: ok: api.cell.test is []");
    // The lookup allows the name's ports only: another port of the same address is denied.
    let other = echo_server();
    std_guest(&both, &["deny", &format!("api.cell.test:{other}")]).assert_code(0);
    // The system resolver, for a name /etc/hosts answers.
    let local = [
        format!("connect=localhost:{port}"),
        format!("connect=127.0.0.1:{port}"),
    ];
    std_guest(&local, &["connect", &format!("localhost:{port}"), "hi"])
        .assert_code(0)
        .assert_stderr_has("net-std: ok: round trip to localhost");
    assert_audited(
        &audit_lines(&audit),
        &[
            ("op", json!("resolve")),
            ("host", json!("localhost")),
            ("ip", json!("127.0.0.1")),
            ("allowed", json!(true)),
        ],
    );
}

#[test]
fn restricted_child_and_grandchild_cannot_widen() {
    let (a, b) = (echo_server(), echo_server());
    let rules = [
        format!("connect=127.0.0.1:{a}"),
        format!("connect=127.0.0.1:{b}"),
    ];
    let restrict = format!("connect=127.0.0.1:{a}");
    probe(
        &rules,
        None,
        &["restrict", &restrict, "127.0.0.1", &b.to_string()],
    );
}

/// Refusals say what would grant them: the `--net` rule for pid0, the parent for a child.
#[test]
fn denials_name_what_would_grant_them() {
    let port = echo_server();
    let p = port.to_string();
    run_guest("net-fetch", &[], None, &["127.0.0.1", &p, "/"])
        .assert_code(1)
        .assert_stderr_has("not-granted: network (start cell with --net RULE");
    let other = echo_server();
    let done = probe(
        &[format!("connect=127.0.0.1:{port}")],
        None,
        &[
            "rpc-deny",
            "127.0.0.1",
            &other.to_string(),
            "no-grant",
            &format!("127.0.0.1:{port}"),
        ],
    );
    done.assert_stderr_has(&format!(
        "no rule allows it; to allow it, start cell with --net connect=127.0.0.1:{other}"
    ))
    .assert_stderr_has("not-granted: network (its parent did not grant it)");
}

#[test]
fn children_without_a_grant_have_no_sockets() {
    let port = echo_server();
    let addr = format!("127.0.0.1:{port}");
    probe(
        &[format!("connect=127.0.0.1:{port}")],
        None,
        &["no-grant", &addr],
    );
}

#[test]
fn std_listener_accepts_a_real_client() {
    let mut run = Cell::run("net-std")
        .net(&["listen=127.0.0.1:0"])
        .arg("listen")
        .spawn();
    let addr = run.wait_for("net-std: listening on ");
    assert_eq!(exchange(&addr, "hello"), "HELLO");
    run.finish().assert_code(0);
}

#[test]
fn inetd_hands_each_connection_to_a_fresh_child() {
    let mut run = Cell::run("inetd")
        .net(&["listen=127.0.0.1:0"])
        .args(&["--count", "3"])
        .spawn();
    let addr = run.wait_for("inetd: listening on ");
    let clients: Vec<_> = (0..3)
        .map(|i| {
            let addr = addr.clone();
            thread::spawn(move || exchange(&addr, &format!("hello {i}")))
        })
        .collect();
    for (i, c) in clients.into_iter().enumerate() {
        assert_eq!(c.join().unwrap(), format!("HELLO {i}"));
    }
    let done = run.finish();
    done.assert_code(0);
    let stderr = &done.stderr;
    assert_eq!(stderr.matches("inetd-echo: pid").count(), 6, "{stderr}");
    assert!(
        stderr.contains("served 3 connections, 0 children failed"),
        "{stderr}"
    );
}

#[test]
fn listeners_close_with_their_owner_and_can_be_handed_to_a_child() {
    probe(
        &[
            "listen=127.0.0.1:0".to_string(),
            "connect=127.0.0.1:*".to_string(),
        ],
        None,
        &["owner-exit", "pass-listener"],
    );
}

#[test]
fn udp_round_trip_and_bounded_receive_queue() {
    probe(&["udp=127.0.0.1:*".to_string()], None, &["udp"]);
}

#[test]
fn malformed_net_rules_are_rejected_naming_the_bad_part() {
    for (rule, needle) in [
        ("conect=1.2.3.4:80", "unknown operation \"conect\""),
        ("connect=10.0.0.0/33:80", "invalid CIDR \"10.0.0.0/33\""),
        ("connect=1.2.3.4", "missing port"),
        ("connect=1.2.3.4:http", "invalid port \"http\""),
        ("connect=::1:443", "must be in brackets"),
        ("connect=10.0.0.1/8:80", "did you mean 10.0.0.0/8?"),
        ("listen=example.com:80", "not the host name \"example.com\""),
    ] {
        let done = run_guest("net-fetch", &[rule.to_string()], None, &[]);
        done.assert_code(125).assert_stderr_has(needle);
        assert!(done.stderr.contains(rule), "{}", done.stderr);
    }
}

#[test]
fn run_report_counts_the_audited_decisions() {
    let a = echo_server();
    let (_dir, audit) = temp_audit();
    let a_s = a.to_string();
    let done = Cell::run("net-probe")
        .net(&[&format!("connect=127.0.0.1:{a}")])
        .flag("--audit")
        .flag(&audit)
        .args(&["rpc-allow", "127.0.0.1", &a_s, "rpc-deny", "10.0.0.1", "80"])
        .report()
        .finish();
    done.assert_code(0);
    let lines = audit_lines(&audit);
    let allowed = lines.iter().filter(|l| l["allowed"] == true).count() as u64;
    let denied = lines.len() as u64 - allowed;
    assert!(allowed >= 1 && denied >= 1, "{lines:?}");
    let report = done.report();
    assert_eq!(report["network"]["allowed"], allowed, "{report}");
    assert_eq!(report["network"]["denied"], denied, "{report}");
}

/// A peer that accepts one connection and never reads from it, until the test ends.
fn never_reading_server() -> (u16, std::sync::mpsc::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (stop, stopped) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        if let Ok((conn, _)) = listener.accept() {
            let _ = stopped.recv_timeout(std::time::Duration::from_secs(60));
            drop(conn);
        }
    });
    (port, stop)
}

#[test]
fn writes_to_a_peer_that_never_reads_are_bounded_in_the_host() {
    let (port, stop) = never_reading_server();
    let p = port.to_string();
    let done = probe(
        &[format!("connect=127.0.0.1:{port}")],
        None,
        &["in-flight", "127.0.0.1", &p],
    );
    done.assert_stderr_has("ok: writes past the in-flight budget refused");
    let _ = stop.send(());
}
