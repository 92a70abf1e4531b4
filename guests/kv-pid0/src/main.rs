//! kv-pid0: the guest services example. pid0 starts a `kv-service` child, takes the
//! capability it serves (`Process.service`), and gives it to two `kv-client` children, who
//! share data through it without sharing memory or a channel: every call goes guest → host →
//! guest. Then it checks the edges: a guest-made service cannot be granted (`bad-grant`), and
//! once the service's process is gone its calls fail with `dead`.
//!
//! `kv-pid0 hostile` checks what a misbehaving service can do to its callers (see
//! `kv-service --hostile`): one that never answers stalls only that call, one that answers with
//! more than `--max-message-size` is stopped as a protocol violation (its callers get `dead`),
//! one that exits mid-call fails the call with `dead`, and calls through the proxy count against
//! the caller's `--max-outstanding-calls` (run it with 16).
//!
//! Each check prints `ok: …`/`fail: …`; the process exits 0 only if all held.

use std::time::Duration;

use anyhow::{Context as _, Result};
use cell_guest::{Caps, Executor, ExitStatus, Process, Reason};
use cell_testkit::{err_text, failed_with, Report};
use kv_service::kv_capnp::kv;

static KV_SERVICE: &[u8] = cell_testkit::embed!("kv-service");
static KV_CLIENT: &[u8] = cell_testkit::embed!("kv-client");

/// No wait may take longer than this: a hang is a failure.
const WAIT: Duration = Duration::from_secs(60);

async fn get(kv: &kv::Client, key: &str) -> Result<Option<String>> {
    let mut request = kv.get_request();
    request.get().set_key(key);
    let response = request.send().promise.await.context("kv.get")?;
    let r = response.get()?;
    Ok(r.get_found()
        .then(|| r.get_value())
        .transpose()?
        .map(|v| v.to_string())
        .transpose()?)
}

async fn len(kv: &kv::Client) -> Result<u32> {
    let response = kv.len_request().send().promise.await.context("kv.len")?;
    Ok(response.get()?.get_count())
}

/// Runs a `kv-client` child with the service granted as `kv`; true if it exited 0.
async fn client(executor: &Executor, kv: &kv::Client, steps: &[&str]) -> Result<ExitStatus> {
    // Spawned and waited for in one round trip (the wait is pipelined on the spawn).
    let run = executor
        .spawn(KV_CLIENT)
        .name("kv-client")
        .args(steps.iter().copied())
        .grant_service("kv", kv)
        .run();
    cell_guest::timeout(WAIT, run)
        .await
        .context("waiting for kv-client")?
}

async fn wait(process: &Process) -> Result<ExitStatus> {
    cell_guest::timeout(WAIT, process.wait())
        .await
        .context("waiting for a child")?
}

async fn service(executor: &Executor, args: &[&str]) -> Result<(Process, kv::Client)> {
    let process = executor
        .spawn(KV_SERVICE)
        .name("kv-service")
        .args(args.iter().copied())
        .start()
        .await?;
    let kv = process.service::<kv::Client>();
    Ok((process, kv))
}

/// A `Kv` made by this guest, not by the host: granting it must be refused.
struct Impostor;
impl kv::Server for Impostor {}

async fn example(executor: &Executor, report: &mut Report) -> Result<()> {
    let (kv_process, kv) = service(executor, &[]).await?;
    let a = client(executor, &kv, &["put", "color=blue", "put", "size=3"]).await?;
    report.check(
        a == ExitStatus::Exited(0),
        format!("client A stored two keys: {a}"),
    );
    let b = client(
        executor,
        &kv,
        &[
            "expect",
            "color=blue",
            "expect",
            "size=3",
            "absent",
            "shape",
        ],
    )
    .await?;
    report.check(
        b == ExitStatus::Exited(0),
        format!("client B read what A stored: {b}"),
    );
    let n = len(&kv).await;
    report.check(
        matches!(n, Ok(2)),
        format!("pid0 sees 2 keys: {}", err_text(&n)),
    );

    let impostor: kv::Client = capnp_rpc::new_client(Impostor);
    let forged = executor
        .spawn(KV_CLIENT)
        .grant_service("kv", &impostor)
        .start()
        .await;
    report.check(
        failed_with(&forged, Reason::BadGrant),
        format!("a guest-made service is refused: {}", err_text(&forged)),
    );

    kv_process.kill().await?;
    let status = wait(&kv_process).await?;
    let after = len(&kv).await;
    report.check(
        failed_with(&after, Reason::Dead),
        format!(
            "calls after the service was killed ({status}) are refused: {}",
            err_text(&after)
        ),
    );
    let late = client(executor, &kv, &["absent", "x"]).await;
    report.check(
        failed_with(&late, Reason::Dead),
        format!("a dead service cannot be granted: {}", err_text(&late)),
    );
    Ok(())
}

