//! hostile: a guest that misbehaves on purpose, one way per mode (`hostile <mode> [flags]`).
//! It embeds nothing; `hostile-parent` builds the modes that need children on top of it, and
//! `hostile-pid0` drives them all (see guests/README.md). The expected status of each mode is
//! what the host must report; a mode never "succeeds" by itself unless it says so.
//!
//! - `spin`: pure wasm loop forever (→ timed out / killed / out of fuel).
//! - `membomb`: allocates 1 MiB blocks until refused (→ out of memory).
//! - `stack-overflow`: unbounded recursion (→ trapped).
//! - `stderr-flood`: writes stderr forever (→ timed out; the capture stays bounded).
//! - `sleep`: blocks in a host call (`poll`) forever (→ killed / timed out).
//! - `big-message --bytes N`: one echo call of N bytes, over the host's message limit
//!   (→ protocol violation). Needs an Executor.
//! - `huge-segment`: a raw segment table claiming a 4 GiB message, then waits
//!   (→ protocol violation, without the host allocating it).
//! - `no-read-stdin --calls N --bytes B`: raw RPC; pipelines N echo calls of B bytes and never
//!   reads a reply (→ timed out; host memory bounded). Needs an Executor.
//! - `idle`: sleeps forever without RPC, never reading stdin (a plain child that never reads).
//! - `pollables`: holds ever more WASI resources until the host refuses one (→ trapped).
//! - `forge-stderr`: one stderr line with a carriage return, a fake host line and an OSC title
//!   escape (→ forwarded escaped, never as control characters).
//! - `println`: prints a line to stdout (its RPC channel) as an ordinary program would.
//! - `slow-read-stdin --calls N --bytes B`: raw RPC; pipelines N echo calls of B bytes and
//!   reads the replies slowly (→ timed out; host memory bounded). Needs an Executor.
//! - `echo-loop --count N`: the well-behaved sibling; N sequential echoes, each checked; exit 0.
//! - `spawn-invalid-loop --count N`: spawns N invalid blobs; exits 0 iff every one was refused
//!   with "bad-wasm" and the connection still works, else 3.

use std::io::Write as _;
use std::time::Duration;

use anyhow::{bail, ensure, Context as _, Result};
use cell_guest::cell_capnp::{executor, session};
use cell_guest::log;
use cell_testkit::raw;

/// Waits (for the host to end it) without touching stdin or stdout.
fn sleep_blocking() {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    match mode.as_str() {
        "spin" => spin(),
        "membomb" => membomb(),
        "stack-overflow" => {
            log!("stack-overflow: recursing");
            let n = recurse(0);
            log!("stack-overflow: returned {n}?");
        }
        "stderr-flood" => stderr_flood(),
        "huge-segment" => huge_segment(),
        "no-read-stdin" => no_read_stdin(),
        "slow-read-stdin" => slow_read_stdin(),
        // Blocks in a host call forever and never touches stdin (a plain child that never reads).
        "idle" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        // Holds ever more WASI resources (pollables) until the host refuses one.
        "pollables" => {
            let mut held = Vec::new();
            loop {
                held.push(wasip2::clocks::monotonic_clock::subscribe_duration(1 << 40));
                if held.len() % 10_000 == 0 {
                    log!("pollables: holding {}", held.len());
                }
            }
        }
        // Prints to stdout as an ordinary program would: on a cell guest's RPC channel.
        "println" => {
            println!("hello from a guest that should have used log!");
            sleep_blocking();
        }
        "forge-stderr" => {
            // A carriage return, then a line that looks like the host's, then a terminal title.
            eprintln!("child\r[pid 0] cell: forged by a child\x1b]0;pwned\x07");
        }
        _ => cell_guest::run(|caps| async move {
            match mode.as_str() {
                "sleep" => sleep_forever().await,
                "big-message" => big_message(&caps).await,
                "echo-loop" => echo_loop(&caps).await,
                "spawn-invalid-loop" => spawn_invalid_loop(&caps).await,
                other => {
                    log!("hostile: unknown mode {other:?}");
                    cell_guest::exit(2)
                }
            }
        }),
    }
    cell_guest::exit(0)
}

