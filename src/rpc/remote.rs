//! `Remote.executor`: spawning children on another machine's `cell serve` (see
//! `crate::remote` for the link and its loss).
//!
//! A remote spawn is a `Daemon.run` on the node: the request's code, name, args, env, mode and
//! limits become a `JobRequest` started `attached` (the node kills it when this host's
//! connection ends), so the child is the pid0 of a job there, within the node's ceiling for
//! this host's certificate. Grants: the child's Network is the policy of a Network this process
//! holds, re-issued by the node as its intersection with the node's ceiling (sockets are opened
//! where the child runs). Services cross by reference: each is re-issued as a proxy of this
//! process's (`JobRequest.services`), so the child's calls come back over the link and count
//! against this process's call bounds, and the node proxies them again under the child's.
//! Components cross by reference as well (`JobRequest.components`): each is a `Component`
//! issued on this process's connection (one of its `MAX_COMPONENTS_HELD` slots while the node
//! holds it), so a child the remote child spawns from it is a call back over the link and
//! runs *here*, a child of this process, within its limits — where the component is. (To run
//! code there, a child is granted that node's Executor instead.) Directories and sockets are
//! refused with `bad-grant: …`: they are this machine's and would have to be proxied byte by
//! byte.
//!
//! Limits are the node's: a value asked above its ceiling is refused there (`limit: …`),
//! zero means its ceiling's; this host's `max-procs` and fuel do not count remote children
//! (they run on the node's CPU and memory). What this host holds per remote child: one
//! [`RemoteChild`] (its `Job` capability, a status watch, one `wait` in flight on the link) and
//! at most one stderr forwarder, for at most [`MAX_REMOTE_CHILDREN`] live children per process
//! and remote; more are refused with `limit: …`.

use std::cell::RefCell;
use std::rc::Rc as StdRc;

use capnp::capability::Rc;
use cell_proto::{JobCode, JobLimits, JobRequest, Reason, ServiceGrant};

use crate::budget::Budget;
use crate::cell_capnp::{executor, job, JobMode};
use crate::remote::RemoteLink;
use crate::rpc::conn::Conn;
use crate::rpc::executor::read_request;
use crate::rpc::fail::failed;
use crate::rpc::remote_child::{RemoteChild, RemoteProcessServer};
use crate::spec::{StderrMode, StdioMode};

/// Live remote children one process may have on one remote at once.
pub(crate) const MAX_REMOTE_CHILDREN: usize = 1024;

/// One process's `Executor` on one remote node.
pub(crate) struct RemoteExecutor {
    link: StdRc<RemoteLink>,
    conn: Conn,
    children: StdRc<Children>,
}

/// The remote children of one process on one node: killed when it ends (the capability is
/// dropped with its connection), which is the cascade; the node's `attached` kill covers the
/// case where this host itself goes.
struct Children {
    live: RefCell<Vec<StdRc<RemoteChild>>>,
    held: Budget,
}

impl Drop for Children {
    fn drop(&mut self) {
        for child in self.live.borrow_mut().drain(..) {
            child.cascade();
        }
    }
}

impl RemoteExecutor {
    pub(crate) fn new(link: StdRc<RemoteLink>, conn: Conn) -> Self {
        RemoteExecutor {
            link,
            conn,
            children: StdRc::new(Children {
                live: RefCell::default(),
                held: Budget::new(MAX_REMOTE_CHILDREN),
            }),
        }
    }

    /// `dead: …` once the link is lost, else the node's `Daemon`.
    fn daemon(&self) -> Result<crate::cell_capnp::daemon::Client, capnp::Error> {
        self.link.daemon().map_err(|why| {
            failed(
                Reason::Dead,
                format!(
                    "remote {} ({}): link lost: {why}",
                    self.link.name, self.link.addr
                ),
            )
        })
    }
}

/// `bad-grant: …` for what never crosses to another node.
fn refuse(what: &str, node: &str) -> capnp::Error {
    failed(
        Reason::BadGrant,
        format!("{what} cannot be granted to a child on remote {node}: they stay on this machine"),
    )
}

/// A node's answer as the caller's error: the node's own `REASON: DETAIL` (re-issued here, so
/// the caller reads one `REASON`, not the node's wrapped in this hop's), or `dead` when the
/// link failed under the call.
pub(crate) fn node_error(link: &RemoteLink, e: capnp::Error) -> capnp::Error {
    match e.kind {
        capnp::ErrorKind::Disconnected => failed(
            Reason::Dead,
            format!(
                "remote {} ({}): link lost: {}",
                link.name, link.addr, e.extra
            ),
        ),
        _ => cell_proto::CellError::from(e).into(),
    }
}

