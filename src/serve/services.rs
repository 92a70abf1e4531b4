//! Supervised services: jobs the daemon starts itself (`--service NAME=FILE`, or `[[service]]`
//! in `--config`) and restarts by their policy, with exponential backoff, at most
//! `max_restarts` times. `ps` shows each with its restart count. [`Services::apply`] takes a
//! new set (SIGHUP re-reads the config): services that are new start, removed ones stop,
//! changed ones restart, unchanged ones — and every client's job — are not touched.
//!
//! A service is an ordinary job otherwise: its own tree, grants narrowed to the ceiling
//! (nothing unless its config names it), its stderr on the daemon's, each line prefixed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use cell_proto::{JobDir, JobLimits};
use tokio::sync::watch;

use crate::net::policy::NetRule;
use crate::serve::ceiling::{Ask, Ceiling};
use crate::serve::DaemonCore;
use crate::spec::{ProcessSpec, StderrMode, StdioMode};
use crate::status::{ExitStatus, KilledBy};
use crate::tree::{Tree, TreeSpec};

/// When a service that ended is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Restart {
    /// Never.
    Never,
    /// Unless it exited with code 0.
    OnFailure,
    /// Whatever the reason.
    Always,
}

/// One service, as flags or the config file give it.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceSpec {
    pub name: String,
    pub wasm: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub restart: Restart,
    pub max_restarts: u32,
    /// Its Network's rules (narrowed to the ceiling); empty: none.
    pub net: Vec<NetRule>,
    pub dirs: Vec<JobDir>,
    pub limits: JobLimits,
}

/// The first wait before a restart, doubled after each one up to [`BACKOFF_MAX`].
const BACKOFF_START: Duration = Duration::from_millis(100);
/// The longest wait before a restart.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run at least this long resets the backoff.
const BACKOFF_RESET: Duration = Duration::from_secs(10);

/// The daemon's services, by name.
pub(crate) struct Services {
    core: Rc<DaemonCore>,
    ceiling: Rc<Ceiling>,
    running: RefCell<BTreeMap<String, Supervised>>,
}

