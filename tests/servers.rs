//! The capability servers in process, over in-memory pipes, with no wasm: a native capnp client
//! speaks to `rpc::serve` exactly as a guest would, and a test [`Host`] stands in for the
//! supervisor (it "spawns" plain children whose stdio ends the test holds). This pins the
//! wire-level behaviour the guest-facing suites can only see from inside a guest: reasons,
//! read sizes, bounds checked before the host does any work.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use capnp::message::ReaderOptions;
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, RpcSystem};
use cell::cell_capnp::{byte_stream, executor, process, session};
use cell::inproc::{
    pipe, serve, Audit, Code, ExitStatus, Grants, HandleParts, Host, HostStdio, LimitRequest,
    LoadedComponent, NetPolicy, Pid, PipeReader, PipeWriter, PlainStdio, ProcessHandle,
    ProcessInfo, ProcessSpec, ServeSpec, SocketTally, SpawnError, Transport, PIPE_CAPACITY,
};
use cell_proto::{CellError, Reason, SpawnRequest};
use futures::future::LocalBoxFuture;

/// The test's ends of a "spawned" child's stdio: what the child would read and write.
struct ChildEnds {
    stdin: PipeReader,
    stdout: PipeWriter,
    handle: Rc<ProcessHandle>,
}

/// A host whose children are only handles with plain stdio; counts spawns; pid0 dies on demand.
#[derive(Default)]
struct TestHost {
    spawned: Cell<u32>,
    pid0_dead: Cell<bool>,
    children: RefCell<Vec<ChildEnds>>,
    stdio: HostStdio,
}

impl Host for TestHost {
    fn spawn_child(
        &self,
        parent: Pid,
        _code: Code,
        spec: ProcessSpec,
        _limits: LimitRequest,
    ) -> LocalBoxFuture<'static, Result<Rc<ProcessHandle>, SpawnError>> {
        self.spawned.set(self.spawned.get() + 1);
        let pid = self.spawned.get();
        let (stdin_w, stdin_r) = pipe(PIPE_CAPACITY);
        let (stdout_w, stdout_r) = pipe(PIPE_CAPACITY);
        let info = ProcessInfo {
            pid,
            parent: Some(parent),
            name: spec.name,
            depth: 1,
            hash: None,
        };
        let parts = HandleParts::with_plain(PlainStdio {
            stdin: stdin_w,
            stdout: stdout_r,
        });
        let handle = Rc::new(ProcessHandle::with(info, parts));
        self.children.borrow_mut().push(ChildEnds {
            stdin: stdin_r,
            stdout: stdout_w,
            handle: handle.clone(),
        });
        Box::pin(async move { Ok(handle) })
    }

    fn load(
        &self,
        _owner: Pid,
        _wasm: Arc<[u8]>,
    ) -> LocalBoxFuture<'static, Result<Arc<LoadedComponent>, SpawnError>> {
        // No engine here: loading is the supervisor's (tests/nesting.rs covers it).
        Box::pin(async {
            Err(SpawnError::Instantiate(
                "no engine in this test host".into(),
            ))
        })
    }

    fn ensure_running(&self, pid: Pid) -> Result<(), SpawnError> {
        if pid == 0 && self.pid0_dead.get() {
            return Err(SpawnError::Dead(pid));
        }
        Ok(())
    }

    fn info(&self, pid: Pid) -> Option<ProcessInfo> {
        Some(ProcessInfo {
            pid,
            parent: None,
            name: "pid0".into(),
            depth: 0,
            hash: None,
        })
    }

    fn host_stdio(&self) -> &HostStdio {
        &self.stdio
    }
}

/// Runs `f` with the `Session` of pid0 (holding `grants`, at most `calls` calls in progress)
/// served by `rpc::serve` over pipes, on one current-thread runtime like `cell`.
fn with_session<F, Fut>(grants: Grants, calls: u32, f: F)
where
    F: FnOnce(session::Client, Rc<TestHost>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let host = Rc::new(TestHost::default());
        let (to_host, host_in) = pipe(PIPE_CAPACITY);
        let (host_out, to_guest) = pipe(PIPE_CAPACITY);
        let connection = serve(
            ServeSpec {
                host: host.clone(),
                pid: 0,
                grants,
                audit: Audit::tracing_only(),
                sockets: SocketTally::new(8),
            },
            Transport {
                from_guest: host_in.into_host(),
                to_guest: host_out.into_host(),
                max_message_bytes: 8 << 20,
                max_outstanding_calls: calls,
            },
        );
        tokio::task::spawn_local(connection.run());
        let net = twoparty::VatNetwork::new(
            futures::io::BufReader::new(to_guest.into_host()),
            futures::io::BufWriter::new(to_host.into_host()),
            Side::Client,
            ReaderOptions::new(),
        );
        let mut rpc = RpcSystem::new(Box::new(net), None);
        let session: session::Client = rpc.bootstrap(Side::Server);
        tokio::task::spawn_local(rpc);
        tokio::time::timeout(Duration::from_secs(30), f(session, host))
            .await
            .expect("the test finished in time");
    });
}

