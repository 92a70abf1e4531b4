//! `Component`: a component loaded once (`Executor.load`) and spawned from as often as needed,
//! without resending its bytes. Holding one is the right to spawn exactly that program, even
//! without an Executor; granted to a child (`Grants.components`), it is re-issued on the
//! child's connection, so the child's spawns are the child's children.

use std::sync::Arc;

use capnp::capability::Rc as CapRc;

use crate::budget::Taken;
use crate::cell_capnp::component;
use crate::engine::LoadedComponent;
use crate::rpc::conn::Conn;
use crate::rpc::executor::spawn_on;

/// The server of one `Component` capability, issued on `conn` (the connection of the process
/// whose children its spawns are).
pub(crate) struct ComponentServer {
    component: Arc<LoadedComponent>,
    conn: Conn,
    /// One of the holder's `MAX_COMPONENTS_HELD` slots, given back when the capability goes.
    _slot: Taken,
}

impl ComponentServer {
    pub(crate) fn new(component: Arc<LoadedComponent>, conn: Conn, slot: Taken) -> Self {
        ComponentServer {
            component,
            conn,
            _slot: slot,
        }
    }

    /// The loaded component behind this capability.
    pub(crate) fn component(&self) -> &Arc<LoadedComponent> {
        &self.component
    }
}

impl component::Server for ComponentServer {
    async fn spawn(
        self: CapRc<Self>,
        params: component::SpawnParams,
        mut results: component::SpawnResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        self.conn.ensure_running()?;
        let spawned = spawn_on(
            &self.conn,
            params.get()?.get_request()?,
            Some(self.component.clone()),
        );
        let process = spawned.await?;
        results.get().set_process(process);
        Ok(())
    }

    async fn hash(
        self: CapRc<Self>,
        _: component::HashParams,
        mut results: component::HashResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        results
            .get()
            .set_sha256(self.component.hash.to_string().as_str());
        Ok(())
    }
}
