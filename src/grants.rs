//! `Grants`: the whole authority of one process, beyond pure computation.
//!
//! Deny by default, said once: `Grants::default()` grants nothing. A process receives only what
//! its parent names in `SpawnRequest.grants` (for pid0: what the operator names on the command
//! line), and a parent can only pass on what it holds.
//!
//! Directories ([`DirGrant`]) are granted by the operator to pid0 only: `SpawnRequest` has no
//! field for them, so children never see a host directory.

pub(crate) use crate::hostfiles::DirGrant;
use std::rc::Rc;

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
    /// Host directories preopened in the process's WASI filesystem (`--dir`, `--dir-rw`; pid0
    /// only). Default: none.
    pub dirs: Vec<DirGrant>,
    /// Loaded components it may spawn (`Session.components`), even without an Executor: each
    /// is re-issued on its own connection. Default: none.
    pub components: Vec<Rc<LoadedComponent>>,
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
        if !self.components.is_empty() {
            names.push("components");
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
