//! A daemon job: one pid0 tree started by `Daemon.run`, and the `Job` capability on it.
//!
//! Ownership: a [`Job`] is shared by every `Job` capability issued for it and by its watcher
//! task, which holds the daemon's job permit until the whole tree has unwound, then builds
//! the job's report and lets the permit go. Nothing of a job outlives the last of these: the
//! report (bounded by the tree's history bounds) lives as long as a client holds the `Job`,
//! and each client may hold at most [`crate::limits::MAX_JOBS_HELD`] of them.

use std::cell::RefCell;
use std::rc::Rc as StdRc;
use std::time::Instant;

use capnp::capability::Rc;
use tokio::sync::watch;

use crate::budget::{ByteBudget, SharedTaken, Taken};
use crate::cell_capnp::{byte_stream, job};
use crate::handle::ProcessHandle;
use crate::limits::TEARDOWN_GRACE;
use crate::report::{NetworkStats, Pid0Status, Report, SCHEMA};
use crate::rpc::fail::failed;
use crate::rpc::gate::CallGate;
use crate::rpc::service::{ensure_serves, served_by, Caller, ProxyClient, ServiceProxy};
use crate::rpc::stream::ByteStreamServer;
use crate::status::{ExitStatus, KilledBy};
use crate::stderr::CapturedStderr;
use crate::supervisor::Supervisor;
use crate::tree::Tree;
use cell_proto::Reason;

/// What a job's report says about where it came from.
pub(crate) struct JobOrigin {
    /// The path asked for, or the job's name for bytes and components.
    pub wasm: String,
    pub sha256: String,
    pub plain: bool,
}

/// One job (see the module documentation).
pub(crate) struct Job {
    pub handle: StdRc<ProcessHandle>,
    tree: std::sync::Arc<Tree>,
    stderr: CapturedStderr,
    origin: JobOrigin,
    started: Instant,
    /// pid0's status and the job's wall time, once the tree has unwound (the report is built
    /// from them, and the tree, only when asked for).
    ended: watch::Sender<Option<(ExitStatus, u64)>>,
    sup: Supervisor,
}

impl Job {
    pub(crate) fn new(
        handle: StdRc<ProcessHandle>,
        tree: std::sync::Arc<Tree>,
        stderr: CapturedStderr,
        origin: JobOrigin,
        sup: Supervisor,
    ) -> StdRc<Self> {
        StdRc::new(Job {
            handle,
            tree,
            stderr,
            origin,
            started: Instant::now(),
            ended: watch::channel(None).0,
            sup,
        })
    }

    /// Waits for pid0 to end and its tree to unwind (at most [`TEARDOWN_GRACE`] after pid0),
    /// holding `permit` (the daemon's job count) until then.
    pub(crate) async fn watch(self: StdRc<Self>, permit: SharedTaken) {
        let status = self.handle.wait().await;
        if tokio::time::timeout(TEARDOWN_GRACE, self.tree.unwound())
            .await
            .is_err()
        {
            tracing::warn!(pid = self.handle.pid, "job's tree did not unwind in time");
        }
        drop(permit);
        let wall_ms = self.started.elapsed().as_millis() as u64;
        self.ended.send_replace(Some((status, wall_ms)));
    }

    /// The job's `cell-report/1`, once its tree has unwound.
    async fn report(&self) -> String {
        let mut rx = self.ended.subscribe();
        let (status, wall_ms) = loop {
            if let Some(ended) = rx.borrow_and_update().clone() {
                break ended;
            }
            if rx.changed().await.is_err() {
                return String::new();
            }
        };
        let sup = &self.sup;
        let stats = self.tree.history();
        let (allowed, denied) = self.tree.decisions().get();
        let report = Report {
            schema: SCHEMA,
            wasm: self.origin.wasm.clone(),
            sha256: Some(self.origin.sha256.clone()),
            mode: if self.origin.plain { "plain" } else { "rpc" },
            exit_code: crate::run::exit_code_for(&status),
            pid0: Pid0Status::Ran(status),
            signal: None,
            wall_ms,
            processes: stats.processes().cloned().collect(),
            processes_not_listed: stats.not_listed(),
            compile_cache: sup.engine().compile_cache_stats(),
            components_compiled: sup.engine().compiled_count(),
            network: NetworkStats { allowed, denied },
            client: self.tree.client().map(|c| c.to_string()),
        };
        drop(stats);
        serde_json::to_string_pretty(&report).unwrap_or_else(|e| {
            format!("{{\"schema\":\"{SCHEMA}\",\"error\":\"cannot serialise: {e}\"}}")
        })
    }
}

