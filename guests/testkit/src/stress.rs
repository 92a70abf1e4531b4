//! The process-tree stress (`stress-pid0`, `stress-node`; `tests/shards.rs`): a random tree
//! of spawns, kills, waits and socket hand-offs. Every process of it knows what it made each
//! child do, checks each child's status against that, and exits 0 only if every one matched,
//! so a status lost or wrong anywhere in the tree fails pid0.
//!
//! A node is granted, in this order, the components `node` (itself), `leaf` (child-leaf),
//! `idle` (bench-idle: runs until killed) and `echo` (inetd-echo: uppercases the one
//! connection it is handed), and a Network that may listen on and connect to 127.0.0.1. Each
//! action is one of: a leaf exiting with a random code; an idle child killed (now or later);
//! a node child one level down with half the actions; a connection made here (listen,
//! connect, accept) whose accepted end is handed to an echo child, checked by reading back
//! the uppercased token; waiting for a random child now; killing a random child now, except
//! a node (a child that already ended keeps its own status). Some idle children are left running when the
//! node ends: the cascade must kill them (`tests/shards.rs` counts them in the report).
//!
//! At its end a node logs `stress: pid P spawned S orphaned O` (the test sums these).

use anyhow::{bail, ensure, Context as _, Result};
use cell_guest::net::{Network, TcpStream};
use cell_guest::{log, Component, ExitStatus, KilledBy, Process};

/// The components of the stress, as granted (see the module docs).
pub struct Kinds {
    pub node: Component,
    pub leaf: Component,
    pub idle: Component,
    pub echo: Component,
}

impl Kinds {
    /// The four components from a node's grants, in their order.
    pub fn from_grants(mut granted: Vec<Component>) -> Result<Self> {
        ensure!(
            granted.len() == 4,
            "stress: expected 4 components, got {}",
            granted.len()
        );
        let echo = granted.pop().context("echo")?;
        let idle = granted.pop().context("idle")?;
        let leaf = granted.pop().context("leaf")?;
        let node = granted.pop().context("node")?;
        Ok(Kinds {
            node,
            leaf,
            idle,
            echo,
        })
    }
}

/// How much one node does.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Levels of node children it may still start.
    pub depth: u32,
    pub actions: u32,
    pub seed: u64,
}

impl Plan {
    /// `--depth`, `--actions`, `--seed` from the command line (with defaults).
    pub fn from_args() -> Result<Self> {
        Ok(Plan {
            depth: cell_guest::arg("--depth")?.unwrap_or(2),
            actions: cell_guest::arg("--actions")?.unwrap_or(16),
            seed: cell_guest::arg("--seed")?.unwrap_or(1),
        })
    }
}

/// What a child's status must be.
#[derive(Clone, Copy, Debug)]
enum Expect {
    Exit(i32),
    /// Killed by its parent, or — when the kill raced its own end — `then`.
    Killed {
        or: Option<i32>,
    },
}

impl Expect {
    fn matches(self, status: &ExitStatus) -> bool {
        match (self, status) {
            (Expect::Exit(want), ExitStatus::Exited(got)) => want == *got,
            (Expect::Killed { .. }, ExitStatus::Killed(KilledBy::Parent)) => true,
            (Expect::Killed { or: Some(want) }, ExitStatus::Exited(got)) => want == *got,
            _ => false,
        }
    }
}

/// A tiny deterministic generator (xorshift64*): the same seed gives the same tree.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n.max(1)
    }
}

