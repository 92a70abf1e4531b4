//! remote-pid0: the test pid0 of remote nodes (`cell run --remote NAME=tls://HOST:PORT`).
//! `remote-pid0 COMMAND NODE [ARGS]`, one command per run; each check is logged as `ok: …` or
//! `fail: …` on stderr, and it exits 0 only if every check passed.
//!
//! - `list NAMES`       `Session.remotes` lists exactly NAMES (comma-separated), in order
//! - `exit NODE N`      a plain child on NODE exits N; its captured stderr is readable
//! - `leaf NODE`        an SDK child on NODE (with its own Executor there) exits 0
//! - `cat NODE`         a plain child's stdin and stdout work across the link
//! - `kill NODE`        a sleeping child is killed: `killed by its parent`
//! - `hold NODE`        a sleeping child; logs `holding pid N`, then waits: it must end
//!   `killed: link-lost` (the test kills the node)
//! - `orphan NODE`      a sleeping child; logs `holding pid N` and exits without waiting (the
//!   node must kill it: the cascade)
//! - `net NODE PORT`    a net-probe child granted this process's Network: a connect to
//!   127.0.0.1:PORT, which this process may make, is denied there (the
//!   node's ceiling narrowed the policy)
//! - `refused NODE`     granting a directory is refused with bad-grant; Executor.load with
//!   unsupported; a child above the node's memory ceiling with limit
//! - `echo NODE N`      N `Executor.echo` round trips to the node
//! - `served NODE`     a kv-service child on NODE, called from here (its `Process.service`)
//!   and from a kv-client child here it is granted to; once it is killed, calls fail with dead
//! - `component NODE`  a Component loaded here, granted to a spawner child on NODE: the
//!   children it spawns from it run here, as children of this process (by reference)
//! - `bench NODE N`     for `make bench`: N spawn→exit of a plain hello and 10×N echoes, here
//!   and on NODE, each logged as `bench: kind=remote where=local|remote op=spawn|echo n=…
//!   p50_ns=… p99_ns=… mean_ns=…` (after a warm-up of each)
//! - `kv NODE`          a kv-service child here, granted to kv-client children on NODE: they
//!   store and read keys through it (proxied over the link both ways); once it is killed,
//!   granting it across is refused with dead

use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use cell_guest::{log, ExitStatus, KilledBy, ProcessMode, Reason, StderrMode};
use cell_testkit::Report;
use kv_service::kv_capnp::kv;

static HELLO: &[u8] = cell_testkit::embed!("hello");
static HOSTILE: &[u8] = cell_testkit::embed!("hostile");
static LEAF: &[u8] = cell_testkit::embed!("child-leaf");
static NET_PROBE: &[u8] = cell_testkit::embed!("net-probe");
static KV_SERVICE: &[u8] = cell_testkit::embed!("kv-service");
static KV_CLIENT: &[u8] = cell_testkit::embed!("kv-client");
static SPAWNER: &[u8] = cell_testkit::embed!("spawner");

/// No wait may take longer than this: a hang is a failure.
const WAIT: Duration = Duration::from_secs(60);

