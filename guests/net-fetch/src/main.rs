//! net-fetch: fetches `http://HOST:PORT/PATH` through the Network its parent (or `--net`)
//! granted, over RPC, and prints the response body on stderr as `net-fetch: body: …`.
//!
//! Usage: `net-fetch HOST PORT [PATH]`. HOST may be an IP address or a name (names are resolved
//! by the host, and only if a name rule allows it).

use anyhow::{bail, Context as _};
use cell_guest::log;

fn main() {
    cell_guest::run(|caps| async move {
        let args: Vec<String> = std::env::args().collect();
        let (Some(host), Some(port)) = (args.get(1), args.get(2)) else {
            bail!("usage: net-fetch HOST PORT [PATH]");
        };
        let port: u16 = port.parse().context("PORT")?;
        let path = args.get(3).map_or("/", String::as_str);
        let network = caps.network().await?;
        let stream = network.connect(host, port).await?;
        log!("net-fetch: connected to {}", stream.peer_address().await?);
        let request = format!("GET {path} HTTP/1.0\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        stream.bytes().write(request.as_bytes()).await?;
        let response = stream.bytes().read_to_end().await?;
        let response = String::from_utf8_lossy(&response);
        let Some((head, body)) = response.split_once("\r\n\r\n") else {
            bail!("malformed response: {response:?}");
        };
        let status = head.lines().next().unwrap_or_default();
        log!("net-fetch: status: {status}");
        log!("net-fetch: body: {body}");
        if !status.contains(" 200 ") {
            bail!("unexpected status {status:?}");
        }
        Ok(())
    })
}
