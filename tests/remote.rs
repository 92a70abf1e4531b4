//! `cell run --remote NAME=tls://HOST:PORT`: pid0 spawns children on other machines' `cell
//! serve` daemons over mutual TLS. Every node here is a real `cell serve` process on a
//! loopback port, with certificates made by the test; pid0 is `guests/remote-pid0`.

mod common;

use std::time::{Duration, Instant};

use common::pki::{Ca, Pair};
use common::{Cell, Daemon};

/// A node: a daemon on `tls:127.0.0.1:0` taking clients of `ca`, the client named `runner`
/// with a ceiling of its own (a network of loopback ports 1–1000, 512 MiB), and its address.
struct Node {
    daemon: Daemon,
    port: String,
}

impl Node {
    fn start(ca: &Ca, dir: &std::path::Path, name: &str) -> Node {
        Node::start_on(ca, dir, name, "0")
    }

    /// A node listening on `port` of 127.0.0.1 (`0`: any).
    fn start_on(ca: &Ca, dir: &std::path::Path, name: &str, port: &str) -> Node {
        let server = ca.server(&format!("{name}-server"));
        let ceiling = dir.join(format!("{name}-runner.toml"));
        std::fs::write(
            &ceiling,
            "net = [\"connect=127.0.0.1:1-1000\"]\nmax_memory = \"512M\"\n",
        )
        .unwrap();
        let mut flags = server.flags();
        flags.extend([
            "--listen".to_string(),
            format!("tls:127.0.0.1:{port}"),
            "--client-ca".into(),
            ca.pem.display().to_string(),
            "--ceiling".into(),
            format!("runner={}", ceiling.display()),
        ]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut daemon = Daemon::start(&flags);
        let line = daemon.wait_for("cell: listening on tls:");
        let port = line
            .trim_end_matches(" (mutual TLS)")
            .rsplit(':')
            .next()
            .unwrap()
            .to_string();
        Node { daemon, port }
    }

    fn remote(&self, name: &str) -> String {
        format!("{name}=tls://127.0.0.1:{}", self.port)
    }

    /// The node's jobs now (over its unix socket).
    fn jobs(&self) -> usize {
        self.daemon
            .ps()
            .iter()
            .filter(|r| r["parent"].is_null() && r["service"].is_null())
            .count()
    }
}

/// `cell run --remote …` of remote-pid0 as the client `runner`.
fn run_with(ca: &Ca, me: &Pair, remotes: &[String], args: &[&str]) -> Cell {
    let mut cell = Cell::run("remote-pid0");
    for r in remotes {
        cell = cell.flags(&["--remote", r]);
    }
    cell.flags(&[
        "--remote-ca",
        &ca.pem.display().to_string(),
        "--remote-cert",
        &me.cert.display().to_string(),
        "--remote-key",
        &me.key.display().to_string(),
    ])
    .args(args)
}

#[test]
fn remote_children_behave_like_local_ones_across_three_nodes() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "fleet");
    let me = ca.client("runner", "runner", &[]);
    let (b, c) = (
        Node::start(&ca, dir.path(), "b"),
        Node::start(&ca, dir.path(), "c"),
    );
    let both = [b.remote("b"), c.remote("c")];
    let run = |args: &[&str]| run_with(&ca, &me, &both, args).finish();
    run(&["list", "b,c"]).assert_code(0);
    run(&["exit", "b", "7"]).assert_code(0);
    run(&["exit", "c", "3"]).assert_code(0);
    run(&["leaf", "c"]).assert_code(0);
    run(&["cat", "b"]).assert_code(0);
    run(&["kill", "b"]).assert_code(0);
    run(&["echo", "c", "50"]).assert_code(0);
    // A service here, used by children there: both directions of each call cross the link.
    run(&["kv", "c"]).assert_code(0);
    run(&["kv", "b"]).assert_code(0);
    // A service there, used here (and by a child here it is granted to).
    run(&["served", "b"]).assert_code(0);
    // A component here, granted to a child there: what that child spawns from it runs here.
    run(&["component", "c"]).assert_code(0);
    // The Network is narrowed by the node's ceiling for this client: port 2000 is allowed
    // here, not there (decided by the policy there, no socket opened).
    run_with(&ca, &me, &both, &["net", "b", "2000"])
        .flags(&["--net", "connect=127.0.0.1:*"])
        .finish()
        .assert_code(0);
    let grant = tempfile::tempdir().unwrap();
    run_with(&ca, &me, &both, &["refused", "b"])
        .flags(&["--dir", &format!("{}::/g", grant.path().display())])
        .finish()
        .assert_code(0);
    // Nothing is left on either node: every job ended with its child.
    for node in [&b, &c] {
        wait_until(|| node.jobs() == 0, "a remote job outlived its run");
    }
}