fn main() {
    cell_guest::run(|caps| async move {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
        let mut report = Report::default();
        let (command, node) = (arg(0), arg(1));
        if command == "list" {
            let names: Vec<String> = caps.remotes().await?.into_iter().map(|r| r.name).collect();
            report.check(names.join(",") == node, format!("remotes are {names:?}"));
            report.finish();
        }
        let remote = caps.remote(&node).await?;
        match command.as_str() {
            "exit" => {
                let code: i32 = arg(2).parse().context("exit N")?;
                let child = remote
                    .spawn(HELLO)
                    .name("hello")
                    .args(["exit", &code.to_string()])
                    .mode(ProcessMode::Plain)
                    .stderr(StderrMode::Capture)
                    .start()
                    .await?;
                let status = wait(&child).await?;
                report.check(
                    status == ExitStatus::Exited(code),
                    format!("remote child {status}"),
                );
                let stderr = child.read_stderr_to_end().await;
                report.check(
                    stderr.is_ok(),
                    format!("its stderr reads: {:?}", stderr.map(|b| b.len())),
                );
            }
            "leaf" => {
                let child = remote
                    .spawn(LEAF)
                    .name("leaf")
                    .grant_executor(true)
                    .start()
                    .await?;
                let status = wait(&child).await?;
                report.check(status.success(), format!("remote SDK child {status}"));
            }
            "cat" => {
                let child = remote
                    .spawn(HELLO)
                    .name("cat")
                    .arg("cat")
                    .mode(ProcessMode::Plain)
                    .start()
                    .await?;
                let (stdin, stdout) = (child.stdin().await?, child.stdout().await?);
                stdin.write(b"over the link\n").await?;
                stdin.close().await?;
                let out = stdout.read_to_end().await?;
                report.check(
                    out == b"over the link\n",
                    format!("stdout {:?}", String::from_utf8_lossy(&out)),
                );
                let status = wait(&child).await?;
                report.check(status.success(), format!("cat {status}"));
            }
            "kill" => {
                let child = sleeper(&remote).await?;
                child.kill().await?;
                let status = wait(&child).await?;
                report.check(
                    status == ExitStatus::Killed(KilledBy::Parent),
                    format!("killed child {status}"),
                );
            }
            "hold" => {
                let child = sleeper(&remote).await?;
                log!("remote-pid0: holding pid {}", child.pid());
                let status = wait(&child).await?;
                report.check(
                    status == ExitStatus::Killed(KilledBy::LinkLost),
                    format!("held child {status}"),
                );
            }
            "orphan" => {
                let child = sleeper(&remote).await?;
                log!("remote-pid0: holding pid {}", child.pid());
                report.ok("leaving without waiting");
            }
            "net" => {
                let network = caps.network().await?;
                let child = remote
                    .spawn(NET_PROBE)
                    .name("net-probe")
                    .grant_network(&network)
                    .args(["rpc-deny", "127.0.0.1", &arg(2)])
                    .stderr(StderrMode::Capture)
                    .start()
                    .await?;
                let status = wait(&child).await?;
                let said = child.read_stderr_to_end().await.unwrap_or_default();
                report.check(
                    status.success(),
                    format!(
                        "narrowed on the node: {status}: {}",
                        String::from_utf8_lossy(&said).trim()
                    ),
                );
            }
            "refused" => {
                let dirs = caps.dirs().await?;
                let dir = dirs.first().ok_or_else(|| anyhow!("run with a --dir"))?;
                let spawned = remote
                    .spawn(HELLO)
                    .mode(ProcessMode::Plain)
                    .grant_dir(&dir.dir, "/d")
                    .start()
                    .await;
                report.check(
                    cell_testkit::failed_with(&spawned, Reason::BadGrant),
                    format!("a directory: {}", cell_testkit::err_text(&spawned)),
                );
                let loaded = remote.load(HELLO).await;
                report.check(
                    cell_testkit::failed_with(&loaded, Reason::Unsupported),
                    format!("load: {}", cell_testkit::err_text(&loaded)),
                );
                let big = remote
                    .spawn(HELLO)
                    .mode(ProcessMode::Plain)
                    .max_memory_bytes(1 << 40)
                    .start()
                    .await;
                report.check(
                    cell_testkit::failed_with(&big, Reason::Limit),
                    format!("above the node's ceiling: {}", cell_testkit::err_text(&big)),
                );
            }
            "echo" => {
                let n: u32 = arg(2).parse().context("echo N")?;
                for i in 0..n {
                    let said = remote.echo(&format!("e{i}")).await?;
                    if said != format!("e{i}") {
                        report.fail(format!("echo {i} answered {said:?}"));
                    }
                }
                report.ok(format!("{n} echoes over the link"));
            }
            "kv" => kv_across(&caps, &remote, &node, &mut report).await?,
            "served" => served_there(&caps, &remote, &node, &mut report).await?,
            "component" => {
                let me = caps.info().await?.pid;
                let leaf = caps.executor().await?.load(LEAF).await?;
                let spawner = remote
                    .spawn(SPAWNER)
                    .name("spawner")
                    .args(["--count", "2", "--children-parent", &me.to_string()])
                    .grant_component(&leaf)
                    .stderr(StderrMode::Capture)
                    .start()
                    .await?;
                let status = wait(&spawner).await?;
                let log = spawner.read_stderr_to_end().await.unwrap_or_default();
                report.check(
                    status == ExitStatus::Exited(0),
                    format!(
                        "the spawner on {node} spawned here from the component: {status}: {}",
                        String::from_utf8_lossy(&log).trim()
                    ),
                );
            }
            "bench" => {
                let n: usize = arg(2).parse().context("bench N")?;
                let local = caps.executor().await?;
                for (place, executor) in [("local", &local), ("remote", &remote)] {
                    bench(place, executor, n, &mut report).await?;
                }
            }
            other => return Err(anyhow!("unknown command {other:?}")),
        }
        report.finish();
    })
}

