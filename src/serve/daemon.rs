//! `Daemon`: one client's door to `cell serve` — run a job, load a component, list and kill
//! processes, follow events. Every method enters the client's call gate first, like a guest's
//! servers; what a client may hold is bounded per connection ([`MAX_JOBS_HELD`] jobs,
//! [`MAX_COMPONENTS_HELD`] components, [`MAX_SUBSCRIPTIONS`] event subscriptions).

use std::cell::{Cell, RefCell};
use std::rc::Rc as StdRc;
use std::sync::Arc;

use capnp::capability::Rc;
use capnp_rpc::CapabilityServerSet;
use cell_proto::{CellError, JobCode, JobMode, JobRequest, ReadBounds, Reason};

use crate::budget::{Budget, ByteBudget, Taken};
use crate::cell_capnp::{component, daemon, job};
use crate::engine::LoadedComponent;
use crate::grants::{GuestService, ServiceOwner};
use crate::handle::ProcessHandle;
use crate::limits::{
    JOB_HISTORY, JOB_HISTORY_BYTES, MAX_ARGV_ENV_BYTES, MAX_ARGV_ENV_ENTRIES, MAX_COMPONENTS_HELD,
    MAX_JOBS_HELD, MAX_SUBSCRIPTIONS, NET_MAX_IN_FLIGHT,
};
use crate::net::audit::AuditEvent;
use crate::net::policy::MAX_RULES;
use crate::rpc::fail::failed;
use crate::rpc::gate::CallGate;
use crate::run::ModeChoice;
use crate::serve::ceiling::{Ask, Ceiling};
use crate::serve::identity::Peer;
use crate::serve::job::{Job, JobOrigin, JobServer};
use crate::serve::shards::{self, ShardLink};
use crate::serve::subscribe;
use crate::serve::DaemonCore;
use crate::shard::place_from;
use crate::spec::{ProcessSpec, SpawnError, StderrMode, StdioMode};
use crate::status::KilledBy;
use crate::supervisor::PsEntry;
use crate::tree::{Tree, TreeSpec};

/// Everything one client connection shares: the daemon, its listener's ceiling, its bounds,
/// and the jobs it started `attached` (killed when it goes, see [`ClientState::detach_all`]).
pub(crate) struct ClientState {
    pub daemon: StdRc<DaemonCore>,
    pub ceiling: StdRc<Ceiling>,
    /// Who the client is (a mutual-TLS identity), recorded in its jobs' reports and audit.
    pub peer: Peer,
    pub gate: CallGate,
    /// A shard link's far side (see `shards.rs`): jobs start here, never elsewhere, and a
    /// `Component` of the front's connection is found by its hash.
    via_link: bool,
    /// This connection's links to the other shards, by index.
    pub links: RefCell<std::collections::HashMap<usize, ShardLink>>,
    in_flight: ByteBudget,
    jobs_held: Budget,
    components: RefCell<CapabilityServerSet<LoadedServer, component::Client>>,
    components_held: Budget,
    subscriptions: Budget,
    attached: RefCell<Vec<StdRc<ProcessHandle>>>,
    /// Set when the connection ends: the client's services its jobs hold are dead then.
    closed: StdRc<Cell<bool>>,
}

impl ClientState {
    pub(crate) fn new(
        daemon: StdRc<DaemonCore>,
        ceiling: StdRc<Ceiling>,
        gate: CallGate,
        peer: Peer,
    ) -> Self {
        ClientState {
            daemon,
            ceiling,
            peer,
            gate,
            via_link: false,
            links: RefCell::default(),
            in_flight: ByteBudget::new(NET_MAX_IN_FLIGHT),
            jobs_held: Budget::new(MAX_JOBS_HELD),
            components: RefCell::new(CapabilityServerSet::new()),
            components_held: Budget::new(MAX_COMPONENTS_HELD),
            subscriptions: Budget::new(MAX_SUBSCRIPTIONS),
            attached: RefCell::default(),
            closed: StdRc::default(),
        }
    }

