//! escape: the test pid0 of the containment suite (`tests/escape.rs`). Each case tries one way
//! out of the grants, or one way to make the host hold what no limit charges, and checks from
//! inside that the host refused it. Checks are reported as `ok: …` / `fail: …` on stderr, then
//! `--- N passed, M failed`; exit 0 iff nothing failed.
//!
//! Cases (`escape <case> [args]`), each with the `--net` rules the test passes:
//! - `udp-unspecified PORT` (`udp=0.0.0.0:*`): a socket bound on every interface cannot send
//!   to `0.0.0.0`, `::` or `::ffff:0.0.0.0` (which the kernel delivers to localhost).
//! - `dual-stack` (`listen=[::]:0`, `connect=127.0.0.1:*`, `connect=[::1]:*`): a listener on
//!   `[::]` does not accept IPv4 connections.
//! - `restrict-big N`: `Network.restrict` with N rules is refused with `limit:` (N > 64), and
//!   with 64 it works.
//! - `network-many N`: `Session.network()` N times (the host must not hold N servers).
//! - `stdout-twice`: a plain child's `stdout()` asked twice gives one working stream.
//! - `stdin-flood N`: N pipelined 512 KiB writes to a plain child that never reads its stdin
//!   are refused past the host's byte budget instead of parked.
//! - `long-host` (`connect=example.com:80`): ten connects to a 4 MiB host name are refused
//!   as bad addresses (the test checks the audit log stays small).
//! - `long-names N`: N children with 1 MiB names, one at a time (host memory stays bounded).
//! - `slow-spawns N`: spawns N slow-to-compile components from `/d` at once (run under a short
//!   `--timeout`; the test checks cell exits soon after it).
//! - `padded-waits N`: N `Process.wait` calls padded to 256 KiB each, on a child that never
//!   ends until killed (the host must not hold N × 256 KiB).
//! - `big-args`: a spawn with 300 KiB of arguments is refused with `limit:`; 100 KiB works.
//! - `forge-stderr`: a child forwarding a forged host line (the test checks the escaping).
//! - `fuel-tree N EACH`: N children spinning on `EACH` fuel each (0: no limit of their own,
//!   drawing from pid0's), lent from pid0 (run with `--fuel`; the test sums what they used).

use std::time::Duration;

use anyhow::{anyhow, Context as _, Result};
use cell_guest::net::{Network, Rule};
use cell_guest::{log, Caps, ProcessMode, Reason, StderrMode};
use cell_testkit::{cell_error, err_text, failed_with, Report};

static HOSTILE: &[u8] = cell_testkit::embed!("hostile");
static UPPER: &[u8] = cell_testkit::embed!("upper");
static SILENT: &[u8] = cell_testkit::embed!("child-silent");

const WAIT: Duration = Duration::from_secs(60);

/// A write refused because the in-flight byte budget is full.
fn in_flight_limit(e: &cell_guest::capnp::Error) -> bool {
    let e = cell_error(e);
    e.reason == Reason::Limit && e.detail.starts_with("max in-flight bytes")
}

fn main() {
    cell_guest::run(|caps| async move {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let case = args.first().cloned().unwrap_or_default();
        let n = |default: u64| {
            args.get(1)
                .and_then(|a| a.parse::<u64>().ok())
                .unwrap_or(default)
        };
        let mut report = Report::default();
        let outcome = match case.as_str() {
            "udp-unspecified" => udp_unspecified(&caps, n(9) as u16, &mut report).await,
            "dual-stack" => dual_stack(&caps, &mut report).await,
            "restrict-big" => restrict_big(&caps, n(20_000) as usize, &mut report).await,
            "network-many" => network_many(&caps, n(100_000), &mut report).await,
            "stdout-twice" => stdout_twice(&caps, &mut report).await,
            "stdin-flood" => stdin_flood(&caps, n(2000), &mut report).await,
            "big-args" => big_args(&caps, &mut report).await,
            "forge-stderr" => forge_stderr(&caps, &mut report).await,
            "long-host" => long_host(&caps, &mut report).await,
            "long-names" => long_names(&caps, n(200), &mut report).await,
            "slow-spawns" => slow_spawns(&caps, n(6), &mut report).await,
            "padded-waits" => padded_waits(&caps, n(1000), &mut report).await,
            "fuel-tree" => {
                let each = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(1);
                fuel_tree(&caps, n(4), each, &mut report).await
            }
            other => Err(anyhow!("unknown case {other:?}")),
        };
        if let Err(e) = outcome {
            report.fail(format!("{case}: {e:#}"));
        }
        report.finish()
    })
}

