//! net-probe: the network test pid0. Runs the checks named on its command line, in order, and
//! reports each as `ok: …` / `fail: …` on stderr, then `--- N passed, M failed`; exits 0 iff
//! all passed. Run it with the `--net` rules the checks need.
//!
//! Checks (each followed by its arguments):
//! - `rpc-allow HOST PORT`   `Network.connect` succeeds and a round trip to the (echo) server works
//! - `rpc-deny HOST PORT`    `Network.connect` fails with `denied: …`
//! - `std-allow ADDR`        a plain `net-std` child granted this Network round-trips with ADDR
//! - `std-deny ADDR`         … and cannot connect to ADDR
//! - `std-no-dns NAME`       … and cannot resolve NAME
//! - `restrict RULE HOST PORT`  a child granted `restrict(RULE)` cannot reach HOST:PORT (which
//!   this process can), and cannot widen it back for itself or a grandchild (`net-child widen`)
//! - `no-grant ADDR`         children with no Network: `Session.network()` fails (net-child),
//!   std::net connect to ADDR fails and UDP is unavailable (net-std)
//! - `owner-exit`            a listener opened by a child stops accepting once the child exited
//!   (needs `listen=127.0.0.1:0` and `connect=127.0.0.1:*`)
//! - `udp`                   UDP round trip on 127.0.0.1, then receive-queue overflow: drops are
//!   counted and at most the queue bound is kept (needs `udp=127.0.0.1:*`)
//! - `max-sockets HOST PORT` connecting past the socket budget fails with `limit: max-sockets`
//! - `in-flight HOST PORT`   pipelining 1 MiB writes to a peer that never reads: once the
//!   kernel's buffers are full, writes past the in-flight budget fail with
//!   `limit: max in-flight bytes` instead of piling up in the host
//! - `bad-grant`             granting a guest-made Network to a child is refused (`bad-grant`)
//! - `listen-deny ADDR PORT` `Network.listen` fails with `denied: …`
//! - `pass-listener`         a listener this process opened, handed to a child in
//!   `grants.sockets`, accepts for the child (needs `listen=127.0.0.1:0`, `connect=127.0.0.1:*`)

use std::time::Duration;

use anyhow::{anyhow, bail, Context as _, Result};
use cell_guest::cell_capnp::network;
use cell_guest::net::{Network, Rule};
use cell_guest::{log, Caps, ExitStatus, ProcessMode, Reason, StderrMode};
use cell_testkit::{err_text, failed_with, Report};
use futures::StreamExt as _;

static NET_STD: &[u8] = cell_testkit::embed!("net-std");
static NET_CHILD: &[u8] = cell_testkit::embed!("net-child");

/// The host's receive-queue bound (limits::UDP_RECV_QUEUE).
const UDP_QUEUE: usize = 64;

struct Probe {
    caps: Caps,
    network: Network,
    report: Report,
}

impl Probe {
    async fn round_trip(&self, host: &str, port: u16) -> Result<()> {
        let stream = self.network.connect(host, port).await?;
        stream.bytes().write(b"ping").await?;
        stream.bytes().close().await?;
        let reply = stream.bytes().read_to_end().await?;
        if reply != b"ping" {
            bail!("echo answered {:?}", String::from_utf8_lossy(&reply));
        }
        Ok(())
    }

    async fn std_child(&mut self, network: Option<&Network>, args: &[&str]) -> Result<ExitStatus> {
        let mut b = self
            .caps
            .spawn(NET_STD)
            .name("net-std")
            .args(args.iter().copied())
            .mode(ProcessMode::Plain)
            .stderr(StderrMode::Forward);
        if let Some(n) = network {
            b = b.grant_network(n);
        }
        b.start().await?.wait().await
    }

