//! The `cell` binary: parse flags, run, map the outcome to an exit code. Nothing else.

use std::process::ExitCode;

use tracing_subscriber::EnvFilter;

use cell::{exit_code, Cli};

fn main() -> ExitCode {
    let cli = match Cli::parse_command_line() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version are not errors; anything else is a usage error of cell's own.
            return if e.use_stderr() {
                Cli::report_usage_error(&e);
                ExitCode::from(exit_code::HOST_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cell: cannot start the runtime: {e}");
            return ExitCode::from(exit_code::HOST_ERROR);
        }
    };
    let local = tokio::task::LocalSet::new();
    let code = match local.block_on(&runtime, cli.execute()) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("cell: {e:#}");
            ExitCode::from(e.exit_code())
        }
    };
    // Blocking threads may still be busy on behalf of guests that are gone (a compile, a file
    // operation stuck on a FIFO): give them a short grace, then exit regardless.
    drop(local);
    runtime.shutdown_timeout(cell::EXIT_GRACE);
    code
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(true)
        .init();
}
