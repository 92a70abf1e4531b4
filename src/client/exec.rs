//! `cell exec`: `cell run` through a daemon. The same flags and exit codes: the wasm is read
//! here and sent, the job's stderr (and a plain job's stdout) streamed to ours, our stdin
//! forwarded to a plain job, SIGINT/SIGTERM turned into a kill of the job (exit 130/143), and
//! `--report FILE` written from the job's own report.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cell_proto::{CellError, JobCode, JobRequest};

use crate::cell_capnp::{byte_stream, job};
use crate::hoststdio::HostStdio;
use crate::run::{exit_code_for, RunError};
use crate::status::ExitStatus;

/// What `cell exec` does: the job to ask for (its code is read from `wasm`), where, and where
/// its report goes.
pub(crate) struct ExecConfig {
    pub connect: super::Endpoint,
    pub wasm: PathBuf,
    pub request: JobRequest<Arc<[u8]>>,
    pub report: Option<PathBuf>,
}

/// How long the job's streams may take to end after its pid0 did (its tree unwinding).
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Runs the job and returns the exit code `cell run` would have.
///
/// # Errors
/// The file cannot be read (127), the daemon refuses the job (126 for code that cannot run,
/// 125 otherwise), or the connection fails (125).
pub(crate) async fn exec(
    mut config: ExecConfig,
    shutdown: impl std::future::Future<Output = i32>,
) -> Result<u8, RunError> {
    let path = config.wasm.clone();
    let bytes = std::fs::read(&path).map_err(|source| RunError::Read {
        path: path.clone(),
        source,
    })?;
    config.request.code = JobCode::Wasm(Arc::from(bytes));
    if config.request.name.is_empty() {
        config.request.name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "job".into());
    }
    let mut report = crate::hostfiles::open_report(&[], config.report.as_deref())
        .map_err(|e| RunError::Host(e.into()))?;
    let daemon = super::connect(&config.connect).await?;
    let mut req = daemon.run_request();
    config
        .request
        .write(req.get().init_request())
        .map_err(|e| RunError::Host(e.into()))?;
    let job = match req.send().promise.await {
        Ok(reply) => reply.get().and_then(|r| r.get_job()).map_err(host)?,
        Err(e) => {
            return Err(RunError::Daemon {
                path,
                error: CellError::from(e),
            })
        }
    };
    let stdio = HostStdio::default();
    let streams = Streams::start(&job, &stdio).await;
    tokio::pin!(shutdown);
    let wait = job.wait_request().send().promise;
    let (status, signal) = tokio::select! {
        status = wait => (status, None),
        sig = &mut shutdown => {
            // The job goes the way `cell run`'s tree would on a signal.
            let _ = job.kill_request().send().promise.await;
            (job.wait_request().send().promise.await, Some(sig))
        }
    };
    let status = status
        .and_then(|r| ExitStatus::read(r.get()?.get_status()?))
        .map_err(host)?;
    if tokio::time::timeout(DRAIN_GRACE, streams.finish())
        .await
        .is_err()
    {
        tracing::warn!("the job's output did not end within {DRAIN_GRACE:?}");
    }
    stdio.finish(DRAIN_GRACE);
    if let Some(out) = report.as_mut() {
        let json = job.report_request().send().promise.await.map_err(host)?;
        let json = json.get().and_then(|r| r.get_json()).map_err(host)?;
        let text = json.to_str().map_err(|e| host(e.into()))?;
        write_report(out, text).map_err(|e| RunError::Host(e.into()))?;
    }
    if !matches!(status, ExitStatus::Exited(_)) || signal.is_some() {
        match signal {
            Some(sig) => eprintln!("cell: stopped by signal {sig}"),
            None => eprintln!("cell: pid0 {status}"),
        }
    }
    Ok(match signal {
        Some(sig) => (128 + sig).clamp(0, 255) as u8,
        None => exit_code_for(&status),
    })
}

fn host(e: capnp::Error) -> RunError {
    RunError::Host(anyhow::anyhow!("{}", super::described(&e)))
}

fn write_report(out: &mut crate::hostfiles::ReportOut, json: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    match out {
        crate::hostfiles::ReportOut::Stderr => {
            let mut err = std::io::stderr().lock();
            err.write_all(json.as_bytes())?;
            err.write_all(b"\n")
        }
        crate::hostfiles::ReportOut::File(file) => {
            file.write_all(json.as_bytes())?;
            file.write_all(b"\n")?;
            file.flush()
        }
    }
}

/// The tasks copying the job's streams to ours and ours to it.
struct Streams {
    copies: Vec<tokio::task::JoinHandle<()>>,
}

impl Streams {
    async fn start(job: &job::Client, stdio: &HostStdio) -> Streams {
        let mut copies = Vec::new();
        if let Ok(r) = job.stderr_request().send().promise.await {
            if let Ok(stream) = r.get().and_then(|r| r.get_stream()) {
                copies.push(tokio::task::spawn_local(copy_out(stream, Out::Stderr)));
            }
        }
        // Only a plain job has stdio of its own; an RPC job's is its connection.
        if let Ok(r) = job.stdout_request().send().promise.await {
            if let Ok(stream) = r.get().and_then(|r| r.get_stream()) {
                let out = Out::Stdout(stdio.output());
                copies.push(tokio::task::spawn_local(copy_out(stream, out)));
                if let Ok(r) = job.stdin_request().send().promise.await {
                    if let Ok(stream) = r.get().and_then(|r| r.get_stream()) {
                        // Not waited for: our stdin may never end.
                        tokio::task::spawn_local(copy_in(stdio.input(), stream));
                    }
                }
            }
        }
        Streams { copies }
    }

    async fn finish(self) {
        for copy in self.copies {
            let _ = copy.await;
        }
    }
}

enum Out {
    Stderr,
    Stdout(crate::transport::PipeWriter),
}

async fn copy_out(stream: byte_stream::Client, out: Out) {
    loop {
        let mut req = stream.read_request();
        req.get().set_max_bytes(0);
        let Ok(reply) = req.send().promise.await else {
            break;
        };
        let Ok(data) = reply.get().and_then(|r| r.get_data()) else {
            break;
        };
        if data.is_empty() {
            break;
        }
        match &out {
            Out::Stderr => {
                use std::io::Write as _;
                let _ = std::io::stderr().lock().write_all(data);
            }
            Out::Stdout(pipe) => {
                if pipe.write_all(data).await.is_err() {
                    break;
                }
            }
        }
    }
    if let Out::Stdout(pipe) = out {
        pipe.close();
    }
}

async fn copy_in(input: crate::transport::PipeReader, stream: byte_stream::Client) {
    loop {
        let data = input.read(crate::limits::MAX_READ_CHUNK).await;
        if data.is_empty() {
            break;
        }
        let mut req = stream.write_request();
        req.get().set_data(&data);
        if req.send().promise.await.is_err() {
            return;
        }
    }
    let _ = stream.close_request().send().promise.await;
}