/// Runs one node of the stress (pid0 runs one too); fails on the first wrong status.
pub async fn node(pid: u32, kinds: &Kinds, network: &Network, plan: Plan) -> Result<()> {
    let mut rng = Rng::new(plan.seed ^ u64::from(pid));
    // (child, what it must end with, whether it is a node)
    let mut pending: Vec<(Process, Expect, bool)> = Vec::new();
    let mut orphans: Vec<Process> = Vec::new();
    let mut spawned = 0u32;
    for _ in 0..plan.actions {
        match rng.below(100) {
            0..=24 => {
                let code = rng.below(100) as i32;
                let child = kinds
                    .leaf
                    .spawn()
                    .name("leaf")
                    .args(["--no-echo", "--exit", &code.to_string()])
                    .start()
                    .await?;
                pending.push((child, Expect::Exit(code), false));
            }
            25..=39 => {
                let child = kinds.idle.spawn().name("idle").start().await?;
                if rng.below(4) == 0 {
                    orphans.push(child);
                } else {
                    child.kill().await?;
                    pending.push((child, Expect::Killed { or: None }, false));
                }
            }
            40..=54 if plan.depth > 0 => {
                let child = spawn_node(kinds, network, plan, rng.below(u64::MAX)).await?;
                pending.push((child, Expect::Exit(0), true));
            }
            55..=69 => {
                let token = format!("token {pid}.{spawned}");
                let child = hand_off(kinds, network, &token).await?;
                pending.push((child, Expect::Exit(0), false));
            }
            70..=84 if !pending.is_empty() => {
                let at = rng.below(pending.len() as u64) as usize;
                let (child, expect, _) = pending.swap_remove(at);
                check(&child, expect).await?;
                continue;
            }
            85..=99 if !pending.is_empty() => {
                // Not a node child: its own account (the line it logs at its end) must be
                // there for the test to add up.
                let at = rng.below(pending.len() as u64) as usize;
                let (child, expect, node) = &mut pending[at];
                if !*node {
                    child.kill().await?;
                    if let Expect::Exit(code) = *expect {
                        *expect = Expect::Killed { or: Some(code) };
                    }
                }
                continue;
            }
            _ => continue,
        }
        spawned += 1;
    }
    for (child, expect, _) in pending {
        check(&child, expect).await?;
    }
    log!(
        "stress: pid {pid} spawned {spawned} orphaned {}",
        orphans.len()
    );
    // The orphans are still running: ending now leaves them to the cascade.
    drop(orphans);
    Ok(())
}

/// Hands the accepted end of one loopback connection to `k` idle children alive at once,
/// then kills them: every spawn must succeed however few `max-sockets` slots pid0 has (a
/// child that cannot get a duplicate of the socket on another shard stays on its parent's,
/// sharing it). Logs `stress: shared one socket with K children`.
pub async fn share_socket(kinds: &Kinds, network: &Network, k: u32) -> Result<()> {
    let listener = network.listen("127.0.0.1", 0, 4).await?;
    let address = listener.local_address().await?;
    let port = port_of(&address)?;
    let _client = network.connect("127.0.0.1", port).await?;
    let (accepted, _) = listener.accept().await?;
    let mut children = Vec::new();
    for _ in 0..k {
        let child = kinds
            .idle
            .spawn()
            .name("idle")
            .grant_socket(&accepted)
            .start()
            .await?;
        children.push(child);
    }
    for child in &children {
        child.kill().await?;
        check(child, Expect::Killed { or: None }).await?;
    }
    log!("stress: shared one socket with {k} children");
    Ok(())
}

fn port_of(address: &str) -> Result<u16> {
    address
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("stress: listening address {address}"))
}

async fn spawn_node(kinds: &Kinds, network: &Network, plan: Plan, seed: u64) -> Result<Process> {
    kinds
        .node
        .spawn()
        .name("stress-node")
        .args(["--depth", &(plan.depth - 1).to_string()])
        .args(["--actions", &(plan.actions / 2).max(2).to_string()])
        .args(["--seed", &seed.to_string()])
        .grant_component(&kinds.node)
        .grant_component(&kinds.leaf)
        .grant_component(&kinds.idle)
        .grant_component(&kinds.echo)
        .grant_network(network)
        .start()
        .await
}

/// Makes a loopback connection, hands the accepted end to an echo child, and checks that
/// the token comes back uppercased.
async fn hand_off(kinds: &Kinds, network: &Network, token: &str) -> Result<Process> {
    let listener = network.listen("127.0.0.1", 0, 4).await?;
    let address = listener.local_address().await?;
    let port = port_of(&address)?;
    let client = network.connect("127.0.0.1", port).await?;
    let (accepted, _) = listener.accept().await?;
    let child = kinds
        .echo
        .spawn()
        .name("inetd-echo")
        .grant_socket(&accepted)
        .start()
        .await?;
    drop(accepted);
    client.bytes().write(token.as_bytes()).await?;
    client.bytes().close().await?;
    let back = read_all(&client).await?;
    if back != token.to_ascii_uppercase().as_bytes() {
        bail!(
            "stress: echo child {} answered {:?} to {token:?}",
            child.pid(),
            String::from_utf8_lossy(&back)
        );
    }
    Ok(child)
}

async fn read_all(stream: &TcpStream) -> Result<Vec<u8>> {
    let mut all = Vec::new();
    loop {
        let chunk = stream.bytes().read(64 * 1024).await?;
        if chunk.is_empty() {
            return Ok(all);
        }
        all.extend_from_slice(&chunk);
    }
}

async fn check(child: &Process, expect: Expect) -> Result<()> {
    let status = child.wait().await?;
    ensure!(
        expect.matches(&status),
        "stress: pid {} ended {status}, expected {expect:?}",
        child.pid()
    );
    Ok(())
}
