//! inetd-echo: serves the one connection its parent handed it (`Session.sockets()[0]`): reads
//! until the client shuts down its side, writing every chunk back uppercased, then closes.

use anyhow::{bail, Context as _};
use cell_guest::net::TcpStream;
use cell_guest::{log, Socket};

fn main() {
    cell_guest::run(|caps| async move {
        let sockets = caps.sockets().await?;
        let Some(Socket::TcpStream(client)) = sockets.into_iter().next() else {
            bail!("inetd-echo: expected a TcpStream in Session.sockets()");
        };
        let stream = TcpStream::new(client);
        let peer = stream.peer_address().await?;
        let info = caps.info().await?;
        log!("inetd-echo: pid {} serving {peer}", info.pid);
        let mut total = 0;
        loop {
            let chunk = stream.bytes().read(64 * 1024).await.context("read")?;
            if chunk.is_empty() {
                break;
            }
            total += chunk.len();
            stream.bytes().write(&chunk.to_ascii_uppercase()).await?;
        }
        stream.bytes().close().await?;
        log!(
            "inetd-echo: pid {} echoed {total} bytes to {peer}",
            info.pid
        );
        Ok(())
    })
}
