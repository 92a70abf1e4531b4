//! `cell logs --follow`: the daemon's events (spawns, exits, denials) as they happen, one line
//! each, for people or (`--json`) for scripts. The sink is ours; the daemon keeps at most one
//! push in flight to it, so a slow terminal loses events (each line says how many), never
//! slows the daemon.

use std::io::Write as _;

use capnp::capability::Rc;
use serde_json::json;

use crate::cell_capnp::{daemon, event, event_sink};
use crate::status::ExitStatus;

/// Follows the daemon's events until the connection ends or `stop` resolves.
pub(crate) async fn follow(
    daemon: &daemon::Client,
    json: bool,
    stop: impl std::future::Future<Output = i32>,
) -> anyhow::Result<()> {
    let (ended_tx, ended_rx) = tokio::sync::oneshot::channel::<()>();
    let sink: event_sink::Client = capnp_rpc::new_client(Printer {
        json,
        _ended: ended_tx,
    });
    let mut req = daemon.events_request();
    req.get().set_sink(sink);
    let reply = req
        .send()
        .promise
        .await
        .map_err(|e| anyhow::anyhow!("{}", super::described(&e)))?;
    // Held for as long as we follow.
    let _subscription = reply.get()?.get_subscription()?;
    // The printer is dropped (and `ended_rx` resolves) when the daemon lets go of the sink,
    // e.g. when the connection ends.
    tokio::select! {
        _ = stop => {}
        _ = ended_rx => eprintln!("cell: the daemon closed the event stream"),
    }
    Ok(())
}

struct Printer {
    json: bool,
    _ended: tokio::sync::oneshot::Sender<()>,
}

impl event_sink::Server for Printer {
    async fn push(
        self: Rc<Self>,
        params: event_sink::PushParams,
        _: event_sink::PushResults,
    ) -> Result<(), capnp::Error> {
        let line = render(params.get()?.get_event()?, self.json)?;
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
        Ok(())
    }
}

/// One event as a line.
pub(crate) fn render(e: event::Reader<'_>, as_json: bool) -> capnp::Result<String> {
    let text = |t: capnp::Result<capnp::text::Reader<'_>>| -> capnp::Result<String> {
        Ok(crate::text::guest_text(t?.to_str()?))
    };
    let (kind, fields, human) = match e.which()? {
        event::Spawn(s) => {
            let s = s?;
            let name = text(s.get_name())?;
            let parent = s.get_has_parent().then(|| s.get_parent());
            let human = match parent {
                Some(p) => format!("spawn {name} (parent {p})"),
                None => format!("spawn {name} (a new job)"),
            };
            let fields = json!({"name": name, "parent": parent, "sha256": text(s.get_sha256())?});
            ("spawn", fields, human)
        }
        event::Exit(status) => {
            let status = ExitStatus::read(status?)?;
            let human = format!("exit: {status}");
            ("exit", json!({ "status": status }), human)
        }
        event::Deny(d) => {
            let d = d?;
            let (op, target, detail) = (
                text(d.get_op())?,
                text(d.get_target())?,
                text(d.get_detail())?,
            );
            let human = format!("deny {op} {target}: {detail}");
            (
                "deny",
                json!({"op": op, "target": target, "detail": detail}),
                human,
            )
        }
    };
    let lost = e.get_lost();
    if as_json {
        let mut all = json!({
            "seq": e.get_seq(), "lost": lost, "unix_ms": e.get_unix_ms(),
            "pid": e.get_pid(), "event": kind,
        });
        if let (Some(all), Some(extra)) = (all.as_object_mut(), fields.as_object()) {
            all.extend(extra.clone());
        }
        return Ok(format!("{all}\n"));
    }
    let lost = if lost > 0 {
        format!(" ({lost} events lost before this one)")
    } else {
        String::new()
    };
    Ok(format!(
        "{} pid {} {human}{lost}\n",
        clock(e.get_unix_ms()),
        e.get_pid()
    ))
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in milliseconds.
fn clock(unix_ms: u64) -> String {
    let day_ms = unix_ms % 86_400_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        day_ms / 3_600_000,
        day_ms / 60_000 % 60,
        day_ms / 1000 % 60,
        day_ms % 1000
    )
}
