//! tty-echo: a pid0 that asks for the operator's terminal (`cell run --tty`), reads one line
//! from it and writes it back uppercased, prefixed with `tty: `.
//!
//! Without `--tty` the host refuses (`not-granted: terminal`) and tty-echo exits 1 with that
//! error on stderr.

use anyhow::Context as _;
use cell_guest::log;

fn main() {
    cell_guest::run(|caps| async move {
        let terminal = caps.terminal().await?;
        let mut line = Vec::new();
        while !line.ends_with(b"\n") {
            let chunk = terminal.input.read(1024).await?;
            if chunk.is_empty() {
                break;
            }
            line.extend_from_slice(&chunk);
        }
        // Only the first line counts; whatever followed it in the same read is ignored.
        if let Some(end) = line.iter().position(|b| *b == b'\n') {
            line.truncate(end + 1);
        }
        log!("tty-echo: read {} bytes from the terminal", line.len());
        let mut reply = b"tty: ".to_vec();
        reply.extend_from_slice(&line.to_ascii_uppercase());
        terminal
            .output
            .write(&reply)
            .await
            .context("writing to the terminal")?;
        Ok(())
    })
}
