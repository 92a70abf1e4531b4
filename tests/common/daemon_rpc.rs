//! A Rust client of `cell serve` for the tests: the schema's own bindings over the real unix
//! socket, on a current-thread runtime (capnp-rpc is `!Send`).

use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use cell_proto::cell_capnp::{daemon, job};
use cell_proto::{ExitStatus, JobCode, JobMode, JobRequest};
use tokio_util::compat::{TokioAsyncReadCompatExt, TokioAsyncWriteCompatExt};

use super::{guest, Daemon};

/// Runs `f` on a current-thread runtime inside a `LocalSet` (capnp-rpc is `!Send`).
pub fn local<F: std::future::Future>(f: F) -> F::Output {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&rt, f)
}

/// One client connection: its `Daemon`, and the task running its RPC system (aborted on drop,
/// which closes the connection).
pub struct Client {
    pub daemon: daemon::Client,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn connect(sock: &Path) -> Client {
    let stream = tokio::net::UnixStream::connect(sock).await.unwrap();
    let (r, w) = stream.into_split();
    let network = twoparty::VatNetwork::new(
        r.compat(),
        w.compat_write(),
        Side::Client,
        Default::default(),
    );
    let mut system = RpcSystem::new(Box::new(network), None);
    let daemon: daemon::Client = system.bootstrap(Side::Server);
    let task = tokio::task::spawn_local(async move {
        let _ = system.await;
    });
    Client { daemon, task }
}

pub async fn run(client: &Client, wasm: &Rc<[u8]>, args: &[&str], attached: bool) -> job::Client {
    let mut request = JobRequest::new(JobCode::Wasm(wasm.clone()));
    request.args = args.iter().map(|a| a.to_string()).collect();
    request.attached = attached;
    request.mode = JobMode::Auto;
    let mut req = client.daemon.run_request();
    request.write(req.get().init_request()).unwrap();
    let reply = req.send().promise.await.unwrap();
    reply.get().unwrap().get_job().unwrap()
}

pub async fn wait(job: &job::Client) -> ExitStatus {
    let reply = job.wait_request().send().promise.await.unwrap();
    ExitStatus::read(reply.get().unwrap().get_status().unwrap()).unwrap()
}

pub fn wasm(name: &str) -> Rc<[u8]> {
    Rc::from(std::fs::read(guest(name)).unwrap())
}

/// Waits until the daemon runs no process at all.
pub fn idle(daemon: &Daemon) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !daemon.ps().is_empty() {
        assert!(Instant::now() < deadline, "jobs left: {:?}", daemon.ps());
        std::thread::sleep(Duration::from_millis(50));
    }
}
