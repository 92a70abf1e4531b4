//! `SpawnRequest`, `Grants` and `Limits`: what a parent asks for when it spawns a child. The
//! guest SDK writes them, the host reads them, with the same code.

use std::time::Duration;

use crate::cell_capnp::{
    component, dir_grant, directory, grants, limits, network, service_grant, socket, spawn_request,
    tcp_listener, tcp_stream, udp_socket, ProcessMode, StderrMode,
};
use crate::reason::{CellError, Reason};

/// A socket capability handed to a child (`Socket` in the schema).
#[derive(Clone)]
pub enum Socket {
    /// An open TCP connection.
    TcpStream(tcp_stream::Client),
    /// A listening TCP socket.
    TcpListener(tcp_listener::Client),
    /// A bound UDP socket.
    UdpSocket(udp_socket::Client),
}

impl Socket {
    /// Writes this socket into a `Socket` union.
    pub fn write(&self, mut b: socket::Builder<'_>) {
        match self {
            Socket::TcpStream(c) => b.set_tcp_stream(c.clone()),
            Socket::TcpListener(c) => b.set_tcp_listener(c.clone()),
            Socket::UdpSocket(c) => b.set_udp_socket(c.clone()),
        }
    }

    /// Reads a `Socket` union (fails on a kind this version does not know).
    pub fn read(r: socket::Reader<'_>) -> capnp::Result<Self> {
        use socket::Which;
        Ok(match r.which()? {
            Which::TcpStream(c) => Socket::TcpStream(c?),
            Which::TcpListener(c) => Socket::TcpListener(c?),
            Which::UdpSocket(c) => Socket::UdpSocket(c?),
        })
    }
}

/// Entries one list of named grants (`Grants.dirs`, `Grants.services`) may have.
pub const MAX_NAMED_GRANTS: usize = 64;
/// Bytes of one grant's path or name.
pub const MAX_GRANT_NAME: usize = 256;

/// A directory handed to a child, and the guest path it appears under (`DirGrant`; version 3).
#[derive(Clone)]
pub struct DirGrant {
    /// Where the child sees it (its WASI preopen), e.g. `/data`.
    pub path: String,
    /// A Directory the parent holds.
    pub dir: directory::Client,
}

/// A guest's service handed to a child under a name (`ServiceGrant`; version 3).
#[derive(Clone)]
pub struct ServiceGrant {
    /// The name the two guests agree on, e.g. `kv`.
    pub name: String,
    /// The capability, as the parent holds it (from `Process.service` or `Session.services`).
    pub service: capnp::capability::Client,
}

impl DirGrant {
    /// Writes the entry.
    pub fn write(&self, mut b: dir_grant::Builder<'_>) {
        b.set_path(self.path.as_str());
        b.set_dir(self.dir.clone());
    }

    /// Reads an entry (its path at most [`MAX_GRANT_NAME`] bytes).
    pub fn read(r: dir_grant::Reader<'_>) -> capnp::Result<Self> {
        Ok(DirGrant {
            path: grant_name(r.get_path()?, "directory path")?,
            dir: r.get_dir()?,
        })
    }
}

impl ServiceGrant {
    /// Writes the entry.
    pub fn write(&self, mut b: service_grant::Builder<'_>) {
        b.set_name(self.name.as_str());
        b.init_service()
            .set_as_capability(self.service.hook.add_ref());
    }

    /// Reads an entry (its name at most [`MAX_GRANT_NAME`] bytes).
    pub fn read(r: service_grant::Reader<'_>) -> capnp::Result<Self> {
        Ok(ServiceGrant {
            name: grant_name(r.get_name()?, "service name")?,
            service: r.get_service().get_as_capability()?,
        })
    }
}

/// A grant's path or name, bounded and UTF-8.
fn grant_name(text: capnp::text::Reader<'_>, what: &str) -> capnp::Result<String> {
    if text.len() > MAX_GRANT_NAME {
        return Err(CellError::new(
            Reason::BadRequest,
            format!("{what} longer than {MAX_GRANT_NAME} bytes"),
        )
        .into());
    }
    text.to_string()
        .map_err(|_| CellError::new(Reason::BadRequest, format!("{what} is not UTF-8")).into())
}

