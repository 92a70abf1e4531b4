//! Typed, ergonomic wrappers over the capabilities of `cell.capnp`.
//!
//! Every call returns `anyhow::Result`, with context naming the call: nothing that comes from the
//! host is trusted to be well-formed (no `unwrap`). Host errors are Cap'n Proto exceptions whose
//! text starts with a reason word (`bad-wasm: …`, `not-granted: …`); they are kept, downcastable
//! to [`capnp::Error`], as the root cause of the returned error.
//!
//! The raw clients stay reachable (`Caps::session`, `Executor::client`, `Process::client`, …)
//! for anything these helpers do not cover.

use std::time::Duration;

use anyhow::{Context as _, Result};
use cell_proto::{ExitStatus, Socket, SpawnRequest};

use crate::cell_capnp::{
    byte_stream, component, executor, process, session, ProcessMode, StderrMode,
};
use crate::net::Network;

/// Reads a text field as an owned `String`.
fn text(t: capnp::Result<capnp::text::Reader<'_>>, what: &str) -> Result<String> {
    let t = t.with_context(|| format!("reading {what}"))?;
    t.to_string()
        .with_context(|| format!("{what} is not UTF-8"))
}

/// The capabilities this process holds: its `Session` with the host.
///
/// Cheap to clone (it is a reference-counted capability).
#[derive(Clone)]
pub struct Caps {
    session: session::Client,
}

/// Who this process is (the answer of `Session.info`; the wire crate's type).
pub use cell_proto::Info;

/// The operator's terminal, for an interactive pid0 started with `--tty`.
#[derive(Clone)]
pub struct Terminal {
    pub input: ByteStream,
    pub output: ByteStream,
}

impl Caps {
    pub(crate) fn new(session: session::Client) -> Self {
        Caps { session }
    }

    /// The raw bootstrap capability.
    pub fn session(&self) -> &session::Client {
        &self.session
    }

    /// Who am I: pid, parent, depth and grants.
    pub async fn info(&self) -> Result<Info> {
        let response = self
            .session
            .info_request()
            .send()
            .promise
            .await
            .context("session.info")?;
        response
            .get()
            .and_then(|r| Info::read(r.get_info()?))
            .context("session.info: reading the response")
    }

    /// This process's Executor; fails ("not-granted: executor") unless its parent granted one.
    pub async fn executor(&self) -> Result<Executor> {
        let response = self
            .session
            .executor_request()
            .send()
            .promise
            .await
            .context("session.executor")?;
        let client = response
            .get()
            .and_then(|r| r.get_executor())
            .context("session.executor: reading the response")?;
        Ok(Executor { client })
    }

    /// This process's Network; fails ("not-granted: network") unless it was granted one.
    pub async fn network(&self) -> Result<Network> {
        let response = self
            .session
            .network_request()
            .send()
            .promise
            .await
            .context("session.network")?;
        let client = response
            .get()
            .and_then(|r| r.get_network())
            .context("session.network: reading the response")?;
        Ok(Network::new(client))
    }

    /// The sockets handed to this process by its parent, in the order they were granted.
    pub async fn sockets(&self) -> Result<Vec<Socket>> {
        let response = self
            .session
            .sockets_request()
            .send()
            .promise
            .await
            .context("session.sockets")?;
        let list = response
            .get()
            .and_then(|r| r.get_sockets())
            .context("session.sockets: reading the response")?;
        list.iter()
            .map(|s| Socket::read(s).context("session.sockets: reading a socket"))
            .collect()
    }

    /// The components handed to this process by its parent (`SpawnBuilder::grant_component`),
    /// in order: programs it may spawn even without an Executor.
    pub async fn components(&self) -> Result<Vec<Component>> {
        let response = self
            .session
            .components_request()
            .send()
            .promise
            .await
            .context("session.components")?;
        let list = response
            .get()
            .and_then(|r| r.get_components())
            .context("session.components: reading the response")?;
        list.iter()
            .map(|c| {
                Ok(Component::new(
                    c.context("session.components: a component")?,
                ))
            })
            .collect()
    }

    /// The operator's terminal; fails ("not-granted: terminal") unless pid0 runs with `--tty`.
    pub async fn terminal(&self) -> Result<Terminal> {
        let response = self
            .session
            .terminal_request()
            .send()
            .promise
            .await
            .context("session.terminal")?;
        let r = response
            .get()
            .context("session.terminal: reading the response")?;
        Ok(Terminal {
            input: ByteStream::new(r.get_input().context("session.terminal: input")?),
            output: ByteStream::new(r.get_output().context("session.terminal: output")?),
        })
    }

