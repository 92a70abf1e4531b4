//! The check reporter of the test pid0s: the tests count on its exact lines.

use std::fmt::Display;

use cell_guest::log;

/// Counts checks and logs each one as `ok: <what>` or `fail: <what>` on stderr, as it happens
/// (so a hang later on still leaves the earlier outcomes in the log).
#[derive(Default)]
pub struct Report {
    passed: u32,
    failed: u32,
}

impl Report {
    /// A passed check: logs `ok: <what>`.
    pub fn ok(&mut self, what: impl Display) {
        self.passed += 1;
        log!("ok: {what}");
    }

    /// A failed check: logs `fail: <what>`.
    pub fn fail(&mut self, what: impl Display) {
        self.failed += 1;
        log!("fail: {what}");
    }

    /// [`ok`](Self::ok) if `passed`, else [`fail`](Self::fail).
    pub fn check(&mut self, passed: bool, what: impl Display) {
        if passed {
            self.ok(what)
        } else {
            self.fail(what)
        }
    }

    /// How many checks failed so far.
    pub fn failed(&self) -> u32 {
        self.failed
    }

    /// Logs the summary line `--- N passed, M failed`.
    pub fn summary(&self) {
        log!("--- {} passed, {} failed", self.passed, self.failed);
    }

    /// Logs the summary and exits: 0 if no check failed, else 1.
    pub fn finish(self) -> ! {
        self.summary();
        cell_guest::exit(u8::from(self.failed > 0))
    }
}
