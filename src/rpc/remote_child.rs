//! A child on a remote node, as its parent sees it: a `Process` like a local child's.
//!
//! [`RemoteChild`] is this host's record of one remote job: its `Job` capability and its
//! final status, learnt by one watcher task that waits on the job *or* on the link's loss,
//! whichever comes first — so `wait` never hangs: a lost node or link ends the child
//! `killed: link-lost` within the link's heartbeat timeout. Once known, the status is kept
//! (a later link loss does not rewrite it). `kill` from the parent is reported as
//! `killed: parent`, as for a local child (the node itself says "operator": it was its client
//! that asked).
//!
//! Streams (`stderr` when captured, a plain child's `stdin`/`stdout`) are the node's, proxied
//! by [`RemoteStream`]: every call enters the parent's call gate, so a guest cannot pipeline
//! more calls onto the link than its `max-outstanding-calls`, and each message stays under
//! its own connection's size bound. A forwarded stderr is read by one task and written line by
//! line, escaped, as `[NODE:pid N] …` on the host's stderr. Its service (`Process.service`)
//! is the node's proxy of it (`Job.service`), proxied again here under the parent's call
//! gate, failing with `dead` once the child has ended or the link is lost.

use std::cell::{Cell, RefCell};
use std::rc::Rc as StdRc;

use capnp::capability::Rc;
use cell_proto::{ExitStatus, Reason};
use tokio::sync::watch;

use crate::budget::Taken;
use crate::cell_capnp::{byte_stream, job, process};
use crate::grants::{GuestService, ServiceOwner};
use crate::remote::RemoteLink;
use crate::rpc::conn::Conn;
use crate::rpc::fail::failed;
use crate::rpc::remote::node_error;
use crate::status::KilledBy;

/// The most a forwarded stderr read asks for.
const STDERR_READ: u32 = 64 * 1024;

/// One remote child (see the module documentation).
pub(crate) struct RemoteChild {
    job: job::Client,
    pid: u32,
    link: StdRc<RemoteLink>,
    status: watch::Sender<Option<ExitStatus>>,
    /// Its parent killed it: the node's "operator" is reported as "parent".
    by_parent: Cell<bool>,
    tasks: RefCell<Vec<tokio::task::JoinHandle<()>>>,
    /// Its place among the parent's live remote children.
    _held: Taken,
}

impl Drop for RemoteChild {
    fn drop(&mut self) {
        for task in self.tasks.borrow_mut().drain(..) {
            task.abort();
        }
    }
}

impl RemoteChild {
    /// Starts watching `job` (pid `pid` on the node of `link`).
    pub(crate) fn start(
        job: job::Client,
        pid: u32,
        link: StdRc<RemoteLink>,
        held: Taken,
    ) -> StdRc<Self> {
        let child = StdRc::new(RemoteChild {
            job: job.clone(),
            pid,
            link: link.clone(),
            status: watch::channel(None).0,
            by_parent: Cell::new(false),
            tasks: RefCell::default(),
            _held: held,
        });
        let weak = StdRc::downgrade(&child);
        let watcher = tokio::task::spawn_local(async move {
            let status = tokio::select! {
                reply = job.wait_request().send().promise => match reply {
                    Ok(reply) => reply
                        .get()
                        .and_then(|r| r.get_status())
                        .and_then(ExitStatus::read)
                        .unwrap_or(ExitStatus::Killed(KilledBy::LinkLost)),
                    Err(_) => ExitStatus::Killed(KilledBy::LinkLost),
                },
                _ = link.lost() => ExitStatus::Killed(KilledBy::LinkLost),
            };
            if let Some(child) = weak.upgrade() {
                child.settle(status);
            }
        });
        child.tasks.borrow_mut().push(watcher);
        child
    }

    fn settle(&self, status: ExitStatus) {
        let status = match status {
            ExitStatus::Killed(KilledBy::Operator) if self.by_parent.get() => {
                ExitStatus::Killed(KilledBy::Parent)
            }
            other => other,
        };
        tracing::info!(
            remote = self.link.name,
            pid = self.pid,
            "remote child {status}"
        );
        self.status.send_if_modified(|s| {
            if s.is_some() {
                return false;
            }
            *s = Some(status);
            true
        });
    }

    /// Whether its status is known.
    pub(crate) fn ended(&self) -> bool {
        self.status.borrow().is_some()
    }

    /// Its final status, once known.
    async fn wait(&self) -> ExitStatus {
        let mut rx = self.status.subscribe();
        let status = match rx.wait_for(Option::is_some).await {
            Ok(s) => s.clone().unwrap_or(ExitStatus::Killed(KilledBy::LinkLost)),
            Err(_) => ExitStatus::Killed(KilledBy::LinkLost),
        };
        status
    }

    /// Kills it for its parent, and waits until it has ended.
    async fn kill(&self) {
        if !self.ended() {
            self.by_parent.set(true);
            let _ = self.job.kill_request().send().promise.await;
        }
        self.wait().await;
    }

    /// Its parent ended: ask the node to kill it, without waiting (the call is sent now).
    pub(crate) fn cascade(&self) {
        if !self.ended() {
            drop(self.job.kill_request().send());
        }
    }

    /// Copies its stderr to the host's, line by line with `prefix`.
    pub(crate) fn forward_stderr(&self, prefix: String) {
        let job = self.job.clone();
        let task = tokio::task::spawn_local(async move {
            let Ok(reply) = job.stderr_request().send().promise.await else {
                return;
            };
            let Ok(stream) = reply.get().and_then(|r| r.get_stream()) else {
                return;
            };
            let mut lines = crate::stderr::lines(prefix);
            loop {
                let mut read = stream.read_request();
                read.get().set_max_bytes(STDERR_READ);
                let Ok(reply) = read.send().promise.await else {
                    return;
                };
                match reply.get().and_then(|r| r.get_data()) {
                    Ok(data) if !data.is_empty() => lines.push(data),
                    _ => return,
                }
            }
        });
        self.tasks.borrow_mut().push(task);
    }
}