/// At most [`MAX_NAMED_GRANTS`] entries of `what`.
fn named_grants_len(len: u32, what: &str) -> capnp::Result<()> {
    if len as usize > MAX_NAMED_GRANTS {
        return Err(CellError::new(
            Reason::Limit,
            format!("at most {MAX_NAMED_GRANTS} {what} can be granted at once"),
        )
        .into());
    }
    Ok(())
}

/// What a parent grants a child (`Grants` in the schema). Nothing is granted unless named.
/// The capabilities are as the parent sent them: the host checks that it issued them.
#[derive(Clone, Default)]
pub struct Grants {
    /// The child gets an Executor of its own.
    pub executor: bool,
    /// A Network the parent holds (possibly restricted); `None`: no network.
    pub network: Option<network::Client>,
    /// Sockets handed over, in order (`Session.sockets`).
    pub sockets: Vec<Socket>,
    /// Components the child may spawn, in order (`Session.components`; version 2).
    pub components: Vec<component::Client>,
    /// Directories the child gets as WASI preopens (`Session.dirs`; version 3).
    pub dirs: Vec<DirGrant>,
    /// Services the child may call (`Session.services`; version 3).
    pub services: Vec<ServiceGrant>,
}

impl Grants {
    /// Writes the grants.
    pub fn write(&self, mut b: grants::Builder<'_>) -> Result<(), CellError> {
        b.set_executor(self.executor);
        if let Some(network) = &self.network {
            b.set_network(network.clone());
        }
        let mut list = b
            .reborrow()
            .init_sockets(list_len(self.sockets.len(), "sockets")?);
        for (i, s) in self.sockets.iter().enumerate() {
            s.write(list.reborrow().get(i as u32));
        }
        if !self.components.is_empty() {
            let n = list_len(self.components.len(), "components")?;
            write_components(&self.components, b.reborrow().init_components(n));
        }
        if !self.dirs.is_empty() {
            let mut list = b
                .reborrow()
                .init_dirs(list_len(self.dirs.len(), "directories")?);
            for (i, d) in self.dirs.iter().enumerate() {
                d.write(list.reborrow().get(i as u32));
            }
        }
        if !self.services.is_empty() {
            let n = list_len(self.services.len(), "services")?;
            write_services(&self.services, b.reborrow().init_services(n));
        }
        Ok(())
    }

    /// Reads the grants (a null network is no network).
    pub fn read(r: grants::Reader<'_>) -> capnp::Result<Self> {
        let network = if r.has_network() {
            Some(r.get_network()?)
        } else {
            None
        };
        let sockets = r
            .get_sockets()?
            .iter()
            .map(Socket::read)
            .collect::<capnp::Result<Vec<_>>>()?;
        // A version-1 sender leaves the list out: no components.
        let components = if r.has_components() {
            r.get_components()?
                .iter()
                .collect::<capnp::Result<Vec<_>>>()?
        } else {
            Vec::new()
        };
        // Version-2 senders leave these out: none.
        let mut dirs = Vec::new();
        if r.has_dirs() {
            let list = r.get_dirs()?;
            named_grants_len(list.len(), "directories")?;
            for d in list.iter() {
                dirs.push(DirGrant::read(d)?);
            }
        }
        let mut services = Vec::new();
        if r.has_services() {
            let list = r.get_services()?;
            named_grants_len(list.len(), "services")?;
            for s in list.iter() {
                services.push(ServiceGrant::read(s)?);
            }
        }
        Ok(Grants {
            executor: r.get_executor(),
            network,
            sockets,
            components,
            dirs,
            services,
        })
    }
}

/// Limits a parent asks for on behalf of a child (`Limits` in the schema); `None` = the same as
/// the parent's (zero on the wire). The host clamps every value to what the parent holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitRequest {
    /// All linear memories and tables of the child's store together, in bytes.
    pub max_memory: Option<u64>,
    /// Wall-clock deadline from spawn (whole milliseconds on the wire).
    pub timeout: Option<Duration>,
    /// CPU fuel lent from the parent's (`None`: half of what it has left).
    pub fuel: Option<u64>,
    /// Live processes in the child's subtree, itself included.
    pub max_procs: Option<u32>,
    /// How many levels below the child may still be spawned.
    pub max_depth: Option<u32>,
}

