//! child-silent: never speaks RPC. It writes one line to stderr and exits with the code given
//! as its first argument (default 0), so the host must cope with a child that ignores its RPC
//! connection entirely (expected status: `exited with code <code>`, and nothing hangs).

fn main() {
    let code = match std::env::args().nth(1) {
        None => 0,
        Some(arg) => match arg.parse::<u8>() {
            Ok(code) => code,
            Err(_) => {
                cell_guest::log!("silent: bad exit code {arg:?}");
                2
            }
        },
    };
    cell_guest::log!("silent: not speaking RPC, exiting with code {code}");
    cell_guest::exit(code)
}
