//! scenarios: the test pid0. `scenarios <name> [args]` runs one scenario and reports each check
//! on stderr as `ok: <what>` or `fail: <what>`; it exits 0 only if every check passed.
//!
//! Scenarios:
//! - `exit N`          exit with code N, nothing else
//! - `argv ARGS...`    log the arguments after `argv` exactly (`argv: ["a b", ""]`), exit 0
//! - `nested`          pid0 -> relay -> child-echo -> child-leaf (depth 3), echo at every level
//! - `pipelined`       100 echo calls sent before any is awaited, all answered correctly
//! - `spawn-many [N]`  spawn child-leaf N times (default 10) sequentially, all exit(0)
//! - `bad-wasm`        junk bytes and a core module are refused; a good spawn still works
//! - `trap`            child-trap is reported as trapped; a child-leaf afterwards works
//! - `garbage`         child-garbage is reported as a protocol violation; a sibling is fine
//! - `silent`          child-silent 5 (never speaks RPC) is reported as exited with code 5
//! - `stderr-capture`  child-leaf's captured stderr contains "leaf"
//! - `components`      Executor.load once, spawn 20 times, hash; a component granted to spawner
//! - `all`             every scenario above except `exit`, in order
//!
//! Host error strings are printed in the `ok:` lines so a reader can see them.

use std::time::Duration;

use anyhow::{anyhow, ensure, Context as _, Result};
use cell_guest::{log, Caps, Executor, ExitStatus, Process, StderrMode};
use cell_testkit::tree::ExpectChildOf as _;
use cell_testkit::Report;

static CHILD_LEAF: &[u8] = cell_testkit::embed!("child-leaf");
static CHILD_TRAP: &[u8] = cell_testkit::embed!("child-trap");
static CHILD_GARBAGE: &[u8] = cell_testkit::embed!("child-garbage");
static CHILD_SILENT: &[u8] = cell_testkit::embed!("child-silent");
static RELAY: &[u8] = cell_testkit::embed!("relay");
static SPAWNER: &[u8] = cell_testkit::embed!("spawner");

/// No wait in a scenario may take longer than this: a hang is reported as a failure.
const WAIT: Duration = Duration::from_secs(60);

const SCENARIOS: &[&str] = &[
    "nested",
    "pipelined",
    "spawn-many",
    "bad-wasm",
    "trap",
    "garbage",
    "silent",
    "stderr-capture",
    "components",
];

fn main() {
    cell_guest::run(|caps| async move {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let Some(name) = args.first().cloned() else {
            log!(
                "usage: scenarios <{}|all|exit N|argv ARGS...> [args]",
                SCENARIOS.join("|")
            );
            cell_guest::exit(2);
        };
        let mut report = Report::default();
        if name == "argv" {
            // Exactly what arrived after "argv", so a test can tell "no args" from "these args".
            log!("argv: {:?}", &args[1..]);
            return Ok(());
        }
        if name == "exit" {
            let code: u8 = args
                .get(1)
                .context("usage: scenarios exit N")?
                .parse()
                .context("exit: N must be 0..=255")?;
            log!("ok: exiting with code {code}");
            cell_guest::exit(code);
        }
        let names: Vec<&str> = if name == "all" {
            SCENARIOS.to_vec()
        } else if SCENARIOS.contains(&name.as_str()) {
            vec![name.as_str()]
        } else {
            log!(
                "unknown scenario {name:?}; known: {}, all, exit N",
                SCENARIOS.join(", ")
            );
            cell_guest::exit(2);
        };
        let executor = caps
            .executor()
            .await
            .context("scenarios need the executor grant")?;
        for scenario in names {
            log!("--- scenario {scenario}");
            let outcome = match scenario {
                "nested" => nested(&caps, &executor, &mut report).await,
                "pipelined" => pipelined(&executor, &mut report).await,
                "spawn-many" => spawn_many(&executor, &args, &mut report).await,
                "bad-wasm" => bad_wasm(&executor, &mut report).await,
                "trap" => trap(&executor, &mut report).await,
                "garbage" => garbage(&executor, &mut report).await,
                "silent" => silent(&executor, &mut report).await,
                "stderr-capture" => stderr_capture(&executor, &mut report).await,
                "components" => components(&executor, &mut report).await,
                other => Err(anyhow!("no such scenario {other:?}")),
            };
            if let Err(e) = outcome {
                report.fail(format!("{scenario}: {e:#}"));
            }
        }
        report.summary();
        ensure!(
            report.failed() == 0,
            "{name}: {} check(s) failed",
            report.failed()
        );
        Ok(())
    })
}

