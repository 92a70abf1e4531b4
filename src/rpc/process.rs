//! `Process`: a handle on a spawned child — wait, kill, and its stdio streams.

use capnp::capability::Rc;
use std::rc::Rc as StdRc;

use crate::cell_capnp::process;
use crate::handle::ProcessHandle;
use crate::rpc::stream::ByteStreamServer;
use crate::rpc::{failed, CallGate};
use crate::status::KilledBy;

pub struct ProcessServer {
    handle: StdRc<ProcessHandle>,
    /// The call bound of the connection this cap was issued on (the parent's).
    gate: CallGate,
}

impl ProcessServer {
    pub fn new(handle: StdRc<ProcessHandle>, gate: CallGate) -> Self {
        ProcessServer { handle, gate }
    }
}

impl process::Server for ProcessServer {
    async fn pid(
        self: Rc<Self>,
        _: process::PidParams,
        mut results: process::PidResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        results.get().set_pid(self.handle.pid);
        Ok(())
    }

    async fn wait(
        self: Rc<Self>,
        _: process::WaitParams,
        mut results: process::WaitResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let status = self.handle.wait().await;
        status.write_to(results.get().init_status());
        Ok(())
    }

    async fn kill(
        self: Rc<Self>,
        _: process::KillParams,
        _: process::KillResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        self.handle.kill(KilledBy::Parent);
        // Answer once it is really gone, so "kill then wait" never observes it running.
        self.handle.wait().await;
        Ok(())
    }

    async fn stderr(
        self: Rc<Self>,
        _: process::StderrParams,
        mut results: process::StderrResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let captured = self.handle.stderr.as_ref().ok_or_else(|| {
            failed(
                "not-captured",
                format!(
                    "pid {} was not spawned with stderr = capture",
                    self.handle.pid
                ),
            )
        })?;
        results.get().set_stream(capnp_rpc::new_client(
            ByteStreamServer::reader(captured.reader.clone()).gated(self.gate.clone()),
        ));
        Ok(())
    }

    async fn stdin(
        self: Rc<Self>,
        _: process::StdinParams,
        mut results: process::StdinResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let plain = self.plain()?;
        results.get().set_stream(capnp_rpc::new_client(
            ByteStreamServer::writer(plain.stdin.clone()).gated(self.gate.clone()),
        ));
        Ok(())
    }

    async fn stdout(
        self: Rc<Self>,
        _: process::StdoutParams,
        mut results: process::StdoutResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.gate.enter()?;
        let plain = self.plain()?;
        results.get().set_stream(capnp_rpc::new_client(
            ByteStreamServer::reader(plain.stdout.clone()).gated(self.gate.clone()),
        ));
        Ok(())
    }
}

impl ProcessServer {
    fn plain(&self) -> Result<&crate::handle::PlainStdio, capnp::Error> {
        self.handle.plain.as_ref().ok_or_else(|| {
            failed(
                "not-plain",
                format!(
                    "pid {} is an RPC guest; its stdio is its RPC channel",
                    self.handle.pid
                ),
            )
        })
    }
}
