//! `cell serve` and its clients through the real binaries: jobs end like `cell run` runs
//! (`cell exec` has its exit codes), `ps`/`kill`/`logs`, the grant ceiling, the socket's
//! guards, clients that go away, and SIGTERM.

mod common;

use std::io::BufRead as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cell, guest, Cell, Daemon};
use serde_json::Value;

/// Polls `ps` until `pick` finds something, or panics after a while.
fn ps_until<T>(daemon: &Daemon, mut pick: impl FnMut(&[Value]) -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = daemon.ps();
        if let Some(v) = pick(&rows) {
            return v;
        }
        assert!(Instant::now() < deadline, "ps never showed it: {rows:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The pid of the running job whose pid0 is named `name`.
fn job_named(rows: &[Value], name: &str) -> Option<u64> {
    rows.iter()
        .find(|r| r["name"] == name && r["parent"].is_null() && r["state"] == "running")
        .and_then(|r| r["pid"].as_u64())
}

#[test]
fn a_job_ends_with_the_exit_code_cell_run_gives() {
    let daemon = Daemon::start(&[]);
    let cases: Vec<(Cell, Cell, i32)> = vec![
        (Cell::run("pid0"), daemon.exec("pid0"), 0),
        (
            Cell::run("hello").args(&["exit", "7"]),
            daemon.exec("hello").args(&["exit", "7"]),
            7,
        ),
        (
            Cell::run("hello").arg("trap"),
            daemon.exec("hello").arg("trap"),
            134,
        ),
        (Cell::run("child-trap"), daemon.exec("child-trap"), 134),
        (
            Cell::run("hostile")
                .flags(&["--timeout", "300ms"])
                .arg("sleep"),
            daemon
                .exec("hostile")
                .flags(&["--timeout", "300ms"])
                .arg("sleep"),
            124,
        ),
        (
            Cell::run_path("/nonexistent/x.wasm"),
            Cell::run_path("/nonexistent/x.wasm").via(&daemon.addr()),
            127,
        ),
        (
            Cell::run_path(file!()),
            Cell::run_path(file!()).via(&daemon.addr()),
            126,
        ),
    ];
    for (run, exec, code) in cases {
        let ran = run.finish();
        let execd = exec.finish();
        ran.assert_code(code);
        execd.assert_code(code);
    }
    // The job's tree streams its stderr to the client, children's lines prefixed.
    let out = daemon.exec("pid0").finish();
    out.assert_code(0).assert_stderr_has("] echo pid=");
    out.assert_stderr_has("pid0: bye!");
    // A plain job's stdio is the client's.
    let out = daemon.exec("upper").stdin("shout\n").finish();
    out.assert_code(0);
    assert_eq!(out.stdout, "SHOUT\n");
    let out = daemon
        .exec("hello")
        .flags(&["--env", "K=V"])
        .args(&["env"])
        .finish();
    out.assert_code(0);
    assert_eq!(
        out.stdout, "K=V\n",
        "only what was asked for: {}",
        out.stdout
    );
}

#[test]
fn a_job_report_is_a_cell_run_report() {
    let daemon = Daemon::start(&[]);
    let out = daemon.exec("pid0").report().finish();
    out.assert_code(0);
    let report = out.report();
    assert_eq!(report["schema"], "cell-report/1");
    assert_eq!(report["pid0"]["status"], "exited");
    assert_eq!(report["exit_code"], 0);
    assert_eq!(report["mode"], "rpc");
    // pid0 and its three descendants, each with its own status.
    assert_eq!(report["processes"].as_array().map(Vec::len), Some(4));
    let out = daemon.exec("hello").args(&["exit", "3"]).report().finish();
    assert_eq!(out.report()["exit_code"], 3);
    assert_eq!(out.report()["mode"], "plain");
}

#[test]
fn ps_shows_the_tree_and_kill_ends_a_job() {
    let daemon = Daemon::start(&[]);
    let job = daemon.exec("hostile").arg("sleep").spawn();
    let pid = ps_until(&daemon, |rows| job_named(rows, "hostile.wasm"));
    let rows = daemon.ps();
    let row = rows.iter().find(|r| r["pid"] == pid).unwrap();
    assert_eq!(row["job"], pid);
    assert!(row["memory_bytes"].as_u64().unwrap() > 0, "{row}");
    let tree = daemon.client("ps", &["--tree"]);
    tree.assert_code(0);
    assert!(tree.stdout.contains("hostile.wasm"), "{}", tree.stdout);
    daemon.client("kill", &[&pid.to_string()]).assert_code(0);
    let out = job.finish();
    out.assert_code(137);
    // Gone, so a second kill names it.
    let again = daemon.client("kill", &[&pid.to_string()]);
    again.assert_code(1).assert_stderr_has("dead");
}

#[test]
fn the_ceiling_only_narrows() {
    let root = tempfile::tempdir().unwrap();
    let ro = root.path().join("ro");
    let rw = root.path().join("rw");
    std::fs::create_dir_all(ro.join("sub")).unwrap();
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::write(ro.join("sub/f"), "inside").unwrap();
    let (ro_s, rw_s) = (ro.display().to_string(), rw.display().to_string());
    let audit = root.path().join("audit.jsonl");
    let audit_s = audit.display().to_string();
    let daemon = Daemon::start(&[
        "--dir",
        &ro_s,
        "--dir-rw",
        &rw_s,
        "--max-memory",
        "256M",
        "--audit",
        &audit_s,
    ]);
    // A directory inside a read-only one of the ceiling, read-only: granted.
    let sub = format!("{}::/d", ro.join("sub").display());
    let out = daemon
        .exec("hello")
        .flags(&["--dir", &sub])
        .args(&["read", "/d/f"])
        .finish();
    out.assert_code(0);
    assert_eq!(out.stdout, "inside");
    // Each refused before anything runs (exit 125), saying why.
    let refused = |flags: &[&str], why: &str| {
        daemon
            .exec("hello")
            .flags(flags)
            .args(&["write", "/d/x"])
            .finish()
            .assert_code(125)
            .assert_stderr_has(why);
    };
    // Writable where the ceiling is read-only.
    refused(&["--dir-rw", &format!("{ro_s}::/d")], "denied:");
    assert!(!ro.join("x").exists());
    // Outside the ceiling altogether.
    refused(
        &["--dir", "/etc::/etc"],
        "not inside a directory this daemon grants",
    );
    // A limit above the ceiling's.
    refused(&["--max-memory", "1G"], "limit:");
    // No network in the ceiling: none for the job.
    refused(&["--net", "connect=127.0.0.1:80"], "grants no network");
    // The writable one works, and what the job wrote is on the host.
    let w = format!("{rw_s}::/w");
    daemon
        .exec("hello")
        .flags(&["--dir-rw", &w])
        .args(&["write", "/w/out"])
        .finish()
        .assert_code(0);
    assert_eq!(std::fs::read_to_string(rw.join("out")).unwrap(), "written");
    // Each directory a job got is in the daemon's audit trail.
    let lines: Vec<Value> = std::fs::read_to_string(&audit)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let granted = |guest: &str| {
        lines
            .iter()
            .any(|l| l["op"] == "dir" && l["host"] == guest && l["allowed"] == true)
    };
    assert!(granted("/w") && granted("/d"), "{lines:?}");
}

#[test]
fn the_socket_is_guarded() {
    let daemon = Daemon::start(&[]);
    let sock = daemon.addr();
    // A second daemon on a live socket.
    let mut second = cell();
    second.args(["serve", "--listen", &sock, "--no-cache"]);
    common::finish(second)
        .assert_code(125)
        .assert_stderr_has("another daemon is listening");
    // A socket path in a directory others can write.
    let shared = tempfile::tempdir().unwrap();
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
    let mut open = cell();
    open.args(["serve", "--no-cache", "--listen"])
        .arg(format!("unix:{}/c.sock", shared.path().display()));
    common::finish(open)
        .assert_code(125)
        .assert_stderr_has("others can write to this directory");
    // Something that is not a socket is never replaced.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.sock");
    std::fs::write(&file, "keep").unwrap();
    let mut clobber = cell();
    clobber
        .args(["serve", "--no-cache", "--listen"])
        .arg(format!("unix:{}", file.display()));
    common::finish(clobber)
        .assert_code(125)
        .assert_stderr_has("not a socket");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
    // A graceful stop removes the socket; a client then gets a clear error.
    let path = daemon.sock.clone();
    daemon.stop().assert_code(0);
    assert!(!path.exists());
    let mut late = cell();
    late.args(["ps", "--connect", &sock]);
    common::finish(late)
        .assert_code(125)
        .assert_stderr_has("is `cell serve` running there?");
}

#[test]
fn a_client_that_goes_away_leaves_its_job_unless_attached() {
    let daemon = Daemon::start(&[]);
    let kill9 = |pid: u32| {
        Command::new("kill")
            .args(["-KILL", &pid.to_string()])
            .status()
            .unwrap();
    };
    let detached = daemon
        .exec("hostile")
        .flags(&["--argv0", "stays"])
        .arg("sleep")
        .spawn();
    let stays = ps_until(&daemon, |rows| job_named(rows, "stays"));
    kill9(detached.id());
    let _ = detached.finish();
    let attached = daemon
        .exec("hostile")
        .flags(&["--attached", "--argv0", "goes"])
        .arg("sleep")
        .spawn();
    ps_until(&daemon, |rows| job_named(rows, "goes"));
    kill9(attached.id());
    let _ = attached.finish();
    // The attached job goes with its client; the other runs on.
    ps_until(&daemon, |rows| {
        job_named(rows, "goes").is_none().then_some(())
    });
    assert_eq!(job_named(&daemon.ps(), "stays"), Some(stays));
    daemon.client("kill", &[&stays.to_string()]).assert_code(0);
}

#[test]
fn logs_follow_shows_spawns_exits_and_denials() {
    let daemon = Daemon::start(&["--net", "connect=127.0.0.1:9"]);
    let mut logs = cell()
        .args(["logs", "--follow", "--json", "--connect", &daemon.addr()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _watchdog = common::Watchdog::arm(logs.id());
    let (tx, rx) = std::sync::mpsc::channel::<Value>();
    let stdout = logs.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str(&line) {
                let _ = tx.send(v);
            }
        }
    });
    // Events flow only once the subscription is in place: retry a job until one is seen.
    let mut seen: Vec<Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen.iter().any(|e| e["event"] == "exit") {
        assert!(Instant::now() < deadline, "no exit event: {seen:?}");
        daemon
            .exec("hello")
            .flags(&["--argv0", "evented"])
            .finish()
            .assert_code(0);
        while let Ok(e) = rx.recv_timeout(Duration::from_millis(300)) {
            seen.push(e);
        }
    }
    let spawn = seen
        .iter()
        .find(|e| e["event"] == "spawn" && e["name"] == "evented")
        .unwrap_or_else(|| panic!("no spawn event: {seen:?}"));
    let pid = spawn["pid"].clone();
    assert!(spawn["parent"].is_null());
    let exit = seen
        .iter()
        .find(|e| e["event"] == "exit" && e["pid"] == pid)
        .unwrap_or_else(|| panic!("no exit for {pid}: {seen:?}"));
    assert_eq!(exit["status"]["status"], "exited");
    // A denial: the policy refuses a connect (decided before any socket is opened).
    daemon
        .exec("net-probe")
        .flags(&["--net", "connect=127.0.0.1:9"])
        .args(&["rpc-deny", "127.0.0.1", "10"])
        .finish()
        .assert_code(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    let deny = loop {
        if let Some(d) = seen.iter().find(|e| e["event"] == "deny") {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "no deny event: {seen:?}");
        if let Ok(e) = rx.recv_timeout(Duration::from_millis(300)) {
            seen.push(e);
        }
    };
    assert_eq!(deny["op"], "connect");
    assert_eq!(deny["target"], "127.0.0.1:10");
    let _ = logs.kill();
    let _ = logs.wait();
}

#[test]
fn sigterm_stops_every_job_and_exits_zero() {
    let daemon = Daemon::start(&[]);
    let job = daemon.exec("hostile").arg("sleep").spawn();
    ps_until(&daemon, |rows| job_named(rows, "hostile.wasm"));
    let stopped = daemon.stop();
    stopped.assert_code(0);
    let out = job.finish();
    // Killed by the operator, as `cell run`'s tree would be.
    out.assert_code(137).assert_stderr_has("killed");
}

#[test]
fn a_tcp_listener_wants_the_token_first() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "s3cret-token\n").unwrap();
    let wrong = dir.path().join("wrong");
    std::fs::write(&wrong, "guess").unwrap();
    let tok = token.display().to_string();
    let mut daemon = Daemon::start(&["--listen", "tcp:127.0.0.1:0", "--token-file", &tok]);
    let addr = format!("tcp:{}", daemon.wait_for("cell: listening on tcp:"));
    let exec = |token: Option<&std::path::Path>| {
        let mut c = Cell::run("hello").via(&addr).args(&["exit", "5"]);
        if let Some(t) = token {
            c = c.flags(&["--token-file".as_ref(), t.as_os_str()]);
        }
        c.finish()
    };
    exec(Some(&token)).assert_code(5);
    exec(Some(&wrong))
        .assert_code(125)
        .assert_stderr_has("denied: wrong token");
    exec(None)
        .assert_code(125)
        .assert_stderr_has("needs --token-file");
    // The daemon is unharmed by the failed logins.
    exec(Some(&token)).assert_code(5);
    // A connection that never logs in does not keep its slot: it is closed.
    let mut idle = std::net::TcpStream::connect(addr.trim_start_matches("tcp:")).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut rest = Vec::new();
    let ended = std::io::Read::read_to_end(&mut idle, &mut rest);
    assert!(
        ended.is_ok(),
        "an idle, unauthenticated connection was kept: {ended:?}"
    );
    // TCP needs a token, and a loopback address (no TLS here).
    let mut open = cell();
    open.args(["serve", "--no-cache", "--listen", "tcp:127.0.0.1:0"]);
    common::finish(open)
        .assert_code(125)
        .assert_stderr_has("needs --token-file");
    let mut public = cell();
    public
        .args([
            "serve",
            "--no-cache",
            "--listen",
            "tcp:0.0.0.0:0",
            "--token-file",
        ])
        .arg(&token);
    common::finish(public)
        .assert_code(125)
        .assert_stderr_has("only a loopback address");
}

