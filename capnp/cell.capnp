# The capability interface between the cell host and its guests.
#
# A guest's stdin/stdout carry one two-party Cap'n Proto RPC connection; the host is the server
# side and bootstraps a `Session`. Everything a guest may do beyond pure computation comes through
# that Session, and only if the guest's parent (or, for pid0, the operator) granted it.
#
# Schema version 5 (version 1 plus the items marked "(version 2)": Executor.load, Component,
# Grants.components, Session.components; and "(version 3)": Directory, DirGrant, Grants.dirs,
# Session.dirs, Process.service, ServiceGrant, Grants.services, Session.services; and "(version 4)":
# the daemon's Login, Daemon, JobRequest, Job, ProcessEntry, EventSink, Event; and "(version 5)":
# Session.remotes, Remote, KilledBy.linkLost, Daemon.ping, JobRequest.services,
# .remotes, .components and .withoutExecutor, Job.service).
# Changes are
# additive only (new fields, methods, enumerants and interfaces get new ordinals; nothing is
# renumbered or removed), so old guests keep working with new hosts. The
# Rust bindings are checked in as `proto/src/cell_capnp.rs` (`make proto` regenerates them).
#
# Errors: a call fails with a Cap'n Proto exception whose text is "REASON: DETAIL". REASON is one
# of the stable words below (`cell_proto::Reason` in Rust; match on it, never on DETAIL, which
# is for people):
#   not-granted     the process does not hold the capability ("not-granted: executor")
#   denied          the network policy refused the operation ("denied: connect 10.0.0.1:80: ...")
#   limit           a limit would be exceeded ("limit: max-procs 64 reached")
#   dead            the process the capability belongs to has ended ("dead: process 3 has exited")
#   bad-wasm        the bytes are not a loadable component ("bad-wasm: not a component")
#   missing-import  the component imports something cell does not provide
#   instantiate     instantiating the component failed (e.g. its start trapped)
#   bad-grant       a grant is not a capability the host issued to this process
#   bad-policy      a policy's rules do not parse or cannot be applied
#   bad-address     an address or host name is malformed
#   unresolvable    a host name did not resolve (or only to addresses the policy denies)
#   connect-failed  the connection was attempted and failed (refused, timed out, unreachable)
#   listen-failed   binding or listening on a TCP address failed
#   bind-failed     binding a UDP socket failed
#   unsupported     the operation is not supported by this host or on this object
#   not-captured    Process.stderr of a child not spawned with stderr = capture
#   not-plain       Process.stdin/stdout of an RPC child
#   closed          the stream or socket was closed
#   io              an I/O error on a host object (the detail carries the OS error)
#   bad-request     a request message could not be read (malformed, not UTF-8, unknown enumerant)
# A capability dies with the process it belongs to: calls on it afterwards fail with "dead: ...".
#
# Other languages: the Go annotations below come from go-capnp's std/go.capnp, vendored as
# `capnp/go.capnp`; compile with `capnp compile -I capnp -ogo capnp/cell.capnp`.

@0x82e2c8207d94532d;

using Go = import "/go.capnp";
$Go.package("cellcapnp");
$Go.import("cell/capnp/cellcapnp");

# ---------------------------------------------------------------------------------------------
# Bootstrap

interface Session {
  # The bootstrap capability of one process: the only door to its authority.

  info @0 () -> (info :ProcessInfo);
  # Who am I: pid, parent, depth and the names of the grants this process holds.

  executor @1 () -> (executor :Executor);
  # Fails with "not-granted: executor" unless this process was granted one.

  network @2 () -> (network :Network);
  # Fails with "not-granted: network" unless this process was granted one.

  sockets @3 () -> (sockets :List(Socket));
  # The sockets handed to this process by its parent in `Grants.sockets`, in the same order.

  terminal @4 () -> (input :ByteStream, output :ByteStream);
  # The operator's terminal (host stdin/stdout), for an interactive pid0 started with `--tty`.
  # Fails with "not-granted: terminal" otherwise.

  components @5 () -> (components :List(Component));
  # (version 2) The components handed to this process by its parent in `Grants.components`,
  # in the same order: programs it may spawn even without an Executor.

  dirs @6 () -> (dirs :List(DirGrant));
  # (version 3) The directories this process holds, each with the path it sees it under (its
  # WASI preopens): pid0's `--dir`/`--dir-rw`, a child's `Grants.dirs`.

  services @7 () -> (services :List(ServiceGrant));
  # (version 3) The services handed to this process by its parent in `Grants.services`, in the
  # same order. Cast each to the interface its name promises.

