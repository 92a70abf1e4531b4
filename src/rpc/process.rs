//! `Process`: a handle on a spawned child — wait, kill, and its stdio streams.

use std::cell::RefCell;
use std::rc::Rc as StdRc;

use capnp::capability::Rc;

use crate::cell_capnp::{byte_stream, process};
use crate::handle::ProcessHandle;
use crate::rpc::conn::Conn;
use crate::rpc::fail::failed;
use crate::rpc::service::{ensure_serves, served_by};
use crate::rpc::stream::ByteStreamServer;
use crate::status::KilledBy;
use cell_proto::Reason;

pub(crate) struct ProcessServer {
    handle: StdRc<ProcessHandle>,
    /// The connection this cap was issued on (the parent's): its call bound, and its budget
    /// of bytes waiting in the host (writes to a plain child's stdin).
    conn: Conn,
    /// The stream capabilities, made on first use and handed out again after: a second
    /// `stdout()` must not make a second reader of one pipe (one of them would never be woken).
    streams: Streams,
}

#[derive(Default)]
struct Streams {
    stdin: RefCell<Option<byte_stream::Client>>,
    stdout: RefCell<Option<byte_stream::Client>>,
    stderr: RefCell<Option<byte_stream::Client>>,
    /// The proxy of the child's service, made on first use.
    service: RefCell<Option<capnp::capability::Client>>,
}

impl ProcessServer {
    pub(crate) fn new(handle: StdRc<ProcessHandle>, conn: Conn) -> Self {
        ProcessServer {
            handle,
            conn,
            streams: Streams::default(),
        }
    }

    /// The stream in `slot`, made from `make` the first time.
    fn stream(
        &self,
        slot: &RefCell<Option<byte_stream::Client>>,
        make: impl FnOnce() -> ByteStreamServer,
    ) -> byte_stream::Client {
        slot.borrow_mut()
            .get_or_insert_with(|| capnp_rpc::new_client(make().on(&self.conn)))
            .clone()
    }
}

impl process::Server for ProcessServer {
    async fn pid(
        self: Rc<Self>,
        _: process::PidParams,
        mut results: process::PidResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        results.get().set_pid(self.handle.pid);
        Ok(())
    }

    async fn wait(
        self: Rc<Self>,
        _: process::WaitParams,
        mut results: process::WaitResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let status = self.handle.wait().await;
        status.write(results.get().init_status());
        Ok(())
    }

    async fn kill(
        self: Rc<Self>,
        _: process::KillParams,
        _: process::KillResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
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
        let _call = self.conn.gate().enter()?;
        let captured = self.handle.stderr.as_ref().ok_or_else(|| {
            failed(
                Reason::NotCaptured,
                format!(
                    "pid {} was not spawned with stderr = capture",
                    self.handle.pid
                ),
            )
        })?;
        let stream = self.stream(&self.streams.stderr, || {
            ByteStreamServer::reader(captured.reader.clone())
        });
        results.get().set_stream(stream);
        Ok(())
    }

    async fn stdin(
        self: Rc<Self>,
        _: process::StdinParams,
        mut results: process::StdinResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let plain = self.plain()?;
        let stream = self.stream(&self.streams.stdin, || {
            ByteStreamServer::writer(plain.stdin.clone())
        });
        results.get().set_stream(stream);
        Ok(())
    }

    async fn stdout(
        self: Rc<Self>,
        _: process::StdoutParams,
        mut results: process::StdoutResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        let plain = self.plain()?;
        let stream = self.stream(&self.streams.stdout, || {
            ByteStreamServer::reader(plain.stdout.clone())
        });
        results.get().set_stream(stream);
        Ok(())
    }

    async fn service(
        self: Rc<Self>,
        _: process::ServiceParams,
        mut results: process::ServiceResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        ensure_serves(&self.handle, "process")?;
        let mut slot = self.streams.service.borrow_mut();
        if slot.is_none() {
            *slot = Some(self.conn.service(served_by(&self.handle, "process")?));
        }
        if let Some(client) = slot.as_ref() {
            results
                .get()
                .init_service()
                .set_as_capability(client.hook.add_ref());
        }
        Ok(())
    }
}

impl ProcessServer {
    fn plain(&self) -> Result<&crate::handle::PlainStdio, capnp::Error> {
        self.handle.plain.as_ref().ok_or_else(|| {
            failed(
                Reason::NotPlain,
                format!(
                    "pid {} is an RPC guest; its stdio is its RPC channel",
                    self.handle.pid
                ),
            )
        })
    }
}
