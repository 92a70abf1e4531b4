//! How a supervisor is made, and what the supervisors of one run's shards share: the engine
//! (compiled code), the audit sink and the event bus, all `Send + Sync`; each shard's own
//! table gives out the pids of its residue class (see [`crate::table::PidPlan`]).

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;

use tokio::sync::watch;

use super::{Inner, Supervisor};
use crate::engine::CellEngine;
use crate::events::EventBus;
use crate::hoststdio::HostStdio;
use crate::net::audit::Audit;
use crate::table::{PidPlan, ProcessTable};

/// What the supervisors of one run's shards share: all `Send + Sync`, made once per run.
#[derive(Clone)]
pub(crate) struct SharedParts {
    pub engine: Arc<CellEngine>,
    /// The run's audit sink (already publishing denials to `events`).
    pub audit: Audit,
    pub events: EventBus,
    /// `--resolve NAME=IP`.
    pub pinned: Arc<HashMap<String, IpAddr>>,
}

impl SharedParts {
    pub(crate) fn new(engine: CellEngine, audit: Audit) -> Self {
        let events = EventBus::default();
        SharedParts {
            engine: Arc::new(engine),
            audit: audit.with_events(events.clone()),
            events,
            pinned: Arc::default(),
        }
    }
}

/// Which shard a supervisor is, of how many, and where it publishes its process count.
pub(crate) struct ShardPlace {
    pub index: usize,
    pub of: usize,
    pub load: Arc<AtomicUsize>,
    /// One pid sequence for every shard (`cell run`: one tree over all of them), instead of
    /// a residue class per shard (a daemon, whose `kill PID` finds the shard by the pid).
    pub pids: Option<Arc<std::sync::atomic::AtomicU32>>,
}

impl Supervisor {
    /// A supervisor recording network decisions to `audit` (one shard: every pid is its own).
    pub fn with_audit(engine: CellEngine, audit: Audit) -> Self {
        let place = ShardPlace {
            index: 0,
            of: 1,
            load: Arc::default(),
            pids: None,
        };
        Supervisor::for_shard(&SharedParts::new(engine, audit), place)
    }

    /// The supervisor of shard `place.index`: shard-local (`Rc`, on that shard's thread), over
    /// the run's shared engine, audit sink and event bus; it gives out the pids `≡ index (mod
    /// of)`.
    pub(crate) fn for_shard(shared: &SharedParts, place: ShardPlace) -> Self {
        let pids = PidPlan {
            first: u32::try_from(place.index).unwrap_or(0),
            stride: u32::try_from(place.of).unwrap_or(1),
        };
        Supervisor(Rc::new(Inner {
            engine: shared.engine.clone(),
            table: RefCell::new(match place.pids {
                Some(sequence) => ProcessTable::with_shared_pids(sequence),
                None => ProcessTable::with_pids(pids),
            }),
            live: watch::channel(0).0,
            load: place.load,
            audit: shared.audit.clone(),
            events: shared.events.clone(),
            counts: RefCell::default(),
            host_stdio: HostStdio::default(),
            pinned: RefCell::new(shared.pinned.clone()),
            peers: std::cell::OnceCell::new(),
            shard: u32::try_from(place.index).unwrap_or(u32::MAX),
        }))
    }
}