    async fn net_child(&self, network: Option<&Network>, args: &[&str]) -> Result<ExitStatus> {
        let mut b = self
            .caps
            .spawn(NET_CHILD)
            .name("net-child")
            .args(args.iter().copied())
            .grant_executor(true)
            .stderr(StderrMode::Forward);
        if let Some(n) = network {
            b = b.grant_network(n);
        }
        b.start().await?.wait().await
    }

    async fn run(&mut self, check: &str, args: &mut impl Iterator<Item = String>) -> Result<()> {
        let mut next = || {
            args.next()
                .ok_or_else(|| anyhow!("{check}: missing argument"))
        };
        match check {
            "rpc-allow" => {
                let (host, port) = (next()?, next()?.parse()?);
                let r = self.round_trip(&host, port).await;
                self.report.check(
                    r.is_ok(),
                    format!("rpc connect {host}:{port} round trip: {}", err_text(&r)),
                );
            }
            "rpc-deny" => {
                let (host, port) = (next()?, next()?.parse::<u16>()?);
                let r = self.network.connect(&host, port).await;
                let e = err_text(&r);
                self.report.check(
                    failed_with(&r, Reason::Denied),
                    format!("rpc connect {host}:{port} denied: {e}"),
                );
            }
            "std-allow" | "std-deny" => {
                let addr = next()?;
                let args: Vec<&str> = if check == "std-allow" {
                    vec!["connect", &addr, "ping"]
                } else {
                    vec!["deny", &addr]
                };
                let network = self.network.clone();
                let status = self.std_child(Some(&network), &args).await?;
                self.report.check(
                    status.success(),
                    format!("{check} {addr}: net-std {status}"),
                );
            }
            "std-no-dns" => {
                let name = next()?;
                let network = self.network.clone();
                let status = self.std_child(Some(&network), &["no-dns", &name]).await?;
                self.report.check(
                    status.success(),
                    format!("std-no-dns {name}: net-std {status}"),
                );
            }
            "restrict" => {
                let (rule, host, port) = (next()?, next()?, next()?);
                let r = self.round_trip(&host, port.parse()?).await;
                self.report.check(
                    r.is_ok(),
                    format!("parent reaches {host}:{port}: {}", err_text(&r)),
                );
                let restricted = self.network.restrict(&[Rule::parse(&rule)?]).await?;
                let policy = restricted.policy().await?;
                log!(
                    "probe: restrict({rule}) = {:?}",
                    policy.iter().map(ToString::to_string).collect::<Vec<_>>()
                );
                let status = self
                    .net_child(Some(&restricted), &["widen", &host, &port])
                    .await?;
                self.report.check(
                    status.success(),
                    format!("restricted child cannot widen to {host}:{port}: net-child {status}"),
                );
            }
            "no-grant" => {
                let addr = next()?;
                let status = self.net_child(None, &["no-grant"]).await?;
                self.report.check(
                    status.success(),
                    format!("child without Network: net-child {status}"),
                );
                let status = self.std_child(None, &["deny", &addr]).await?;
                self.report.check(
                    status.success(),
                    format!("child without Network: std connect {addr} fails: net-std {status}"),
                );
                let status = self.std_child(None, &["no-udp"]).await?;
                self.report.check(
                    status.success(),
                    format!("child without Network: no UDP: net-std {status}"),
                );
            }
            "owner-exit" => self.owner_exit().await?,
            "pass-listener" => self.pass_listener().await?,
            "listen-deny" => {
                let (addr, port) = (next()?, next()?.parse::<u16>()?);
                let r = self.network.listen(&addr, port, 4).await;
                let e = err_text(&r);
                self.report.check(
                    failed_with(&r, Reason::Denied),
                    format!("listen {addr}:{port} denied: {e}"),
                );
            }
            "udp" => self.udp().await?,
            "max-sockets" => {
                let (host, port) = (next()?, next()?.parse::<u16>()?);
                let mut open = Vec::new();
                let (reason, err) = loop {
                    match self.network.connect(&host, port).await {
                        Ok(s) => open.push(s),
                        Err(e) => break (cell_guest::reason(&e), format!("{e:#}")),
                    }
                    if open.len() > 1000 {
                        break (None, "no limit after 1000 sockets".into());
                    }
                };
                self.report.check(
                    reason == Some(Reason::Limit) && err.contains("max-sockets"),
                    format!("socket {} refused: {err}", open.len() + 1),
                );
                drop(open);
                let r = self.round_trip(&host, port).await;
                self.report.check(
                    r.is_ok(),
                    format!("closing sockets frees the budget: {}", err_text(&r)),
                );
            }
            "in-flight" => {
                let (host, port) = (next()?, next()?.parse::<u16>()?);
                let stream = self.network.connect(&host, port).await?;
                let chunk = vec![7u8; 1 << 20];
                let mut writes: futures::stream::FuturesUnordered<_> =
                    (0..32).map(|_| stream.bytes().write(&chunk)).collect();
                let (mut refused, mut other) = (0, Vec::new());
                // Refusals answer at once; writes stuck behind the full socket never do.
                while let Ok(Some(r)) =
                    cell_guest::timeout(Duration::from_secs(2), writes.next()).await
                {
                    if let Err(e) = r {
                        match cell_guest::cell_error(&e) {
                            Some(c)
                                if c.reason == Reason::Limit
                                    && c.detail.starts_with("max in-flight bytes") =>
                            {
                                refused += 1
                            }
                            _ => other.push(format!("{e:#}")),
                        }
                    }
                }
                self.report.check(
                    refused > 0 && other.is_empty(),
                    format!("writes past the in-flight budget refused: {refused} refused, other errors {other:?}"),
                );
            }
            "bad-grant" => {
                let impostor: network::Client = cell_guest::capnp_rpc::new_client(Impostor);
                let r = self
                    .caps
                    .spawn(NET_STD)
                    .args(["deny", "127.0.0.1:1"])
                    .mode(ProcessMode::Plain)
                    .grant_network(&Network::new(impostor))
                    .start()
                    .await;
                let e = err_text(&r);
                self.report.check(
                    failed_with(&r, Reason::BadGrant)
                        && e.contains("not a Network issued by this host"),
                    format!("guest-made Network refused: {e}"),
                );
            }
            other => bail!("unknown check {other:?}"),
        }
        Ok(())
    }

