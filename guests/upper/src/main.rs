//! upper: an ordinary WASI filter (plain std, no RPC): copies stdin to stdout, ASCII letters
//! uppercased, until end of input; then exits 0. Used as a plain child driven through
//! ByteStreams (`pipe-pid0`).

use std::io::{Read as _, Write as _};

fn main() {
    let mut input = std::io::stdin().lock();
    let mut out = std::io::stdout().lock();
    let mut buf = [0u8; 8192];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                eprintln!("upper: stdin: {e}");
                std::process::exit(1);
            }
        };
        buf[..n].make_ascii_uppercase();
        if let Err(e) = out.write_all(&buf[..n]) {
            eprintln!("upper: stdout: {e}");
            std::process::exit(1);
        }
    }
    let _ = out.flush();
}