    /// The far side of a shard link: a front's client, on this shard.
    pub(crate) fn for_link(
        daemon: StdRc<DaemonCore>,
        ceiling: StdRc<Ceiling>,
        gate: CallGate,
        peer: Peer,
    ) -> Self {
        ClientState {
            via_link: true,
            ..ClientState::new(daemon, ceiling, gate, peer)
        }
    }

    /// The connection ended: kill the jobs it started `attached`, here and (by closing the
    /// links, whose far sides do the same) on every other shard.
    pub(crate) fn detach_all(&self) {
        self.closed.set(true);
        for handle in self.attached.borrow_mut().drain(..) {
            handle.kill(KilledBy::Operator);
        }
        self.links.borrow_mut().clear();
    }

    /// The shard a new job of this connection goes to.
    fn place(&self) -> usize {
        let core = &self.daemon;
        if self.via_link || core.shards.len() < 2 {
            return core.shard;
        }
        place_from(&core.shards, core.shard)
    }

    /// The client's own capabilities a job's pid0 may call (`JobRequest.services` and
    /// `.components`), each proxied on pid0's connection like any guest service (see
    /// `rpc::service`): calls fail with `dead` once this connection has ended.
    fn by_reference(&self, granted: Vec<(String, capnp::capability::Client)>) -> Vec<GuestService> {
        let who = self
            .peer
            .identity
            .clone()
            .unwrap_or_else(|| "(local)".into());
        granted
            .into_iter()
            .map(|(name, target)| {
                let closed = self.closed.clone();
                GuestService {
                    name,
                    target,
                    owner: ServiceOwner::Client(who.clone()),
                    gone: StdRc::new(move || closed.get()),
                }
            })
            .collect()
    }

    fn attach(&self, handle: StdRc<ProcessHandle>) {
        let mut attached = self.attached.borrow_mut();
        attached.retain(|h| h.status().is_none());
        attached.push(handle);
    }
}

/// The bootstrap `Daemon` of one client connection.
pub(crate) struct DaemonServer {
    client: StdRc<ClientState>,
}

impl DaemonServer {
    pub(crate) fn new(client: StdRc<ClientState>) -> Self {
        DaemonServer { client }
    }
}

fn cell(e: CellError) -> capnp::Error {
    e.into()
}

fn limit(what: &str, most: usize) -> capnp::Error {
    failed(
        Reason::Limit,
        format!("at most {most} {what} per client connection"),
    )
}

impl daemon::Server for DaemonServer {
    async fn run(
        self: Rc<Self>,
        params: daemon::RunParams,
        mut results: daemon::RunResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.client.gate.enter()?;
        let core = &self.client.daemon;
        let target = self.client.place();
        let _placed = core.shards.get(target).map(crate::shard::Shard::place);
        if target != core.shard {
            return shards::forward(&self.client, target, params, results).await;
        }
        let held = self
            .client
            .jobs_held
            .take(1)
            .ok_or_else(|| limit("jobs held", MAX_JOBS_HELD))?;
        let request = JobRequest::<Arc<[u8]>>::read(
            params.get()?.get_request()?,
            ReadBounds {
                argv_env_bytes: MAX_ARGV_ENV_BYTES,
                argv_env_entries: MAX_ARGV_ENV_ENTRIES,
                name_bytes: 4096,
                with_wasm: true,
            },
            MAX_RULES,
        )
        .map_err(cell)?;
        drop(params);
        let job = start_job(&self.client, request).await?;
        let client = &self.client;
        let server = JobServer::new(job, client.gate.clone(), client.in_flight.clone(), held);
        let cap: job::Client = capnp_rpc::new_client(server);
        results.get().set_job(cap);
        Ok(())
    }