fn spin() {
    log!("spin: spinning");
    let mut i = 0u64;
    loop {
        i = std::hint::black_box(i.wrapping_add(1));
    }
}

fn membomb() {
    log!("membomb: allocating");
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        block[0] = 1; // touch it, so nothing is optimised away
        hoard.push(std::hint::black_box(block));
    }
}

/// Non-tail recursion with work after the call, so it cannot become a loop.
#[allow(unconditional_recursion)]
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let below = recurse(std::hint::black_box(depth + 1));
    std::hint::black_box(below.wrapping_mul(31).wrapping_add(depth))
}

fn stderr_flood() {
    log!("stderr-flood: flooding");
    let chunk = [b'x'; 4096];
    let mut err = std::io::stderr().lock();
    loop {
        let _ = err.write_all(&chunk);
    }
}

async fn sleep_forever() -> Result<()> {
    log!("sleep: sleeping");
    loop {
        cell_guest::sleep(Duration::from_secs(3600)).await;
    }
}

async fn big_message(caps: &cell_guest::Caps) -> Result<()> {
    let bytes: usize = cell_guest::arg("--bytes")?.context("--bytes N")?;
    let executor = caps.executor().await?;
    log!("big-message: sending one echo of {bytes} bytes");
    let text = "b".repeat(bytes);
    let reply = executor.echo(&text).await;
    // The host should have ended us before answering.
    log!(
        "big-message: the host answered: {:?}",
        reply.map(|r| r.len())
    );
    cell_guest::exit(4)
}

async fn echo_loop(caps: &cell_guest::Caps) -> Result<()> {
    let count: u32 = cell_guest::arg("--count")?.unwrap_or(100);
    let executor = caps.executor().await?;
    for i in 0..count {
        let message = format!("steady echo {i}");
        let reply = executor.echo(&message).await?;
        ensure!(reply == message, "echo {i}: got {reply:?}");
        cell_guest::sleep(Duration::from_millis(2)).await;
    }
    log!("echo-loop: {count} echoes answered correctly");
    Ok(())
}

async fn spawn_invalid_loop(caps: &cell_guest::Caps) -> Result<()> {
    let count: u32 = cell_guest::arg("--count")?.unwrap_or(100);
    let executor = caps.executor().await?;
    for i in 0..count {
        let bytes: Vec<u8> = match i % 3 {
            0 => b"not wasm".to_vec(),
            1 => b"\0asm\x01\0\0\0".to_vec(), // a core module header
            _ => {
                // A component header followed by junk that differs every time (no caching).
                let mut b = b"\0asm\x0d\0\x01\0".to_vec();
                b.extend(i.to_le_bytes().iter().cycle().take(64 + i as usize));
                b
            }
        };
        match executor.spawn(&bytes).name("invalid").start().await {
            Ok(p) => bail!("invalid blob {i} was spawned as pid {}", p.pid()),
            Err(e) => {
                let msg = format!("{e:#}");
                if !msg.contains("bad-wasm") {
                    log!("spawn-invalid-loop: blob {i}: unexpected error: {msg}");
                    cell_guest::exit(3);
                }
            }
        }
    }
    ensure!(executor.echo("still here").await? == "still here");
    log!("spawn-invalid-loop: all {count} invalid blobs refused with bad-wasm");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Raw stdout: modes that must not run the SDK's RPC system (which would read stdin).

fn huge_segment() {
    log!("huge-segment: claiming a 4 GiB segment");
    let out = wasip2::cli::stdout::get_stdout();
    // One segment (count - 1 = 0) of 2^29 words = 4 GiB, then a few bytes of it.
    let mut frame = Vec::new();
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&(1u32 << 29).to_le_bytes());
    frame.extend_from_slice(&[0u8; 64]);
    raw::write_all(&out, &frame);
    raw::wait_forever()
}