  remotes @8 () -> (remotes :List(Remote));
  # (version 5) Other machines' `cell serve` daemons this process may spawn on: pid0's
  # `cell run --remote NAME=tls://HOST:PORT`, in the order given; empty for everyone else.
}

struct Remote {
  # (version 5) A remote node under the name the operator gave it. Its `Executor.spawn` starts
  # the child as an attached job of that node's daemon, within that node's ceiling for this
  # host's certificate; the `Process` answered behaves like a local one (wait, kill, stderr,
  # stdin, stdout), is killed when its parent ends, and ends `killed: linkLost` when the link
  # to the node is lost. Grants: a Network is re-issued there as the intersection of its
  # policy and that node's ceiling; directories, sockets and the terminal never cross
  # ("bad-grant: …"); services and components cross by reference (the child's
  # calls are proxied back over the link, counted against its parent's call bounds here; a
  # child spawned from such a component runs here, as a child of the granting process).
  # `Executor.load` fails with "unsupported: …".
  name @0 :Text;
  executor @1 :Executor;
}

struct ProcessInfo {
  pid @0 :UInt32;
  parent @1 :UInt32;     # pid0's parent is reported as 0, like init's
  depth @2 :UInt32;      # pid0 is at depth 0, its children at 1, ...
  grants @3 :List(Text); # e.g. ["executor", "network"]
}

# ---------------------------------------------------------------------------------------------
# Processes

interface Executor {
  spawn @0 (request :SpawnRequest) -> (process :Process);
  # Starts a child component from `request.wasm`. Errors ("bad-wasm: …", "missing-import: …",
  # "limit: …") are returned to the caller; they never affect the caller or its siblings.

  echo @1 (message :Text) -> (response :Text);
  # Diagnostics: returns `message` unchanged.

  load @2 (wasm :Data) -> (component :Component);
  # (version 2) Compiles `wasm` (or finds it in the host's caches) once and returns it as a
  # capability, to spawn from as often as needed without sending the bytes again. Fails like
  # `spawn` ("bad-wasm: …", "missing-import: …", "limit: …").
}

interface Component {
  # (version 2) A loaded component: the right to spawn exactly this program.

  spawn @0 (request :SpawnRequest) -> (process :Process);
  # Like `Executor.spawn` with this component's code; `request.wasm` is ignored (leave it
  # empty). The child's parent is the process holding this capability.

  hash @1 () -> (sha256 :Text);
  # The SHA-256 of the component's bytes, in lower-case hex.
}

struct SpawnRequest {
  wasm @0 :Data;              # a WASI preview-2 component (not a core module)
  name @1 :Text;              # argv[0] and the name used in logs; "child" when empty
  args @2 :List(Text);        # argv[1..]
  env @3 :List(EnvVar);       # the child's entire environment: nothing is inherited
  grants @4 :Grants;
  stderr @5 :StderrMode;
  mode @6 :ProcessMode;
  limits @7 :Limits;          # requested limits; each is clamped to what the parent holds
}

struct EnvVar {
  key @0 :Text;
  value @1 :Text;
}

struct Grants {
  # What the child may do. Nothing is granted unless named here.
  executor @0 :Bool;          # the child gets an Executor of its own (same limits, one level down)
  network @1 :Network;        # null: no network; otherwise a Network this process holds
  sockets @2 :List(Socket);   # sockets handed over to the child (see Session.sockets)
  components @3 :List(Component);  # (version 2) programs the child may spawn (Session.components)
  dirs @4 :List(DirGrant);    # (version 3) directories the child gets as WASI preopens
  services @5 :List(ServiceGrant);  # (version 3) services the child may call (Session.services)
}

struct DirGrant {
  # (version 3) A directory and the guest path it appears under ("/data"), as a WASI preopen.
  path @0 :Text;
  dir @1 :Directory;
}

struct ServiceGrant {
  # (version 3) A capability served by another guest (see `Process.service`), under a name the
  # two guests agree on ("kv").
  name @0 :Text;
  service @1 :Capability;
}

struct Socket {
  union {
    tcpStream @0 :TcpStream;
    tcpListener @1 :TcpListener;
    udpSocket @2 :UdpSocket;
  }
}

enum StderrMode {
  forward @0;   # copied to the host's stderr, each line prefixed with "[pid N] "
  capture @1;   # kept in a bounded buffer, read with Process.stderr(); overflow is dropped
  discard @2;
}

enum ProcessMode {
  rpc @0;       # stdin/stdout carry this child's own RPC connection (a cell guest)
  plain @1;     # an ordinary WASI program: stdin/stdout are ByteStreams on its Process
}

