//! Everything after the wasm path of `cell run` belongs to the guest, as with `wasmtime run`:
//! `cell run app.wasm --help` passes `--help` to the app. clap alone would still read cell's
//! own flags there (`--help`, `--version`, `--timeout`, `-v`, …), so before parsing, the
//! command line is split at the wasm path and a `--` is put after it.
//!
//! Finding the wasm path needs to know which of `cell run`'s options take a value (`--timeout
//! 1s app.wasm`): that is read from clap's own definition of the command, so it cannot drift.

use std::ffi::OsString;

use clap::CommandFactory;

use super::Cli;

/// The subcommands whose command line ends with a wasm path and the guest's arguments.
const GUEST_COMMANDS: [&str; 2] = ["run", "exec"];

/// `argv` with `--` inserted after `cell run`'s (or `cell exec`'s) wasm path (unless there is one already, or no
/// wasm path at all).
pub(crate) fn protect_guest_args(argv: Vec<OsString>) -> Vec<OsString> {
    let command = Cli::command();
    let mut i = 1; // argv[0] is cell itself
                   // Global flags before the subcommand (`cell -v run …`) take no values.
    while i < argv.len() && is_flag(&argv[i]) {
        i += 1;
    }
    let name = argv.get(i).and_then(|a| a.to_str()).unwrap_or_default();
    if !GUEST_COMMANDS.contains(&name) {
        return argv;
    }
    let Some(run) = command.find_subcommand(name) else {
        return argv;
    };
    i += 1;
    while i < argv.len() {
        let Some(arg) = argv[i].to_str() else {
            break; // not UTF-8: the wasm path (cell's flags are ASCII)
        };
        if arg == "--" {
            return argv;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            i += 1 + usize::from(!inline && takes_value_long(run, name));
            continue;
        }
        if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            i += 1 + usize::from(short_needs_next(run, shorts));
            continue;
        }
        // The first operand: the wasm path. Everything after it is the guest's; a `--` right
        // after it is the guest's separator from cell, as before.
        if argv.get(i + 1).and_then(|a| a.to_str()) == Some("--") {
            return argv;
        }
        let mut out = argv;
        out.insert(i + 1, OsString::from("--"));
        return out;
    }
    argv
}

/// The `--report FILE` (or `--report=FILE`) of a `cell run` line that clap refused, so that a
/// usage error is reported there too. Only looks before the wasm path.
pub(crate) fn report_flag(argv: &[OsString]) -> Option<std::path::PathBuf> {
    let protected = protect_guest_args(argv.to_vec());
    let mut it = protected
        .iter()
        .skip_while(|a| a.to_str() != Some("run"))
        .skip(1);
    while let Some(arg) = it.next() {
        let text = arg.to_str()?;
        if text == "--" {
            return None;
        }
        if text == "--report" {
            return it.next().map(std::path::PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--report=") {
            return Some(path.into());
        }
    }
    None
}

/// The wasm path of a `cell run` line, if it has one.
pub(crate) fn wasm_path(argv: &[OsString]) -> Option<std::path::PathBuf> {
    let protected = protect_guest_args(argv.to_vec());
    let sep = protected.iter().position(|a| a.to_str() == Some("--"))?;
    let before = protected.get(sep.checked_sub(1)?)?;
    (before.to_str() != Some("run")).then(|| before.into())
}

fn is_flag(arg: &OsString) -> bool {
    arg.to_str()
        .is_some_and(|a| a.starts_with('-') && a.len() > 1 && a != "--")
}

fn takes_value_long(run: &clap::Command, name: &str) -> bool {
    run.get_arguments()
        .find(|a| a.get_long() == Some(name))
        .is_some_and(|a| a.get_action().takes_values())
}

/// Whether a cluster of short flags (`vv`, `e`) ends with one that takes its value from the
/// next argument.
fn short_needs_next(run: &clap::Command, shorts: &str) -> bool {
    for (pos, c) in shorts.char_indices() {
        let takes = run
            .get_arguments()
            .find(|a| a.get_short() == Some(c))
            .is_some_and(|a| a.get_action().takes_values());
        if takes {
            // `-eVALUE` carries it inline; `-e VALUE` takes the next argument.
            return pos + c.len_utf8() == shorts.len();
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn protect(line: &str) -> String {
        let argv = line.split(' ').map(OsString::from).collect();
        let out = protect_guest_args(argv);
        out.iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn everything_after_the_wasm_is_the_guests() {
        assert_eq!(
            protect("cell run a.wasm --help"),
            "cell run a.wasm -- --help"
        );
        assert_eq!(
            protect("cell run --plain a.wasm --version x"),
            "cell run --plain a.wasm -- --version x"
        );
        assert_eq!(
            protect("cell run --timeout 1s a.wasm --timeout 2s"),
            "cell run --timeout 1s a.wasm -- --timeout 2s"
        );
        assert_eq!(
            protect("cell -v run --timeout=1s -v a.wasm -v"),
            "cell -v run --timeout=1s -v a.wasm -- -v"
        );
        assert_eq!(
            protect("cell run --env K=V a.wasm --env X=Y"),
            "cell run --env K=V a.wasm -- --env X=Y"
        );
    }

    #[test]
    fn the_report_flag_is_found_before_the_wasm_only() {
        let argv = |line: &str| line.split(' ').map(OsString::from).collect::<Vec<_>>();
        let found = |line: &str| report_flag(&argv(line)).map(|p| p.display().to_string());
        assert_eq!(
            found("cell run --bad --report r.json a.wasm").as_deref(),
            Some("r.json")
        );
        assert_eq!(
            found("cell run --report=r.json a.wasm").as_deref(),
            Some("r.json")
        );
        assert_eq!(found("cell run a.wasm --report r.json"), None);
        assert_eq!(found("cell inspect --report r.json"), None);
    }

    #[test]
    fn lines_without_a_wasm_or_with_a_separator_are_left_alone() {
        assert_eq!(protect("cell run --help"), "cell run --help");
        assert_eq!(protect("cell run -- a.wasm --x"), "cell run -- a.wasm --x");
        assert_eq!(protect("cell run a.wasm -- --x"), "cell run a.wasm -- --x");
        assert_eq!(
            protect("cell inspect a.wasm --json"),
            "cell inspect a.wasm --json"
        );
        assert_eq!(protect("cell --version"), "cell --version");
        assert_eq!(
            protect("cell exec --connect unix:/s a.wasm --help"),
            "cell exec --connect unix:/s a.wasm -- --help"
        );
    }
}