/// A local service used by children on `remote`: both directions of a call cross the link.
async fn kv_across(
    caps: &cell_guest::Caps,
    remote: &cell_guest::Executor,
    node: &str,
    report: &mut Report,
) -> Result<()> {
    let local = caps.executor().await?;
    let service = local.spawn(KV_SERVICE).name("kv-service").start().await?;
    let kv = service.service::<kv::Client>();
    let mut put = kv.put_request();
    put.get().set_key("home");
    put.get().set_value("local");
    put.send().promise.await.context("kv.put here")?;
    let steps = ["expect", "home=local", "put", &format!("from={node}")];
    let status = kv_client(remote, &kv, &steps).await;
    report.check(
        matches!(status, Ok(ExitStatus::Exited(0))),
        format!("a child on {node} used the service here: {status:?}"),
    );
    let mut get = kv.get_request();
    get.get().set_key("from");
    let answer = get.send().promise.await.context("kv.get here")?;
    let value = answer.get()?.get_value()?.to_string()?;
    report.check(
        value == node,
        format!("what it stored is here: from={value}"),
    );
    service.kill().await?;
    wait(&service).await?;
    let late = kv_client(remote, &kv, &["absent", "x"]).await;
    report.check(
        cell_testkit::failed_with(&late, Reason::Dead),
        format!(
            "a dead service is not granted across: {}",
            cell_testkit::err_text(&late)
        ),
    );
    Ok(())
}

/// A service served by a child on `remote`, used here: each call crosses the link.
async fn served_there(
    caps: &cell_guest::Caps,
    remote: &cell_guest::Executor,
    node: &str,
    report: &mut Report,
) -> Result<()> {
    let service = remote.spawn(KV_SERVICE).name("kv-service").start().await?;
    let kv = service.service::<kv::Client>();
    let mut put = kv.put_request();
    put.get().set_key("where");
    put.get().set_value(node);
    put.send()
        .promise
        .await
        .context("kv.put to the service there")?;
    let local = caps.executor().await?;
    let steps = ["expect", &format!("where={node}"), "put", "back=here"];
    let status = kv_client(&local, &kv, &steps).await;
    report.check(
        matches!(status, Ok(ExitStatus::Exited(0))),
        format!("a child here used the service on {node}: {status:?}"),
    );
    let mut get = kv.get_request();
    get.get().set_key("back");
    let answer = get
        .send()
        .promise
        .await
        .context("kv.get from the service there")?;
    let value = answer.get()?.get_value()?.to_string()?;
    report.check(
        value == "here",
        format!("the service there holds back={value:?}"),
    );
    service.kill().await?;
    let mut late = kv.get_request();
    late.get().set_key("where");
    let late = late
        .send()
        .promise
        .await
        .map(|_| ())
        .map_err(anyhow::Error::from);
    report.check(
        cell_testkit::failed_with(&late, Reason::Dead),
        format!(
            "the service of a killed remote child is dead: {}",
            cell_testkit::err_text(&late)
        ),
    );
    Ok(())
}

/// A kv-client child on `remote` with `kv` granted, run to its end.
async fn kv_client(
    remote: &cell_guest::Executor,
    kv: &kv::Client,
    steps: &[&str],
) -> Result<ExitStatus> {
    let child = remote
        .spawn(KV_CLIENT)
        .name("kv-client")
        .args(steps.iter().copied())
        .grant_service("kv", kv)
        .start()
        .await?;
    wait(&child).await
}

/// Spawn→exit and echo latency through `executor`, logged for the bench harness.
async fn bench(
    place: &str,
    executor: &cell_guest::Executor,
    n: usize,
    report: &mut Report,
) -> Result<()> {
    let spawn_exit = || async {
        let child = executor
            .spawn(HELLO)
            .name("hello")
            .args(["exit", "0"])
            .mode(ProcessMode::Plain)
            .start()
            .await?;
        wait(&child).await
    };
    // The first spawn compiles (there) and the first echoes warm the connection.
    let first = spawn_exit().await?;
    report.check(first == ExitStatus::Exited(0), format!("{place}: {first}"));
    for _ in 0..100 {
        executor.echo("e").await?;
    }
    let mut spawns = Vec::with_capacity(n);
    for _ in 0..n {
        let t = std::time::Instant::now();
        let status = spawn_exit().await?;
        spawns.push(t.elapsed().as_nanos() as u64);
        if status != ExitStatus::Exited(0) {
            report.fail(format!("{place}: a child ended {status}"));
        }
    }
    let mut echoes = Vec::with_capacity(n * 10);
    for _ in 0..n * 10 {
        let t = std::time::Instant::now();
        executor.echo("e").await?;
        echoes.push(t.elapsed().as_nanos() as u64);
    }
    for (op, samples) in [("spawn", spawns), ("echo", echoes)] {
        let n = samples.len();
        let (p50, p99, mean) = cell_testkit::summary(samples);
        log!("bench: kind=remote where={place} op={op} n={n} p50_ns={p50} p99_ns={p99} mean_ns={mean}");
    }
    Ok(())
}

/// A plain child on `remote` that sleeps until killed.
async fn sleeper(remote: &cell_guest::Executor) -> Result<cell_guest::Process> {
    remote
        .spawn(HOSTILE)
        .name("sleeper")
        .arg("sleep")
        .start()
        .await
}

async fn wait(child: &cell_guest::Process) -> Result<ExitStatus> {
    cell_guest::timeout(WAIT, child.wait())
        .await
        .map_err(|_| anyhow!("no status within {WAIT:?}"))?
}