struct Limits {
  # Zero means "the same as the parent". A value above the parent's is clamped down to it.
  maxMemoryBytes @0 :UInt64;  # all linear memories and tables of the child's store together
  timeoutMs @1 :UInt64;       # wall-clock deadline from spawn
  fuel @2 :UInt64;            # CPU fuel, when the host runs with fuel metering: lent from the
                              # parent's (0 = half of what it has left), given back at exit
  maxProcs @3 :UInt32;        # live processes in the child's subtree, itself included
  maxDepth @4 :UInt32;        # how many levels below the child may still be spawned
}

interface Process {
  pid @0 () -> (pid :UInt32);

  wait @1 () -> (status :ExitStatus);
  # Resolves when the process has ended (immediately if it already has).

  kill @2 () -> ();
  # Terminates the process and its whole subtree; works even while it spins or blocks.

  stderr @3 () -> (stream :ByteStream);
  # The captured stderr; fails with "not-captured: …" unless spawned with `stderr = capture`.

  stdin @4 () -> (stream :ByteStream);
  stdout @5 () -> (stream :ByteStream);
  # A plain child's stdin/stdout; fail with "not-plain: …" for an RPC child.

  service @6 () -> (service :Capability);
  # (version 3) The capability the child serves on its RPC connection (its bootstrap, set with
  # `cell_guest::serve`), proxied by the host: every call counts against the caller's call
  # bounds, and fails with "dead: …" once the child has ended. Fails with "not-plain: …" for a
  # plain child; calls fail with "unsupported: …" when the child serves nothing.
}

# ---------------------------------------------------------------------------------------------
# Directories

interface Directory {
  # (version 3) A host directory: the right to use exactly this tree, read-only or writable.

  open @0 (path :Text) -> (dir :Directory);
  # The subdirectory at `path` (relative, "/"-separated, no ".." components), with the same
  # rights. Symlinks are followed only while they stay inside this tree; nothing reaches above it.

  readOnly @1 () -> (dir :Directory);
  # The same tree, read-only. Nothing turns a read-only Directory writable again.

  writable @2 () -> (writable :Bool);
}

struct ExitStatus {
  union {
    exited @0 :Int32;             # the program returned; its exit code (0 = success)
    trapped @1 :Text;             # a wasm trap, with its message
    killed @2 :KilledBy;
    timedOut @3 :Void;            # its wall-clock deadline passed
    outOfMemory @4 :Void;         # it tried to grow memory past its limit
    outOfFuel @5 :Void;
    protocolViolation @6 :Text;   # it broke its RPC channel (e.g. wrote garbage on stdout)
  }
}

enum KilledBy {
  parent @0;     # Process.kill from the holder of its Process capability
  cascade @1;    # its parent (or an ancestor) ended, taking the subtree with it
  operator @2;   # the host was told to stop (SIGINT/SIGTERM)
  linkLost @3;   # (version 5) a remote child whose node or link was lost (see `Remote`)
}

interface ByteStream {
  read @0 (maxBytes :UInt32) -> (data :Data);
  # Waits for at least one byte; returns at most `maxBytes`, capped at 64 KiB by the host;
  # `maxBytes = 0` means "as much as is there, up to the cap". The same on every stream (pipes,
  # terminal, TCP). An empty result means end of stream.

  write @1 (data :Data) -> ();
  # Resolves once the data is accepted; a slow reader slows the writer (backpressure).

  close @2 () -> ();
  # Ends the writing side (for a TCP stream: shutdown of the write half).
}

# ---------------------------------------------------------------------------------------------
# Network

interface Network {
  connect @0 (host :Text, port :UInt16) -> (stream :TcpStream);
  # `host` is an IP address or a DNS name; a name is resolved by the host and only addresses the
  # policy allows are tried.

  listen @1 (address :Text, port :UInt16, backlog :UInt32) -> (listener :TcpListener);
  bindUdp @2 (address :Text, port :UInt16) -> (socket :UdpSocket);

  restrict @3 (policy :NetPolicy) -> (network :Network);
  # A Network allowing only what both this one and `policy` allow. It can never widen.

  policy @4 () -> (policy :NetPolicy);
  # The effective policy of this capability.
}

struct NetPolicy {
  rules @0 :List(NetRule);
}

struct NetRule {
  op @0 :NetOp;
  host @1 :Text;      # a CIDR ("10.1.0.0/16", "::1/128"), an IP address, or a DNS name
  portLow @2 :UInt16;
  portHigh @3 :UInt16; # inclusive; equal to portLow for a single port
}

