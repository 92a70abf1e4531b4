//! `cell serve --client-ca`: mutual TLS. Only clients with a certificate of the client CA get
//! in; each is who its certificate says — recorded in the audit log and its jobs' reports —
//! and `--ceiling NAME=FILE` gives it its own grant ceiling. Real daemons on loopback ports,
//! real `cell exec` clients, certificates made by the test (`common::pki`).

mod common;

use common::pki::{Ca, Pair};
use common::{cell, Cell, Daemon, Finished};
use serde_json::Value;

/// A daemon listening on `tls:127.0.0.1:0` with `flags`, and that address.
fn tls_daemon(flags: &[String]) -> (Daemon, String) {
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start(&flags);
    let line = daemon.wait_for("cell: listening on tls:");
    let addr = format!("tls:{}", line.trim_end_matches(" (mutual TLS)"));
    (daemon, addr)
}

/// `cell exec --connect ADDR --tls-ca CA [certificate flags] GUEST …`.
fn exec_as(addr: &str, ca: &Ca, who: Option<&Pair>, guest: &str) -> Cell {
    let mut cell = Cell::run(guest)
        .via(addr)
        .flags(&["--tls-ca", &ca.pem.display().to_string()]);
    if let Some(pair) = who {
        cell = cell.flags(&pair.flags());
    }
    cell
}