/// The service row named `name`: (pid, restarts).
fn service_row(rows: &[Value], name: &str) -> Option<(u64, u64)> {
    rows.iter()
        .find(|r| r["service"] == name && r["state"] == "running")
        .map(|r| (r["pid"].as_u64().unwrap(), r["restarts"].as_u64().unwrap()))
}

#[test]
fn services_restart_with_backoff_and_sighup_changes_only_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cell.toml");
    let (hello, hostile) = (guest("hello"), guest("hostile"));
    let write_config = |steady_env: &str, extra: &str| {
        let text = format!(
            "max_memory = \"512M\"\n\
             [[service]]\nname = \"flaky\"\nwasm = \"{}\"\nargs = [\"exit\", \"3\"]\n\
             restart = \"on-failure\"\nmax_restarts = 2\n\
             [[service]]\nname = \"steady\"\nwasm = \"{}\"\nargs = [\"sleep\"]\n\
             env = {{ V = \"{steady_env}\" }}\n{extra}",
            hello.display(),
            hostile.display()
        );
        std::fs::write(&config, text).unwrap();
    };
    write_config("1", "");
    let silent = format!("once={}", guest("child-silent").display());
    let mut daemon = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--service",
        &silent,
        "--restart",
        "always",
        "--max-restarts",
        "1",
    ]);
    // Restarted with backoff, then given up on, by its own policy or the flags'.
    let (mut flaky, mut once) = (false, false);
    daemon.wait_for_line(|l| {
        flaky |= l.contains("service flaky ended") && l.contains("giving up");
        once |= l.contains("service once ended") && l.contains("giving up");
        flaky && once
    });
    let client_job = daemon
        .exec("hostile")
        .flags(&["--argv0", "client-job"])
        .arg("sleep")
        .spawn();
    let job_pid = ps_until(&daemon, |rows| job_named(rows, "client-job"));
    let (steady, restarts) = ps_until(&daemon, |rows| service_row(rows, "steady"));
    assert_eq!(restarts, 0);
    // Killed, it comes back (on-failure), with its count.
    daemon.client("kill", &[&steady.to_string()]).assert_code(0);
    let (steady, restarts) = ps_until(&daemon, |rows| {
        service_row(rows, "steady").filter(|(pid, _)| *pid != steady)
    });
    assert_eq!(restarts, 1);
    // SIGHUP with one service added: the others and the client's job are untouched.
    write_config(
        "1",
        &format!(
            "[[service]]\nname = \"added\"\nwasm = \"{}\"\nargs = [\"sleep\"]\n",
            hostile.display()
        ),
    );
    hup(&daemon);
    ps_until(&daemon, |rows| service_row(rows, "added"));
    let rows = daemon.ps();
    assert_eq!(service_row(&rows, "steady"), Some((steady, 1)));
    assert_eq!(job_named(&rows, "client-job"), Some(job_pid));
    // A changed service is restarted afresh; an invalid config changes nothing.
    write_config("2", "");
    hup(&daemon);
    ps_until(&daemon, |rows| {
        service_row(rows, "steady").filter(|(pid, r)| *pid != steady && *r == 0)
    });
    ps_until(&daemon, |rows| {
        service_row(rows, "added").is_none().then_some(())
    });
    std::fs::write(&config, "[[service]]\nname = 1\n").unwrap();
    hup(&daemon);
    daemon.wait_for_line(|l| l.contains("SIGHUP: the config is not valid"));
    assert!(service_row(&daemon.ps(), "steady").is_some());
    assert_eq!(job_named(&daemon.ps(), "client-job"), Some(job_pid));
    daemon
        .client("kill", &[&job_pid.to_string()])
        .assert_code(0);
    let _ = client_job.finish();
}

