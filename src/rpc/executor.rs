//! `Executor`: spawning children. The request is read and checked here; the supervisor does
//! the spawning.

use std::sync::Arc;
use std::time::Duration;

use capnp::capability::Rc;

use crate::cell_capnp::{executor, spawn_request, ProcessMode, StderrMode as WireStderr};
use crate::grants::Grants;
use crate::limits::{LimitRequest, MAX_ARGV_ENV_BYTES, MAX_ARGV_ENV_ENTRIES};
use crate::rpc::network::{NetCaps, NetGrantRequest};
use crate::rpc::process::ProcessServer;
use crate::rpc::{failed, CallGate};
use crate::supervisor::{ProcessSpec, SpawnError, StderrMode, StdioMode, Supervisor};
use crate::table::Pid;
use crate::text::guest_text;

pub struct ExecutorServer {
    sup: Supervisor,
    /// The process this executor belongs to: the parent of everything it spawns.
    owner: Pid,
    /// The owner's network context, to recognise the Network and sockets it grants.
    net: NetCaps,
    /// The owner's connection's call bound, passed on to the Process caps it hands out.
    gate: CallGate,
}

impl ExecutorServer {
    pub fn new(sup: Supervisor, owner: Pid, net: NetCaps, gate: CallGate) -> Self {
        ExecutorServer {
            sup,
            owner,
            net,
            gate,
        }
    }
}

fn spawn_error(e: SpawnError) -> capnp::Error {
    failed(e.reason(), e)
}

/// The parts of a spawn request, copied out of the message.
struct SpawnArgs {
    wasm: Arc<[u8]>,
    spec: ProcessSpec,
    limits: LimitRequest,
}

/// Counts what a child's argv and environment will hold in the host, refusing past
/// [`MAX_ARGV_ENV_BYTES`] / [`MAX_ARGV_ENV_ENTRIES`] before anything more is copied.
struct ArgvBudget {
    bytes: usize,
    entries: usize,
}

impl ArgvBudget {
    fn take(&mut self, len: usize) -> capnp::Result<()> {
        self.bytes += len;
        self.entries += 1;
        if self.bytes > MAX_ARGV_ENV_BYTES || self.entries > MAX_ARGV_ENV_ENTRIES {
            return Err(failed(
                "limit",
                format!(
                    "args and env exceed {MAX_ARGV_ENV_BYTES} bytes or {MAX_ARGV_ENV_ENTRIES} entries"
                ),
            ));
        }
        Ok(())
    }
}

fn read_request(req: spawn_request::Reader<'_>) -> capnp::Result<SpawnArgs> {
    let name = req.get_name()?.to_str()?;
    // Names reach logs, the report and `ps`: bounded and escaped (see `crate::text`).
    let name = if name.is_empty() {
        "child".to_string()
    } else {
        guest_text(name)
    };
    let mut budget = ArgvBudget {
        bytes: 0,
        entries: 0,
    };
    let args = req
        .get_args()?
        .iter()
        .map(|a| {
            let a = a?;
            budget.take(a.len())?;
            Ok(a.to_str()?.to_string())
        })
        .collect::<capnp::Result<Vec<_>>>()?;
    let env = req
        .get_env()?
        .iter()
        .map(|kv| {
            let (k, v) = (kv.get_key()?, kv.get_value()?);
            budget.take(k.len() + v.len())?;
            Ok((k.to_string()?, v.to_string()?))
        })
        .collect::<capnp::Result<Vec<_>>>()?;
    let grants_in = req.get_grants()?;
    // The terminal and host directories are pid0's alone: a child never receives them.
    let grants = Grants {
        executor: grants_in.get_executor(),
        ..Grants::default()
    };
    let stderr = match req.get_stderr()? {
        WireStderr::Forward => StderrMode::Forward,
        WireStderr::Capture => StderrMode::Capture,
        WireStderr::Discard => StderrMode::Discard,
    };
    let stdio = match req.get_mode()? {
        ProcessMode::Rpc => StdioMode::Rpc,
        ProcessMode::Plain => StdioMode::Plain,
    };
    let l = req.get_limits()?;
    let nonzero = |v: u64| (v != 0).then_some(v);
    let limits = LimitRequest {
        max_memory: nonzero(l.get_max_memory_bytes()),
        timeout: nonzero(l.get_timeout_ms()).map(Duration::from_millis),
        fuel: nonzero(l.get_fuel()),
        max_procs: (l.get_max_procs() != 0).then_some(l.get_max_procs()),
        max_depth: (l.get_max_depth() != 0).then_some(l.get_max_depth()),
    };
    Ok(SpawnArgs {
        wasm: Arc::from(req.get_wasm()?),
        spec: ProcessSpec {
            name,
            args,
            env,
            grants,
            stderr,
            stdio,
        },
        limits,
    })
}

impl executor::Server for ExecutorServer {
    async fn spawn(
        self: Rc<Self>,
        params: executor::SpawnParams,
        mut results: executor::SpawnResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        self.sup.ensure_running(self.owner).map_err(spawn_error)?;
        let request = params.get()?.get_request()?;
        let mut args = read_request(request)?;
        let net_grants = NetGrantRequest::read(request.get_grants()?)?;
        drop(params);
        // The child's network is the policy of a Network this process was issued (a new server
        // with the same policy is made for the child), never a guest-made object.
        let (network, sockets) = self.net.resolve_grants(net_grants).await?;
        args.spec.grants.network = network;
        args.spec.grants.sockets = sockets;
        let handle = self
            .sup
            .spawn_child(self.owner, args.wasm, args.spec, &args.limits)
            .await
            .map_err(spawn_error)?;
        results
            .get()
            .set_process(capnp_rpc::new_client(ProcessServer::new(
                handle,
                self.gate.clone(),
                self.net.in_flight().clone(),
            )));
        Ok(())
    }

    async fn echo(
        self: Rc<Self>,
        params: executor::EchoParams,
        mut results: executor::EchoResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        self.sup.ensure_running(self.owner).map_err(spawn_error)?;
        let message = params.get()?.get_message()?;
        results.get().set_response(message);
        Ok(())
    }
}
