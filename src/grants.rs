//! `Grants`: the whole authority of one process, beyond pure computation.
//!
//! Deny by default, said once: `Grants::default()` grants nothing. A process receives only what
//! its parent names in `SpawnRequest.grants` (for pid0: what the operator names on the command
//! line), and a parent can only pass on what it holds.
//!
//! Directories are handles ([`GrantedDir`]): pid0's come from the operator's `--dir` flags
//! ([`DirGrant`], opened once before pid0 starts); a child's are directories its parent holds,
//! possibly narrowed, passed in `Grants.dirs`.

pub(crate) use crate::hostdir::GrantedDir;
pub(crate) use crate::hostfiles::DirGrant;
use std::rc::Rc;
use std::sync::Arc;

use crate::engine::LoadedComponent;
use crate::net::policy::NetPolicy;
use crate::net::socket::SocketGrant;

/// What one process may do through its `Session`.
#[derive(Clone, Debug, Default)]
pub struct Grants {
    /// May spawn children (an `Executor`). Default: no — a guest cannot start code.
    pub executor: bool,
    /// The operator's terminal as ByteStreams (`--tty`, pid0 only). Default: no.
    pub terminal: bool,
    /// The network policy of its `Network`, applied to RPC sockets and to its own
    /// `wasi:sockets` alike. Default: none — no sockets of any kind, no DNS.
    pub network: Option<NetPolicy>,
    /// Open sockets handed over by the parent (`Session.sockets`). Default: none.
    pub sockets: Vec<SocketGrant>,
    /// Host directories preopened in the process's WASI filesystem (pid0: `--dir`,
    /// `--dir-rw`; a child: `Grants.dirs`), and listed by `Session.dirs`. Default: none.
    pub dirs: Vec<GrantedDir>,
    /// Loaded components it may spawn (`Session.components`), even without an Executor: each
    /// is re-issued on its own connection. Default: none.
    pub components: Vec<Arc<LoadedComponent>>,
    /// Components of a daemon client, by reference (`JobRequest.components`: a `cell run
    /// --remote` host passing on those its child was granted), listed after `components`:
    /// spawning from one is a call proxied back to the client, so the child runs there.
    /// They cannot be passed on in `Grants.components` (they are not this host's). Default:
    /// none.
    pub proxied_components: Vec<GuestService>,
    /// Services of other guests it may call (`Session.services`), each re-issued on its own
    /// connection. Default: none.
    pub services: Vec<GuestService>,
    /// Other machines' daemons it may spawn on (`Session.remotes`, pid0's `--remote`).
    /// Default: none.
    pub remotes: Vec<Rc<crate::remote::RemoteLink>>,
}

/// A capability a guest serves (its RPC bootstrap), named for the process it is granted to.
#[derive(Clone)]
pub struct GuestService {
    /// The name the granting parent gave it.
    pub name: String,
    /// The serving process's bootstrap, on its RPC connection.
    pub target: capnp::capability::Client,
    /// Who serves it: calls fail with `dead` once it has ended.
    pub owner: ServiceOwner,
    /// Whether the serving side's connection is over (a process may not be reaped yet).
    pub gone: Rc<dyn Fn() -> bool>,
}

/// Who serves a [`GuestService`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServiceOwner {
    /// A process of this host, by pid.
    Process(u32),
    /// A daemon client, over its connection (`JobRequest.services`: a `cell run --remote`
    /// host passing on a service its child was granted), named by its identity.
    Client(Arc<str>),
    /// A process on a remote node (`Process.service` of a remote child), over the link.
    Remote { node: Arc<str>, pid: u32 },
    /// A process on another shard of this run (`cell run --shards N`), over a service link
    /// from that shard: it has ended once the link is gone.
    OtherShard(u32),
}

impl std::fmt::Display for ServiceOwner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServiceOwner::Process(pid) | ServiceOwner::OtherShard(pid) => {
                write!(f, "process {pid}")
            }
            ServiceOwner::Client(who) => write!(f, "the connection of client {who}"),
            ServiceOwner::Remote { node, pid } => write!(f, "process {pid} on remote {node}"),
        }
    }
}

impl std::fmt::Debug for GuestService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "service {:?} of {}", self.name, self.owner)
    }
}

impl Grants {
    /// Names of the granted capabilities, as `Session.info` reports them.
    pub fn names(&self) -> Vec<&'static str> {
        let mut names = Vec::new();
        if self.executor {
            names.push("executor");
        }
        if self.terminal {
            names.push("terminal");
        }
        if self.network.is_some() {
            names.push("network");
        }
        if !self.sockets.is_empty() {
            names.push("sockets");
        }
        if !self.dirs.is_empty() {
            names.push("dirs");
        }
        if !self.components.is_empty() || !self.proxied_components.is_empty() {
            names.push("components");
        }
        if !self.services.is_empty() {
            names.push("services");
        }
        if !self.remotes.is_empty() {
            names.push("remotes");
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_grants_nothing() {
        assert!(Grants::default().names().is_empty());
    }
}
