//! `cell ps` (every process of every job: a table, `--tree`, or `--json`) and `cell kill PID`.

use serde::Serialize;

use crate::cell_capnp::{daemon, process_entry};

/// One row of `cell ps`, as `--json` prints it.
#[derive(Debug, Serialize)]
pub(crate) struct Row {
    pub pid: u32,
    pub parent: Option<u32>,
    pub job: u32,
    pub name: String,
    pub sha256: String,
    pub state: &'static str,
    pub uptime_ms: u64,
    pub memory_bytes: u64,
    pub fuel_left: Option<u64>,
    pub service: Option<String>,
    pub restarts: u32,
    /// The daemon shard (thread) its job runs on.
    pub shard: u32,
}

impl Row {
    fn read(e: process_entry::Reader<'_>) -> capnp::Result<Row> {
        let text = |t: capnp::Result<capnp::text::Reader<'_>>| -> capnp::Result<String> {
            Ok(t?.to_string()?)
        };
        let service = text(e.get_service())?;
        Ok(Row {
            pid: e.get_pid(),
            parent: e.get_has_parent().then(|| e.get_parent()),
            job: e.get_job(),
            name: text(e.get_name())?,
            sha256: text(e.get_sha256())?,
            state: if e.get_running() { "running" } else { "exited" },
            uptime_ms: e.get_uptime_ms(),
            memory_bytes: e.get_memory_bytes(),
            fuel_left: e.get_fuel_metered().then(|| e.get_fuel_left()),
            restarts: e.get_restarts(),
            shard: e.get_shard(),
            service: (!service.is_empty()).then_some(service),
        })
    }
}

/// How `cell ps` prints.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PsFormat {
    Table,
    Tree,
    Json,
}

/// Asks the daemon for its processes.
pub(crate) async fn rows(daemon: &daemon::Client) -> anyhow::Result<Vec<Row>> {
    let reply = daemon
        .ps_request()
        .send()
        .promise
        .await
        .map_err(|e| anyhow::anyhow!("{}", super::described(&e)))?;
    let list = reply.get()?.get_processes()?;
    list.iter().map(|e| Ok(Row::read(e)?)).collect()
}

/// The text `cell ps` prints.
pub(crate) fn render(rows: &[Row], format: PsFormat) -> String {
    match format {
        PsFormat::Json => {
            let mut s = serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into());
            s.push('\n');
            s
        }
        PsFormat::Table => {
            let mut s = header();
            for r in rows {
                s.push_str(&line(r, 0));
            }
            s
        }
        PsFormat::Tree => {
            let mut s = header();
            // Roots (jobs) in pid order, each followed by its subtree, children indented.
            for root in rows.iter().filter(|r| r.parent.is_none()) {
                tree(rows, root, 0, &mut s);
            }
            s
        }
    }
}

fn header() -> String {
    format!(
        "{:>6} {:>6} {:>6} {:>5} {:<8} {:>9} {:>9} {:>12}  NAME\n",
        "PID", "PPID", "JOB", "SHARD", "STATE", "UPTIME", "MEMORY", "FUEL"
    )
}

fn tree(rows: &[Row], at: &Row, depth: usize, out: &mut String) {
    out.push_str(&line(at, depth));
    for child in rows.iter().filter(|r| r.parent == Some(at.pid)) {
        tree(rows, child, depth + 1, out);
    }
}

fn line(r: &Row, depth: usize) -> String {
    let parent = r.parent.map_or("-".into(), |p| p.to_string());
    let fuel = r.fuel_left.map_or("-".into(), |f| f.to_string());
    let service = match &r.service {
        Some(name) => format!(" [service {name}, {} restarts]", r.restarts),
        None => String::new(),
    };
    format!(
        "{:>6} {:>6} {:>6} {:>5} {:<8} {:>9} {:>9} {:>12}  {}{}{}\n",
        r.pid,
        parent,
        r.job,
        r.shard,
        r.state,
        human_ms(r.uptime_ms),
        human_bytes(r.memory_bytes),
        fuel,
        "  ".repeat(depth),
        r.name,
        service
    )
}

fn human_ms(ms: u64) -> String {
    match ms {
        0..=9_999 => format!("{ms}ms"),
        10_000..=599_999 => format!("{}s", ms / 1000),
        600_000..=35_999_999 => format!("{}m", ms / 60_000),
        _ => format!("{}h", ms / 3_600_000),
    }
}

fn human_bytes(b: u64) -> String {
    match b {
        0..=9_999 => format!("{b}B"),
        10_000..=9_999_999 => format!("{}K", b >> 10),
        _ => format!("{}M", b >> 20),
    }
}

/// `cell kill PID`: kills a process and its subtree, resolving once it has ended.
pub(crate) async fn kill(daemon: &daemon::Client, pid: u32) -> Result<(), String> {
    let mut req = daemon.kill_request();
    req.get().set_pid(pid);
    req.send()
        .promise
        .await
        .map(|_| ())
        .map_err(|e| super::described(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(pid: u32, parent: Option<u32>, job: u32) -> Row {
        Row {
            pid,
            parent,
            job,
            name: format!("p{pid}"),
            sha256: String::new(),
            state: "running",
            uptime_ms: 1500,
            memory_bytes: 1 << 20,
            fuel_left: None,
            service: None,
            restarts: 0,
            shard: 0,
        }
    }

    #[test]
    fn the_tree_nests_children_under_their_parents() {
        let rows = vec![
            row(0, None, 0),
            row(1, Some(0), 0),
            row(2, None, 2),
            row(3, Some(1), 0),
        ];
        let text = render(&rows, PsFormat::Tree);
        let pids: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next())
            .collect();
        assert_eq!(pids, ["0", "1", "3", "2"]);
        assert!(text.contains("    p3"), "{text}");
        let json: serde_json::Value = serde_json::from_str(&render(&rows, PsFormat::Json)).unwrap();
        assert_eq!(json[1]["parent"], 0);
        assert!(json[0]["parent"].is_null());
    }
}
