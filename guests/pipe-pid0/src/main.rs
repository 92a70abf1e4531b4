//! pipe-pid0: a test pid0 that runs an ordinary WASI program (`upper`, embedded) as a *plain*
//! child and pipes text through it over the ByteStreams of its `Process` capability.
//!
//! Checks, each reported as an `ok: …` / `fail: …` line on stderr, ending with
//! `--- N passed, M failed`; exits 0 iff all passed:
//! - a short text comes back uppercased and the child exits 0 once its stdin is closed;
//! - a payload several times larger than the host's pipe capacity streams through while it is
//!   written and read concurrently (backpressure, no deadlock, nothing lost or reordered);
//! - a plain child's stderr can be captured like an RPC child's.
//!
//! Needs the executor grant.

use anyhow::{ensure, Context as _, Result};
use cell_guest::{Caps, ExitStatus, ProcessMode, StderrMode};
use cell_testkit::Report;

/// The filter, built before us and embedded in our own wasm.
static UPPER: &[u8] = cell_testkit::embed!("upper");

fn main() {
    cell_guest::run(|caps| async move {
        let mut report = Report::default();
        let checks: [(&str, Result<()>); 2] = [
            ("short text through upper", short_text(&caps).await),
            ("large payload through upper", large_payload(&caps).await),
        ];
        for (name, result) in checks {
            match result {
                Ok(()) => report.ok(name),
                Err(e) => report.fail(format_args!("{name}: {e:#}")),
            }
        }
        report.finish()
    })
}

/// Writes `input` to a fresh plain `upper` child, closes its stdin, and returns what it wrote on
/// stdout and how it ended. Writing and reading run concurrently, so any size works.
async fn through_upper(caps: &Caps, input: &[u8]) -> Result<(Vec<u8>, ExitStatus)> {
    let child = caps
        .spawn(UPPER)
        .name("upper")
        .mode(ProcessMode::Plain)
        .stderr(StderrMode::Forward)
        .start()
        .await
        .context("spawn upper (plain)")?;
    let stdin = child.stdin().await?;
    let stdout = child.stdout().await?;
    let write = async {
        for chunk in input.chunks(16 * 1024) {
            stdin.write(chunk).await?;
        }
        stdin.close().await
    };
    let (written, output) = futures::join!(write, stdout.read_to_end());
    written.context("writing upper's stdin")?;
    let output = output.context("reading upper's stdout")?;
    let status = child.wait().await?;
    Ok((output, status))
}

async fn short_text(caps: &Caps) -> Result<()> {
    let (out, status) = through_upper(caps, b"hello, plain world\n").await?;
    ensure!(
        out == b"HELLO, PLAIN WORLD\n",
        "got {:?}",
        String::from_utf8_lossy(&out)
    );
    ensure!(status == ExitStatus::Exited(0), "upper ended: {status}");
    Ok(())
}

async fn large_payload(caps: &Caps) -> Result<()> {
    // 512 KiB: eight times the host's per-direction pipe capacity.
    let input: Vec<u8> = (0..512 * 1024u32)
        .map(|i| b"abcdefghijklmnopqrstuvwxyz0123456789\n"[(i % 37) as usize])
        .collect();
    let (out, status) = through_upper(caps, &input).await?;
    ensure!(
        out.len() == input.len(),
        "got {} bytes, sent {}",
        out.len(),
        input.len()
    );
    ensure!(
        out == input.to_ascii_uppercase(),
        "output differs from the uppercased input"
    );
    ensure!(status == ExitStatus::Exited(0), "upper ended: {status}");
    Ok(())
}