    async fn load(
        self: Rc<Self>,
        params: daemon::LoadParams,
        mut results: daemon::LoadResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.client.gate.enter()?;
        let held = self
            .client
            .components_held
            .take(1)
            .ok_or_else(|| limit("components held", MAX_COMPONENTS_HELD))?;
        let wasm = params.get()?.get_wasm()?;
        let most = self.client.ceiling.limits.max_wasm_bytes;
        check_size(wasm.len(), most)?;
        let wasm: Arc<[u8]> = Arc::from(wasm);
        drop(params);
        let (loaded, sdk_guest) = load(&self.client, wasm).await?;
        let cap = self
            .client
            .components
            .borrow_mut()
            .new_client(LoadedServer {
                loaded,
                sdk_guest,
                _held: held,
            });
        results.get().set_component(cap);
        Ok(())
    }

    async fn ps(
        self: Rc<Self>,
        _: daemon::PsParams,
        mut results: daemon::PsResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.client.gate.enter()?;
        let mut rows: Vec<(usize, PsEntry)> = shards::gather(&self.client.daemon)
            .await
            .into_iter()
            .flat_map(|s| s.rows.into_iter().map(move |row| (s.shard, row)))
            .collect();
        rows.sort_by_key(|(_, row)| row.pid);
        let len = u32::try_from(rows.len()).unwrap_or(u32::MAX);
        let mut list = results.get().init_processes(len);
        for (i, (shard, row)) in rows.iter().enumerate().take(len as usize) {
            let mut e = list.reborrow().get(i as u32);
            e.set_shard(u32::try_from(*shard).unwrap_or(u32::MAX));
            e.set_pid(row.pid);
            e.set_parent(row.parent.unwrap_or(0));
            e.set_has_parent(row.parent.is_some());
            e.set_job(row.job);
            e.set_name(row.name.as_str());
            e.set_sha256(row.sha256.as_deref().unwrap_or(""));
            e.set_running(row.running);
            e.set_uptime_ms(row.uptime.as_millis() as u64);
            e.set_memory_bytes(row.memory);
            e.set_fuel_metered(row.fuel_left.is_some());
            e.set_fuel_left(row.fuel_left.unwrap_or(0));
            if let Some((name, restarts)) = &row.service {
                e.set_service(name.as_str());
                e.set_restarts(*restarts);
            }
        }
        Ok(())
    }

    async fn kill(
        self: Rc<Self>,
        params: daemon::KillParams,
        _: daemon::KillResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.client.gate.enter()?;
        let pid = params.get()?.get_pid();
        drop(params);
        if !shards::kill(&self.client.daemon, pid).await {
            return Err(failed(Reason::Dead, format!("no process {pid} is running")));
        }
        Ok(())
    }

    async fn ping(
        self: Rc<Self>,
        _: daemon::PingParams,
        _: daemon::PingResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.client.gate.enter()?;
        Ok(())
    }

    async fn events(
        self: Rc<Self>,
        params: daemon::EventsParams,
        mut results: daemon::EventsResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.client.gate.enter()?;
        let permit = self
            .client
            .subscriptions
            .take(1)
            .ok_or_else(|| limit("event subscriptions", MAX_SUBSCRIPTIONS))?;
        let sink = params.get()?.get_sink()?;
        drop(params);
        let rx = self.client.daemon.sup.events().subscribe();
        results
            .get()
            .set_subscription(subscribe::start(rx, sink, permit));
        Ok(())
    }
}

/// The component behind `cap` (with whether it is a cell guest), which must be one this
/// connection got from `Daemon.load`.
pub(crate) async fn own_component(
    client: &ClientState,
    cap: component::Client,
) -> Result<(Arc<LoadedComponent>, bool), capnp::Error> {
    let resolved = capnp::capability::get_resolved_cap(cap).await;
    client
        .components
        .borrow()
        .get_local_server_of_resolved(&resolved)
        .map(|server| (server.loaded.clone(), server.sdk_guest))
        .ok_or_else(|| {
            failed(
                Reason::BadGrant,
                "not a Component this connection got from Daemon.load",
            )
        })
}

fn check_size(len: usize, most: u64) -> Result<(), capnp::Error> {
    if len as u64 > most {
        return Err(failed(
            Reason::Limit,
            format!("component of {len} bytes exceeds max-wasm-size {most}"),
        ));
    }
    Ok(())
}