struct Supervised {
    spec: ServiceSpec,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Services {
    pub(crate) fn new(core: Rc<DaemonCore>, ceiling: Rc<Ceiling>) -> Self {
        Services {
            core,
            ceiling,
            running: RefCell::default(),
        }
    }

    /// Makes `specs` the set of services: starts new ones, stops removed ones, restarts
    /// changed ones; leaves the rest alone.
    pub(crate) async fn apply(&self, specs: Vec<ServiceSpec>) {
        let wanted: BTreeMap<String, ServiceSpec> =
            specs.into_iter().map(|s| (s.name.clone(), s)).collect();
        let stale: Vec<String> = self
            .running
            .borrow()
            .iter()
            .filter(|(name, s)| wanted.get(*name) != Some(&s.spec))
            .map(|(name, _)| name.clone())
            .collect();
        for name in stale {
            let gone = self.running.borrow_mut().remove(&name);
            if let Some(s) = gone {
                tracing::info!("service {name}: stopping (removed or changed)");
                s.stop.send_replace(true);
                let _ = s.task.await;
            }
        }
        for (name, spec) in wanted {
            if self.running.borrow().contains_key(&name) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let task = tokio::task::spawn_local(supervise(
                self.core.clone(),
                self.ceiling.clone(),
                spec.clone(),
                stopped,
            ));
            self.running
                .borrow_mut()
                .insert(name, Supervised { spec, stop, task });
        }
    }

    /// Stops every service (no restarts), waiting for each.
    pub(crate) async fn stop_all(&self) {
        let all = std::mem::take(&mut *self.running.borrow_mut());
        for s in all.values() {
            s.stop.send_replace(true);
        }
        for (_, s) in all {
            let _ = s.task.await;
        }
    }
}

/// Runs one service until it is stopped or its policy says it is over.
async fn supervise(
    core: Rc<DaemonCore>,
    ceiling: Rc<Ceiling>,
    spec: ServiceSpec,
    mut stopped: watch::Receiver<bool>,
) {
    let name = spec.name.clone();
    let mut restarts = 0u32;
    let mut backoff = BACKOFF_START;
    loop {
        let started = std::time::Instant::now();
        let status = match start(&core, &ceiling, &spec, restarts).await {
            Ok(handle) => {
                tokio::select! {
                    status = handle.wait() => Ok(status),
                    _ = stopped.wait_for(|s| *s) => {
                        handle.kill(KilledBy::Operator);
                        handle.wait().await;
                        return;
                    }
                }
            }
            Err(e) => Err(format!("cannot start: {e:#}")),
        };
        let shown = match &status {
            Ok(s) => s.to_string(),
            Err(e) => e.clone(),
        };
        let again = match spec.restart {
            Restart::Never => false,
            Restart::OnFailure => status != Ok(ExitStatus::Exited(0)),
            Restart::Always => true,
        };
        if !again {
            tracing::warn!("service {name} ended ({shown}); not restarted");
            return;
        }
        if restarts >= spec.max_restarts {
            tracing::warn!(
                "service {name} ended ({shown}) after {restarts} restarts: giving up \
                 (max-restarts {})",
                spec.max_restarts
            );
            return;
        }
        if started.elapsed() >= BACKOFF_RESET {
            backoff = BACKOFF_START;
        }
        tracing::warn!("service {name} ended ({shown}); restarting in {backoff:?}");
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stopped.wait_for(|s| *s) => return,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
        restarts += 1;
    }
}

/// Starts one run of a service: its file read now (so a new build is picked up), its grants
/// narrowed to the ceiling.
async fn start(
    core: &DaemonCore,
    ceiling: &Ceiling,
    spec: &ServiceSpec,
    restarts: u32,
) -> anyhow::Result<Rc<crate::handle::ProcessHandle>> {
    let ask = Ask {
        net: (!spec.net.is_empty()).then_some(spec.net.as_slice()),
        dirs: &spec.dirs,
        limits: &spec.limits,
    };
    let (mut grants, limits) = ceiling.narrow(&ask)?;
    let bytes = std::fs::read(&spec.wasm)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", spec.wasm.display()))?;
    if bytes.len() as u64 > limits.max_wasm_bytes {
        anyhow::bail!("{} is larger than max-wasm-size", spec.wasm.display());
    }
    let plain = !crate::inspect::has_sdk_marker(&bytes);
    let component = core.sup.engine().load(Arc::from(bytes)).await?;
    grants.executor = !plain;
    let process = ProcessSpec {
        name: spec.name.clone(),
        cwd: None,
        args: spec.args.clone(),
        env: spec.env.clone(),
        grants,
        stderr: StderrMode::Forward,
        stdio: if plain {
            StdioMode::Plain
        } else {
            StdioMode::Rpc
        },
    };
    let tree = Tree::new(TreeSpec {
        history: Some((crate::limits::JOB_HISTORY, crate::limits::JOB_HISTORY_BYTES)),
        stderr: None,
        service: Some((spec.name.clone(), restarts)),
        client: None,
    });
    let handle = core
        .sup
        .spawn_root(component, process, limits, tree)
        .await?;
    tracing::info!("service {} started as pid {}", spec.name, handle.pid);
    if let Some(plain) = &handle.plain {
        // Nobody reads a plain service's stdout but the daemon's log.
        tokio::task::spawn_local(drain_stdout(plain.stdout.clone()));
    }
    Ok(handle)
}

/// Copies a plain service's stdout to the daemon's stderr until it ends, so the service never
/// blocks on a full pipe.
async fn drain_stdout(stdout: crate::transport::PipeReader) {
    use std::io::Write as _;
    loop {
        let data = stdout.read(crate::limits::MAX_READ_CHUNK).await;
        if data.is_empty() {
            return;
        }
        let _ = std::io::stderr().lock().write_all(&data);
    }
}