    /// Starts building a child from `wasm` (a WASI preview-2 component), spawned through this
    /// process's Executor. Without an Executor grant, `start()` fails with "not-granted: …".
    pub fn spawn<'a>(&self, wasm: &'a [u8]) -> SpawnBuilder<'a> {
        // Pipelined: the Executor is requested and used in the same round trip.
        let executor = self
            .session
            .executor_request()
            .send()
            .pipeline
            .get_executor();
        SpawnBuilder::new(executor, wasm)
    }
}

/// The right to start child processes (`Executor` in the schema).
#[derive(Clone)]
pub struct Executor {
    client: executor::Client,
}

impl Executor {
    /// Wraps a raw client.
    pub fn new(client: executor::Client) -> Self {
        Executor { client }
    }

    /// The raw capability.
    pub fn client(&self) -> &executor::Client {
        &self.client
    }

    /// Diagnostics: the host returns `message` unchanged.
    pub async fn echo(&self, message: &str) -> Result<String> {
        let mut request = self.client.echo_request();
        request.get().set_message(message);
        let response = request.send().promise.await.context("executor.echo")?;
        text(
            response.get().and_then(|r| r.get_response()),
            "executor.echo response",
        )
    }

    /// Starts building a child from `wasm` (a WASI preview-2 component).
    pub fn spawn<'a>(&self, wasm: &'a [u8]) -> SpawnBuilder<'a> {
        SpawnBuilder::new(self.client.clone(), wasm)
    }

    /// Compiles `wasm` once (or finds it in the host's caches) and returns it as a
    /// [`Component`] to spawn from as often as needed, without sending the bytes again.
    pub async fn load(&self, wasm: &[u8]) -> Result<Component> {
        let mut request = self.client.load_request();
        request.get().set_wasm(wasm);
        let response = request.send().promise.await.context("executor.load")?;
        let client = response
            .get()
            .and_then(|r| r.get_component())
            .context("executor.load: reading the response")?;
        Ok(Component::new(client))
    }
}

/// A loaded component (`Component` in the schema): the right to spawn exactly this program.
/// Cheap to clone; can be granted to a child with `SpawnBuilder::grant_component`.
#[derive(Clone)]
pub struct Component {
    client: component::Client,
}

impl Component {
    /// Wraps a raw client.
    pub fn new(client: component::Client) -> Self {
        Component { client }
    }

    /// The raw capability.
    pub fn client(&self) -> &component::Client {
        &self.client
    }

    /// Starts building a child running this component (no bytes are sent).
    pub fn spawn(&self) -> SpawnBuilder<'static> {
        SpawnBuilder {
            target: Target::Component(self.client.clone()),
            request: SpawnRequest::new(&[]),
        }
    }

    /// The SHA-256 of the component's bytes, in lower-case hex.
    pub async fn hash(&self) -> Result<String> {
        let response = self
            .client
            .hash_request()
            .send()
            .promise
            .await
            .context("component.hash")?;
        text(
            response.get().and_then(|r| r.get_sha256()),
            "component.hash response",
        )
    }
}

/// Builds a `SpawnRequest` (the wire crate's [`SpawnRequest`], written by its own writer).
/// Everything not set is left at the schema's default: name "child", no args, empty
/// environment, no grants, stderr forwarded, RPC mode, the parent's limits.
#[must_use = "a spawn does nothing until `start().await`"]
pub struct SpawnBuilder<'a> {
    target: Target,
    pub(crate) request: SpawnRequest<&'a [u8]>,
}

/// What a [`SpawnBuilder`] spawns through.
enum Target {
    /// `Executor.spawn`, sending the wasm.
    Executor(executor::Client),
    /// `Component.spawn`: the code is already in the host.
    Component(component::Client),
}

impl<'a> SpawnBuilder<'a> {
    fn new(executor: executor::Client, wasm: &'a [u8]) -> Self {
        SpawnBuilder {
            target: Target::Executor(executor),
            request: SpawnRequest::new(wasm),
        }
    }

    /// Lets the child spawn `component` (it gets it from `Session.components`), even without
    /// an Executor.
    pub fn grant_component(mut self, component: &Component) -> Self {
        self.request
            .grants
            .components
            .push(component.client.clone());
        self
    }

