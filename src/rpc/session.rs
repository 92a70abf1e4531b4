//! `Session`: a process's bootstrap capability, handing out exactly what it was granted.

use capnp::capability::Rc;

use crate::cell_capnp::session;
use crate::grants::Grants;
use crate::rpc::executor::ExecutorServer;
use crate::rpc::network::NetCaps;
use crate::rpc::stream::ByteStreamServer;
use crate::rpc::{failed, CallGate};
use crate::supervisor::Supervisor;
use crate::table::Pid;

pub struct SessionServer {
    sup: Supervisor,
    pid: Pid,
    grants: Grants,
    /// This connection's network context: issues (and later recognises) Network and sockets.
    net: NetCaps,
    /// The bound on this connection's calls in progress, shared with every cap issued on it.
    gate: CallGate,
}

impl SessionServer {
    pub fn new(sup: Supervisor, pid: Pid, grants: Grants, net: NetCaps, gate: CallGate) -> Self {
        SessionServer {
            sup,
            pid,
            grants,
            net,
            gate,
        }
    }

    fn not_granted(what: &str) -> capnp::Error {
        failed("not-granted", what)
    }
}

impl session::Server for SessionServer {
    async fn info(
        self: Rc<Self>,
        _: session::InfoParams,
        mut results: session::InfoResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let info = self
            .sup
            .info(self.pid)
            .ok_or_else(|| failed("dead", format!("process {} has exited", self.pid)))?;
        let mut out = results.get().init_info();
        out.set_pid(info.pid);
        out.set_parent(info.parent.unwrap_or(0));
        out.set_depth(info.depth);
        let names = self.grants.names();
        let mut list = out.init_grants(names.len() as u32);
        for (i, name) in names.iter().enumerate() {
            list.set(i as u32, *name);
        }
        Ok(())
    }

    async fn executor(
        self: Rc<Self>,
        _: session::ExecutorParams,
        mut results: session::ExecutorResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        if !self.grants.executor {
            return Err(Self::not_granted("executor"));
        }
        results
            .get()
            .set_executor(capnp_rpc::new_client(ExecutorServer::new(
                self.sup.clone(),
                self.pid,
                self.net.clone(),
                self.gate.clone(),
            )));
        Ok(())
    }

    async fn network(
        self: Rc<Self>,
        _: session::NetworkParams,
        mut results: session::NetworkResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let policy = self
            .grants
            .network
            .clone()
            .ok_or_else(|| Self::not_granted("network"))?;
        results.get().set_network(self.net.network(policy));
        Ok(())
    }

    async fn sockets(
        self: Rc<Self>,
        _: session::SocketsParams,
        mut results: session::SocketsResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let granted = &self.grants.sockets;
        let mut list = results.get().init_sockets(granted.len() as u32);
        for (i, grant) in granted.iter().enumerate() {
            self.net.socket_client(grant, list.reborrow().get(i as u32));
        }
        Ok(())
    }

    async fn terminal(
        self: Rc<Self>,
        _: session::TerminalParams,
        mut results: session::TerminalResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        if !self.grants.terminal {
            return Err(Self::not_granted("terminal"));
        }
        let host = self.sup.host_stdio();
        let mut out = results.get();
        out.set_input(capnp_rpc::new_client(
            ByteStreamServer::reader(host.input()).gated(self.gate.clone()),
        ));
        out.set_output(capnp_rpc::new_client(
            ByteStreamServer::writer(host.output()).gated(self.gate.clone()),
        ));
        Ok(())
    }
}