async fn network(caps: &Caps) -> Result<Network> {
    caps.network().await
}

async fn udp_unspecified(caps: &Caps, port: u16, report: &mut Report) -> Result<()> {
    let net = network(caps).await?;
    let socket = net.bind_udp("0.0.0.0", 0).await.context("bind 0.0.0.0:0")?;
    report.ok("a socket may bind on every interface");
    for dest in ["0.0.0.0", "::", "::ffff:0.0.0.0", "0.1.2.3"] {
        let sent = socket.send(dest, port, b"escaped").await;
        let text = err_text(&sent);
        report.check(
            text.contains("denied") && text.contains("never a destination"),
            format!("send to {dest}:{port} refused: {text}"),
        );
    }
    Ok(())
}

async fn dual_stack(caps: &Caps, report: &mut Report) -> Result<()> {
    let net = network(caps).await?;
    let listener = match net.listen("::", 0, 8).await {
        Ok(l) => l,
        Err(e) => {
            report.ok(format!("no IPv6 here ({e:#}): nothing dual-stack to test"));
            return Ok(());
        }
    };
    let local = listener.local_address().await?;
    let port: u16 = local
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| anyhow!("bad local address {local}"))?;
    let v4 = net.connect("127.0.0.1", port).await;
    report.check(
        v4.is_err(),
        format!(
            "IPv4 does not reach a listener on [::]:{port}: {}",
            err_text(&v4)
        ),
    );
    let v6 = net.connect("::1", port).await;
    report.check(v6.is_ok(), format!("IPv6 does: {}", err_text(&v6)));
    Ok(())
}

fn rules(count: usize) -> Result<Vec<Rule>> {
    (0..count)
        .map(|i| {
            Rule::parse(&format!(
                "connect=93.{}.{}.0/24:{}",
                i / 256 % 256,
                i % 256,
                1 + i % 1000
            ))
            .map_err(anyhow::Error::from)
        })
        .collect()
}

async fn restrict_big(caps: &Caps, count: usize, report: &mut Report) -> Result<()> {
    let net = network(caps).await?;
    let big = net.restrict(&rules(count)?).await;
    let text = err_text(&big);
    report.check(
        failed_with(&big, Reason::Limit) && text.contains("at most 64 rules"),
        format!("restrict with {count} rules refused: {text}"),
    );
    let fits = net.restrict(&rules(64)?).await;
    report.check(
        fits.is_ok(),
        format!("restrict with 64 rules: {}", err_text(&fits)),
    );
    Ok(())
}

async fn network_many(caps: &Caps, count: u64, report: &mut Report) -> Result<()> {
    // Kept, as a hostile guest would: each must not be a new server with its own policy.
    let mut kept = Vec::new();
    for i in 0..count {
        let net = caps
            .network()
            .await
            .with_context(|| format!("network() #{i}"))?;
        kept.push(net);
    }
    report.ok(format!("Session.network() answered {count} times"));
    // One capability, handed out again: every client imports the same host object.
    let first = kept.first().map(|c| c.client().client.hook.get_ptr());
    let distinct = kept
        .iter()
        .filter(|c| Some(c.client().client.hook.get_ptr()) != first)
        .count();
    report.check(
        distinct == 0,
        format!("{distinct} clients differ from the first"),
    );
    Ok(())
}