    /// argv[0] and the name used in the host's logs.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.request.name = name.into();
        self
    }

    /// Appends one argument (argv[1..]).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.request.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.request.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Adds an environment variable; the child inherits nothing else.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.request.env.push((key.into(), value.into()));
        self
    }

    /// Gives the child an Executor of its own (it may then spawn, one level further down).
    pub fn grant_executor(mut self, grant: bool) -> Self {
        self.request.grants.executor = grant;
        self
    }

    /// Gives the child a Network (one this process holds, possibly restricted).
    pub fn grant_network(mut self, network: &Network) -> Self {
        self.request.grants.network = Some(network.client().clone());
        self
    }

    /// Hands a socket over to the child (it gets them, in order, from `Session.sockets`).
    pub fn grant_socket(mut self, socket: impl Into<Socket>) -> Self {
        self.request.grants.sockets.push(socket.into());
        self
    }

    /// Where the child's stderr goes (default: forwarded to the host's stderr).
    pub fn stderr(mut self, mode: StderrMode) -> Self {
        self.request.stderr = mode;
        self
    }

    /// `Rpc` (a cell guest, the default) or `Plain` (an ordinary WASI program).
    pub fn mode(mut self, mode: ProcessMode) -> Self {
        self.request.mode = mode;
        self
    }

    /// Memory limit for the child; clamped to this process's own.
    pub fn max_memory_bytes(mut self, bytes: u64) -> Self {
        self.request.limits.max_memory = Some(bytes);
        self
    }

    /// Wall-clock deadline from spawn; clamped to this process's own.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.request.limits.timeout = Some(timeout);
        self
    }

    /// CPU fuel, when the host meters fuel: lent from this process's own (at most what it has
    /// left) and given back when the child ends. Without it the child is lent half of what is
    /// left.
    pub fn fuel(mut self, fuel: u64) -> Self {
        self.request.limits.fuel = Some(fuel);
        self
    }

    /// Live processes in the child's subtree, itself included.
    pub fn max_procs(mut self, n: u32) -> Self {
        self.request.limits.max_procs = Some(n);
        self
    }

    /// How many levels below the child may still be spawned.
    pub fn max_depth(mut self, n: u32) -> Self {
        self.request.limits.max_depth = Some(n);
        self
    }

    /// Sends the spawn request; resolves once the child runs (or the host refused it).
    pub async fn start(self) -> Result<Process> {
        let (label, process, spawned) = self.send()?;
        let pid = process.pid_request().send().promise;
        let client = spawned.await.with_context(|| format!("spawn {label}"))?;
        let pid = pid
            .await
            .and_then(|r| Ok(r.get()?.get_pid()))
            .with_context(|| format!("spawn {label}: process.pid"))?;
        Ok(Process { client, pid })
    }

    /// Spawns the child and waits for it to end, in one round trip: the `wait` is pipelined on
    /// the spawn's answer, so both calls go out together. For a child whose `Process` is not
    /// needed otherwise (no kill, no streams).
    pub async fn run(self) -> Result<ExitStatus> {
        let (label, process, spawned) = self.send()?;
        let waited = process.wait_request().send().promise;
        let (spawned, waited) = futures::future::join(spawned, waited).await;
        spawned.with_context(|| format!("spawn {label}"))?;
        let response = waited.with_context(|| format!("{label}: wait"))?;
        let status = response
            .get()
            .and_then(|r| r.get_status())
            .with_context(|| format!("{label}: wait: reading the response"))?;
        ExitStatus::read(status).with_context(|| format!("{label}: wait: reading the status"))
    }

    /// Sends the request: the child's label, its pipelined `Process`, and the spawn's answer.
    fn send(self) -> Result<(String, process::Client, SpawnAnswer)> {
        let label = if self.request.name.is_empty() {
            "child".to_string()
        } else {
            self.request.name.clone()
        };
        // The same for both targets, whose generated request types differ.
        macro_rules! send_to {
            ($target:expr) => {{
                let mut request = $target.spawn_request();
                self.request
                    .write(request.get().init_request())
                    .with_context(|| format!("spawn {label}: building the request"))?;
                let sent = request.send();
                let answer = sent.promise;
                let answer: SpawnAnswer =
                    Box::pin(async move { answer.await?.get()?.get_process() });
                (sent.pipeline.get_process(), answer)
            }};
        }
        let (process, answer) = match &self.target {
            Target::Executor(executor) => send_to!(executor),
            Target::Component(component) => send_to!(component),
        };
        Ok((label, process, answer))
    }
}

/// The answer of a spawn request, through either target.
type SpawnAnswer =
    std::pin::Pin<Box<dyn std::future::Future<Output = capnp::Result<process::Client>>>>;

/// A child process (`Process` in the schema). Dropping it does not stop the child.
#[derive(Clone)]
pub struct Process {
    client: process::Client,
    pid: u32,
}