fn wait_until(mut done: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_child_outlives_neither_its_parent_nor_its_node() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "fleet");
    let me = ca.client("runner", "runner", &[]);
    let b = Node::start(&ca, dir.path(), "b");
    // The parent ends without waiting: the node kills the child (the cascade).
    let out = run_with(&ca, &me, &[b.remote("b")], &["orphan", "b"]).finish();
    out.assert_code(0).assert_stderr_has("holding pid");
    wait_until(|| b.jobs() == 0, "an orphaned remote child still runs");
    // The node dies under a waiting parent: the child ends `killed: link-lost`, and the
    // parent's wait returns (the run does not hang).
    let mut running = run_with(&ca, &me, &[b.remote("b")], &["hold", "b"]).spawn();
    running.wait_for("remote-pid0: holding pid");
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &b.daemon.pid().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let out = running.finish();
    out.assert_code(0).assert_stderr_has("link-lost");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "link loss took {:?}",
        started.elapsed()
    );
}

#[test]
fn remotes_that_cannot_be_trusted_or_reached_stop_the_run_before_pid0() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "fleet");
    let other = Ca::new(dir.path(), "other");
    let me = ca.client("runner", "runner", &[]);
    let stranger = other.client("stranger", "runner", &[]);
    let b = Node::start(&ca, dir.path(), "b");
    let remotes = [b.remote("b")];
    // A certificate of another CA, under the same name.
    run_with(&ca, &stranger, &remotes, &["list", "b"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("remote b");
    // The node's certificate is checked too.
    run_with(&other, &me, &remotes, &["list", "b"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("TLS");
    // Nobody listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    run_with(
        &ca,
        &me,
        &[format!("b=tls://127.0.0.1:{port}")],
        &["list", "b"],
    )
    .finish()
    .assert_code(125)
    .assert_stderr_has("cannot connect");
    // Without the TLS flags, twice the same name, a plain pid0, through the daemon.
    Cell::run("remote-pid0")
        .flags(&["--remote", &remotes[0]])
        .args(&["list", "b"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("--remote needs --remote-ca");
    run_with(
        &ca,
        &me,
        &[remotes[0].clone(), remotes[0].clone()],
        &["list", "b"],
    )
    .finish()
    .assert_code(125)
    .assert_stderr_has("two remotes are named");
    let mut plain = Cell::run("hello");
    for flag in [
        "--remote",
        &remotes[0],
        "--remote-ca",
        &ca.pem.display().to_string(),
    ] {
        plain = plain.flag(flag);
    }
    plain
        .flags(&["--remote-cert", &me.cert.display().to_string()])
        .flags(&["--remote-key", &me.key.display().to_string()])
        .args(&["exit", "0"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("Session.remotes");
    b.daemon
        .exec("remote-pid0")
        .flags(&["--remote", &remotes[0]])
        .finish()
        .assert_code(125)
        .assert_stderr_has("the daemon connects to no other address");
}

/// `cell serve --remote`: a daemon lends its own nodes to the jobs whose client's ceiling
/// lists them, linking as itself (its `--remote-cert`) when a job first asks, and again after
/// the link is lost.
#[test]
fn a_daemon_lends_its_remotes_to_the_jobs_its_ceilings_allow() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "fleet");
    let b = Node::start(&ca, dir.path(), "b");
    // The front daemon shows b the name `runner`: b's ceiling for it applies to its children.
    let front_id = ca.client("front", "runner", &[]);
    let server = ca.server("front-server");
    let (ci, guest) = (ca.client("ci", "ci", &[]), ca.client("guest", "guest", &[]));
    let ceiling = |name: &str, text: &str| {
        let path = dir.path().join(format!("{name}.toml"));
        std::fs::write(&path, text).unwrap();
        format!("{name}={}", path.display())
    };
    let mut flags = server.flags();
    flags.extend([
        "--listen".to_string(),
        "tls:127.0.0.1:0".into(),
        "--client-ca".into(),
        ca.pem.display().to_string(),
        "--ceiling".into(),
        ceiling("ci", "remote = [\"b\"]\n"),
        "--ceiling".into(),
        ceiling("guest", "max_memory = \"256M\"\n"),
        "--remote".into(),
        b.remote("b"),
        "--remote-ca".into(),
        ca.pem.display().to_string(),
        "--remote-cert".into(),
        front_id.cert.display().to_string(),
        "--remote-key".into(),
        front_id.key.display().to_string(),
    ]);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let mut front = Daemon::start(&flags);
    let line = front.wait_for("cell: listening on tls:");
    let addr = format!("tls:{}", line.trim_end_matches(" (mutual TLS)"));
    let as_client = |who: &Pair| {
        Cell::run("remote-pid0")
            .via(&addr)
            .flags(&["--tls-ca", &ca.pem.display().to_string()])
            .flags(&who.flags())
            .flags(&["--remote", "b"])
    };
    // The daemon's own ceiling (its unix socket) lists every --remote; `ci`'s lists b.
    let own = || front.exec("remote-pid0").flags(&["--remote", "b"]);
    own().args(&["list", "b"]).finish().assert_code(0);
    own().args(&["exit", "b", "7"]).finish().assert_code(0);
    as_client(&ci).args(&["cat", "b"]).finish().assert_code(0);
    // `guest`'s ceiling lists none: refused before anything runs.
    as_client(&guest)
        .args(&["list", "b"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("not in this client's ceiling");
    // A job may not name a node the daemon lacks, nor an address of its own choosing.
    front
        .exec("remote-pid0")
        .flags(&["--remote", "zz"])
        .args(&["list", "zz"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("denied");
    wait_until(|| b.jobs() == 0, "a remote job outlived its parent");

    // The node goes away and comes back on the same port: the next job links again.
    let port = b.port.clone();
    drop(b);
    let b = Node::start_on(&ca, dir.path(), "b", &port);
    own().args(&["exit", "b", "3"]).finish().assert_code(0);
    wait_until(|| b.jobs() == 0, "a remote job outlived its parent");
    front.stop().assert_code(0);
}

/// A client that keeps asking for a daemon's remote while the node is down: every job is
/// refused with the reason (within the link's connect timeout), nothing runs, and the daemon
/// holds no more descriptors or links afterwards than before — a failed link leaves nothing.
#[test]
fn a_remote_that_is_down_costs_the_daemon_nothing_per_attempt() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::new(dir.path(), "fleet");
    let me = ca.client("front", "runner", &[]);
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let remote = format!("b=tls://127.0.0.1:{port}");
    let (ca_pem, cert, key) = (
        ca.pem.display().to_string(),
        me.cert.display().to_string(),
        me.key.display().to_string(),
    );
    let front = Daemon::start(&[
        "--remote",
        &remote,
        "--remote-ca",
        &ca_pem,
        "--remote-cert",
        &cert,
        "--remote-key",
        &key,
    ]);
    let attempt = || {
        front
            .exec("remote-pid0")
            .flags(&["--remote", "b"])
            .args(&["list", "b"])
            .finish()
            .assert_code(125)
            .assert_stderr_has("cannot connect");
    };
    attempt();
    let (_, fds_before) = front.rss_and_fds();
    for _ in 0..30 {
        attempt();
    }
    let (_, fds_after) = front.rss_and_fds();
    assert!(
        fds_after <= fds_before + 2,
        "descriptors grew from {fds_before} to {fds_after} over 30 failed links"
    );
    assert!(front.ps().is_empty(), "a job ran without its remote");
    front.stop().assert_code(0);
}
