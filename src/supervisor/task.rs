//! The task that runs one process from instantiation to reaping: it instantiates (under kill
//! and deadline), tells the spawner, then `select!`s over stop, the guest's `wasi:cli/run` and
//! its RPC connection; whatever ends first decides the status, and dropping the run future is
//! how a spinning or blocked guest is stopped.

use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use wasmtime::Store;

use super::Supervisor;
use crate::engine::LoadedComponent;
use crate::handle::ProcessHandle;
use crate::process::{classify, guest_ended_it, usage};
use crate::rpc;
use crate::spec::SpawnError;
use crate::state::ProcState;
use crate::status::ExitStatus;

/// How the run of one process ended, before it is turned into an [`ExitStatus`].
enum Ending {
    Finished(wasmtime::Result<Result<(), ()>>),
    Stopped(ExitStatus),
}

type RpcFuture = Pin<Box<dyn Future<Output = Result<(), capnp::Error>>>>;

/// The task that runs one process from instantiation to reaping.
pub(super) struct ProcessTask {
    pub(super) sup: Supervisor,
    pub(super) handle: Rc<ProcessHandle>,
    pub(super) component: Arc<LoadedComponent>,
    pub(super) store: Store<ProcState>,
    pub(super) connection: Option<rpc::Connection>,
    pub(super) timeout: Option<Duration>,
    /// Told once instantiation succeeded or failed, so `spawn` can answer.
    pub(super) started: oneshot::Sender<Result<(), SpawnError>>,
}

impl ProcessTask {
    pub(super) async fn run(mut self) {
        let status = self.drive().await;
        // Drop the store first: that closes the guest's ends of its pipes.
        let ProcessTask {
            sup, handle, store, ..
        } = self;
        let used = usage(&store);
        drop(store);
        sup.finish(&handle, status, used);
    }

    async fn drive(&mut self) -> ExitStatus {
        let handle = self.handle.clone();
        let timeout = self.timeout;
        let stop = async move {
            tokio::select! {
                by = handle.killed() => ExitStatus::Killed(by),
                () = sleep_or_forever(timeout) => ExitStatus::TimedOut,
            }
        };
        tokio::pin!(stop);

        // Killed, timed out, trapped or out of fuel while starting: the guest ended that way;
        // anything else means the component could not be set up.
        let instantiated = tokio::select! {
            biased;
            s = &mut stop => Err((s, true)),
            r = self.component.pre.instantiate_async(&mut self.store) => r.map_err(|e| {
                let ran = guest_ended_it(&e, &self.store);
                (classify(Err(e), &self.store), ran)
            }),
        };
        let (started, _) = oneshot::channel();
        let started = std::mem::replace(&mut self.started, started);
        let command = match instantiated {
            Ok(c) => {
                let _ = started.send(Ok(()));
                c
            }
            Err((status, ran)) => {
                let failure = if ran {
                    SpawnError::EndedWhileStarting(status.clone())
                } else {
                    SpawnError::Instantiate(status.to_string())
                };
                let _ = started.send(Err(failure));
                return status;
            }
        };

        let mut violation = None;
        let mut rpc: RpcFuture = match self.connection.take() {
            Some(c) => {
                violation = Some(c.violation());
                Box::pin(c.run())
            }
            None => Box::pin(std::future::pending()),
        };
        let mut rpc_open = true;
        let ending = {
            let run = command.wasi_cli_run().call_run(&mut self.store);
            tokio::pin!(run);
            loop {
                tokio::select! {
                    biased;
                    s = &mut stop => break Ending::Stopped(s),
                    r = &mut rpc, if rpc_open => match r {
                        Ok(()) => rpc_open = false,
                        Err(e) => break Ending::Stopped(ExitStatus::ProtocolViolation(e.to_string())),
                    },
                    r = &mut run => break Ending::Finished(r),
                }
            }
        };
        // A violation seen on the wire wins over however the guest ended afterwards (it may
        // have read the host's abort and exited before the RPC system finished shutting down).
        if let Some(v) = violation.and_then(|v| v.borrow_mut().take()) {
            return ExitStatus::ProtocolViolation(v);
        }
        match ending {
            Ending::Finished(r) => classify(r, &self.store),
            Ending::Stopped(s) => s,
        }
    }
}

async fn sleep_or_forever(timeout: Option<Duration>) {
    match timeout {
        Some(t) => tokio::time::sleep(t).await,
        None => std::future::pending().await,
    }
}
