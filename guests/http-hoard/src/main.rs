//! A hostile `wasi:http` guest: builds `--sets N` header sets of about `--bytes B` each and
//! holds every one, so the host would hold N × B bytes for it if nothing charged them.
//!
//! `--via` picks how each set is made: `new` (`fields.from-list`), `clone` (clone one full set,
//! then append to the copy, so the host copies it), `request` (hand each set to an
//! `outgoing-request`, which keeps it), or `churn` (build and drop each set: the host's charge
//! must be given back, so this one finishes under any limit a single set fits in).
//!
//! Prints `http-hoard: held K` every 100 sets and `http-hoard: held all N` at the end.

use wasip2::http::types::{Fields, OutgoingRequest};

/// The value bytes of one header entry.
const VALUE_BYTES: usize = 1000;

struct Args {
    sets: usize,
    bytes: usize,
    via: String,
}

fn parse() -> Result<Args, String> {
    let mut args = Args {
        sets: 100,
        bytes: 60_000,
        via: "new".into(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--sets" => args.sets = value.parse().map_err(|e| format!("--sets: {e}"))?,
            "--bytes" => args.bytes = value.parse().map_err(|e| format!("--bytes: {e}"))?,
            "--via" => args.via = value,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    Ok(args)
}

/// One header set of about `bytes` bytes of values.
fn full_set(bytes: usize) -> Result<Fields, String> {
    let entries: Vec<(String, Vec<u8>)> = (0..bytes / VALUE_BYTES)
        .map(|i| (format!("x-hoard-{i}"), vec![b'v'; VALUE_BYTES]))
        .collect();
    Fields::from_list(&entries).map_err(|e| format!("from-list: {e:?}"))
}

fn hoard(args: &Args) -> Result<(), String> {
    let base = full_set(args.bytes)?;
    // Everything made is kept until the end.
    let (mut sets, mut requests) = (Vec::new(), Vec::new());
    for i in 1..=args.sets {
        match args.via.as_str() {
            "new" => sets.push(full_set(args.bytes)?),
            "clone" => {
                let copy = base.clone();
                copy.append("x-copy", b"1")
                    .map_err(|e| format!("append: {e:?}"))?;
                sets.push(copy);
            }
            "request" => requests.push(OutgoingRequest::new(full_set(args.bytes)?)),
            "churn" => drop(full_set(args.bytes)?),
            other => return Err(format!("unknown --via {other}")),
        }
        if i % 100 == 0 {
            eprintln!("http-hoard: held {i}");
        }
    }
    eprintln!("http-hoard: held all {}", args.sets);
    drop((sets, requests));
    Ok(())
}

fn main() {
    if let Err(e) = parse().and_then(|args| hoard(&args)) {
        eprintln!("http-hoard: error: {e}");
        std::process::exit(1);
    }
}