fn executor_grant() -> Grants {
    Grants {
        executor: true,
        ..Grants::default()
    }
}

async fn executor_of(session: &session::Client) -> executor::Client {
    let r = session
        .executor_request()
        .send()
        .promise
        .await
        .expect("executor");
    r.get().expect("response").get_executor().expect("client")
}

/// Spawns a plain child through `executor` with `args`.
async fn spawn(executor: &executor::Client, args: &[String]) -> Result<process::Client, CellError> {
    let mut req = SpawnRequest::new(&b"\0asm"[..]);
    req.name = "child".into();
    req.args = args.to_vec();
    req.mode = cell_proto::ProcessMode::Plain;
    let mut call = executor.spawn_request();
    req.write(call.get().init_request())?;
    let r = call.send().promise.await?;
    Ok(r.get()?.get_process()?)
}

async fn stdout_of(process: &process::Client) -> byte_stream::Client {
    let r = process
        .stdout_request()
        .send()
        .promise
        .await
        .expect("stdout");
    r.get().expect("response").get_stream().expect("stream")
}

async fn read(stream: &byte_stream::Client, max: u32) -> Vec<u8> {
    let mut req = stream.read_request();
    req.get().set_max_bytes(max);
    let r = req.send().promise.await.expect("read");
    r.get()
        .expect("response")
        .get_data()
        .expect("data")
        .to_vec()
}

fn reason<T>(r: Result<T, capnp::Error>) -> Reason {
    match r {
        Ok(_) => panic!("the call succeeded"),
        Err(e) => CellError::from(e).reason,
    }
}

#[test]
fn ungranted_capabilities_are_refused_with_not_granted() {
    with_session(Grants::default(), 16, |session, _| async move {
        let e = session.executor_request().send().promise.await;
        assert_eq!(reason(e), Reason::NotGranted);
        let n = session.network_request().send().promise.await;
        assert_eq!(reason(n), Reason::NotGranted);
        let t = session.terminal_request().send().promise.await;
        assert_eq!(reason(t), Reason::NotGranted);
        let info = session.info_request().send().promise.await.expect("info");
        let grants = info
            .get()
            .and_then(|r| r.get_info()?.get_grants())
            .expect("grants");
        assert_eq!(grants.len(), 0);
    });
}

#[test]
fn read_zero_and_read_n_mean_the_same_on_a_pipe_as_on_tcp() {
    with_session(executor_grant(), 16, |session, host| async move {
        let executor = executor_of(&session).await;
        let child = spawn(&executor, &[]).await.expect("spawned");
        let stdout = stdout_of(&child).await;
        let ends = host.children.borrow_mut().pop().expect("a child");
        // The child writes 100 KB into its 64 KiB pipe (it blocks until the parent reads).
        let writer = ends.stdout.clone();
        tokio::task::spawn_local(async move {
            writer
                .write_all(&vec![7u8; 100_000])
                .await
                .expect("child writes");
            writer.close();
        });
        let settle = || tokio::time::sleep(Duration::from_millis(50));
        settle().await;
        // read(1) is one byte; read(0) is as much as is there, up to the 64 KiB cap.
        assert_eq!(read(&stdout, 1).await.len(), 1);
        settle().await;
        assert_eq!(
            read(&stdout, 0).await.len(),
            64 * 1024,
            "the pipe is full again"
        );
        let mut total = 1 + 64 * 1024;
        loop {
            let chunk = read(&stdout, u32::MAX).await;
            assert!(chunk.len() <= 64 * 1024);
            if chunk.is_empty() {
                break; // end of stream
            }
            total += chunk.len();
        }
        assert_eq!(total, 100_000);
    });
    // The same on TCP: a 100 KB peer, read(1) then read(0).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let peer = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        std::io::Write::write_all(&mut conn, &vec![7u8; 100_000]).expect("write");
    });
    let grants = Grants {
        network: Some(NetPolicy::parse([format!("connect=127.0.0.1:{port}")]).expect("rule")),
        ..Grants::default()
    };
    with_session(grants, 16, move |session, _| async move {
        let r = session
            .network_request()
            .send()
            .promise
            .await
            .expect("network");
        let network = r.get().and_then(|r| r.get_network()).expect("client");
        let mut req = network.connect_request();
        req.get().set_host("127.0.0.1");
        req.get().set_port(port);
        let r = req.send().promise.await.expect("connect");
        let stream: byte_stream::Client = capnp::capability::FromClientHook::new(
            r.get()
                .and_then(|r| r.get_stream())
                .expect("stream")
                .client
                .hook,
        );
        assert_eq!(read(&stream, 1).await.len(), 1);
        // Wait until the peer's bytes are all there, so read(0) sees more than the cap.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let n = read(&stream, 0).await.len();
        assert!(n > 1 && n <= 64 * 1024, "read(0) on TCP gave {n} bytes");
    });
    peer.join().expect("peer");
}

