//! `Session`: a process's bootstrap capability, handing out exactly what it was granted.

use capnp::capability::Rc;

use crate::cell_capnp::session;
use crate::grants::Grants;
use crate::rpc::executor::ExecutorServer;
use crate::rpc::{failed, CallGate};
use crate::supervisor::Supervisor;
use crate::table::Pid;

pub struct SessionServer {
    sup: Supervisor,
    pid: Pid,
    grants: Grants,
    /// The bound on this connection's calls in progress, shared with every cap issued on it.
    gate: CallGate,
}

impl SessionServer {
    pub fn new(sup: Supervisor, pid: Pid, grants: Grants, gate: CallGate) -> Self {
        SessionServer {
            sup,
            pid,
            grants,
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
                self.gate.clone(),
            )));
        Ok(())
    }

    async fn network(
        self: Rc<Self>,
        _: session::NetworkParams,
        _: session::NetworkResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        Err(Self::not_granted("network"))
    }

    async fn sockets(
        self: Rc<Self>,
        _: session::SocketsParams,
        mut results: session::SocketsResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        results.get().init_sockets(0);
        Ok(())
    }

    async fn terminal(
        self: Rc<Self>,
        _: session::TerminalParams,
        _: session::TerminalResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        Err(Self::not_granted("terminal"))
    }
}
