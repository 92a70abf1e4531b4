//! Percentiles and human-readable numbers. Samples are nanoseconds.

/// p50, p99 and mean of a set of samples, in nanoseconds.
#[derive(Clone, Copy, Debug, Default)]
pub struct Summary {
    pub p50: u64,
    pub p99: u64,
    pub mean: u64,
}

impl Summary {
    /// Nearest-rank percentiles, the same method the guest uses (`bench-pid0`), so host and
    /// guest numbers compare like for like.
    pub fn of(mut samples: Vec<u64>) -> Summary {
        if samples.is_empty() {
            return Summary::default();
        }
        samples.sort_unstable();
        let at = |pct: usize| samples[(samples.len() * pct / 100).min(samples.len() - 1)];
        Summary {
            p50: at(50),
            p99: at(99),
            mean: samples.iter().sum::<u64>() / samples.len() as u64,
        }
    }
}

/// The middle element by `key` (the upper one of an even count): the round a repeated
/// measurement reports, so one round disturbed by a noisy neighbour does not decide the result.
pub fn median_by<T, K: PartialOrd>(mut v: Vec<T>, key: impl Fn(&T) -> K) -> Option<T> {
    v.sort_by(|a, b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let mid = v.len() / 2;
    v.into_iter().nth(mid)
}

/// `12.3 µs`, `4.56 ms`, `1.23 s`.
pub fn dur(ns: u64) -> String {
    let ns = ns as f64;
    if ns < 1e3 {
        format!("{ns:.0} ns")
    } else if ns < 1e6 {
        format!("{:.1} µs", ns / 1e3)
    } else if ns < 1e9 {
        format!("{:.2} ms", ns / 1e6)
    } else {
        format!("{:.2} s", ns / 1e9)
    }
}

/// `p50 / p99` of a summary.
pub fn p50_p99(s: Summary) -> String {
    format!("{} / {}", dur(s.p50), dur(s.p99))
}

/// `123,456/s`.
pub fn rate(per_s: f64) -> String {
    format!("{}/s", thousands(per_s.round() as u64))
}

/// `12,345`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1.5 MiB`, `2.30 GiB`.
pub fn bytes(b: u64) -> String {
    let b = b as f64;
    if b < 1024.0 * 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", b / 1024.0 / 1024.0 / 1024.0)
    }
}

/// `1.07x`.
pub fn ratio(cell: f64, baseline: f64) -> String {
    if baseline <= 0.0 {
        return "—".into();
    }
    format!("{:.2}x", cell / baseline)
}
