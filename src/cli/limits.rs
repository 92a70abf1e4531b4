//! Flags that bound what pid0 (and so its whole tree) may use.
//!
//! Every flag defaults to the matching field of [`Limits::default`]; each child's limits are
//! derived from its parent's and can only be narrower (see [`Limits::for_child`]). Sizes take
//! human units (`256M`, `64KiB`, plain bytes), durations `ms`/`s`/`m`/`h`.

use std::time::Duration;

use clap::Args;

use crate::limits::Limits;

#[derive(Debug, Args)]
#[command(next_help_heading = "Limits (for pid0; children get the same or less)")]
pub struct LimitArgs {
    /// Memory of each process's store (all linear memories and tables together); growth past it
    /// fails, and a process that dies of it is reported `out of memory` [default: 1G].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub max_memory: Option<u64>,

    /// Wall-clock deadline of each process, from its start (pid0's ends the run: cell exits
    /// 124). A process past it is reported `timed out` [default: none].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,

    /// CPU fuel for pid0; turns on fuel metering (a few % slower). A process that runs out is
    /// reported `out of fuel` [default: not metered].
    #[arg(long, value_name = "N")]
    pub fuel: Option<u64>,

    /// Live processes in the whole tree, pid0 included; spawns past it fail with
    /// "limit: max-procs …" [default: 1024, at most 12192: each process may reserve address
    /// space for two linear memories].
    #[arg(long, value_name = "N", value_parser = parse_max_procs)]
    pub max_procs: Option<u32>,

    /// How many levels may be spawned below pid0 (0 = pid0 may not spawn); spawns past it fail
    /// with "limit: max-depth …" [default: 16].
    #[arg(long, value_name = "N")]
    pub max_depth: Option<u32>,

    /// Largest component `Executor.spawn` accepts; larger ones fail with "limit: …"
    /// [default: 32M].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub max_wasm_size: Option<u64>,

    /// Largest Cap'n Proto message a process may send to the host; a process sending a larger
    /// one is ended as a `protocol violation` [default: 64M].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub max_message_size: Option<u64>,

    /// RPC calls in progress at once on each process's connection; calls past it fail with
    /// "limit: max-outstanding-calls …" [default: 1024].
    #[arg(long, value_name = "N")]
    pub max_outstanding_calls: Option<u32>,

    /// Bytes of stderr kept for a child spawned with `stderr = capture`; what does not fit is
    /// dropped [default: 64K].
    #[arg(long, value_name = "BYTES", value_parser = parse_size)]
    pub stderr_capture: Option<u64>,

    /// Sockets each process may hold open through its Network capability at once; more fail
    /// with "limit: max-sockets …" [default: 64].
    #[arg(long, value_name = "N")]
    pub max_sockets: Option<u32>,
}

impl LimitArgs {
    pub fn into_limits(self) -> Limits {
        let d = Limits::default();
        Limits {
            max_memory: self.max_memory.unwrap_or(d.max_memory),
            timeout: self.timeout.or(d.timeout),
            fuel: self.fuel.or(d.fuel),
            max_procs: self.max_procs.unwrap_or(d.max_procs),
            max_depth: self.max_depth.unwrap_or(d.max_depth),
            max_wasm_bytes: self.max_wasm_size.unwrap_or(d.max_wasm_bytes),
            max_message_bytes: self.max_message_size.unwrap_or(d.max_message_bytes),
            max_outstanding_calls: self
                .max_outstanding_calls
                .unwrap_or(d.max_outstanding_calls),
            stderr_capture_bytes: self.stderr_capture.unwrap_or(d.stderr_capture_bytes),
            max_sockets: self.max_sockets.unwrap_or(d.max_sockets),
        }
    }
}

/// Splits `12M` into `("12", "M")`: the leading digits and the rest, trimmed.
fn split_number(s: &str) -> Result<(u64, &str), String> {
    let s = s.trim();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(end);
    if digits.is_empty() {
        return Err("expected a number, e.g. 256M".into());
    }
    let n = digits
        .parse::<u64>()
        .map_err(|_| format!("{digits} is too large"))?;
    Ok((n, unit.trim()))
}

/// A byte size: plain bytes or `K`/`M`/`G` (also `KB`, `KiB`, …; all powers of 1024).
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    let (n, unit) = split_number(s)?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} (use K, M, G, KiB, MiB, GiB)"
            ))
        }
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s} is too large"))
}

/// A duration: a number followed by `ms`, `s`, `m` or `h`.
pub(crate) fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = split_number(s)?;
    let secs = |mult: u64| {
        n.checked_mul(mult)
            .map(Duration::from_secs)
            .ok_or_else(|| format!("{s} is too large"))
    };
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => secs(1),
        "m" => secs(60),
        "h" => secs(3600),
        "" => Err(format!(
            "missing unit in {s:?} (use ms, s, m or h, e.g. 30s)"
        )),
        _ => Err(format!("unknown unit {unit:?} (use ms, s, m or h)")),
    }
}

/// `--max-procs N`, refused above [`crate::limits::MAX_PROCS_CEILING`]: the address space the
/// tree's memories reserve must fit the host's.
fn parse_max_procs(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("expected a whole number, got {s:?}"))?;
    let ceiling = crate::limits::MAX_PROCS_CEILING;
    if n > ceiling {
        return Err(format!(
            "{n} is more than {ceiling} (each process may reserve {} GiB of address space for its memories)",
            (crate::limits::MAX_MEMORIES as u64 * crate::limits::MEMORY_RESERVATION) >> 30
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("256M"), Ok(256 << 20));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("8mib"), Ok(8 << 20));
        assert_eq!(
            parse_size("12Q"),
            Err("unknown unit \"Q\" (use K, M, G, KiB, MiB, GiB)".into())
        );
        assert!(parse_size("M").is_err());
        assert!(parse_size("-1").is_err());
        assert!(parse_size("99999999999999G").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("300ms"), Ok(Duration::from_millis(300)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("30").unwrap_err().contains("missing unit"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
    }

    #[test]
    fn defaults_come_from_limits_default() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(flatten)]
            l: LimitArgs,
        }
        let t = T::try_parse_from(["t"]).unwrap();
        assert_eq!(t.l.into_limits(), Limits::default());
        let t = T::try_parse_from(["t", "--max-memory", "16M", "--fuel", "5", "--timeout", "1s"])
            .unwrap();
        let l = t.l.into_limits();
        assert_eq!(l.max_memory, 16 << 20);
        assert_eq!(l.fuel, Some(5));
        assert_eq!(l.timeout, Some(Duration::from_secs(1)));
    }
}
