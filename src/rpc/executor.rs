//! `Executor`: spawning children. The request is read and checked here; the supervisor does
//! the spawning.

use std::sync::Arc;

use capnp::capability::Rc;
use cell_proto::{CellError, ReadBounds, SpawnRequest};

use crate::cell_capnp::{executor, process, spawn_request, ProcessMode, StderrMode as WireStderr};
use crate::engine::LoadedComponent;
use crate::grants::Grants;
use crate::limits::{MAX_ARGV_ENV_BYTES, MAX_ARGV_ENV_ENTRIES};
use crate::net::audit::AuditEvent;
use crate::rpc::conn::Conn;
use crate::rpc::fail::failed;
use crate::rpc::process::ProcessServer;
use crate::spec::{Code, ProcessSpec, SpawnError, StderrMode, StdioMode};
use crate::text::{guest_text, GUEST_TEXT_MAX};

/// Spawns children of the process whose connection `conn` is (the parent of everything it
/// spawns); recognises the capabilities that process grants through `conn`.
pub(crate) struct ExecutorServer {
    conn: Conn,
}

impl ExecutorServer {
    pub(crate) fn new(conn: Conn) -> Self {
        ExecutorServer { conn }
    }
}

fn spawn_error(e: SpawnError) -> capnp::Error {
    failed(e.reason(), e)
}

/// A spawn request as read from the wire, owning its wasm.
type WireRequest = SpawnRequest<Arc<[u8]>>;

/// The request as the wire crate reads it (args and env bounded by
/// [`MAX_ARGV_ENV_BYTES`] / [`MAX_ARGV_ENV_ENTRIES`] before they are copied), the parts that
/// are not capabilities turned into a [`ProcessSpec`].
pub(crate) fn read_request(
    req: spawn_request::Reader<'_>,
    with_wasm: bool,
) -> Result<(WireRequest, ProcessSpec), CellError> {
    // `Component.spawn` ignores the request's wasm: it is not even copied.
    let mut request = WireRequest::read(
        req,
        ReadBounds {
            argv_env_bytes: MAX_ARGV_ENV_BYTES,
            argv_env_entries: MAX_ARGV_ENV_ENTRIES,
            // `guest_text` keeps far less; this only avoids copying a huge name first.
            name_bytes: 4 * GUEST_TEXT_MAX,
            with_wasm,
        },
    )?;
    // Names reach logs, the report and `ps`: bounded and escaped (see `crate::text`).
    let name = if request.name.is_empty() {
        "child".to_string()
    } else {
        guest_text(&request.name)
    };
    let spec = ProcessSpec {
        name,
        args: std::mem::take(&mut request.args),
        env: std::mem::take(&mut request.env),
        // The terminal is pid0's alone; capabilities are resolved by `spawn_on`.
        grants: Grants {
            executor: request.grants.executor,
            ..Grants::default()
        },
        stderr: match request.stderr {
            WireStderr::Forward => StderrMode::Forward,
            WireStderr::Capture => StderrMode::Capture,
            WireStderr::Discard => StderrMode::Discard,
        },
        stdio: match request.mode {
            ProcessMode::Rpc => StdioMode::Rpc,
            ProcessMode::Plain => StdioMode::Plain,
        },
        // A child starts at the root of its filesystem view (its preopens).
        cwd: None,
    };
    Ok((request, spec))
}

/// The shared body of `Executor.spawn` and `Component.spawn`: read the request (its wasm is
/// the code unless `loaded` is given), resolve the grants on `conn`, spawn a child of `conn`'s
/// process, and hand back its `Process`, issued on `conn`.
pub(crate) async fn spawn_on(
    conn: &Conn,
    request: spawn_request::Reader<'_>,
    loaded: Option<Arc<LoadedComponent>>,
) -> Result<process::Client, capnp::Error> {
    let (request, mut spec) = read_request(request, loaded.is_none())?;
    // The child's network is the policy of a Network this process was issued (a new server
    // with the same policy is made for the child), never a guest-made object; likewise its
    // sockets and components.
    let resolved = conn.resolve_grants(request.grants).await?;
    spec.grants.network = resolved.network;
    spec.grants.sockets = resolved.sockets;
    spec.grants.components = resolved.components;
    spec.grants.dirs = resolved.dirs;
    spec.grants.services = resolved.services;
    let code = match loaded {
        Some(component) => Code::Loaded(component),
        None => Code::Bytes(request.wasm),
    };
    let dirs = spec.grants.dirs.clone();
    let handle = conn
        .host()
        .spawn_child(conn.pid(), code, spec, request.limits)
        .await
        .map_err(spawn_error)?;
    for granted in &dirs {
        let rule = format!(
            "{} {} (from pid {})",
            granted.dir.rights(),
            granted.dir.shown().display(),
            conn.pid()
        );
        conn.audit().event(AuditEvent::directory(
            handle.pid,
            "dir",
            &granted.guest,
            Ok(rule),
        ));
    }
    Ok(capnp_rpc::new_client(ProcessServer::new(
        handle,
        conn.clone(),
    )))
}

impl executor::Server for ExecutorServer {
    async fn spawn(
        self: Rc<Self>,
        params: executor::SpawnParams,
        mut results: executor::SpawnResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        self.conn.ensure_running()?;
        // The request's parts are copied out before anything waits (`read_request`).
        let spawned = spawn_on(&self.conn, params.get()?.get_request()?, None);
        let process = spawned.await?;
        results.get().set_process(process);
        Ok(())
    }

    async fn load(
        self: Rc<Self>,
        params: executor::LoadParams,
        mut results: executor::LoadResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        self.conn.ensure_running()?;
        let wasm: Arc<[u8]> = Arc::from(params.get()?.get_wasm()?);
        drop(params);
        let component = self
            .conn
            .host()
            .load(self.conn.pid(), wasm)
            .await
            .map_err(spawn_error)?;
        results.get().set_component(self.conn.component(component)?);
        Ok(())
    }

    async fn echo(
        self: Rc<Self>,
        params: executor::EchoParams,
        mut results: executor::EchoResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        self.conn.ensure_running()?;
        let message = params.get()?.get_message()?;
        results.get().set_response(message);
        Ok(())
    }
}