enum NetOp {
  connect @0;
  listen @1;
  udp @2;
}

interface TcpStream extends(ByteStream) {
  localAddress @0 () -> (address :Text);
  peerAddress @1 () -> (address :Text);
}

interface TcpListener {
  accept @0 () -> (stream :TcpStream, peer :Text);
  localAddress @1 () -> (address :Text);
}

interface UdpSocket {
  send @0 (host :Text, port :UInt16, data :Data) -> ();
  recv @1 () -> (host :Text, port :UInt16, data :Data);
  # Waits for a datagram. The receive queue is bounded; datagrams arriving when it is full are
  # dropped and counted.
  localAddress @2 () -> (address :Text);
  dropped @3 () -> (count :UInt64);
}

# ---------------------------------------------------------------------------------------------
# The daemon (version 4): `cell serve` bootstraps a `Daemon` on a unix socket, a `Login` on TCP.
# Clients are held to the same framing checks, call bounds and budgets as guests.

interface Login {
  # (version 4) The bootstrap of a TCP listener: nothing is reachable before the token is shown.
  login @0 (token :Text) -> (daemon :Daemon);
  # Fails with "denied: wrong token" (and the daemon closes the connection) unless `token` is the
  # listener's `--token-file` contents (surrounding whitespace ignored).
}

interface Daemon {
  # (version 4) One client's door to a `cell serve` daemon. Everything it starts stays within
  # the grant ceiling of the listener the client came through.

  run @0 (request :JobRequest) -> (job :Job);
  # Starts a job: a pid0 tree of its own, with the request's grants narrowed to the ceiling.
  # Resolves once pid0 is instantiated; fails like `Executor.spawn` ("bad-wasm: …", "limit: …",
  # "denied: …" for a directory outside the ceiling, "bad-request: …").

  load @1 (wasm :Data) -> (component :Component);
  # Compiles `wasm` (or finds it in the daemon's warm caches) and returns it, to run as often as
  # needed with `JobRequest.code.component`. Its `spawn` fails with "unsupported: …".

  ps @2 () -> (processes :List(ProcessEntry));
  # Every live process of every job (and of the daemon's services), in pid order.

  kill @3 (pid :UInt32) -> ();
  # Kills a process and its subtree ("killed by the operator"); resolves once it has ended.
  # Fails with "dead: …" when no such process runs.

  events @4 (sink :EventSink) -> (subscription :Subscription);
  # Streams spawn, exit and deny events to `sink` while `subscription` is held. At most one push
  # is in flight per subscriber: a consumer slower than the daemon loses events (its next event
  # says how many), and never slows the daemon down.

  ping @5 () -> ();
  # (version 5) Answers at once: a client's heartbeat (a node that stops answering it is lost).
}

struct JobRequest {
  # (version 4)
  code :union {
    wasm @0 :Data;              # the component's bytes
    component @1 :Component;    # one returned by `Daemon.load` on this connection
    path @2 :Text;              # an absolute host path inside a directory of the ceiling
  }
  name @3 :Text;                # argv[0]; the file name for `path`, else "job", when empty
  args @4 :List(Text);
  env @5 :List(EnvVar);         # the whole environment: nothing of the daemon's is inherited
  cwd @6 :Text;                 # pid0's working directory (a guest path); empty: none
  network @7 :NetPolicy;        # null: no network; else intersected with the ceiling's policy
  dirs @8 :List(JobDir);
  limits @9 :JobLimits;
  mode @10 :JobMode;
  attached @11 :Bool;           # kill the job when this client's connection ends
  services @12 :List(ServiceGrant);
  # (version 5) Capabilities of the client's own that pid0 may call (its `Session.services`):
  # a `cell run --remote` host passes the services its child was granted. Each is proxied by
  # the daemon under pid0's call bounds; calls fail with "dead: …" once the client's
  # connection has ended. At most 64.
  remotes @13 :List(Text);
  # (version 5) Names of the daemon's own remote nodes (`cell serve --remote NAME=tls://…`)
  # pid0 gets in `Session.remotes`, in this order. Each must be one the client's ceiling
  # lists ("denied: …" otherwise); the daemon connects to it (or reuses its link) itself, as
  # whoever its --remote-cert says. At most 64.
  components @14 :List(Component);
  # (version 5) Components of the client's own pid0 may spawn from (its `Session.components`,
  # after any of the daemon's): they cross by reference, so spawning from one is a call back
  # to the client — the child runs where the component is, a child of the process that granted
  # it there (a `cell run --remote` host passes the components its remote child was granted).
  # Spawning fails with "dead: …" once the client's connection has ended. At most 64.
  withoutExecutor @15 :Bool;
  # (version 5) A cell guest pid0 gets no Executor (it always gets one otherwise): a
  # `cell run --remote` host starting a child whose parent granted it none.
}

