//! net-child: a child that checks, from inside, what the Network it was granted allows.
//! Prints `ok: …` / `fail: …` lines and exits 0 iff every check passed.
//!
//! - `widen HOST PORT`    its Network must not reach HOST:PORT; asking `restrict` for exactly
//!   `connect=HOST:PORT` must not help (clamped), over RPC nor for a grandchild (`net-std`, plain
//!   std::net) granted the "widened" Network
//! - `no-grant`           `Session.network()` must fail with not-granted
//! - `listen-once`        listen on 127.0.0.1:0, print `net-child: listening on ADDR`, accept
//!   one connection, write "bye", close, exit
//! - `accept-granted`     accept one connection on the listener in `Session.sockets()[0]`
//!   (no Network needed), write "bye", close, exit

use anyhow::{bail, Result};
use cell_guest::net::{Rule, TcpListener};
use cell_guest::{log, ExitStatus, ProcessMode, Reason, Socket, StderrMode};
use cell_testkit::{err_text, failed_with, Report};

static NET_STD: &[u8] = cell_testkit::embed!("net-std");

fn denied<T>(r: &Result<T>) -> Option<String> {
    failed_with(r, Reason::Denied).then(|| err_text(r))
}

async fn widen(caps: &cell_guest::Caps, host: &str, port: u16, report: &mut Report) -> Result<()> {
    let network = caps.network().await?;
    let mine = network.policy().await?;
    let r = network.connect(host, port).await;
    report.check(
        denied(&r).is_some(),
        format!(
            "child: connect {host}:{port} denied under {mine:?}: {:?}",
            denied(&r)
        ),
    );
    let wider = network
        .restrict(&[Rule::parse(&format!("connect={host}:{port}"))?])
        .await?;
    let got = wider.policy().await?;
    report.check(
        got.iter().all(|r| mine.contains(r)),
        format!("child: restrict cannot widen: {got:?} within {mine:?}"),
    );
    let r = wider.connect(host, port).await;
    report.check(
        denied(&r).is_some(),
        format!(
            "child: widened connect {host}:{port} still denied: {:?}",
            denied(&r)
        ),
    );
    let grandchild = caps
        .spawn(NET_STD)
        .name("net-std")
        .args(["deny", &format!("{host}:{port}")])
        .mode(ProcessMode::Plain)
        .grant_network(&wider)
        .stderr(StderrMode::Forward)
        .start()
        .await?;
    let status = grandchild.wait().await?;
    report.check(
        status == ExitStatus::Exited(0),
        format!("grandchild: std::net connect {host}:{port} refused ({status})"),
    );
    Ok(())
}

async fn listen_once(caps: &cell_guest::Caps) -> Result<()> {
    let network = caps.network().await?;
    let listener = network.listen("127.0.0.1", 0, 4).await?;
    log!(
        "net-child: listening on {}",
        listener.local_address().await?
    );
    let (stream, peer) = listener.accept().await?;
    stream.bytes().write(b"bye").await?;
    stream.bytes().close().await?;
    log!("net-child: served {peer}, exiting");
    Ok(())
}

fn main() {
    cell_guest::run(|caps| async move {
        let args: Vec<String> = std::env::args().collect();
        let mut report = Report::default();
        match args.get(1).map(String::as_str) {
            Some("widen") => {
                let (Some(host), Some(port)) = (args.get(2), args.get(3)) else {
                    bail!("usage: net-child widen HOST PORT");
                };
                widen(&caps, host, port.parse()?, &mut report).await?;
            }
            Some("no-grant") => {
                let r = caps.network().await;
                let msg = err_text(&r);
                report.check(
                    failed_with(&r, Reason::NotGranted),
                    format!("child without grant: Session.network() fails: {msg}"),
                );
            }
            Some("listen-once") => listen_once(&caps).await?,
            Some("accept-granted") => {
                let Some(Socket::TcpListener(l)) = caps.sockets().await?.into_iter().next() else {
                    bail!("expected a TcpListener in Session.sockets()");
                };
                let (stream, peer) = TcpListener::new(l).accept().await?;
                stream.bytes().write(b"bye").await?;
                stream.bytes().close().await?;
                log!("net-child: served {peer} on a granted listener");
            }
            other => bail!("unknown mode {other:?}"),
        }
        if report.failed() > 0 {
            bail!("{} checks failed", report.failed());
        }
        Ok(())
    })
}
