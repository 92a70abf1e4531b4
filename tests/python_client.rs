//! The foreign client: `examples/python/run_job.py` (pycapnp, installed by
//! `examples/python/setup.sh` from PyPI into a virtualenv under the build directory) loads
//! `capnp/cell.capnp`, connects to a real daemon's socket, runs jobs, reads their stderr and
//! waits for their statuses. Skipped, saying so, only when PyPI cannot be reached.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{guest, Daemon};

/// The virtualenv's python, or `None` (with the reason printed) when PyPI is unreachable.
fn python() -> Option<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("pyvenv");
    let setup = Command::new("bash")
        .arg(root.join("examples/python/setup.sh"))
        .arg(&venv)
        .output()
        .expect("run setup.sh");
    match setup.status.code() {
        Some(0) => Some(venv.join("bin/python")),
        Some(3) => {
            eprintln!(
                "SKIPPED: the Python client test needs pycapnp from PyPI, which is unreachable: {}",
                String::from_utf8_lossy(&setup.stderr)
            );
            None
        }
        _ => panic!(
            "examples/python/setup.sh failed:\n{}",
            String::from_utf8_lossy(&setup.stderr)
        ),
    }
}

#[test]
fn a_python_client_runs_a_job_reads_its_stderr_and_waits_for_it() {
    let Some(python) = python() else { return };
    let daemon = Daemon::start(&[]);
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/python/run_job.py");
    let run = |wasm: PathBuf, args: &[&str]| {
        let out = Command::new(&python)
            .arg(&script)
            .arg("--connect")
            .arg(daemon.addr())
            .arg(wasm)
            .args(args)
            .output()
            .expect("run the python client");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = run(guest("pid0"), &[]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    let status: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(status["status"], "exited");
    assert_eq!(status["detail"], 0);
    // The job's whole stderr arrived, its children's lines among it.
    assert!(stderr.contains("pid0: bye!"), "{stderr}");
    assert!(stderr.contains("] echo pid="), "{stderr}");
    let (code, stdout, _) = run(guest("hello"), &["exit", "7"]);
    assert_eq!(code, Some(7), "{stdout}");
    let (code, stdout, _) = run(PathBuf::from(file!()), &[]);
    assert_eq!(code, Some(2), "{stdout}");
    assert!(stdout.contains("bad-wasm"), "{stdout}");
}