impl executor::Server for RemoteExecutor {
    async fn spawn(
        self: Rc<Self>,
        params: executor::SpawnParams,
        mut results: executor::SpawnResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let daemon = self.daemon()?;
        let node = self.link.name.as_str();
        let held = self.children.held.take(1).ok_or_else(|| {
            failed(
                Reason::Limit,
                format!("at most {MAX_REMOTE_CHILDREN} live children on remote {node}"),
            )
        })?;
        let (request, spec) = read_request(params.get()?.get_request()?, true)?;
        let grants = &request.grants;
        if !grants.dirs.is_empty() {
            return Err(refuse("directories", node));
        }
        if !grants.sockets.is_empty() {
            return Err(refuse("sockets", node));
        }
        // The Network must be one this process holds; its policy is what the node narrows.
        // Exactly what the parent granted: no Executor there unless it gave one.
        let executor = request.grants.executor;
        let resolved = self.conn.resolve_grants(request.grants).await?;
        let mut job = JobRequest::new(JobCode::Wasm(request.wasm));
        job.name = spec.name.clone();
        job.args = spec.args;
        job.env = spec.env;
        job.network = resolved.network.map(|p| p.rules().to_vec());
        job.without_executor = !executor;
        // Services cross by reference: the node calls back through a proxy of this
        // process's, so the remote child's calls count against this process's call bounds.
        job.services = resolved
            .services
            .into_iter()
            .map(|service| ServiceGrant {
                name: service.name.clone(),
                service: self.conn.service(service),
            })
            .collect();
        // Components cross by reference too: spawning from one there is a call back to a
        // `Component` of this process (one of its held slots each), so the child runs here.
        job.components = resolved
            .components
            .into_iter()
            .map(|c| self.conn.component(c))
            .collect::<Result<_, _>>()?;
        job.limits = JobLimits {
            max_memory: request.limits.max_memory,
            timeout_ms: request
                .limits
                .timeout
                .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            fuel: request.limits.fuel,
            max_procs: request.limits.max_procs,
            max_depth: request.limits.max_depth,
            ..JobLimits::default()
        };
        job.mode = match spec.stdio {
            StdioMode::Plain => JobMode::Plain,
            _ => JobMode::Rpc,
        };
        job.attached = true;
        let mut call = daemon.run_request();
        job.write(call.get().init_request())?;
        let reply = call
            .send()
            .promise
            .await
            .map_err(|e| node_error(&self.link, e))?;
        let remote: job::Client = reply.get()?.get_job()?;
        let pid = remote
            .pid_request()
            .send()
            .promise
            .await
            .map_err(|e| node_error(&self.link, e))?
            .get()?
            .get_pid();
        let captured = matches!(spec.stderr, StderrMode::Capture);
        let child = RemoteChild::start(remote, pid, self.link.clone(), held);
        if matches!(spec.stderr, StderrMode::Forward) {
            child.forward_stderr(format!("[{node}:pid {pid}] "));
        }
        {
            let mut live = self.children.live.borrow_mut();
            live.retain(|c| !c.ended());
            live.push(child.clone());
        }
        tracing::info!(remote = node, pid, "spawned {} on remote {node}", spec.name);
        let server = RemoteProcessServer::new(child, self.conn.clone(), captured);
        results.get().set_process(capnp_rpc::new_client(server));
        Ok(())
    }

    async fn load(
        self: Rc<Self>,
        _: executor::LoadParams,
        _: executor::LoadResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        Err(failed(
            Reason::Unsupported,
            format!(
                "Executor.load on remote {}: spawn with the wasm bytes instead",
                self.link.name
            ),
        ))
    }

    async fn echo(
        self: Rc<Self>,
        params: executor::EchoParams,
        mut results: executor::EchoResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        // Answered by the node: a round trip over the link (the remote-echo bench row).
        let daemon = self.daemon()?;
        let message = params.get()?.get_message()?.to_str()?.to_string();
        daemon
            .ping_request()
            .send()
            .promise
            .await
            .map_err(|e| node_error(&self.link, e))?;
        results.get().set_response(message.as_str());
        Ok(())
    }
}