    async fn owner_exit(&mut self) -> Result<()> {
        let child = self
            .caps
            .spawn(NET_CHILD)
            .name("net-child")
            .arg("listen-once")
            .grant_network(&self.network)
            .stderr(StderrMode::Capture)
            .start()
            .await?;
        let stderr = child.stderr().await?;
        let mut seen = String::new();
        let addr = loop {
            let chunk = stderr.read(4096).await?;
            if chunk.is_empty() {
                bail!("net-child ended before listening: {seen}");
            }
            seen.push_str(&String::from_utf8_lossy(&chunk));
            if let Some(line) = seen
                .lines()
                .find(|l| l.starts_with("net-child: listening on ") && seen.contains('\n'))
            {
                break line
                    .trim_start_matches("net-child: listening on ")
                    .trim()
                    .to_string();
            }
        };
        let (host, port) = addr.rsplit_once(':').context("listen address")?;
        let port: u16 = port.parse()?;
        let stream = self.network.connect(host, port).await?;
        let reply = stream.bytes().read_to_end().await?;
        self.report.check(
            reply == b"bye",
            format!(
                "child's listener on {addr} accepted: {:?}",
                String::from_utf8_lossy(&reply)
            ),
        );
        let status = child.wait().await?;
        self.report
            .check(status.success(), format!("listening child {status}"));
        let r = self.network.connect(host, port).await;
        let e = err_text(&r);
        self.report.check(
            e.contains("connect-failed"),
            format!("listener closed with its owner: connect {addr}: {e}"),
        );
        Ok(())
    }