fn hup(daemon: &Daemon) {
    Command::new("kill")
        .args(["-HUP", &daemon.pid().to_string()])
        .status()
        .unwrap();
}

/// `GET path` over plain HTTP/1.1; the whole answer.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

/// The value of the sample `name` (with its labels, as written) in a metrics text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

#[test]
fn metrics_are_scraped_over_http() {
    let mut daemon = Daemon::start(&["--metrics", "127.0.0.1:0", "--net", "connect=127.0.0.1:9"]);
    let url = daemon.wait_for("cell: metrics on http://");
    let addr = url.trim_end_matches("/metrics").to_string();
    daemon.exec("hello").finish().assert_code(0);
    daemon
        .exec("hello")
        .args(&["exit", "4"])
        .finish()
        .assert_code(4);
    daemon
        .exec("net-probe")
        .flags(&["--net", "connect=127.0.0.1:9"])
        .args(&["rpc-deny", "127.0.0.1", "10"])
        .finish()
        .assert_code(0);
    let reply = http_get(&addr, "/metrics");
    assert!(reply.starts_with("HTTP/1.1 200 OK"), "{reply}");
    assert!(reply.contains("application/openmetrics-text"), "{reply}");
    let body = reply.split("\r\n\r\n").nth(1).unwrap();
    assert!(body.trim_end().ends_with("# EOF"), "{body}");
    assert!(sample(body, "cell_spawns_total").unwrap() >= 3.0, "{body}");
    // One gauge per shard (every daemon of the tests has at least one).
    assert!(
        sample(body, "cell_shard_processes{shard=\"0\"}").is_some(),
        "{body}"
    );
    assert!(
        sample(body, "cell_exits_total{status=\"exited-0\"}").unwrap() >= 2.0,
        "{body}"
    );
    assert_eq!(
        sample(body, "cell_exits_total{status=\"exited-nonzero\"}"),
        Some(1.0)
    );
    assert!(sample(body, "cell_network_decisions_total{verdict=\"denied\"}").unwrap() >= 1.0);
    assert_eq!(sample(body, "cell_jobs"), Some(0.0));
    assert!(sample(body, "cell_rpc_calls_total").unwrap() > 0.0);
    assert!(sample(body, "cell_host_resident_bytes").unwrap() > 1e6);
    assert!(
        sample(
            body,
            "cell_compile_cache_lookups_total{cache=\"memory\",result=\"hit\"}"
        )
        .unwrap()
            >= 1.0,
        "the second hello came from memory: {body}"
    );
    assert!(http_get(&addr, "/other").starts_with("HTTP/1.1 404"));
    // Only loopback.
    let mut public = cell();
    public.args(["serve", "--no-cache", "--metrics", "0.0.0.0:0", "--listen"]);
    public.arg(format!("unix:{}/m.sock", daemon.dir.path().display()));
    common::finish(public)
        .assert_code(125)
        .assert_stderr_has("only a loopback address");
}

