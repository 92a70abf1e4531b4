//! Flags that bound what pid0 (and so its whole tree) may use.

use clap::Args;

use crate::limits::Limits;

#[derive(Debug, Args)]
pub struct LimitArgs {}

impl LimitArgs {
    pub fn into_limits(self) -> Limits {
        Limits::default()
    }
}