/// Waits for `process`, failing instead of hanging.
async fn wait(process: &Process, what: &str) -> Result<ExitStatus> {
    cell_guest::timeout(WAIT, process.wait())
        .await
        .with_context(|| format!("waiting for {what} (pid {})", process.pid()))?
}

/// Spawns a child-leaf (with an Executor so that it can echo) and checks it exits 0.
async fn leaf_works(executor: &Executor, report: &mut Report, what: &str) -> Result<()> {
    let leaf = executor
        .spawn(CHILD_LEAF)
        .name("child-leaf")
        .grant_executor(true)
        .start()
        .await?;
    let status = wait(&leaf, "child-leaf").await?;
    report.check(
        status.success(),
        format!("{what}: child-leaf pid {} {status}", leaf.pid()),
    );
    Ok(())
}

async fn nested(caps: &Caps, executor: &Executor, report: &mut Report) -> Result<()> {
    let info = caps.info().await?;
    let reply = executor.echo("pid0 echo").await?;
    report.check(
        reply == "pid0 echo",
        format!(
            "pid0 (pid {}, depth {}) echo: {reply:?}",
            info.pid, info.depth
        ),
    );
    let relay = executor
        .spawn(RELAY)
        .name("relay")
        .expect_child_of(&info)
        .grant_executor(true)
        .stderr(StderrMode::Forward)
        .start()
        .await?;
    let status = wait(&relay, "relay").await?;
    // relay exits 0 only if its child-echo did, which exits 0 only if its child-leaf did, and
    // each of them first checked its own depth and parent and echoed the host.
    report.check(
        status.success(),
        format!(
            "relay (pid {}, depth {}) -> child-echo (depth {}) -> child-leaf (depth {}), \
             echo at every level: relay {status}",
            relay.pid(),
            info.depth + 1,
            info.depth + 2,
            info.depth + 3
        ),
    );
    Ok(())
}

async fn pipelined(executor: &Executor, report: &mut Report) -> Result<()> {
    const N: usize = 100;
    // Every request is sent (queued on the connection) before the first one is awaited.
    let promises: Vec<_> = (0..N)
        .map(|i| {
            let mut request = executor.client().echo_request();
            request
                .get()
                .set_message(format!("pipelined message #{i}").as_str());
            request.send().promise
        })
        .collect();
    let responses = cell_guest::timeout(WAIT, futures::future::join_all(promises))
        .await
        .context("waiting for the echoes")?;
    let mut wrong = Vec::new();
    for (i, response) in responses.into_iter().enumerate() {
        let expected = format!("pipelined message #{i}");
        let got = response
            .and_then(|r| Ok(r.get()?.get_response()?.to_string()?))
            .map_err(|e| format!("#{i}: {e}"));
        match got {
            Ok(text) if text == expected => {}
            Ok(text) => wrong.push(format!("#{i}: got {text:?}")),
            Err(e) => wrong.push(e),
        }
    }
    report.check(
        wrong.is_empty(),
        format!(
            "{N} echo calls sent before any was awaited: {} answered correctly {wrong:?}",
            N - wrong.len()
        ),
    );
    Ok(())
}