impl LimitRequest {
    /// Writes the limits (`None` as 0; a timeout in whole milliseconds, saturating).
    pub fn write(&self, mut b: limits::Builder<'_>) {
        b.set_max_memory_bytes(self.max_memory.unwrap_or(0));
        let ms = self
            .timeout
            .map_or(0, |t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
        b.set_timeout_ms(ms);
        b.set_fuel(self.fuel.unwrap_or(0));
        b.set_max_procs(self.max_procs.unwrap_or(0));
        b.set_max_depth(self.max_depth.unwrap_or(0));
    }

    /// Reads the limits (0 as `None`).
    pub fn read(r: limits::Reader<'_>) -> Self {
        let nonzero = |v: u64| (v != 0).then_some(v);
        let nonzero32 = |v: u32| (v != 0).then_some(v);
        LimitRequest {
            max_memory: nonzero(r.get_max_memory_bytes()),
            timeout: nonzero(r.get_timeout_ms()).map(Duration::from_millis),
            fuel: nonzero(r.get_fuel()),
            max_procs: nonzero32(r.get_max_procs()),
            max_depth: nonzero32(r.get_max_depth()),
        }
    }
}

/// A spawn request (`SpawnRequest` in the schema). `W` holds the wasm: a borrowed slice when a
/// guest writes one, an owned buffer (`Arc<[u8]>`, `Vec<u8>`) when the host reads one.
#[derive(Clone)]
pub struct SpawnRequest<W> {
    /// A WASI preview-2 component.
    pub wasm: W,
    /// argv[0] and the name in the host's logs; empty means "child".
    pub name: String,
    /// argv[1..].
    pub args: Vec<String>,
    /// The child's whole environment.
    pub env: Vec<(String, String)>,
    /// What the child may do.
    pub grants: Grants,
    /// Where its stderr goes.
    pub stderr: StderrMode,
    /// A cell guest (`Rpc`) or an ordinary WASI program (`Plain`).
    pub mode: ProcessMode,
    /// Limits asked for; the host clamps them to the parent's.
    pub limits: LimitRequest,
}

impl<W> SpawnRequest<W> {
    /// A request for `wasm` with everything else at the schema's defaults: no name, args, env
    /// or grants, stderr forwarded, RPC mode, the parent's limits.
    pub fn new(wasm: W) -> Self {
        SpawnRequest {
            wasm,
            name: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            grants: Grants::default(),
            stderr: StderrMode::Forward,
            mode: ProcessMode::Rpc,
            limits: LimitRequest::default(),
        }
    }
}

/// Bounds a reader enforces while it copies a request out of a message, before it allocates
/// more: the host's limits on what a child's argv and environment may hold.
#[derive(Clone, Copy, Debug)]
pub struct ReadBounds {
    /// Bytes of args, env keys and env values together.
    pub argv_env_bytes: usize,
    /// Args plus env entries.
    pub argv_env_entries: usize,
    /// The longest name kept: a longer one is cut (at a character boundary) without being
    /// copied whole.
    pub name_bytes: usize,
    /// Whether to copy the wasm: `Component.spawn` ignores it, so it is not even read.
    pub with_wasm: bool,
}

/// Counts what is copied against [`ReadBounds`].
struct Budget {
    bounds: ReadBounds,
    bytes: usize,
    entries: usize,
}

impl Budget {
    fn take(&mut self, len: usize) -> Result<(), CellError> {
        self.bytes = self.bytes.saturating_add(len);
        self.entries += 1;
        if self.bytes > self.bounds.argv_env_bytes || self.entries > self.bounds.argv_env_entries {
            return Err(CellError::new(
                Reason::Limit,
                format!(
                    "args and env exceed {} bytes or {} entries",
                    self.bounds.argv_env_bytes, self.bounds.argv_env_entries
                ),
            ));
        }
        Ok(())
    }
}

impl<W: AsRef<[u8]>> SpawnRequest<W> {
    /// Writes the request.
    pub fn write(&self, mut b: spawn_request::Builder<'_>) -> Result<(), CellError> {
        b.set_wasm(self.wasm.as_ref());
        b.set_name(self.name.as_str());
        write_args(
            &self.args,
            b.reborrow().init_args(list_len(self.args.len(), "args")?),
        );
        write_env(
            &self.env,
            b.reborrow().init_env(list_len(self.env.len(), "env vars")?),
        );
        self.grants.write(b.reborrow().init_grants())?;
        b.set_stderr(self.stderr);
        b.set_mode(self.mode);
        self.limits.write(b.init_limits());
        Ok(())
    }
}

impl<W: for<'a> From<&'a [u8]>> SpawnRequest<W> {
    /// Reads a request, refusing (`limit: …`) args and env beyond `bounds` before copying
    /// them. Text must be UTF-8; unknown enumerants fail.
    pub fn read(r: spawn_request::Reader<'_>, bounds: ReadBounds) -> Result<Self, CellError> {
        let bad = CellError::bad_request;
        let (args, env) = read_args_env(
            r.get_args().map_err(bad)?,
            r.get_env().map_err(bad)?,
            bounds,
        )?;
        Ok(SpawnRequest {
            wasm: if bounds.with_wasm {
                W::from(r.get_wasm().map_err(bad)?)
            } else {
                W::from(&[])
            },
            name: cut(
                r.get_name()
                    .map_err(bad)?
                    .to_str()
                    .map_err(|e| bad(e.into()))?,
                bounds.name_bytes,
            ),
            args,
            env,
            grants: Grants::read(r.get_grants().map_err(bad)?).map_err(bad)?,
            stderr: r.get_stderr().map_err(|e| bad(e.into()))?,
            mode: r.get_mode().map_err(|e| bad(e.into()))?,
            limits: LimitRequest::read(r.get_limits().map_err(bad)?),
        })
    }
}

/// A request's args and environment, copied.
pub(crate) type ArgsEnv = (Vec<String>, Vec<(String, String)>);

/// Args and env as owned strings, refused (`limit: …`) beyond `bounds` before they are copied.
pub(crate) fn read_args_env(
    args: capnp::text_list::Reader<'_>,
    env: capnp::struct_list::Reader<'_, crate::cell_capnp::env_var::Owned>,
    bounds: ReadBounds,
) -> Result<ArgsEnv, CellError> {
    let bad = CellError::bad_request;
    let mut budget = Budget {
        bounds,
        bytes: 0,
        entries: 0,
    };
    let mut out_args = Vec::new();
    for a in args.iter() {
        let a = a.map_err(bad)?;
        budget.take(a.len())?;
        out_args.push(text(a)?);
    }
    let mut out_env = Vec::new();
    for kv in env.iter() {
        let (k, v) = (kv.get_key().map_err(bad)?, kv.get_value().map_err(bad)?);
        budget.take(k.len() + v.len())?;
        out_env.push((text(k)?, text(v)?));
    }
    Ok((out_args, out_env))
}

/// Writes args into their list.
pub(crate) fn write_args(args: &[String], mut args_b: capnp::text_list::Builder<'_>) {
    for (i, arg) in args.iter().enumerate() {
        args_b.set(i as u32, arg.as_str());
    }
}

/// Writes components into their list (shared by `Grants` and `JobRequest`).
pub(crate) fn write_components(
    components: &[component::Client],
    mut list: capnp::capability_list::Builder<'_, component::Client>,
) {
    for (i, c) in components.iter().enumerate() {
        list.set(i as u32, c.client.hook.add_ref());
    }
}

/// Writes services into their list (shared by `Grants` and `JobRequest`).
pub(crate) fn write_services(
    services: &[ServiceGrant],
    mut list: capnp::struct_list::Builder<'_, crate::cell_capnp::service_grant::Owned>,
) {
    for (i, s) in services.iter().enumerate() {
        s.write(list.reborrow().get(i as u32));
    }
}

/// Writes env vars into their list.
pub(crate) fn write_env(
    env: &[(String, String)],
    mut env_b: capnp::struct_list::Builder<'_, crate::cell_capnp::env_var::Owned>,
) {
    for (i, (key, value)) in env.iter().enumerate() {
        let mut var = env_b.reborrow().get(i as u32);
        var.set_key(key.as_str());
        var.set_value(value.as_str());
    }
}

/// The first `max` bytes of `s` (fewer, to end at a character boundary), copied.
pub(crate) fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

/// A text field as an owned string (`bad-request` unless UTF-8).
pub(crate) fn text(t: capnp::text::Reader<'_>) -> Result<String, CellError> {
    t.to_string().map_err(|e| CellError::bad_request(e.into()))
}

/// A list length as the `u32` Cap'n Proto uses.
pub(crate) fn list_len(len: usize, what: &str) -> Result<u32, CellError> {
    u32::try_from(len).map_err(|_| CellError::new(Reason::Limit, format!("too many {what}: {len}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> ReadBounds {
        ReadBounds {
            argv_env_bytes: 64,
            argv_env_entries: 4,
            name_bytes: 8,
            with_wasm: true,
        }
    }

    /// Too many named grants, or a name past its bound, are refused before any entry's
    /// capability is read.
    #[test]
    fn named_grants_are_bounded() {
        let read = |dirs: u32, services: u32, name: &str| {
            let mut message = capnp::message::Builder::new_default();
            let mut g = message.init_root::<grants::Builder<'_>>();
            g.reborrow().init_dirs(dirs);
            let mut list = g.reborrow().init_services(services);
            for i in 0..services {
                list.reborrow().get(i).set_name(name);
            }
            let r = message
                .get_root_as_reader::<grants::Reader<'_>>()
                .expect("root");
            Grants::read(r).err().map(|e| CellError::from(e).reason)
        };
        let n = MAX_NAMED_GRANTS as u32;
        assert_eq!(read(n + 1, 0, "x"), Some(Reason::Limit));
        assert_eq!(read(0, n + 1, "x"), Some(Reason::Limit));
        let long = "k".repeat(MAX_GRANT_NAME + 1);
        assert_eq!(read(0, 1, &long), Some(Reason::BadRequest));
    }

    #[test]
    fn a_request_round_trips() {
        let mut req = SpawnRequest::new(&b"\0asm"[..]);
        req.name = "leaf".into();
        req.args = vec!["--depth".into(), "3".into()];
        req.env = vec![("K".into(), "V".into())];
        req.grants.executor = true;
        req.stderr = StderrMode::Capture;
        req.mode = ProcessMode::Plain;
        req.limits = LimitRequest {
            max_memory: Some(1 << 20),
            timeout: Some(Duration::from_millis(1500)),
            fuel: None,
            max_procs: Some(3),
            max_depth: None,
        };
        let mut message = capnp::message::Builder::new_default();
        req.write(message.init_root()).expect("write");
        let r = message
            .get_root_as_reader::<spawn_request::Reader<'_>>()
            .expect("root");
        let back = SpawnRequest::<Vec<u8>>::read(r, bounds()).expect("read");
        assert_eq!(back.wasm, b"\0asm");
        assert_eq!(
            (back.name.as_str(), &back.args, &back.env),
            ("leaf", &req.args, &req.env)
        );
        assert!(back.grants.executor && back.grants.network.is_none());
        assert_eq!(
            (back.stderr, back.mode),
            (StderrMode::Capture, ProcessMode::Plain)
        );
        assert_eq!(back.limits, req.limits);
    }

    #[test]
    fn long_names_are_cut_at_a_character_boundary() {
        let mut req = SpawnRequest::new(&b""[..]);
        req.name = "ééééé".into(); // 10 bytes
        let mut message = capnp::message::Builder::new_default();
        req.write(message.init_root()).expect("write");
        let r = message.get_root_as_reader().expect("root");
        let back = SpawnRequest::<Vec<u8>>::read(r, bounds()).expect("read");
        assert_eq!(back.name, "éééé");
    }

    #[test]
    fn args_past_the_bounds_are_refused_with_limit() {
        let mut req = SpawnRequest::new(&b""[..]);
        req.args = vec!["x".repeat(65)];
        let mut message = capnp::message::Builder::new_default();
        req.write(message.init_root()).expect("write");
        let r = message.get_root_as_reader().expect("root");
        let err = SpawnRequest::<Vec<u8>>::read(r, bounds())
            .err()
            .expect("refused");
        assert_eq!(err.reason, Reason::Limit);
        let mut req = SpawnRequest::new(&b""[..]);
        req.env = (0..5).map(|i| (format!("K{i}"), String::new())).collect();
        let mut message = capnp::message::Builder::new_default();
        req.write(message.init_root()).expect("write");
        let r = message.get_root_as_reader().expect("root");
        assert!(SpawnRequest::<Vec<u8>>::read(r, bounds()).is_err());
    }
}
