//! `Daemon.events`: one client's subscription to the daemon's event stream (spawns, exits,
//! denials), pushed to its `EventSink`.
//!
//! Bounded: one push in flight per subscription (a slow sink holds nothing more here), events
//! waiting in the daemon's broadcast ring (lost ones are counted, never queued per client),
//! and at most `MAX_SUBSCRIPTIONS` subscriptions per connection (the `Taken` permit).

use std::sync::Arc;

use tokio::sync::{broadcast, oneshot};

use crate::budget::Taken;
use crate::cell_capnp::{event, event_sink, subscription};
use crate::events::{Event, EventKind};

/// Starts pushing events from `rx` to `sink`; the answered capability keeps them flowing
/// until it is dropped.
pub(crate) fn start(
    rx: broadcast::Receiver<Arc<Event>>,
    sink: event_sink::Client,
    permit: Taken,
) -> subscription::Client {
    let (stop, stopped) = oneshot::channel();
    tokio::task::spawn_local(pump(rx, sink, stopped));
    capnp_rpc::new_client(SubscriptionServer {
        _stop: stop,
        _permit: permit,
    })
}

/// Holding it keeps the events flowing; dropping it stops the pump.
struct SubscriptionServer {
    _stop: oneshot::Sender<()>,
    _permit: Taken,
}

impl subscription::Server for SubscriptionServer {}

/// Sends events to `sink`, one push in flight at a time, until the subscription is dropped or
/// the sink fails. Events published while a push is in flight wait in the daemon's ring;
/// those the ring no longer holds are lost and counted in the next event's `lost`.
async fn pump(
    mut rx: broadcast::Receiver<Arc<Event>>,
    sink: event_sink::Client,
    mut stopped: oneshot::Receiver<()>,
) {
    let mut lost = 0u64;
    loop {
        let next = tokio::select! {
            _ = &mut stopped => return,
            next = rx.recv() => next,
        };
        let event = match next {
            Ok(event) => event,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                lost += n;
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let mut push = sink.push_request();
        write_event(push.get().init_event(), &event, lost);
        lost = 0;
        tokio::select! {
            _ = &mut stopped => return,
            sent = push.send().promise => if sent.is_err() { return },
        }
    }
}

fn write_event(mut b: event::Builder<'_>, e: &Event, lost: u64) {
    b.set_seq(e.seq);
    b.set_lost(lost);
    b.set_unix_ms(e.unix_ms);
    b.set_pid(e.pid);
    match &e.kind {
        EventKind::Spawn {
            parent,
            name,
            sha256,
        } => {
            let mut s = b.init_spawn();
            s.set_parent(parent.unwrap_or(0));
            s.set_has_parent(parent.is_some());
            s.set_name(name.as_str());
            s.set_sha256(sha256.as_deref().unwrap_or(""));
        }
        EventKind::Exit(status) => status.write(b.init_exit()),
        EventKind::Deny { op, target, detail } => {
            let mut d = b.init_deny();
            d.set_op(op.as_str());
            d.set_target(target.as_str());
            d.set_detail(detail.as_str());
        }
    }
}