/// The `Process` of a remote child, issued on its parent's connection.
pub(crate) struct RemoteProcessServer {
    child: StdRc<RemoteChild>,
    conn: Conn,
    /// Spawned with `stderr = capture`.
    captured: bool,
    /// The proxy of the child's service, made on first use.
    service: RefCell<Option<capnp::capability::Client>>,
}

impl RemoteProcessServer {
    pub(crate) fn new(child: StdRc<RemoteChild>, conn: Conn, captured: bool) -> Self {
        RemoteProcessServer {
            child,
            conn,
            captured,
            service: RefCell::default(),
        }
    }

    fn node_error(&self, e: capnp::Error) -> capnp::Error {
        node_error(&self.child.link, e)
    }

    /// The node's stream, proxied under this connection's bounds.
    fn proxy(&self, stream: byte_stream::Client) -> byte_stream::Client {
        capnp_rpc::new_client(RemoteStream {
            inner: stream,
            conn: self.conn.clone(),
        })
    }
}

impl process::Server for RemoteProcessServer {
    async fn pid(
        self: Rc<Self>,
        _: process::PidParams,
        mut results: process::PidResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        results.get().set_pid(self.child.pid);
        Ok(())
    }

    async fn wait(
        self: Rc<Self>,
        _: process::WaitParams,
        mut results: process::WaitResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let status = self.child.wait().await;
        status.write(results.get().init_status());
        Ok(())
    }

    async fn kill(
        self: Rc<Self>,
        _: process::KillParams,
        _: process::KillResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        self.child.kill().await;
        Ok(())
    }

    async fn stderr(
        self: Rc<Self>,
        _: process::StderrParams,
        mut results: process::StderrResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        if !self.captured {
            return Err(failed(
                Reason::NotCaptured,
                format!(
                    "remote pid {} was not spawned with stderr = capture",
                    self.child.pid
                ),
            ));
        }
        let reply = self.child.job.stderr_request().send().promise.await;
        let stream = reply.map_err(|e| self.node_error(e))?.get()?.get_stream()?;
        results.get().set_stream(self.proxy(stream));
        Ok(())
    }

    async fn stdin(
        self: Rc<Self>,
        _: process::StdinParams,
        mut results: process::StdinResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let reply = self.child.job.stdin_request().send().promise.await;
        let stream = reply.map_err(|e| self.node_error(e))?.get()?.get_stream()?;
        results.get().set_stream(self.proxy(stream));
        Ok(())
    }

    async fn stdout(
        self: Rc<Self>,
        _: process::StdoutParams,
        mut results: process::StdoutResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let reply = self.child.job.stdout_request().send().promise.await;
        let stream = reply.map_err(|e| self.node_error(e))?.get()?.get_stream()?;
        results.get().set_stream(self.proxy(stream));
        Ok(())
    }

    async fn service(
        self: Rc<Self>,
        _: process::ServiceParams,
        mut results: process::ServiceResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let child = &self.child;
        if child.ended() {
            return Err(failed(
                Reason::Dead,
                format!("remote pid {} has exited", child.pid),
            ));
        }
        let cached = self.service.borrow().clone();
        let client = match cached {
            Some(client) => client,
            None => {
                // The node's proxy of the child's service (under this host's connection
                // there), proxied again here under this process's call gate.
                let reply = child.job.service_request().send().promise.await;
                let target = reply
                    .and_then(|r| r.get()?.get_service().get_as_capability())
                    .map_err(|e| self.node_error(e))?;
                let weak = StdRc::downgrade(child);
                let client = self.conn.service(GuestService {
                    name: String::new(),
                    target,
                    owner: ServiceOwner::Remote {
                        node: child.link.name.as_str().into(),
                        pid: child.pid,
                    },
                    gone: StdRc::new(move || {
                        weak.upgrade().is_none_or(|c| c.ended() || c.link.is_lost())
                    }),
                });
                *self.service.borrow_mut() = Some(client.clone());
                client
            }
        };
        results
            .get()
            .init_service()
            .set_as_capability(client.hook.add_ref());
        Ok(())
    }
}

/// A node's stream error, as the holder's (one `REASON`, see [`node_error`]).
fn reissue(e: capnp::Error) -> capnp::Error {
    cell_proto::CellError::from(e).into()
}

/// A node's `ByteStream`, each call under the holder's call gate.
struct RemoteStream {
    inner: byte_stream::Client,
    conn: Conn,
}

impl byte_stream::Server for RemoteStream {
    async fn read(
        self: Rc<Self>,
        params: byte_stream::ReadParams,
        mut results: byte_stream::ReadResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let mut read = self.inner.read_request();
        read.get().set_max_bytes(params.get()?.get_max_bytes());
        let reply = read.send().promise.await.map_err(reissue)?;
        results.get().set_data(reply.get()?.get_data()?);
        Ok(())
    }

    async fn write(
        self: Rc<Self>,
        params: byte_stream::WriteParams,
        _: byte_stream::WriteResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let mut write = self.inner.write_request();
        write.get().set_data(params.get()?.get_data()?);
        drop(params);
        write.send().promise.await.map_err(reissue)?;
        Ok(())
    }

    async fn close(
        self: Rc<Self>,
        _: byte_stream::CloseParams,
        _: byte_stream::CloseResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        self.inner
            .close_request()
            .send()
            .promise
            .await
            .map_err(reissue)?;
        Ok(())
    }
}