async fn hostile(executor: &Executor, report: &mut Report) -> Result<()> {
    // Never answers: only that call waits; the same service and its other callers go on.
    let (_p, kv) = service(executor, &["--hostile"]).await?;
    let hang = cell_guest::timeout(Duration::from_millis(300), get(&kv, "hang")).await;
    report.check(
        hang.is_err(),
        "a call the service never answers is still waiting after 300 ms",
    );
    let pending = get(&kv, "hang");
    let sibling = client(executor, &kv, &["put", "a=1", "expect", "a=1"]);
    let sibling = alongside(pending, sibling).await;
    report.check(
        matches!(sibling, Ok(ExitStatus::Exited(0))),
        format!(
            "a sibling uses the service meanwhile: {}",
            err_text(&sibling)
        ),
    );

    // Proxied calls count against the caller's call gate (`--max-outstanding-calls`, 16 in the
    // test): calls past it fail at once with `limit`; cancelled ones give their slots back.
    {
        use futures::StreamExt as _;
        let mut calls: futures::stream::FuturesUnordered<_> =
            (0..40).map(|_| get(&kv, "hang")).collect();
        let mut refused = 0;
        let mut other = Vec::new();
        while let Ok(Some(r)) = cell_guest::timeout(Duration::from_millis(500), calls.next()).await
        {
            match r {
                Err(e) if cell_guest::reason(&e) == Some(Reason::Limit) => refused += 1,
                r => other.push(err_text(&r)),
            }
        }
        report.check(
            refused >= 20 && other.is_empty(),
            format!("40 hanging calls through the proxy: {refused} refused by the caller's gate, others {other:?}"),
        );
        drop(calls);
        cell_guest::sleep(Duration::from_millis(100)).await;
        let after = get(&kv, "a").await;
        report.check(
            matches!(after, Ok(Some(ref v)) if v == "1"),
            format!(
                "once they are cancelled, calls go through again: {}",
                err_text(&after)
            ),
        );
    }

    // Answers with more than max-message-size: the service breaks its channel and is stopped.
    let (p, kv) = service(executor, &["--hostile", "--big-bytes", "3000000"]).await?;
    let big = get(&kv, "big").await;
    let status = wait(&p).await?;
    report.check(
        failed_with(&big, Reason::Dead) && matches!(status, ExitStatus::ProtocolViolation(_)),
        format!(
            "a huge answer stops the service ({status}): {}",
            err_text(&big)
        ),
    );

    // Exits in the middle of a call.
    let (p, kv) = service(executor, &["--hostile"]).await?;
    let exit = get(&kv, "exit").await;
    let status = wait(&p).await?;
    report.check(
        failed_with(&exit, Reason::Dead) && status == ExitStatus::Exited(3),
        format!(
            "a service exiting mid-call ({status}) fails it: {}",
            err_text(&exit)
        ),
    );
    Ok(())
}

/// Runs `second` to completion while `first` (which may never finish) is polled alongside.
async fn alongside<A: std::future::Future, B: std::future::Future>(
    first: A,
    second: B,
) -> B::Output {
    let (first, second) = (std::pin::pin!(first), std::pin::pin!(second));
    match futures::future::select(first, second).await {
        futures::future::Either::Left((_, second)) => second.await,
        futures::future::Either::Right((out, _)) => out,
    }
}

fn main() {
    cell_guest::run(|caps: Caps| async move {
        let mode = std::env::args().nth(1).unwrap_or_else(|| "example".into());
        let executor = caps.executor().await?;
        let mut report = Report::default();
        let outcome = match mode.as_str() {
            "example" => example(&executor, &mut report).await,
            "hostile" => hostile(&executor, &mut report).await,
            other => Err(anyhow::anyhow!("unknown mode {other:?}")),
        };
        if let Err(e) = outcome {
            report.fail(format!("{mode}: {e:#}"));
        }
        report.finish()
    })
}
