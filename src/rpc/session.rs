//! `Session`: a process's bootstrap capability, handing out exactly what it was granted.

use std::cell::RefCell;

use capnp::capability::Rc;

use crate::cell_capnp::{byte_stream, component, directory, executor, network, session};
use crate::grants::Grants;
use crate::rpc::conn::Conn;
use crate::rpc::executor::ExecutorServer;
use crate::rpc::fail::failed;
use crate::rpc::remote::RemoteExecutor;
use crate::rpc::stream::ByteStreamServer;
use cell_proto::Reason;

pub(crate) struct SessionServer {
    /// This process's connection: its pid, bounds, and the capabilities issued on it.
    conn: Conn,
    grants: Grants,
    /// Each capability is made once and handed out again on every later call, so a guest
    /// calling `network()` a million times holds one server (and one copy of its policy), not
    /// a million; and one pipe never gets two competing readers (`terminal()`).
    issued: Issued,
}

#[derive(Default)]
struct Issued {
    executor: RefCell<Option<executor::Client>>,
    network: RefCell<Option<network::Client>>,
    terminal: RefCell<Option<(byte_stream::Client, byte_stream::Client)>>,
    components: RefCell<Option<Vec<component::Client>>>,
    dirs: RefCell<Option<Vec<directory::Client>>>,
    services: RefCell<Option<Vec<capnp::capability::Client>>>,
    remotes: RefCell<Option<Vec<executor::Client>>>,
}

/// The client in `slot`, made by `make` the first time.
fn once<C: Clone>(slot: &RefCell<Option<C>>, make: impl FnOnce() -> C) -> C {
    slot.borrow_mut().get_or_insert_with(make).clone()
}

/// The clients in `slot`, made by `make` the first time it succeeds (each may take one of a
/// bounded number of slots, so a failure is not cached).
fn once_try<C: Clone>(
    slot: &RefCell<Option<Vec<C>>>,
    make: impl FnOnce() -> Result<Vec<C>, capnp::Error>,
) -> Result<Vec<C>, capnp::Error> {
    if let Some(made) = slot.borrow().as_ref() {
        return Ok(made.clone());
    }
    let made = make()?;
    *slot.borrow_mut() = Some(made.clone());
    Ok(made)
}

impl SessionServer {
    pub(crate) fn new(conn: Conn, grants: Grants) -> Self {
        SessionServer {
            conn,
            grants,
            issued: Issued::default(),
        }
    }

    /// `not-granted: network (…)`, naming what would grant it: for pid0 the flag, for a child
    /// its parent.
    fn not_granted(&self, what: &str) -> capnp::Error {
        let how = match (self.conn.pid(), what) {
            (0, "network") => "start cell with --net RULE, e.g. --net connect=example.com:443",
            (0, "terminal") => "start cell with --tty",
            (0, _) => "cell grants pid0 an executor only in RPC mode",
            (_, "terminal") => "only pid0 can hold the terminal",
            _ => "its parent did not grant it",
        };
        failed(Reason::NotGranted, format!("{what} ({how})"))
    }
}

impl session::Server for SessionServer {
    async fn info(
        self: Rc<Self>,
        _: session::InfoParams,
        mut results: session::InfoResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let pid = self.conn.pid();
        let info = self
            .conn
            .host()
            .info(pid)
            .ok_or_else(|| failed(Reason::Dead, format!("process {pid} has exited")))?;
        let wire = cell_proto::Info {
            pid: info.pid,
            parent: info.parent.unwrap_or(0),
            depth: info.depth,
            grants: self.grants.names().iter().map(|n| n.to_string()).collect(),
        };
        Ok(wire.write(results.get().init_info())?)
    }

    async fn executor(
        self: Rc<Self>,
        _: session::ExecutorParams,
        mut results: session::ExecutorResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        if !self.grants.executor {
            return Err(self.not_granted("executor"));
        }
        let executor = once(&self.issued.executor, || {
            capnp_rpc::new_client(ExecutorServer::new(self.conn.clone()))
        });
        results.get().set_executor(executor);
        Ok(())
    }