async fn stdout_twice(caps: &Caps, report: &mut Report) -> Result<()> {
    let child = caps
        .spawn(UPPER)
        .name("upper")
        .mode(ProcessMode::Plain)
        .stderr(StderrMode::Forward)
        .start()
        .await?;
    let first = child.stdout().await?;
    let second = child.stdout().await?;
    // Both handles wait for data at once, before there is any: two readers of one pipe would
    // leave one of them never woken.
    let both = futures::future::join(first.read_to_end(), second.read_to_end());
    let feed = async {
        cell_guest::sleep(Duration::from_millis(50)).await;
        let stdin = child.stdin().await?;
        stdin.write(b"twice\n").await?;
        stdin.close().await?;
        anyhow::Ok(())
    };
    let read = cell_guest::timeout(WAIT, futures::future::join(both, feed)).await;
    match read {
        Ok(((Ok(a), Ok(b)), Ok(()))) => {
            let (ab, ba) = ([a.clone(), b.clone()].concat(), [b, a].concat());
            report.check(
                ab == b"TWICE\n" || ba == b"TWICE\n",
                format!("the two handles read {:?}", String::from_utf8_lossy(&ab)),
            )
        }
        Ok(((a, b), fed)) => report.fail(format!("reading stdout: {a:?} {b:?} {fed:?}")),
        Err(_) => report.fail("a second stdout() handle hung"),
    }
    let status = child.wait().await?;
    report.check(status.success(), format!("upper: {status}"));
    Ok(())
}

async fn stdin_flood(caps: &Caps, count: u64, report: &mut Report) -> Result<()> {
    let child = caps
        .spawn(HOSTILE)
        .name("never-reads-stdin")
        .arg("idle")
        .mode(ProcessMode::Plain)
        .stderr(StderrMode::Discard)
        .start()
        .await?;
    let stdin = child.stdin().await?;
    let block = vec![b'x'; 512 << 10];
    let write = || {
        let mut req = stdin.client().write_request();
        req.get().set_data(&block);
        req.send().promise
    };
    // The first writes fill the pipe and the byte budget and then wait (kept, never awaited);
    // every later one must be refused at once, not parked. A window of them is in flight at a
    // time, so what waits is in the host, not in this guest's memory.
    let parked: Vec<_> = (0..16).map(|_| write()).collect();
    let mut window = std::collections::VecDeque::new();
    let (mut refused, mut other) = (0u64, None);
    for _ in 16..count {
        window.push_back(write());
        if window.len() >= 8 {
            if let Some(w) = window.pop_front() {
                match w.await {
                    Err(e) if in_flight_limit(&e) => refused += 1,
                    Err(e) => other = Some(e.to_string()),
                    Ok(_) => other = Some("a write past the budget was accepted".into()),
                }
            }
        }
    }
    for w in window {
        match w.await {
            Err(e) if in_flight_limit(&e) => refused += 1,
            Err(e) => other = Some(e.to_string()),
            Ok(_) => other = Some("a write past the budget was accepted".into()),
        }
    }
    report.check(
        refused == count - 16 && other.is_none(),
        format!(
            "{refused} of {} writes past the first 16 refused (other: {other:?})",
            count - 16
        ),
    );
    drop(parked);
    child.kill().await?;
    Ok(())
}

/// Spawns `/d/slow0.wasm` … `/d/slow{N-1}.wasm` (components that take long to compile) all
/// at once; the test runs this under a short `--timeout` and checks that cell exits soon after
/// it, whatever its compile threads are doing.
async fn slow_spawns(caps: &Caps, count: u64, report: &mut Report) -> Result<()> {
    let blobs = (0..count)
        .map(|i| std::fs::read(format!("/d/slow{i}.wasm")))
        .collect::<std::io::Result<Vec<_>>>()
        .context("reading the slow components")?;
    let spawns = blobs
        .iter()
        .enumerate()
        .map(|(i, wasm)| caps.spawn(wasm).name(format!("slow-{i}")).start());
    let started = futures::future::join_all(spawns).await;
    report.fail(format!(
        "{} slow spawns answered before the deadline",
        started.len()
    ));
    Ok(())
}

/// Host names of 4 MiB: refused as bad addresses, never copied into the audit log.
async fn long_host(caps: &Caps, report: &mut Report) -> Result<()> {
    let net = network(caps).await?;
    let host = "x".repeat(4 << 20);
    for _ in 0..10 {
        let r = net.connect(&host, 80).await;
        let text = err_text(&r);
        if !text.contains("bad-address") {
            report.fail(format!(
                "a 4 MiB host name: {}",
                &text[..text.len().min(200)]
            ));
            return Ok(());
        }
    }
    report.ok("ten 4 MiB host names refused as bad addresses");
    Ok(())
}

