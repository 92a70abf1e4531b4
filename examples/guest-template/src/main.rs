//! A guest written outside the cell repository: asks who it is, checks a typed refusal, and
//! talks to a TCP server through the network the operator granted, with `futures::io`.
//!
//! Usage: `cell run --net connect=127.0.0.1:PORT guest-template.wasm PORT` (a server on PORT
//! that answers what it reads in upper case, then closes).

use cell_guest::net::Rule;
use cell_guest::{anyhow, log, Reason};
use futures::{AsyncReadExt as _, AsyncWriteExt as _};

fn main() {
    cell_guest::run(|caps| async move {
        let info = caps.info().await?;
        log!("template: pid {} grants {:?}", info.pid, info.grants);

        // Typed reasons: no terminal was granted, and the error says so without text matching.
        match caps.terminal().await {
            Err(e) if cell_guest::reason(&e) == Some(Reason::NotGranted) => {
                log!("template: terminal refused: not-granted")
            }
            Err(e) => return Err(e),
            Ok(_) => anyhow::bail!("a terminal was granted without --tty"),
        }

        let port: u16 = std::env::args()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("usage: guest-template PORT"))?
            .parse()?;
        let network = caps.network().await?;
        // Narrow it to the one destination (it can never widen), and read the policy back.
        let only = network.restrict(&[Rule::connect("127.0.0.1", port)?]).await?;
        let rules: Vec<String> = only.policy().await?.iter().map(|r| r.to_string()).collect();
        log!("template: restricted to {rules:?}");

        let mut stream = only.connect("127.0.0.1", port).await?;
        stream.write_all(b"hello from outside").await?;
        stream.close().await?; // shuts down the write half; the server answers and closes
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        log!("template: server answered {answer:?}");
        Ok(())
    })
}