async fn spawn_many(executor: &Executor, args: &[String], report: &mut Report) -> Result<()> {
    let n: u32 = match args.get(1) {
        Some(n) if args[0] == "spawn-many" => {
            n.parse().context("spawn-many: N must be a number")?
        }
        _ => 10,
    };
    let mut failures = Vec::new();
    for i in 0..n {
        let leaf = executor
            .spawn(CHILD_LEAF)
            .name(format!("child-leaf-{i}"))
            .grant_executor(true)
            .stderr(StderrMode::Capture)
            .start()
            .await
            .with_context(|| format!("spawn #{i}"))?;
        let status = wait(&leaf, "child-leaf").await?;
        if !status.success() {
            let stderr = cell_guest::timeout(WAIT, leaf.read_stderr_to_end())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            failures.push(format!(
                "#{i} (pid {}): {status}; stderr: {}",
                leaf.pid(),
                String::from_utf8_lossy(&stderr).trim()
            ));
        }
    }
    report.check(
        failures.is_empty(),
        format!(
            "spawned child-leaf {n} times sequentially: {} exited with code 0 {failures:?}",
            n as usize - failures.len()
        ),
    );
    Ok(())
}

async fn bad_wasm(executor: &Executor, report: &mut Report) -> Result<()> {
    match executor.spawn(b"not wasm").name("not-wasm").start().await {
        Ok(p) => report.fail(format!(
            "spawn of b\"not wasm\" succeeded (pid {})",
            p.pid()
        )),
        Err(e) => {
            let msg = format!("{e:#}");
            report.check(
                msg.contains("bad-wasm"),
                format!("spawn of b\"not wasm\" refused: {msg}"),
            );
        }
    }
    match executor
        .spawn(b"\0asm\x01\0\0\0")
        .name("core-module")
        .start()
        .await
    {
        Ok(p) => report.fail(format!(
            "spawn of a core module succeeded (pid {})",
            p.pid()
        )),
        Err(e) => {
            let msg = format!("{e:#}");
            report.check(
                msg.to_lowercase().contains("component"),
                format!("spawn of a core module refused: {msg}"),
            );
        }
    }
    leaf_works(
        executor,
        report,
        "after the refused spawns, a good spawn still works",
    )
    .await
}

async fn trap(executor: &Executor, report: &mut Report) -> Result<()> {
    let child = executor
        .spawn(CHILD_TRAP)
        .name("child-trap")
        .start()
        .await?;
    let status = wait(&child, "child-trap").await?;
    report.check(
        matches!(&status, ExitStatus::Trapped(msg) if !msg.is_empty()),
        format!("child-trap pid {}: {status}", child.pid()),
    );
    leaf_works(executor, report, "pid0 carries on after the trap").await
}

async fn garbage(executor: &Executor, report: &mut Report) -> Result<()> {
    // Both are running before either is waited for.
    let bad = executor
        .spawn(CHILD_GARBAGE)
        .name("child-garbage")
        .start()
        .await?;
    let good = executor
        .spawn(CHILD_LEAF)
        .name("child-leaf")
        .grant_executor(true)
        .start()
        .await?;
    let (bad_status, good_status) =
        futures::join!(wait(&bad, "child-garbage"), wait(&good, "child-leaf"));
    let bad_status = bad_status?;
    report.check(
        matches!(bad_status, ExitStatus::ProtocolViolation(_)),
        format!("child-garbage pid {}: {bad_status}", bad.pid()),
    );
    let good_status = good_status?;
    report.check(
        good_status.success(),
        format!("its sibling child-leaf pid {}: {good_status}", good.pid()),
    );
    Ok(())
}

async fn silent(executor: &Executor, report: &mut Report) -> Result<()> {
    let child = executor
        .spawn(CHILD_SILENT)
        .name("child-silent")
        .arg("5")
        .start()
        .await?;
    let status = wait(&child, "child-silent").await?;
    report.check(
        status == ExitStatus::Exited(5),
        format!(
            "child-silent pid {} (never speaks RPC): {status}",
            child.pid()
        ),
    );
    Ok(())
}

