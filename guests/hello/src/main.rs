//! hello: an ordinary WASI program (plain std, no RPC, no SDK), for `cell run --plain` parity
//! checks against what `wasmtime run` does.
//!
//! `hello COMMAND [ARG]`, one command per run:
//! - `args`: prints `argv[i]=…` per argument (argv[0] included) on stdout.
//! - `env`: prints the whole environment as `K=V` lines, sorted.
//! - `read PATH`: prints the file's contents.
//! - `write PATH`: creates PATH and writes `written` into it; prints `wrote PATH`.
//! - `cat`: copies stdin to stdout until end of input.
//! - `exit N`: exits with code N (exactly, through WASI `exit-with-code`).
//! - `trap`: executes a wasm `unreachable` instruction.
//! - `clock`: prints `unix-seconds=N` (wall clock) and `monotonic-ok` if the monotonic clock
//!   moves forward.
//! - `random`: prints two 128-bit random numbers in hex on one line.
//! - `cwd`: prints `initial-cwd=…` (`wasi:cli/environment.initial-cwd`, `none` if unset).
//!
//! Errors print `error: …` on stderr and exit with code 1.

use std::io::{Read as _, Write as _};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let command = args.get(1).map(String::as_str).unwrap_or("args");
    let operand = args.get(2).map(String::as_str);
    if let Err(e) = run(command, operand, &args) {
        eprintln!("error: {e}");
        exit(1);
    }
}

fn run(command: &str, operand: Option<&str>, args: &[String]) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    let need = |what: &str| operand.ok_or_else(|| format!("{command} needs {what}"));
    match command {
        "args" => {
            for (i, a) in args.iter().enumerate() {
                writeln!(out, "argv[{i}]={a}").map_err(|e| e.to_string())?;
            }
        }
        "env" => {
            let mut vars: Vec<(String, String)> = std::env::vars().collect();
            vars.sort();
            for (k, v) in vars {
                writeln!(out, "{k}={v}").map_err(|e| e.to_string())?;
            }
        }
        "read" => {
            let path = need("a path")?;
            let text = std::fs::read_to_string(path).map_err(|e| format!("read {path}: {e}"))?;
            out.write_all(text.as_bytes()).map_err(|e| e.to_string())?;
        }
        "write" => {
            let path = need("a path")?;
            std::fs::write(path, "written").map_err(|e| format!("write {path}: {e}"))?;
            writeln!(out, "wrote {path}").map_err(|e| e.to_string())?;
        }
        "cwd" => {
            let cwd = wasip2::cli::environment::initial_cwd();
            let shown = cwd.as_deref().unwrap_or("none");
            writeln!(out, "initial-cwd={shown}").map_err(|e| e.to_string())?;
        }
        "cat" => {
            let mut input = std::io::stdin().lock();
            let mut buf = [0u8; 4096];
            loop {
                let n = input.read(&mut buf).map_err(|e| format!("stdin: {e}"))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
                out.flush().map_err(|e| e.to_string())?;
            }
        }
        "exit" => {
            let code: u8 = need("a code")?
                .parse()
                .map_err(|e| format!("bad code: {e}"))?;
            out.flush().map_err(|e| e.to_string())?;
            exit(code);
        }
        "trap" => trap(),
        "clock" => {
            let secs = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_err(|e| e.to_string())?
                .as_secs();
            writeln!(out, "unix-seconds={secs}").map_err(|e| e.to_string())?;
            let start = Instant::now();
            while start.elapsed().is_zero() {}
            writeln!(out, "monotonic-ok").map_err(|e| e.to_string())?;
        }
        "random" => {
            let a = wasip2::random::random::get_random_u64();
            let b = wasip2::random::random::get_random_u64();
            writeln!(out, "{a:016x}{b:016x}").map_err(|e| e.to_string())?;
            let c = wasip2::random::random::get_random_u64();
            let d = wasip2::random::random::get_random_u64();
            writeln!(out, "{c:016x}{d:016x}").map_err(|e| e.to_string())?;
        }
        other => return Err(format!("unknown command {other:?}")),
    }
    out.flush().map_err(|e| e.to_string())
}

/// Exits with exactly `code` (std's `process::exit(n)` reports every non-zero code as 1 on
/// wasm32-wasip2).
fn exit(code: u8) -> ! {
    let _ = std::io::stdout().flush();
    wasip2::cli::exit::exit_with_code(code);
    std::process::abort()
}

#[cfg(target_arch = "wasm32")]
fn trap() -> ! {
    core::arch::wasm32::unreachable()
}

#[cfg(not(target_arch = "wasm32"))]
fn trap() -> ! {
    std::process::abort()
}