    async fn network(
        self: Rc<Self>,
        _: session::NetworkParams,
        mut results: session::NetworkResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let policy = self
            .grants
            .network
            .as_ref()
            .ok_or_else(|| self.not_granted("network"))?;
        let network = once(&self.issued.network, || self.conn.network(policy.clone()));
        results.get().set_network(network);
        Ok(())
    }

    async fn sockets(
        self: Rc<Self>,
        _: session::SocketsParams,
        mut results: session::SocketsResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let granted = &self.grants.sockets;
        let mut list = results.get().init_sockets(granted.len() as u32);
        for (i, grant) in granted.iter().enumerate() {
            self.conn
                .socket_client(grant, list.reborrow().get(i as u32));
        }
        Ok(())
    }

    async fn components(
        self: Rc<Self>,
        _: session::ComponentsParams,
        mut results: session::ComponentsResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let clients = once_try(&self.issued.components, || {
            let proxied = self.grants.proxied_components.iter().map(|c| {
                Ok(component::Client {
                    client: self.conn.service(c.clone()),
                })
            });
            self.grants
                .components
                .iter()
                .map(|c| self.conn.component(c.clone()))
                .chain(proxied)
                .collect()
        })?;
        let mut list = results.get().init_components(clients.len() as u32);
        for (i, c) in clients.iter().enumerate() {
            list.set(i as u32, c.client.hook.add_ref());
        }
        Ok(())
    }

    async fn dirs(
        self: Rc<Self>,
        _: session::DirsParams,
        mut results: session::DirsResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let clients = once_try(&self.issued.dirs, || {
            self.grants
                .dirs
                .iter()
                .map(|d| self.conn.directory(d.dir.clone()))
                .collect()
        })?;
        let mut list = results.get().init_dirs(clients.len() as u32);
        for (i, (client, granted)) in clients.iter().zip(&self.grants.dirs).enumerate() {
            let mut entry = list.reborrow().get(i as u32);
            entry.set_path(granted.guest.as_str());
            entry.set_dir(client.clone());
        }
        Ok(())
    }

    async fn services(
        self: Rc<Self>,
        _: session::ServicesParams,
        mut results: session::ServicesResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let granted = &self.grants.services;
        let clients = once(&self.issued.services, || {
            granted
                .iter()
                .map(|s| self.conn.service(s.clone()))
                .collect()
        });
        let mut list = results.get().init_services(clients.len() as u32);
        for (i, (client, grant)) in clients.iter().zip(granted).enumerate() {
            let mut entry = list.reborrow().get(i as u32);
            entry.set_name(grant.name.as_str());
            entry
                .init_service()
                .set_as_capability(client.hook.add_ref());
        }
        Ok(())
    }

    async fn remotes(
        self: Rc<Self>,
        _: session::RemotesParams,
        mut results: session::RemotesResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let granted = &self.grants.remotes;
        let clients = once(&self.issued.remotes, || {
            granted
                .iter()
                .map(|link| {
                    capnp_rpc::new_client(RemoteExecutor::new(link.clone(), self.conn.clone()))
                })
                .collect()
        });
        let mut list = results.get().init_remotes(clients.len() as u32);
        for (i, (client, link)) in clients.iter().zip(granted).enumerate() {
            let mut entry = list.reborrow().get(i as u32);
            entry.set_name(link.name.as_str());
            entry.set_executor(client.clone());
        }
        Ok(())
    }

    async fn terminal(
        self: Rc<Self>,
        _: session::TerminalParams,
        mut results: session::TerminalResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        if !self.grants.terminal {
            return Err(self.not_granted("terminal"));
        }
        let (input, output) = once(&self.issued.terminal, || {
            let host = self.conn.host().host_stdio();
            (
                capnp_rpc::new_client(ByteStreamServer::reader(host.input()).on(&self.conn)),
                capnp_rpc::new_client(ByteStreamServer::writer(host.output()).on(&self.conn)),
            )
        });
        let mut out = results.get();
        out.set_input(input);
        out.set_output(output);
        Ok(())
    }
}