async fn stderr_capture(executor: &Executor, report: &mut Report) -> Result<()> {
    let leaf = executor
        .spawn(CHILD_LEAF)
        .name("child-leaf")
        .grant_executor(true)
        .stderr(StderrMode::Capture)
        .start()
        .await?;
    let status = wait(&leaf, "child-leaf").await?;
    report.check(
        status.success(),
        format!("captured child-leaf pid {}: {status}", leaf.pid()),
    );
    let captured = cell_guest::timeout(WAIT, leaf.read_stderr_to_end())
        .await
        .context("reading the captured stderr")??;
    let captured = String::from_utf8_lossy(&captured);
    report.check(
        captured.contains("leaf"),
        format!("captured stderr contains \"leaf\": {:?}", captured.trim()),
    );
    Ok(())
}

/// `Executor.load` once, spawn many; `Component.hash`; a component granted to a child that has
/// no Executor (spawner), whose spawns are its own children; a bad component refused at load.
async fn components(executor: &Executor, report: &mut Report) -> Result<()> {
    let leaf = executor.load(CHILD_LEAF).await?;
    let hash = leaf.hash().await?;
    report.check(
        hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()),
        format!("component hash {hash}"),
    );
    let again = executor.load(CHILD_LEAF).await?.hash().await?;
    report.check(
        again == hash,
        "loading the same bytes again gives the same hash",
    );
    let n = 20;
    let mut ok = 0;
    for _ in 0..n {
        let child = leaf
            .spawn()
            .name("leaf")
            .args(["--no-echo", "--expect-parent", "0"])
            .start()
            .await?;
        if wait(&child, "leaf").await?.success() {
            ok += 1;
        }
    }
    report.check(
        ok == n,
        format!("spawned child-leaf {n} times from one component: {ok} exited with code 0"),
    );
    let spawner = executor
        .spawn(SPAWNER)
        .name("spawner")
        .args(["--count", "3"])
        .grant_component(&leaf)
        .start()
        .await?;
    let status = wait(&spawner, "spawner").await?;
    report.check(
        status.success(),
        format!("a child holding only the component spawned from it: {status}"),
    );
    // Each Component held keeps compiled code alive in the host: a process holds at most 64.
    let mut held = Vec::new();
    let refused = loop {
        match executor.load(CHILD_LEAF).await {
            Ok(c) => held.push(c),
            Err(e) => break e,
        }
        if held.len() > 200 {
            break anyhow!("no limit after 200 components");
        }
    };
    report.check(
        cell_guest::reason(&refused) == Some(cell_guest::Reason::Limit) && held.len() >= 60,
        format!(
            "holding {} components, the next load is refused: {refused:#}",
            held.len()
        ),
    );
    drop(held);
    cell_guest::sleep(std::time::Duration::from_millis(100)).await;
    let freed = executor.load(CHILD_LEAF).await;
    report.check(freed.is_ok(), "components dropped free their slots");
    let bad = executor.load(b"not wasm").await;
    report.check(
        cell_testkit::failed_with(&bad, cell_guest::Reason::BadWasm),
        format!(
            "loading garbage is refused: {}",
            cell_testkit::err_text(&bad)
        ),
    );
    // More than max-wasm-size (32 MiB by default) is refused before anything is compiled.
    let mut oversize = CHILD_LEAF.to_vec();
    oversize.resize((32 << 20) + 1, 0);
    let big = executor.load(&oversize).await;
    drop(oversize);
    report.check(
        cell_testkit::failed_with(&big, cell_guest::Reason::Limit),
        format!(
            "loading more than max-wasm-size is refused: {}",
            cell_testkit::err_text(&big)
        ),
    );
    Ok(())
}
