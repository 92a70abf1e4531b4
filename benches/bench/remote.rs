//! Benchmark 8: remote nodes. One pid0 (`remote-pid0 bench`) spawns a plain hello to its exit
//! and makes echo calls through its own Executor and through a node's — a `cell serve` on a
//! loopback port over mutual TLS (`cell run --remote`) — in the same run, so the remote
//! figures read against the local ones: what a link costs, not what the machine does.

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::Context as _;

use crate::env::{args, Env, Fields};
use crate::pki::{Ca, Pair};
use crate::report::{Row, Section};
use crate::stats::{p50_p99, ratio, Summary};

const TITLE: &str = "8. Remote nodes (`cell run --remote`, loopback mutual TLS)";
const BASELINE: &str = "the same pid0 through its local Executor, same run";

pub fn run(env: &Env) -> Section {
    measure(env).unwrap_or_else(|e| Section::failed(TITLE, format!("{e:#}")))
}

/// The node: a `cell serve` on a loopback TLS port, killed on drop.
struct Node {
    child: Child,
    port: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(env: &Env, ca: &Ca, server: &Pair, cache: &str) -> anyhow::Result<Node> {
    let mut child = Command::new(&env.cell)
        .args(["serve", "--listen", "tls:127.0.0.1:0", "--shards", "1"])
        .args(server.flags())
        .arg("--client-ca")
        .arg(&ca.pem)
        .args(["--cache-dir", cache])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting cell serve")?;
    let stderr = child.stderr.take().context("the node's stderr")?;
    let mut lines = BufReader::new(stderr).lines();
    let mut node = Node {
        child,
        port: String::new(),
    };
    for line in lines.by_ref() {
        let line = line?;
        if let Some(addr) = line.strip_prefix("cell: listening on tls:") {
            let addr = addr.trim_end_matches(" (mutual TLS)");
            node.port = addr.rsplit(':').next().unwrap_or_default().to_string();
            break;
        }
    }
    anyhow::ensure!(!node.port.is_empty(), "the node did not come up");
    // Keep draining its log, so that it never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok(node)
}

fn summary(results: &[Fields], place: &str, op: &str) -> anyhow::Result<Summary> {
    results
        .iter()
        .find(|f| f.get("where") == Some(place) && f.get("op") == Some(op))
        .with_context(|| format!("no `where={place} op={op}` result"))?
        .summary()
}

fn measure(env: &Env) -> anyhow::Result<Section> {
    let mut s = Section::new(TITLE, BASELINE);
    let dir = env.scratch.path().join("remote");
    std::fs::create_dir_all(&dir)?;
    // The same certificates the tests make (`tests/common/pki.rs`).
    let ca = Ca::new(&dir, "bench");
    let (server, client) = (ca.server("server"), ca.client("client", "bench", &[]));
    let node_cache = env.fresh_cache("remote-node");
    let node = node(env, &ca, &server, &node_cache)?;
    let cache = env.fresh_cache("remote-run");
    let file = |p: &Path| p.display().to_string();
    let n = env.n(300, 30);
    let mut a = args(["--cache-dir", &cache]);
    a.extend([
        "--remote".into(),
        format!("n=tls://127.0.0.1:{}", node.port),
    ]);
    a.extend(args(["--remote-ca", &file(&ca.pem)]));
    a.extend(args([
        "--remote-cert",
        &file(&client.cert),
        "--remote-key",
        &file(&client.key),
    ]));
    a.push(env.guest("remote-pid0").to_string_lossy().into_owned());
    a.extend(args(["bench", "n"]));
    a.push(n.to_string());
    let results = env.run_cell(&a, std::time::Duration::from_secs(300), |_, _| {})?;
    for (op, label) in [
        ("spawn", "spawn → exit of a plain child (cached)"),
        ("echo", "Executor.echo round trip"),
    ] {
        let remote = summary(&results, "remote", op)?;
        let local = summary(&results, "local", op)?;
        s.row(
            Row::new(format!("remote {label}: p50 / p99"), p50_p99(remote)).baseline(
                format!("{} local", p50_p99(local)),
                ratio(remote.p50 as f64, local.p50 as f64),
            ),
        );
    }
    s.note(format!(
        "{n} spawns and {} echoes each way after a warm-up; the node is a `cell serve --shards 1` \
         on 127.0.0.1 with `--client-ca`, the run a `cell run --remote` on the same machine. A remote \
         spawn sends the component's bytes over the link every time (the node's compile cache \
         finds them by hash), then `Job.wait` crosses back; an echo is one TLS round trip plus \
         the node's call dispatch.",
        n * 10
    ));
    drop(node);
    Ok(s)
}