#[test]
fn a_signal_to_cell_exec_kills_its_job() {
    let daemon = Daemon::start(&[]);
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let name = format!("signalled-{signal}");
        let job = daemon
            .exec("hostile")
            .flags(&["--argv0", &name])
            .arg("sleep")
            .spawn();
        ps_until(&daemon, |rows| job_named(rows, &name));
        job.signal(signal);
        job.finish().assert_code(code);
        // The job went with it, as `cell run`'s tree would.
        ps_until(&daemon, |rows| {
            job_named(rows, &name).is_none().then_some(())
        });
    }
}

#[test]
fn a_tls_listener_is_trusted_only_through_its_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.display().to_string()
    };
    let ours = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let cert = write("cert.pem", ours.cert.pem());
    let key = write("key.pem", ours.key_pair.serialize_pem());
    let theirs = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let other_ca = write("other.pem", theirs.cert.pem());
    let token = write("token", "t0ken".into());
    let mut daemon = Daemon::start(&[
        "--listen",
        "tcp:127.0.0.1:0",
        "--token-file",
        &token,
        "--tls-cert",
        &cert,
        "--tls-key",
        &key,
    ]);
    let line = daemon.wait_for("cell: listening on tcp:");
    let addr = format!("tcp:{}", line.trim_end_matches(" (TLS)"));
    let exec = |flags: &[&str]| {
        Cell::run("hello")
            .via(&addr)
            .flags(&["--token-file", &token])
            .flags(flags)
            .args(&["exit", "5"])
            .finish()
    };
    exec(&["--tls-ca", &cert]).assert_code(5);
    exec(&["--tls-ca", &other_ca])
        .assert_code(125)
        .assert_stderr_has("TLS");
    exec(&["--tls-ca", &cert, "--tls-name", "other.example"])
        .assert_code(125)
        .assert_stderr_has("TLS");
    // Plain TCP to a TLS listener gets nowhere.
    exec(&[]).assert_code(125);
    exec(&["--tls-ca", &cert]).assert_code(5);
}

#[test]
fn listeners_from_the_config_file_and_a_failed_start_leaves_no_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("c.sock");
    let config = dir.path().join("cell.toml");
    let token = dir.path().join("token");
    std::fs::write(&token, "x").unwrap();
    // The second listener is refused (non-loopback without TLS) after the first was bound.
    std::fs::write(
        &config,
        format!(
            "listen = [\"unix:{}\", \"tcp:0.0.0.0:7\"]\ntoken_file = \"{}\"\n",
            sock.display(),
            token.display()
        ),
    )
    .unwrap();
    let mut serve = cell();
    serve.args(["serve", "--no-cache", "--config"]).arg(&config);
    common::finish(serve)
        .assert_code(125)
        .assert_stderr_has("only a loopback address");
    assert!(
        !sock.exists(),
        "the socket of a daemon that did not start is left behind"
    );
    // A bad key in the file is a clear error too.
    std::fs::write(&config, "lisen = []\n").unwrap();
    let mut serve = cell();
    serve.args(["serve", "--no-cache", "--config"]).arg(&config);
    common::finish(serve)
        .assert_code(125)
        .assert_stderr_has("unknown key \"lisen\"");
}