/// Children with 1 MiB names, one after another: the host keeps their names (for the report)
/// cut to a few hundred bytes.
async fn long_names(caps: &Caps, count: u64, report: &mut Report) -> Result<()> {
    let name = "n".repeat(1 << 20);
    for _ in 0..count {
        let child = caps.spawn(SILENT).name(name.clone()).start().await?;
        child.wait().await?;
    }
    report.ok(format!("{count} children with 1 MiB names ended"));
    Ok(())
}

/// `Process.wait` calls whose messages carry 256 KiB of padding the host never reads: each
/// blocks until the child ends, and without a bound on held call messages the host would keep
/// every one of them. With the bound, the host stops reading this connection and the case
/// ends by its deadline.
async fn padded_waits(caps: &Caps, count: u64, report: &mut Report) -> Result<()> {
    use capnp::traits::HasTypeId as _;
    let child = caps
        .spawn(HOSTILE)
        .name("idle")
        .arg("idle")
        .stderr(StderrMode::Discard)
        .start()
        .await?;
    let executor = caps.executor().await?;
    let padding = vec![0u8; 256 << 10];
    let mut waits = Vec::new();
    for i in 0..count {
        let mut req = child
            .client()
            .client
            .new_call::<capnp::any_pointer::Owned, capnp::any_pointer::Owned>(
                cell_guest::cell_capnp::process::Client::TYPE_ID,
                1, // wait
                None,
            );
        req.get().set_as::<capnp::data::Owned>(&padding[..])?;
        waits.push(req.send().promise);
        if i % 4 == 3 {
            // A round trip: everything sent so far has been read by the host, so what waits is
            // in the host, not in this guest. Once the host holds its bound of call messages it
            // stops reading, and this never answers (the test runs with --timeout).
            executor.echo("sync").await?;
        }
    }
    report.ok(format!("{count} padded waits sent"));
    child.kill().await?;
    let mut answered = 0;
    for w in waits {
        if cell_guest::timeout(WAIT, w).await.is_ok() {
            answered += 1;
        }
    }
    report.check(
        answered == count,
        format!("{answered} of {count} waits answered after the kill"),
    );
    Ok(())
}

async fn big_args(caps: &Caps, report: &mut Report) -> Result<()> {
    let arg = "a".repeat(1000);
    let spawn = |count: usize| {
        caps.spawn(SILENT)
            .name("child-silent")
            .arg("0")
            .args(std::iter::repeat_n(arg.clone(), count))
            .start()
    };
    let big = spawn(300).await;
    let text = err_text(&big);
    report.check(
        failed_with(&big, Reason::Limit) && text.contains("args and env exceed"),
        format!("300 KiB of args: {text}"),
    );
    let fits = spawn(100).await?;
    let status = fits.wait().await?;
    report.check(status.success(), format!("100 KiB of args: {status}"));
    Ok(())
}

async fn forge_stderr(caps: &Caps, report: &mut Report) -> Result<()> {
    let child = caps
        .spawn(HOSTILE)
        .name("forger")
        .arg("forge-stderr")
        .stderr(StderrMode::Forward)
        .start()
        .await?;
    let status = child.wait().await?;
    report.check(status.success(), format!("forger: {status}"));
    Ok(())
}

async fn fuel_tree(caps: &Caps, count: u64, each: u64, report: &mut Report) -> Result<()> {
    // Together the children ask for more than pid0 holds: lent fuel must run out first.
    let mut children = Vec::new();
    for i in 0..count {
        let mut spawn = caps
            .spawn(HOSTILE)
            .name(format!("spinner-{i}"))
            .arg("spin")
            .stderr(StderrMode::Discard);
        if each > 0 {
            spawn = spawn.fuel(each); // else: drawn from pid0's as it runs
        }
        children.push(spawn.start().await?);
    }
    for child in &children {
        let status = cell_guest::timeout(WAIT, child.wait()).await??;
        log!("fuel-tree: pid {} {status}", child.pid());
    }
    report.ok("every spinner ended");
    Ok(())
}