/// Starts the job `request` asks for, within the client's ceiling.
async fn start_job(
    client: &ClientState,
    request: JobRequest<Arc<[u8]>>,
) -> Result<StdRc<Job>, capnp::Error> {
    let ceiling = &client.ceiling;
    let ask = Ask {
        net: request.network.as_deref(),
        dirs: &request.dirs,
        limits: &request.limits,
    };
    let (mut grants, limits) = ceiling.narrow(&ask).map_err(cell)?;
    let ((component, sdk_guest), shown) = job_code(client, request.code, &limits).await?;
    let path = std::path::PathBuf::from(shown.clone().unwrap_or_else(|| "job".into()));
    let choice = match request.mode {
        JobMode::Auto => ModeChoice::Auto,
        JobMode::Rpc => ModeChoice::Rpc,
        JobMode::Plain => ModeChoice::Plain,
    };
    let plain = choice
        .decide(&path, sdk_guest)
        .map_err(|e| failed(Reason::BadRequest, e))?;
    let name = job_name(&request.name, shown.as_deref());
    grants.executor = !plain && !request.without_executor;
    let by_reference = !request.services.is_empty() || !request.components.is_empty();
    if plain && (by_reference || !request.remotes.is_empty()) {
        return Err(failed(
            Reason::BadRequest,
            "a plain job has no Session to find services, components or remotes in: run it \
             as a cell guest",
        ));
    }
    let services = request.services.into_iter().map(|g| (g.name, g.service));
    grants.services = client.by_reference(services.collect());
    let components = request
        .components
        .into_iter()
        .map(|c| ("component".into(), c.client));
    grants.proxied_components = client.by_reference(components.collect());
    grants.remotes = job_remotes(client, &request.remotes).await?;
    let dirs = grants.dirs.clone();
    let spec = ProcessSpec {
        name: name.clone(),
        cwd: request.cwd,
        args: request.args,
        env: request.env,
        grants,
        stderr: StderrMode::Tree,
        stdio: if plain {
            StdioMode::Plain
        } else {
            StdioMode::Rpc
        },
    };
    let permit = client.daemon.jobs.take(1).ok_or_else(|| {
        failed(
            Reason::Limit,
            format!("max-jobs {} reached", client.daemon.jobs.limit()),
        )
    })?;
    let cap = usize::try_from(limits.stderr_capture_bytes).unwrap_or(usize::MAX);
    let (tap, captured) = crate::stderr::capture_sink(cap);
    let tree = Tree::new(TreeSpec {
        history: Some((JOB_HISTORY, JOB_HISTORY_BYTES)),
        stderr: Some(tap),
        service: None,
        client: client.peer.identity.clone(),
    });
    let origin = JobOrigin {
        wasm: shown.unwrap_or(name),
        sha256: component.hash.to_string(),
        plain,
    };
    let sup = client.daemon.sup.clone();
    let handle = match sup.spawn_root(component, spec, limits, tree.clone()).await {
        Ok(handle) => handle,
        Err(SpawnError::EndedWhileStarting(status)) => ended_root(&tree, status),
        Err(e) => return Err(failed(e.reason(), e)),
    };
    // Every directory a job gets is in the audit trail, as pid0's are under `cell run`.
    let audit = sup.audit().with_client(tree.client().cloned());
    for granted in &dirs {
        let rule = format!(
            "{} {} (daemon ceiling)",
            granted.dir.rights(),
            granted.dir.shown().display()
        );
        audit.event(AuditEvent::directory(
            handle.pid,
            "dir",
            &granted.guest,
            Ok(rule),
        ));
    }
    if request.attached {
        client.attach(handle.clone());
    }
    let job = Job::new(handle, tree, captured, origin, sup);
    tokio::task::spawn_local(job.clone().watch(permit));
    Ok(job)
}