fn audit_lines(path: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

fn path(p: &std::path::Path) -> String {
    p.display().to_string()
}

#[test]
fn only_certificates_of_the_client_ca_get_in_and_each_client_gets_its_own_ceiling() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ours");
    let other = Ca::new(dir.path(), "theirs");
    let server = ca.server("server");
    let ci = ca.client("ci", "ci-runner", &[]);
    let stranger = ca.client("stranger", "stranger", &["stranger.example"]);
    let by_alt_name = ca.client("alt", "someone", &["ci.example"]);
    let forged = other.client("forged", "ci-runner", &[]);
    let ceiling = dir.path().join("ci.toml");
    std::fs::write(
        &ceiling,
        "net = [\"connect=127.0.0.1:*\"]\nmax_memory = \"256M\"\n",
    )
    .unwrap();
    let audit = dir.path().join("audit.jsonl");
    let mut flags = server.flags();
    flags.extend([
        "--listen".into(),
        "tls:127.0.0.1:0".into(),
        "--client-ca".into(),
        path(&ca.pem),
        "--ceiling".into(),
        format!("ci-runner={}", path(&ceiling)),
        "--ceiling".into(),
        format!("ci.example={}", path(&ceiling)),
        "--audit".into(),
        path(&audit),
    ]);
    let (daemon, addr) = tls_daemon(&flags);

    // ci-runner's ceiling has a network: its job gets one (the probe's connect to port 9 is
    // denied by the job's own narrower policy, decided before any socket is opened).
    let out = exec_as(&addr, &ca, Some(&ci), "net-probe")
        .flags(&["--net", "connect=127.0.0.1:80"])
        .args(&["rpc-deny", "127.0.0.1", "9"])
        .report()
        .finish();
    out.assert_code(0);
    assert_eq!(out.report()["client"], "ci-runner");
    // … and no more memory than its ceiling says.
    exec_as(&addr, &ca, Some(&ci), "hello")
        .flags(&["--max-memory", "512M"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("ceiling");
    // A name among the alternative names chooses the ceiling too, and is the one recorded.
    let out = exec_as(&addr, &ca, Some(&by_alt_name), "hello")
        .flags(&["--net", "connect=127.0.0.1:80"])
        .args(&["exit", "4"])
        .report()
        .finish();
    out.assert_code(4);
    assert_eq!(out.report()["client"], "ci.example");

    // A client may name the host instead of its IP: the name (`localhost`, from /etc/hosts)
    // is resolved when connecting and is what the daemon's certificate must carry.
    let by_name = addr.replacen("127.0.0.1", "localhost", 1);
    exec_as(&by_name, &ca, Some(&ci), "hello")
        .args(&["exit", "7"])
        .finish()
        .assert_code(7);

    // Another client of the same CA gets the daemon's own ceiling: no network at all.
    exec_as(&addr, &ca, Some(&stranger), "hello")
        .flags(&["--net", "connect=127.0.0.1:80"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("grants no network");
    let out = exec_as(&addr, &ca, Some(&stranger), "hello")
        .args(&["exit", "5"])
        .report()
        .finish();
    out.assert_code(5);
    assert_eq!(out.report()["client"], "stranger");

    // The same name from another CA, no certificate, plain TCP: nothing gets in.
    exec_as(&addr, &ca, Some(&forged), "hello")
        .finish()
        .assert_code(125);
    exec_as(&addr, &ca, None, "hello")
        .finish()
        .assert_code(125)
        .assert_stderr_has("--tls-cert");
    let token = dir.path().join("token");
    std::fs::write(&token, "t").unwrap();
    exec_as(&addr, &ca, None, "hello")
        .flags(&["--token-file", &path(&token)])
        .finish()
        .assert_code(125);
    let plain = addr.replacen("tls:", "tcp:", 1);
    Cell::run("hello")
        .via(&plain)
        .flags(&["--token-file", &path(&token)])
        .finish()
        .assert_code(125);

    // The audit log: every connection (who, or why not) and every line of a job names it.
    daemon.stop().assert_code(0);
    let lines = audit_lines(&audit);
    let clients: Vec<&Value> = lines.iter().filter(|l| l["op"] == "client").collect();
    for who in ["ci-runner", "ci.example", "stranger"] {
        assert!(
            clients
                .iter()
                .any(|l| l["allowed"] == true && l["client"] == who && l["pid"].is_null()),
            "no accepted connection of {who}: {clients:?}"
        );
    }
    let refused: Vec<_> = clients.iter().filter(|l| l["allowed"] == false).collect();
    assert!(
        refused.len() >= 2,
        "forged and certificate-less: {refused:?}"
    );
    assert!(refused.iter().all(|l| l["client"].is_null()
        && l["reason"].as_str().is_some_and(|r| r.starts_with("TLS: "))
        && l["ip"] == "127.0.0.1"));
    let deny = lines
        .iter()
        .find(|l| l["op"] == "connect" && l["port"] == 9)
        .unwrap_or_else(|| panic!("no connect decision: {lines:?}"));
    assert_eq!(deny["allowed"], false);
    assert_eq!(deny["client"], "ci-runner");
}

#[test]
fn with_a_token_too_a_client_must_show_both() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ours");
    let server = ca.server("server");
    let ci = ca.client("ci", "ci-runner", &[]);
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret\n").unwrap();
    let mut flags = server.flags();
    flags.extend([
        "--listen".into(),
        "tcp:127.0.0.1:0".into(),
        "--client-ca".into(),
        path(&ca.pem),
        "--token-file".into(),
        path(&token),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut daemon = Daemon::start(&flags);
    let line = daemon.wait_for("cell: listening on tcp:");
    let addr = format!("tcp:{}", line.trim_end_matches(" (mutual TLS)"));
    let token_flags = ["--token-file".to_string(), path(&token)];
    let out = exec_as(&addr, &ca, Some(&ci), "hello")
        .flags(&token_flags)
        .args(&["exit", "6"])
        .report()
        .finish();
    out.assert_code(6);
    assert_eq!(out.report()["client"], "ci-runner");
    // The certificate alone is not enough: the daemon wants the token first.
    exec_as(&addr, &ca, Some(&ci), "hello")
        .finish()
        .assert_code(125);
    // The token alone is not enough either: the handshake wants a certificate.
    exec_as(&addr, &ca, None, "hello")
        .flags(&token_flags)
        .finish()
        .assert_code(125);
    daemon.stop().assert_code(0);
}

fn serve(args: &[String]) -> Finished {
    let mut cmd = cell();
    cmd.args(["serve", "--no-cache"]).args(args);
    common::finish(cmd)
}

#[test]
fn mutual_tls_flags_that_cannot_work_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "ours");
    let server = ca.server("server");
    let listen = ["--listen".to_string(), "tls:127.0.0.1:0".to_string()];
    // tls: without a certificate.
    let mut args = listen.to_vec();
    args.extend(["--token-file".into(), path(&ca.pem)]);
    serve(&args)
        .assert_code(125)
        .assert_stderr_has("needs --tls-cert and --tls-key");
    // --ceiling without --client-ca, --client-ca without a certificate.
    let ceiling = dir.path().join("c.toml");
    std::fs::write(&ceiling, "max_memory = \"64M\"\n").unwrap();
    let mut args = listen.to_vec();
    args.extend(server.flags());
    args.extend(["--ceiling".into(), format!("a={}", path(&ceiling))]);
    serve(&args)
        .assert_code(125)
        .assert_stderr_has("--client-ca");
    serve(&["--client-ca".into(), path(&ca.pem)])
        .assert_code(125)
        .assert_stderr_has("--tls-cert");
    // A ceiling file that is not one, and a CA file that holds no certificate.
    let mut args = listen.to_vec();
    args.extend(server.flags());
    args.extend(["--client-ca".into(), path(&ca.pem)]);
    std::fs::write(&ceiling, "listen = [\"unix:/x\"]\n").unwrap();
    let mut bad = args.clone();
    bad.extend(["--ceiling".into(), format!("a={}", path(&ceiling))]);
    serve(&bad).assert_code(125).assert_stderr_has(&format!(
        "--ceiling a={}: unknown key \"listen\"",
        path(&ceiling)
    ));
    let mut bad = listen.to_vec();
    bad.extend(server.flags());
    bad.extend(["--client-ca".into(), path(&ceiling)]);
    serve(&bad)
        .assert_code(125)
        .assert_stderr_has("no PEM certificate");
}