impl Process {
    /// The raw capability.
    pub fn client(&self) -> &process::Client {
        &self.client
    }

    /// The child's pid (fetched once, at spawn).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until the child has ended.
    pub async fn wait(&self) -> Result<ExitStatus> {
        let pid = self.pid;
        let response = self
            .client
            .wait_request()
            .send()
            .promise
            .await
            .with_context(|| format!("process {pid}: wait"))?;
        let status = response
            .get()
            .and_then(|r| r.get_status())
            .with_context(|| format!("process {pid}: wait: reading the response"))?;
        ExitStatus::read(status).with_context(|| format!("process {pid}: wait: reading the status"))
    }

    /// Terminates the child and its whole subtree.
    pub async fn kill(&self) -> Result<()> {
        self.client
            .kill_request()
            .send()
            .promise
            .await
            .with_context(|| format!("process {}: kill", self.pid))?;
        Ok(())
    }

    /// The captured stderr (only for a child spawned with `StderrMode::Capture`).
    pub async fn stderr(&self) -> Result<ByteStream> {
        let response = self
            .client
            .stderr_request()
            .send()
            .promise
            .await
            .with_context(|| format!("process {}: stderr", self.pid))?;
        let stream = response
            .get()
            .and_then(|r| r.get_stream())
            .with_context(|| format!("process {}: stderr: reading the response", self.pid))?;
        Ok(ByteStream::new(stream))
    }

    /// Reads the captured stderr until it ends (which is once the child has exited).
    pub async fn read_stderr_to_end(&self) -> Result<Vec<u8>> {
        self.stderr().await?.read_to_end().await
    }

    /// A plain child's stdin (fails with "not-plain: …" for an RPC child).
    pub async fn stdin(&self) -> Result<ByteStream> {
        let response = self
            .client
            .stdin_request()
            .send()
            .promise
            .await
            .with_context(|| format!("process {}: stdin", self.pid))?;
        let stream = response
            .get()
            .and_then(|r| r.get_stream())
            .with_context(|| format!("process {}: stdin: reading the response", self.pid))?;
        Ok(ByteStream::new(stream))
    }

    /// A plain child's stdout (fails with "not-plain: …" for an RPC child).
    pub async fn stdout(&self) -> Result<ByteStream> {
        let response = self
            .client
            .stdout_request()
            .send()
            .promise
            .await
            .with_context(|| format!("process {}: stdout", self.pid))?;
        let stream = response
            .get()
            .and_then(|r| r.get_stream())
            .with_context(|| format!("process {}: stdout: reading the response", self.pid))?;
        Ok(ByteStream::new(stream))
    }
}

/// A byte stream held by the host (`ByteStream` in the schema).
#[derive(Clone)]
pub struct ByteStream {
    client: byte_stream::Client,
}

impl ByteStream {
    /// Wraps a raw client.
    pub fn new(client: byte_stream::Client) -> Self {
        ByteStream { client }
    }

    /// The raw capability.
    pub fn client(&self) -> &byte_stream::Client {
        &self.client
    }

    /// Waits for at least one byte and returns at most `max_bytes`; empty means end of stream.
    pub async fn read(&self, max_bytes: u32) -> Result<Vec<u8>> {
        let mut request = self.client.read_request();
        request.get().set_max_bytes(max_bytes);
        let response = request.send().promise.await.context("bytestream.read")?;
        let data = response
            .get()
            .and_then(|r| r.get_data())
            .context("bytestream.read: reading the response")?;
        Ok(data.to_vec())
    }

    /// Reads until end of stream.
    pub async fn read_to_end(&self) -> Result<Vec<u8>> {
        let mut all = Vec::new();
        loop {
            let chunk = self.read(64 * 1024).await?;
            if chunk.is_empty() {
                return Ok(all);
            }
            all.extend_from_slice(&chunk);
        }
    }

    /// This stream as a `futures::io::AsyncRead + AsyncWrite` (see [`crate::io`]).
    pub fn async_io(&self) -> crate::io::AsyncStream {
        crate::io::AsyncStream::new(self.client.clone())
    }

    /// Writes `data`; resolves once the host accepted it.
    pub async fn write(&self, data: &[u8]) -> Result<()> {
        let mut request = self.client.write_request();
        request.get().set_data(data);
        request.send().promise.await.context("bytestream.write")?;
        Ok(())
    }

    /// Ends the writing side.
    pub async fn close(&self) -> Result<()> {
        self.client
            .close_request()
            .send()
            .promise
            .await
            .context("bytestream.close")?;
        Ok(())
    }
}