    async fn pass_listener(&mut self) -> Result<()> {
        let listener = self.network.listen("127.0.0.1", 0, 4).await?;
        let addr = listener.local_address().await?;
        let child = self
            .caps
            .spawn(NET_CHILD)
            .name("net-child")
            .arg("accept-granted")
            .grant_socket(&listener)
            .start()
            .await?;
        drop(listener);
        let (host, port) = addr.rsplit_once(':').context("listen address")?;
        let stream = self.network.connect(host, port.parse()?).await?;
        let reply = stream.bytes().read_to_end().await?;
        self.report.check(
            reply == b"bye",
            format!(
                "child accepted on the granted listener {addr}: {:?}",
                String::from_utf8_lossy(&reply)
            ),
        );
        let status = child.wait().await?;
        self.report.check(
            status.success(),
            format!("child with a granted listener {status}"),
        );
        Ok(())
    }

    async fn udp(&mut self) -> Result<()> {
        let a = self.network.bind_udp("127.0.0.1", 0).await?;
        let b = self.network.bind_udp("127.0.0.1", 0).await?;
        let a_addr = a.local_address().await?;
        let b_addr = b.local_address().await?;
        let a_port: u16 = a_addr.rsplit_once(':').context("addr")?.1.parse()?;
        let b_port: u16 = b_addr.rsplit_once(':').context("addr")?.1.parse()?;
        b.send("127.0.0.1", a_port, b"hello").await?;
        let (from, from_port, data) = a.recv().await?;
        self.report.check(
            data == b"hello" && from_port == b_port,
            format!(
                "udp {b_addr} -> {a_addr}: {:?} from {from}:{from_port}",
                String::from_utf8_lossy(&data)
            ),
        );
        a.send("127.0.0.1", b_port, b"world").await?;
        let (_, _, data) = b.recv().await?;
        self.report.check(data == b"world", "udp reply received");
        let r = a.send("10.0.0.1", 53, b"x").await;
        let e = err_text(&r);
        self.report.check(
            failed_with(&r, Reason::Denied),
            format!("udp send to 10.0.0.1:53 denied before sending: {e}"),
        );

        let total = 200usize;
        for i in 0..total {
            b.send("127.0.0.1", a_port, i.to_string().as_bytes())
                .await?;
        }
        let expected_drops = (total - UDP_QUEUE) as u64;
        let mut dropped = 0;
        for _ in 0..500 {
            dropped = a.dropped().await?;
            if dropped >= expected_drops {
                break;
            }
            cell_guest::sleep(Duration::from_millis(10)).await;
        }
        self.report.check(
            dropped == expected_drops,
            format!("overflow: {dropped} of {total} datagrams dropped (queue {UDP_QUEUE})"),
        );
        let mut in_order = true;
        for i in 0..UDP_QUEUE {
            let (_, _, data) = a.recv().await?;
            in_order &= data == i.to_string().as_bytes();
        }
        self.report.check(
            in_order,
            format!("the first {UDP_QUEUE} datagrams were kept, in order"),
        );
        b.send("127.0.0.1", a_port, b"marker").await?;
        let (_, _, data) = a.recv().await?;
        self.report.check(
            data == b"marker",
            format!(
                "nothing beyond the bound was queued: next datagram is {:?}",
                String::from_utf8_lossy(&data)
            ),
        );
        Ok(())
    }
}

/// A guest-made object implementing `Network`: the host must not accept it as a grant.
struct Impostor;

impl network::Server for Impostor {}

fn main() {
    cell_guest::run(|caps| async move {
        let network = caps.network().await?;
        let policy = network.policy().await?;
        log!(
            "probe: policy {:?}",
            policy.iter().map(ToString::to_string).collect::<Vec<_>>()
        );
        let mut probe = Probe {
            caps,
            network,
            report: Report::default(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(check) = args.next() {
            probe
                .run(&check, &mut args)
                .await
                .with_context(|| format!("check {check}"))?;
        }
        probe.report.finish()
    })
}
