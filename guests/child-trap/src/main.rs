//! child-trap: connects, says who it is, then executes a wasm `unreachable` instruction.
//!
//! The host must report `trapped(<message>)` for it, and nothing else (its parent, siblings)
//! may be affected.

use cell_guest::log;

fn main() {
    cell_guest::run(|caps| async move {
        let info = caps.info().await?;
        log!("trap pid={} depth={}: about to trap", info.pid, info.depth);
        trap()
    })
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}