/// The daemon's remote nodes a job asked for: each in its client's ceiling, linked by this
/// shard's pool (connecting now if it has no live link).
async fn job_remotes(
    client: &ClientState,
    names: &[String],
) -> Result<Vec<StdRc<crate::remote::RemoteLink>>, capnp::Error> {
    let mut links = Vec::with_capacity(names.len());
    for name in names {
        client.ceiling.remote(name).map_err(cell)?;
        links.push(client.daemon.remotes.link(name).await.map_err(cell)?);
    }
    Ok(links)
}

/// A job's code, loaded (with whether it is a cell guest), and the path it came from.
async fn job_code(
    client: &ClientState,
    code: JobCode<Arc<[u8]>>,
    limits: &crate::limits::Limits,
) -> Result<((Arc<LoadedComponent>, bool), Option<String>), capnp::Error> {
    match code {
        JobCode::Wasm(bytes) => {
            check_size(bytes.len(), limits.max_wasm_bytes)?;
            Ok((load(client, bytes).await?, None))
        }
        JobCode::Path(path) => {
            let bytes = client
                .ceiling
                .read_code(&path, limits.max_wasm_bytes)
                .await
                .map_err(cell)?;
            Ok((load(client, Arc::from(bytes)).await?, Some(path)))
        }
        JobCode::Component(cap) if client.via_link => {
            Ok((shards::linked_component(client, cap).await?, None))
        }
        JobCode::Component(cap) => Ok((own_component(client, cap).await?, None)),
    }
}

/// pid0's name: the one asked for, else the file name of its path, else "job" (bounded and
/// escaped, like every name a guest or client gives).
fn job_name(asked: &str, path: Option<&str>) -> String {
    if !asked.is_empty() {
        return crate::text::guest_text(asked);
    }
    path.and_then(|p| std::path::Path::new(p).file_name())
        .map_or_else(
            || "job".into(),
            |n| crate::text::guest_text(&n.to_string_lossy()),
        )
}

/// The handle of a job whose pid0 ended while it started (its own code ended it: a trap, out
/// of fuel): it ran, like `cell run` says, and its report has its status.
fn ended_root(
    tree: &std::sync::Arc<Tree>,
    status: crate::status::ExitStatus,
) -> StdRc<ProcessHandle> {
    let info = crate::handle::ProcessInfo {
        pid: tree.root().unwrap_or(0),
        parent: None,
        name: "job".into(),
        depth: 0,
        hash: None,
    };
    let handle = ProcessHandle::with(
        info,
        crate::handle::HandleParts {
            tree: Some(tree.clone()),
            ..Default::default()
        },
    );
    handle.set_status(status);
    StdRc::new(handle)
}

/// Loads `bytes` (from the daemon's warm caches if it can); with whether it is a cell guest.
async fn load(
    client: &ClientState,
    bytes: Arc<[u8]>,
) -> Result<(Arc<LoadedComponent>, bool), capnp::Error> {
    let sdk_guest = crate::inspect::has_sdk_marker(&bytes);
    let loaded = client.daemon.sup.engine().load(bytes).await.map_err(|e| {
        let e = SpawnError::from(e);
        failed(e.reason(), e)
    })?;
    Ok((loaded, sdk_guest))
}

/// A component loaded for a client (`Daemon.load`): only to run as a job.
pub(crate) struct LoadedServer {
    loaded: Arc<LoadedComponent>,
    sdk_guest: bool,
    _held: Taken,
}

impl component::Server for LoadedServer {
    async fn spawn(
        self: Rc<Self>,
        _: component::SpawnParams,
        _: component::SpawnResults,
    ) -> Result<(), capnp::Error> {
        Err(failed(
            Reason::Unsupported,
            "a Component from Daemon.load runs as a job: Daemon.run with code.component",
        ))
    }

    async fn hash(
        self: Rc<Self>,
        _: component::HashParams,
        mut results: component::HashResults,
    ) -> Result<(), capnp::Error> {
        results.get().set_sha256(self.loaded.hash.to_string());
        Ok(())
    }
}
