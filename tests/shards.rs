//! `cell run --shards N`: one tree over several threads. The stress runs a random tree of
//! spawns, kills, waits and socket hand-offs (`stress-pid0`, see `cell_testkit::stress`),
//! every process checking its children's statuses; here the report is checked against what
//! the guests say they did: every process listed, every orphan killed by the cascade, both
//! shards used, children on another shard than their parent's (sockets handed across
//! included), and the tables empty at the end; and forty rounds of it leave the host's peak
//! memory where four left it. The rest of the suite runs sharded too (`make test`:
//! `CELL_SHARDS`, `CELL_PLACEMENT`).

mod common;

use std::collections::HashMap;

use common::*;
use serde_json::Value;

/// What one stress run did, by its guests' own account and by the report.
struct Stress {
    out: Finished,
    /// Σ `spawned` over the `stress: pid P spawned S orphaned O` lines.
    spawned: usize,
    orphaned: usize,
}

/// Rounds of pid0's own work per run (`make stress` asks for more).
fn rounds() -> String {
    std::env::var("CELL_STRESS_ROUNDS").unwrap_or_else(|_| "3".into())
}

fn stress(placement: &str, seed: u32) -> Stress {
    let rounds = rounds();
    let out = Cell::run("stress-pid0")
        .flags(&["--shards", "2", "--placement", placement, "--timeout", "1h"])
        .net(&["listen=127.0.0.1:0", "connect=127.0.0.1:1-65535"])
        .args(&["--rounds", &rounds, "--depth", "3", "--actions", "20"])
        .args(&["--seed", &seed.to_string()])
        .report()
        .finish();
    out.assert_code(0)
        .assert_stderr_has(&format!("stress: done, {rounds} rounds"));
    assert!(
        !out.stderr.contains("did not stop"),
        "the tables did not empty:\n{}",
        out.stderr
    );
    let (mut spawned, mut orphaned) = (0, 0);
    for line in out.stderr_lines_with("stress: pid ") {
        let words: Vec<&str> = line.split_whitespace().collect();
        let count = |after: &str| -> usize {
            let at = words.iter().position(|w| *w == after).expect(after);
            words[at + 1].parse().expect("a count")
        };
        spawned += count("spawned");
        orphaned += count("orphaned");
    }
    Stress {
        out,
        spawned,
        orphaned,
    }
}

fn processes(out: &Finished) -> &Vec<Value> {
    out.report()["processes"]
        .as_array()
        .expect("report.processes")
}

/// `(name, its shard, its parent's shard)` for every process with a parent in the report.
fn crossings(out: &Finished) -> Vec<(String, u64, u64)> {
    let all = processes(out);
    let shard_of: HashMap<u64, u64> = all
        .iter()
        .map(|p| (p["pid"].as_u64().unwrap(), p["shard"].as_u64().unwrap()))
        .collect();
    all.iter()
        .filter_map(|p| {
            let parent = p["parent"].as_u64()?;
            Some((
                p["name"].as_str().unwrap_or("").to_string(),
                p["shard"].as_u64()?,
                *shard_of.get(&parent)?,
            ))
        })
        .collect()
}

#[test]
fn a_random_tree_over_two_shards_loses_no_status() {
    for (placement, seed) in [("spread", 1), ("load", 2), ("spread", 3)] {
        let run = stress(placement, seed);
        let out = &run.out;
        assert!(run.spawned > 50, "a small tree: {}", out.stderr);
        let not_listed = out.report()["processes_not_listed"].as_u64().unwrap_or(0) as usize;
        assert_eq!(
            processes(out).len() + not_listed,
            run.spawned + 1,
            "every process the guests started, and pid0, is in the report"
        );
        if not_listed == 0 {
            assert_eq!(
                out.count_status("killed", "cascade".into()),
                run.orphaned,
                "exactly the orphans were killed by the cascade"
            );
        }
        assert!(out.count_status("killed", "parent".into()) > 0);
        let crossed = crossings(out);
        for shard in [0, 1] {
            assert!(
                crossed.iter().any(|(_, s, _)| *s == shard),
                "nothing ran on shard {shard} ({placement})"
            );
        }
        let across = crossed.iter().filter(|(_, s, p)| s != p).count();
        assert!(across > 0, "no child ran on another shard than its parent");
        if placement == "spread" {
            assert_eq!(across, crossed.len(), "spread: every child crossed");
            assert!(
                crossed.iter().any(|(n, s, p)| n == "inetd-echo" && s != p),
                "no socket was handed to a child on another shard"
            );
        }
    }
}