#[test]
fn spawn_args_past_the_bound_are_refused_before_the_host_spawns() {
    with_session(executor_grant(), 16, |session, host| async move {
        let executor = executor_of(&session).await;
        let big = vec!["x".repeat(64 * 1024); 5];
        let e = spawn(&executor, &big).await.err().expect("refused");
        assert_eq!(e.reason, Reason::Limit, "{e}");
        assert!(e.detail.contains("args and env exceed"), "{e}");
        assert_eq!(host.spawned.get(), 0, "the host never saw the request");
        spawn(&executor, &["ok".into()])
            .await
            .expect("a small one is fine");
        assert_eq!(host.spawned.get(), 1);
    });
}

#[test]
fn a_guest_made_network_is_a_bad_grant() {
    struct Impostor;
    impl cell::cell_capnp::network::Server for Impostor {}
    with_session(executor_grant(), 16, |session, host| async move {
        let executor = executor_of(&session).await;
        let mut req = SpawnRequest::new(&b"\0asm"[..]);
        req.grants.network = Some(capnp_rpc::new_client(Impostor));
        let mut call = executor.spawn_request();
        req.write(call.get().init_request()).expect("write");
        assert_eq!(reason(call.send().promise.await), Reason::BadGrant);
        assert_eq!(host.spawned.get(), 0);
    });
}

#[test]
fn a_guest_made_component_is_a_bad_grant() {
    struct Impostor;
    impl cell::cell_capnp::component::Server for Impostor {}
    with_session(executor_grant(), 16, |session, host| async move {
        let executor = executor_of(&session).await;
        let mut req = SpawnRequest::new(&b"\0asm"[..]);
        req.grants.components = vec![capnp_rpc::new_client(Impostor)];
        let mut call = executor.spawn_request();
        req.write(call.get().init_request()).expect("write");
        assert_eq!(reason(call.send().promise.await), Reason::BadGrant);
        assert_eq!(host.spawned.get(), 0);
    });
}

#[test]
fn capabilities_of_a_dead_process_fail_with_dead() {
    with_session(executor_grant(), 16, |session, host| async move {
        let executor = executor_of(&session).await;
        host.pid0_dead.set(true);
        let mut req = executor.echo_request();
        req.get().set_message("hi");
        assert_eq!(reason(req.send().promise.await), Reason::Dead);
    });
}

#[test]
fn calls_past_max_outstanding_are_refused_with_limit_and_the_rest_answer() {
    with_session(executor_grant(), 4, |session, host| async move {
        let executor = executor_of(&session).await;
        let child = spawn(&executor, &[]).await.expect("spawned");
        // Eight waits on a child that has not ended: four hold the gate, four are refused.
        let waits: Vec<_> = (0..8)
            .map(|_| child.wait_request().send().promise)
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let ends = host.children.borrow_mut().pop().expect("a child");
        ends.handle.set_status(ExitStatus::Exited(3));
        let mut refused = 0;
        for w in futures::future::join_all(waits).await {
            match w {
                Ok(r) => {
                    let status = r.get().and_then(|r| r.get_status()).expect("status");
                    assert_eq!(
                        ExitStatus::read(status).expect("read"),
                        ExitStatus::Exited(3)
                    );
                }
                Err(e) => {
                    assert_eq!(CellError::from(e).reason, Reason::Limit);
                    refused += 1;
                }
            }
        }
        assert_eq!(refused, 4);
        drop(ends.stdin);
    });
}

#[test]
fn a_plain_childs_stdin_reaches_the_child() {
    with_session(executor_grant(), 16, |session, host| async move {
        let executor = executor_of(&session).await;
        let child = spawn(&executor, &[]).await.expect("spawned");
        let r = child.stdin_request().send().promise.await.expect("stdin");
        let stdin = r.get().and_then(|r| r.get_stream()).expect("stream");
        let mut req = stdin.write_request();
        req.get().set_data(b"hello child");
        req.send().promise.await.expect("write");
        stdin.close_request().send().promise.await.expect("close");
        let ends = host.children.borrow_mut().pop().expect("a child");
        assert_eq!(&ends.stdin.read(64).await[..], b"hello child");
        assert!(ends.stdin.read(64).await.is_empty(), "closed");
    });
}