struct JobDir {
  # (version 4) A directory for pid0: `host` must lie inside a directory of the ceiling, and may
  # be writable only if that one is.
  host @0 :Text;
  guest @1 :Text;
  writable @2 :Bool;
}

struct JobLimits {
  # (version 4) Zero means "the ceiling's". A value above the ceiling's is refused with "limit: …".
  maxMemoryBytes @0 :UInt64;
  timeoutMs @1 :UInt64;
  fuel @2 :UInt64;
  maxProcs @3 :UInt32;
  maxDepth @4 :UInt32;
  maxWasmBytes @5 :UInt64;
  maxMessageBytes @6 :UInt64;
  maxOutstandingCalls @7 :UInt32;
  maxSockets @8 :UInt32;
  stderrCaptureBytes @9 :UInt64;
}

enum JobMode {
  auto @0;    # by the file, as `cell run`: RPC for a component built with the cell-guest SDK
  rpc @1;     # a cell guest: its stdio is its RPC connection to the daemon
  plain @2;   # an ordinary WASI program: its stdin/stdout are the Job's ByteStreams
}

interface Job {
  # (version 4) A running (or ended) job. Dropping it does not stop the job; a job started
  # `attached` is killed when the connection that started it ends.

  pid @0 () -> (pid :UInt32);
  wait @1 () -> (status :ExitStatus);
  # Resolves when the job's pid0 has ended.

  kill @2 () -> ();
  # Kills the whole job ("killed by the operator"); resolves once pid0 has ended.

  stderr @3 () -> (stream :ByteStream);
  # pid0's stderr, with each descendant's forwarded stderr lines ("[pid N] …"). Never slows the
  # job: bytes arriving while `limits.stderrCaptureBytes` are unread are dropped and counted in
  # the report. Ends when pid0 has ended.

  stdin @4 () -> (stream :ByteStream);
  stdout @5 () -> (stream :ByteStream);
  # A plain job's stdin/stdout; "not-plain: …" for an RPC job.

  report @6 () -> (json :Text);
  # The `cell-report/1` JSON of this job (as `cell run --report`), once its whole tree has
  # ended: waits until then.

  service @7 () -> (service :Capability);
  # (version 5) What pid0 serves on its RPC connection (as `Process.service`), proxied by the
  # daemon under this client's call bounds: a `cell run --remote` host uses it for a remote
  # child's `Process.service`. "not-plain: …" for a plain job, "dead: …" once pid0 has ended.
}

struct ProcessEntry {
  # (version 4) One live process, for `Daemon.ps`.
  pid @0 :UInt32;
  parent @1 :UInt32;
  hasParent @2 :Bool;        # false for a job's pid0
  job @3 :UInt32;            # the pid of its job's pid0
  name @4 :Text;
  sha256 @5 :Text;
  running @6 :Bool;          # false: exited, kept until its subtree has ended
  uptimeMs @7 :UInt64;
  memoryBytes @8 :UInt64;    # linear memories and tables now
  fuelMetered @9 :Bool;
  fuelLeft @10 :UInt64;
  service @11 :Text;         # the `--service` it runs, if any
  restarts @12 :UInt32;      # how often that service has been restarted
  shard @13 :UInt32;         # the daemon shard (thread) its job runs on (`cell serve --shards`)
}

interface EventSink {
  # (version 4) Implemented by a client to receive `Daemon.events`.
  push @0 (event :Event) -> ();
}

interface Subscription {
  # (version 4) Events flow while this is held; drop it to stop them.
}

struct Event {
  # (version 4)
  seq @0 :UInt64;            # the daemon's event counter: gaps are events this sink lost
  lost @1 :UInt64;           # events this sink lost since the previous push
  unixMs @2 :UInt64;
  pid @3 :UInt32;
  union {
    spawn @4 :SpawnEvent;
    exit @5 :ExitStatus;
    deny @6 :DenyEvent;
  }
}

struct SpawnEvent {
  parent @0 :UInt32;
  hasParent @1 :Bool;
  name @2 :Text;
  sha256 @3 :Text;
}

struct DenyEvent {
  op @0 :Text;               # "connect", "listen", "udp", "resolve", "dir-open", …
  target @1 :Text;
  detail @2 :Text;
}