fn no_read_stdin() {
    let run = || -> Result<()> {
        let calls: u32 = cell_guest::arg("--calls")?.unwrap_or(1000);
        let bytes: usize = cell_guest::arg("--bytes")?.unwrap_or(1024);
        log!("no-read-stdin: pipelining {calls} echoes of {bytes} bytes, reading nothing");
        let out = wasip2::cli::stdout::get_stdout();
        raw::write_all(&out, &bootstrap(0)?);
        // Question 1: Session.executor() on the bootstrap promise.
        raw::write_all(&out, &call(1, 0, None, session_id(), 1, None)?);
        let text = "n".repeat(bytes);
        for q in 0..calls {
            // Executor.echo(text) on the pipelined executor of question 1.
            let msg = call(q + 2, 1, Some(0), executor_id(), 1, Some(&text))?;
            raw::write_all(&out, &msg);
        }
        log!("no-read-stdin: all calls written");
        Ok(())
    };
    if let Err(e) = run() {
        log!("no-read-stdin: {e:#}");
        cell_guest::exit(3);
    }
    raw::wait_forever()
}

/// Pipelines small echo calls while reading its replies slowly (a few hundred bytes at a time,
/// whenever its stdout is full), so the host always has room to read a little more: without a
/// bound on unsent replies, they would pile up in the host.
fn slow_read_stdin() {
    let run = || -> Result<()> {
        let calls: u32 = cell_guest::arg("--calls")?.unwrap_or(100_000);
        let bytes: usize = cell_guest::arg("--bytes")?.unwrap_or(1024);
        log!("slow-read-stdin: pipelining {calls} echoes of {bytes} bytes, reading slowly");
        let out = wasip2::cli::stdout::get_stdout();
        let input = wasip2::cli::stdin::get_stdin();
        raw::write_all(&out, &bootstrap(0)?);
        raw::write_all(&out, &call(1, 0, None, session_id(), 1, None)?);
        let text = "s".repeat(bytes);
        for q in 0..calls {
            let msg = call(q + 2, 1, Some(0), executor_id(), 1, Some(&text))?;
            let mut data = &msg[..];
            while !data.is_empty() {
                match out.check_write() {
                    Ok(0) => {
                        // Out of room: read a few bytes of the replies, then let the host run.
                        let _ = input.read(16);
                        wasip2::clocks::monotonic_clock::subscribe_duration(10_000).block();
                    }
                    Ok(budget) => {
                        let n = usize::try_from(budget)
                            .unwrap_or(usize::MAX)
                            .min(data.len());
                        if out.write(&data[..n]).is_err() {
                            return Ok(());
                        }
                        data = &data[n..];
                    }
                    Err(_) => return Ok(()),
                }
            }
        }
        log!("slow-read-stdin: all calls written");
        Ok(())
    };
    if let Err(e) = run() {
        log!("slow-read-stdin: {e:#}");
        cell_guest::exit(3);
    }
    raw::wait_forever()
}

fn session_id() -> u64 {
    <session::Client as capnp::traits::HasTypeId>::TYPE_ID
}

fn executor_id() -> u64 {
    <executor::Client as capnp::traits::HasTypeId>::TYPE_ID
}

fn bootstrap(question: u32) -> Result<Vec<u8>> {
    let mut m = capnp::message::Builder::new_default();
    let root: capnp_rpc::rpc_capnp::message::Builder = m.init_root();
    root.init_bootstrap().set_question_id(question);
    Ok(capnp::serialize::write_message_to_words(&m))
}

/// A `Call` message on a promised answer (`field` = the pointer field to follow, if any),
/// with an optional single text parameter.
fn call(
    question: u32,
    target: u32,
    field: Option<u16>,
    interface: u64,
    method: u16,
    text: Option<&str>,
) -> Result<Vec<u8>> {
    let mut m = capnp::message::Builder::new_default();
    let root: capnp_rpc::rpc_capnp::message::Builder = m.init_root();
    let mut c = root.init_call();
    c.set_question_id(question);
    c.set_interface_id(interface);
    c.set_method_id(method);
    {
        let mut pa = c.reborrow().init_target().init_promised_answer();
        pa.set_question_id(target);
        if let Some(f) = field {
            pa.init_transform(1).get(0).set_get_pointer_field(f);
        }
    }
    let content = c.init_params().init_content();
    match text {
        Some(t) => {
            let mut p: executor::echo_params::Builder = content.init_as();
            p.set_message(t);
        }
        None => {
            let _: session::executor_params::Builder = content.init_as();
        }
    }
    Ok(capnp::serialize::write_message_to_words(&m))
}
