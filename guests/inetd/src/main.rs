//! inetd: accepts TCP connections and hands each one to a fresh child.
//!
//! pid0 with a listen grant (`cell run --net listen=127.0.0.1:0 inetd.wasm [--count N]`): it
//! listens on 127.0.0.1 (port chosen by the OS), prints `inetd: listening on ADDR` on stderr,
//! and for each accepted connection spawns `inetd-echo` with that connection in its
//! `grants.sockets` (no Network: the child can use only the one socket it was given). After N
//! connections (default: forever) it waits for the children and exits 0 iff they all did.

use anyhow::Context as _;
use cell_guest::log;

static INETD_ECHO: &[u8] = include_bytes!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../target/wasm32-wasip2/release/inetd-echo.wasm"
));

fn main() {
    cell_guest::run(|caps| async move {
        let count = cell_guest::arg::<u32>("--count")?;
        let network = caps.network().await.context("inetd needs --net listen=…")?;
        let listener = network.listen("127.0.0.1", 0, 16).await?;
        log!("inetd: listening on {}", listener.local_address().await?);
        let mut children = Vec::new();
        let mut served = 0;
        while count.is_none_or(|n| served < n) {
            let (stream, peer) = listener.accept().await?;
            let child = caps
                .spawn(INETD_ECHO)
                .name("inetd-echo")
                .grant_socket(&stream)
                .start()
                .await?;
            log!("inetd: {peer} -> pid {}", child.pid());
            // The child now holds the connection; our reference goes away here.
            drop(stream);
            children.push(child);
            served += 1;
        }
        let mut failed = 0;
        for child in children {
            let status = child.wait().await?;
            if !status.success() {
                log!("inetd: pid {} {status}", child.pid());
                failed += 1;
            }
        }
        log!("inetd: served {served} connections, {failed} children failed");
        anyhow::ensure!(failed == 0, "{failed} children failed");
        Ok(())
    })
}