/// The `Job` capability, issued on one client's connection.
pub(crate) struct JobServer {
    job: StdRc<Job>,
    gate: CallGate,
    budget: ByteBudget,
    /// This client's count of `Job`s held, given back when the capability goes.
    _held: Taken,
    streams: RefCell<[Option<byte_stream::Client>; 3]>,
    /// The proxy of pid0's service, made on first use.
    service: RefCell<Option<capnp::capability::Client>>,
}

impl JobServer {
    pub(crate) fn new(job: StdRc<Job>, gate: CallGate, budget: ByteBudget, held: Taken) -> Self {
        JobServer {
            job,
            gate,
            budget,
            _held: held,
            streams: RefCell::default(),
            service: RefCell::default(),
        }
    }

    /// The stream in slot `i`, made by `make` on first use (one reader per pipe).
    fn stream(&self, i: usize, make: impl FnOnce() -> ByteStreamServer) -> byte_stream::Client {
        self.streams.borrow_mut()[i]
            .get_or_insert_with(|| {
                capnp_rpc::new_client(make().gated(self.gate.clone(), self.budget.clone()))
            })
            .clone()
    }

    fn plain(&self) -> Result<&crate::handle::PlainStdio, capnp::Error> {
        self.job.handle.plain.as_ref().ok_or_else(|| {
            failed(
                Reason::NotPlain,
                format!(
                    "job {} is a cell guest: its stdio is its RPC connection",
                    self.job.handle.pid
                ),
            )
        })
    }
}

impl job::Server for JobServer {
    async fn pid(
        self: Rc<Self>,
        _: job::PidParams,
        mut results: job::PidResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        results.get().set_pid(self.job.handle.pid);
        Ok(())
    }

    async fn wait(
        self: Rc<Self>,
        _: job::WaitParams,
        mut results: job::WaitResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let status = self.job.handle.wait().await;
        status.write(results.get().init_status());
        Ok(())
    }

    async fn kill(
        self: Rc<Self>,
        _: job::KillParams,
        _: job::KillResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        self.job.handle.kill(KilledBy::Operator);
        self.job.handle.wait().await;
        Ok(())
    }

    async fn stderr(
        self: Rc<Self>,
        _: job::StderrParams,
        mut results: job::StderrResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let reader = self.job.stderr.reader.clone();
        let stream = self.stream(0, || ByteStreamServer::reader(reader));
        results.get().set_stream(stream);
        Ok(())
    }

    async fn stdin(
        self: Rc<Self>,
        _: job::StdinParams,
        mut results: job::StdinResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let writer = self.plain()?.stdin.clone();
        let stream = self.stream(1, || ByteStreamServer::writer(writer));
        results.get().set_stream(stream);
        Ok(())
    }

    async fn stdout(
        self: Rc<Self>,
        _: job::StdoutParams,
        mut results: job::StdoutResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let reader = self.plain()?.stdout.clone();
        let stream = self.stream(2, || ByteStreamServer::reader(reader));
        results.get().set_stream(stream);
        Ok(())
    }

    async fn report(
        self: Rc<Self>,
        _: job::ReportParams,
        mut results: job::ReportResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let report = self.job.report().await;
        results.get().set_json(report.as_str());
        Ok(())
    }

    async fn service(
        self: Rc<Self>,
        _: job::ServiceParams,
        mut results: job::ServiceResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        ensure_serves(&self.job.handle, "job")?;
        let mut slot = self.service.borrow_mut();
        if slot.is_none() {
            let service = served_by(&self.job.handle, "job")?;
            let caller = Caller {
                gate: self.gate.clone(),
                host: StdRc::new(self.job.sup.clone()),
            };
            let proxy: ProxyClient = capnp_rpc::new_client(ServiceProxy::new(service, caller));
            *slot = Some(proxy.client);
        }
        if let Some(client) = slot.as_ref() {
            results
                .get()
                .init_service()
                .set_as_capability(client.hook.add_ref());
        }
        Ok(())
    }
}