#[test]
fn one_shard_runs_everything_on_one_thread() {
    let out = Cell::run("stress-pid0")
        .flags(&["--shards", "1"])
        .net(&["listen=127.0.0.1:0", "connect=127.0.0.1:1-65535"])
        .args(&["--rounds", "1", "--depth", "2", "--actions", "12"])
        .report()
        .finish();
    out.assert_code(0);
    assert!(processes(&out).iter().all(|p| p["shard"] == 0));
}

#[test]
fn a_shard_count_out_of_range_is_a_usage_error() {
    for n in ["0", "257", "many"] {
        Cell::run("child-leaf")
            .flags(&["--shards", n])
            .finish()
            .assert_code(125);
    }
}

#[test]
fn cell_exec_refuses_shards_of_its_own() {
    Cell::run("child-leaf")
        .via("unix:/nonexistent/cell.sock")
        .env_remove("CELL_SHARDS")
        .flags(&["--shards", "2"])
        .finish()
        .assert_code(125)
        .assert_stderr_has("--shards is not available through the daemon");
}

/// What the host holds for children on other shards (shadows, relays, service links,
/// duplicated sockets, stores) is given back as they end: forty rounds of the stress, every
/// child across a thread boundary, peak no higher than four rounds' (each round's tree is
/// about as large as the last; a leak of each crossed child's store, memory or links would
/// grow with the rounds).
#[test]
fn crossing_again_and_again_does_not_grow_the_host() {
    let peak = |rounds: &str| {
        let (out, kib) = Cell::run("stress-pid0")
            .flags(&[
                "--shards",
                "2",
                "--placement",
                "spread",
                "--timeout",
                "100s",
            ])
            .net(&["listen=127.0.0.1:0", "connect=127.0.0.1:1-65535"])
            .args(&["--rounds", rounds, "--depth", "2", "--actions", "16"])
            .finish_with_peak_rss();
        out.assert_code(0)
            .assert_stderr_has(&format!("stress: done, {rounds} rounds"));
        kib
    };
    let few = peak("4");
    let many = peak("40");
    eprintln!("peak RSS: {few} KiB after 4 rounds, {many} KiB after 40");
    assert!(
        many <= few + 32 * 1024,
        "peak RSS {many} KiB after 40 rounds against {few} KiB after 4"
    );
}

/// A socket handed to many children at once: each child on another shard holds a duplicate
/// descriptor, counted in the granting process's `max-sockets`, so with a few slots only a
/// few go across and the rest share the socket on their parent's shard — every spawn
/// succeeds and the host's descriptors stay within the limit.
#[test]
fn one_socket_handed_to_many_children_stays_within_max_sockets() {
    let out = Cell::run("stress-pid0")
        .flags(&[
            "--shards",
            "2",
            "--placement",
            "spread",
            "--max-sockets",
            "5",
        ])
        .net(&["listen=127.0.0.1:0", "connect=127.0.0.1:1-65535"])
        .args(&["--share-socket", "40"])
        .report()
        .finish();
    out.assert_code(0)
        .assert_stderr_has("stress: shared one socket with 40 children");
    let idle: Vec<u64> = processes(&out)
        .iter()
        .filter(|p| p["name"] == "idle")
        .map(|p| p["shard"].as_u64().unwrap())
        .collect();
    assert_eq!(idle.len(), 40);
    let across = idle.iter().filter(|s| **s == 1).count();
    // pid0 holds the listener, both ends of the connection: 2 slots left for duplicates.
    assert_eq!(across, 2, "children across: {idle:?}");
}
