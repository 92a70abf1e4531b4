//! Shared harness for the integration tests: run the real `cell` binary on real guests built
//! from `guests/` (by `make test`, through `guests/build.sh`).
#![allow(dead_code)]

use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The longest any single `cell` run may take in a test before it is killed and the test fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Path of a guest's wasm, failing with a hint if the guests were not built.
pub fn guest(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("guests/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the guests first (`make guests`)",
        path.display()
    );
    path
}

/// A compile cache shared by all tests of one `cargo test` run.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cell-cache")
}

/// What a finished `cell` process left behind.
#[derive(Debug)]
pub struct Finished {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Panics with the whole stderr unless `cell` exited with `code`.
    pub fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "unexpected exit code; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Panics with the whole stderr unless it contains `needle`.
    pub fn assert_stderr_has(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "stderr lacks {needle:?}; stderr:\n{}",
            self.stderr
        );
        self
    }

    /// Lines of stderr containing `needle`.
    pub fn stderr_lines_with(&self, needle: &str) -> Vec<&str> {
        self.stderr.lines().filter(|l| l.contains(needle)).collect()
    }
}

/// A `cell` command with a clean environment: no RUST_LOG from the caller's shell.
pub fn cell() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cell"));
    cmd.env_remove("RUST_LOG");
    cmd
}

/// `cell run --cache-dir <shared> <wasm> <args...>`.
pub fn cell_run(wasm: &std::path::Path, args: &[&str]) -> Command {
    let mut cmd = cell();
    cmd.arg("run")
        .arg("--cache-dir")
        .arg(cache_dir())
        .arg(wasm)
        .args(args);
    cmd
}

/// Runs `cmd` to completion (killing it after [`RUN_TIMEOUT`]) and collects its output.
pub fn finish(cmd: Command) -> Finished {
    run_to_end(cmd, None)
}

/// Like [`finish`], with `input` written to the command's stdin (then closed).
pub fn finish_with_stdin(cmd: Command, input: Vec<u8>) -> Finished {
    run_to_end(cmd, Some(input))
}

fn run_to_end(mut cmd: Command, input: Option<Vec<u8>>) -> Finished {
    let stdin = if input.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    };
    let mut child = cmd
        .stdin(stdin)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cell");
    let feeder = child.stdin.take().zip(input).map(|(mut pipe, input)| {
        std::thread::spawn(move || {
            use std::io::Write as _;
            // cell may exit without reading everything; that is its business.
            let _ = pipe.write_all(&input);
        })
    });
    let out = drain(child.stdout.take());
    let err = drain(child.stderr.take());
    let start = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait on cell") {
            break Some(s);
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(feeder) = feeder {
        let _ = feeder.join();
    }
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    let Some(status) = status else {
        panic!("cell did not finish within {RUN_TIMEOUT:?}; stderr:\n{stderr}");
    };
    Finished {
        code: status.code(),
        stdout,
        stderr,
    }
}

fn drain<R: Read + Send + 'static>(r: Option<R>) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(mut r) = r {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        s
    })
}

/// Runs `cmd` to completion (stdout discarded, stderr collected) while sampling its peak
/// resident memory (VmHWM, KiB) from /proc; panics if it runs past [`RUN_TIMEOUT`] or no sample
/// was taken.
pub fn finish_with_peak_rss(mut cmd: Command) -> (Finished, u64) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn cell");
    let pid = child.id();
    let err = drain(child.stderr.take());
    let mut peak = 0;
    let start = Instant::now();
    let status = loop {
        if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
            if let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            {
                peak = peak.max(kib);
            }
        }
        if let Some(s) = child.try_wait().expect("wait on cell") {
            break s;
        }
        if start.elapsed() > RUN_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cell did not finish within {RUN_TIMEOUT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(peak > 0, "no VmHWM sample");
    let out = Finished {
        code: status.code(),
        stdout: String::new(),
        stderr: err.join().unwrap_or_default(),
    };
    (out, peak)
}

/// Runs the `scenarios` guest as pid0 with `args` and returns the finished run.
pub fn scenario(args: &[&str]) -> Finished {
    finish(cell_run(&guest("scenarios"), args))
}

/// Kills process `pid` if it is still running [`RUN_TIMEOUT`] after this was created, so a
/// test that reads a child's output line by line cannot hang CI. Dropping it disarms it.
pub struct Watchdog(Option<std::sync::mpsc::Sender<()>>);

impl Watchdog {
    pub fn arm(pid: u32) -> Self {
        let (disarm, disarmed) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                disarmed.recv_timeout(RUN_TIMEOUT)
            {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        });
        Watchdog(Some(disarm))
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = d.send(());
        }
    }
}
