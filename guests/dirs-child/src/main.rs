//! dirs-child: a child that checks, with plain `std::fs`, exactly which directories it was
//! given and with what rights. Each argument is one check:
//!
//! - `read PATH=TEXT`  PATH can be read and holds TEXT
//! - `write PATH=TEXT` PATH can be created with TEXT
//! - `no-write PATH`   creating PATH fails
//! - `no-read PATH`    reading PATH fails (absent, outside every preopen, or a symlink out)
//! - `dirs N`          `Session.dirs` lists N directories
//!
//! Prints `ok: …`/`fail: …` lines and a summary; exits 0 only if every check held.

use cell_testkit::Report;

fn main() {
    cell_guest::run(|caps| async move {
        let mut report = Report::default();
        for arg in std::env::args().skip(1) {
            let (check, rest) = arg.split_once(' ').unwrap_or((&arg, ""));
            let (path, text) = rest.split_once('=').unwrap_or((rest, ""));
            match check {
                "read" => {
                    let got = std::fs::read_to_string(path);
                    report.check(
                        got.as_deref().ok() == Some(text),
                        format!("read {path}: {got:?}"),
                    );
                }
                "write" => {
                    let done = std::fs::write(path, text);
                    report.check(done.is_ok(), format!("write {path}: {done:?}"));
                }
                "no-write" => {
                    let done = std::fs::write(path, "x");
                    report.check(done.is_err(), format!("no write {path}: {done:?}"));
                }
                "no-read" => {
                    let got = std::fs::read(path);
                    report.check(got.is_err(), format!("no read {path}: {:?}", got.err()));
                }
                "dirs" => {
                    let dirs = caps.dirs().await?;
                    let paths: Vec<&str> = dirs.iter().map(|d| d.path.as_str()).collect();
                    report.check(
                        paths.len().to_string() == path,
                        format!("Session.dirs lists {paths:?}"),
                    );
                }
                other => report.fail(format!("unknown check {other:?}")),
            }
        }
        report.finish()
    })
}
