//! The supervisor's event stream: every spawn, exit and denial, for `Daemon.events` (and
//! `cell logs --follow`). A `tokio::sync::broadcast` ring of [`EVENT_RING`] events: publishing
//! never waits, and a subscriber that falls behind loses the oldest events and is told how many
//! (`lost`), so a slow consumer can never stall a guest or the daemon.
//!
//! `Send + Sync` (an `Arc` around the ring): denials are published from wherever wasmtime polls
//! a `wasi:sockets` check. Every string in an event is bounded ([`crate::text::guest_text`]),
//! so the ring holds at most [`EVENT_RING`] × a few KiB.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::broadcast;

use crate::limits::EVENT_RING;
use crate::status::ExitStatus;

/// What happened.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum EventKind {
    Spawn {
        parent: Option<u32>,
        name: String,
        sha256: Option<String>,
    },
    Exit(ExitStatus),
    Deny {
        op: String,
        target: String,
        detail: String,
    },
}

/// One event, numbered in the order it was published.
#[derive(Clone, Debug)]
pub(crate) struct Event {
    pub seq: u64,
    pub unix_ms: u64,
    pub pid: u32,
    pub kind: EventKind,
}

/// Where events are published; cheap to clone.
#[derive(Clone)]
pub(crate) struct EventBus(Arc<BusInner>);

struct BusInner {
    tx: broadcast::Sender<Arc<Event>>,
    seq: AtomicU64,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus(Arc::new(BusInner {
            tx: broadcast::channel(EVENT_RING).0,
            seq: AtomicU64::new(0),
        }))
    }
}

impl std::fmt::Debug for EventBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventBus")
            .field("subscribers", &self.0.tx.receiver_count())
            .finish()
    }
}

impl EventBus {
    /// Publishes an event about `pid`. Never waits; a no-op allocation-wise when nobody listens.
    pub(crate) fn publish(&self, pid: u32, kind: EventKind) {
        if self.0.tx.receiver_count() == 0 {
            return;
        }
        let event = Event {
            seq: self.0.seq.fetch_add(1, Ordering::Relaxed),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0),
            pid,
            kind: bounded(kind),
        };
        // An error only means there is no subscriber (any more).
        let _ = self.0.tx.send(Arc::new(event));
    }

    /// A new subscriber: it sees events published from now on.
    pub(crate) fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.0.tx.subscribe()
    }
}

/// The event with every string bounded and escaped.
fn bounded(kind: EventKind) -> EventKind {
    use crate::text::guest_text as t;
    match kind {
        EventKind::Spawn {
            parent,
            name,
            sha256,
        } => EventKind::Spawn {
            parent,
            name: t(&name),
            sha256,
        },
        EventKind::Exit(status) => EventKind::Exit(status),
        EventKind::Deny { op, target, detail } => EventKind::Deny {
            op: t(&op),
            target: t(&target),
            detail: t(&detail),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_subscriber_loses_the_oldest_events_and_is_told_how_many() {
        let bus = EventBus::default();
        let mut rx = bus.subscribe();
        for pid in 0..(EVENT_RING as u32 + 10) {
            bus.publish(pid, EventKind::Exit(ExitStatus::Exited(0)));
        }
        match rx.try_recv() {
            Err(broadcast::error::TryRecvError::Lagged(n)) => assert_eq!(n, 10),
            other => panic!("expected a lag, got {other:?}"),
        }
        let next = rx.try_recv().unwrap();
        assert_eq!(next.pid, 10);
        assert_eq!(next.seq, 10);
    }

    #[test]
    fn strings_are_bounded() {
        let bus = EventBus::default();
        let mut rx = bus.subscribe();
        bus.publish(
            1,
            EventKind::Deny {
                op: "connect".into(),
                target: "x".repeat(1 << 20),
                detail: "\u{1b}[2J".into(),
            },
        );
        let EventKind::Deny { target, detail, .. } = &rx.try_recv().unwrap().kind else {
            panic!("not a deny");
        };
        assert!(
            target.len() <= crate::text::GUEST_TEXT_MAX + 32,
            "{}",
            target.len()
        );
        assert!(!detail.contains('\u{1b}'));
    }
}
