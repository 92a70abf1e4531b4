//! The daemon's job request (`JobRequest` in the schema, version 4): written by `cell exec`
//! and other native clients, read by `cell serve` within [`ReadBounds`].

use crate::cell_capnp::{component, job_dir, job_limits, job_request, JobMode};
use crate::rule::{read_rules, write_rules, NetRule};
use crate::spawn::{
    cut, list_len, read_args_env, text, write_args, write_components, write_env, write_services,
    ReadBounds, ServiceGrant,
};
use crate::{CellError, Reason, MAX_NAMED_GRANTS};

/// Where a job's code comes from. `W` holds the wasm (see [`crate::SpawnRequest`]).
#[derive(Clone)]
pub enum JobCode<W> {
    /// The component's bytes.
    Wasm(W),
    /// A component returned by `Daemon.load`.
    Component(component::Client),
    /// An absolute host path inside a directory of the daemon's ceiling.
    Path(String),
}

/// A directory asked for by a job (`JobDir`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobDir {
    /// An absolute host path inside a directory of the ceiling.
    pub host: String,
    /// Where pid0 sees it.
    pub guest: String,
    /// Writable (only if the ceiling's directory is).
    pub writable: bool,
}

/// The limits a job asks for (`JobLimits`); `None` = the ceiling's (zero on the wire).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[allow(missing_docs)] // each is the `cell run` flag of the same name
pub struct JobLimits {
    pub max_memory: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub fuel: Option<u64>,
    pub max_procs: Option<u32>,
    pub max_depth: Option<u32>,
    pub max_wasm_bytes: Option<u64>,
    pub max_message_bytes: Option<u64>,
    pub max_outstanding_calls: Option<u32>,
    pub max_sockets: Option<u32>,
    pub stderr_capture_bytes: Option<u64>,
}

impl JobLimits {
    /// Writes the limits (`None` as 0).
    pub fn write(&self, mut b: job_limits::Builder<'_>) {
        b.set_max_memory_bytes(self.max_memory.unwrap_or(0));
        b.set_timeout_ms(self.timeout_ms.unwrap_or(0));
        b.set_fuel(self.fuel.unwrap_or(0));
        b.set_max_procs(self.max_procs.unwrap_or(0));
        b.set_max_depth(self.max_depth.unwrap_or(0));
        b.set_max_wasm_bytes(self.max_wasm_bytes.unwrap_or(0));
        b.set_max_message_bytes(self.max_message_bytes.unwrap_or(0));
        b.set_max_outstanding_calls(self.max_outstanding_calls.unwrap_or(0));
        b.set_max_sockets(self.max_sockets.unwrap_or(0));
        b.set_stderr_capture_bytes(self.stderr_capture_bytes.unwrap_or(0));
    }

    /// Reads the limits (0 as `None`).
    pub fn read(r: job_limits::Reader<'_>) -> Self {
        let n64 = |v: u64| (v != 0).then_some(v);
        let n32 = |v: u32| (v != 0).then_some(v);
        JobLimits {
            max_memory: n64(r.get_max_memory_bytes()),
            timeout_ms: n64(r.get_timeout_ms()),
            fuel: n64(r.get_fuel()),
            max_procs: n32(r.get_max_procs()),
            max_depth: n32(r.get_max_depth()),
            max_wasm_bytes: n64(r.get_max_wasm_bytes()),
            max_message_bytes: n64(r.get_max_message_bytes()),
            max_outstanding_calls: n32(r.get_max_outstanding_calls()),
            max_sockets: n32(r.get_max_sockets()),
            stderr_capture_bytes: n64(r.get_stderr_capture_bytes()),
        }
    }
}

/// A request to start a job (`Daemon.run`).
#[derive(Clone)]
pub struct JobRequest<W> {
    /// What to run.
    pub code: JobCode<W>,
    /// argv[0]; empty: the file name for a path, else "job".
    pub name: String,
    /// argv[1..].
    pub args: Vec<String>,
    /// The whole environment.
    pub env: Vec<(String, String)>,
    /// pid0's working directory (a guest path).
    pub cwd: Option<String>,
    /// The network policy asked for (intersected with the ceiling's); `None`: no network.
    pub network: Option<Vec<NetRule>>,
    /// Directories for pid0.
    pub dirs: Vec<JobDir>,
    /// Limits asked for.
    pub limits: JobLimits,
    /// How pid0's stdio is used.
    pub mode: JobMode,
    /// Kill the job when the connection that started it ends.
    pub attached: bool,
    /// Capabilities of the client's own that pid0 may call (`Session.services`; version 5).
    pub services: Vec<ServiceGrant>,
    /// The daemon's remote nodes pid0 gets, by name (`Session.remotes`; version 5).
    pub remotes: Vec<String>,
    /// Components of the client's own pid0 may spawn from, by reference (version 5).
    pub components: Vec<crate::cell_capnp::component::Client>,
    /// A cell guest pid0 gets no Executor (version 5).
    pub without_executor: bool,
}

impl<W> JobRequest<W> {
    /// A request to run `code` with nothing granted.
    pub fn new(code: JobCode<W>) -> Self {
        JobRequest {
            code,
            name: String::new(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            network: None,
            dirs: Vec::new(),
            limits: JobLimits::default(),
            mode: JobMode::Auto,
            attached: false,
            services: Vec::new(),
            remotes: Vec::new(),
            components: Vec::new(),
            without_executor: false,
        }
    }
}

impl<W: AsRef<[u8]>> JobRequest<W> {
    /// Writes the request.
    ///
    /// # Errors
    /// A list too long for the wire.
    pub fn write(&self, mut b: job_request::Builder<'_>) -> Result<(), CellError> {
        {
            let mut code = b.reborrow().init_code();
            match &self.code {
                JobCode::Wasm(w) => code.set_wasm(w.as_ref()),
                JobCode::Component(c) => code.set_component(c.clone()),
                JobCode::Path(p) => code.set_path(p.as_str()),
            }
        }
        b.set_name(self.name.as_str());
        write_args(
            &self.args,
            b.reborrow().init_args(list_len(self.args.len(), "args")?),
        );
        write_env(
            &self.env,
            b.reborrow().init_env(list_len(self.env.len(), "env vars")?),
        );
        b.set_cwd(self.cwd.as_deref().unwrap_or(""));
        if let Some(rules) = &self.network {
            write_rules(rules, b.reborrow().init_network())?;
        }
        let mut dirs = b
            .reborrow()
            .init_dirs(list_len(self.dirs.len(), "directories")?);
        for (i, d) in self.dirs.iter().enumerate() {
            let mut e: job_dir::Builder<'_> = dirs.reborrow().get(i as u32);
            e.set_host(d.host.as_str());
            e.set_guest(d.guest.as_str());
            e.set_writable(d.writable);
        }
        self.limits.write(b.reborrow().init_limits());
        b.set_mode(self.mode);
        b.set_attached(self.attached);
        b.set_without_executor(self.without_executor);
        if !self.services.is_empty() {
            let n = list_len(self.services.len(), "services")?;
            write_services(&self.services, b.reborrow().init_services(n));
        }
        if !self.remotes.is_empty() {
            write_args(
                &self.remotes,
                b.reborrow()
                    .init_remotes(list_len(self.remotes.len(), "remotes")?),
            );
        }
        if !self.components.is_empty() {
            let n = list_len(self.components.len(), "components")?;
            write_components(&self.components, b.init_components(n));
        }
        Ok(())
    }
}

impl<W: for<'a> From<&'a [u8]>> JobRequest<W> {
    /// Reads a request: args and env within `bounds`, at most [`MAX_NAMED_GRANTS`] directories
    /// and `max_rules` rules, paths and names at most `bounds.name_bytes` (longer ones are
    /// refused, not cut: a cut path would name another file). Text must be UTF-8; unknown
    /// enumerants fail.
    ///
    /// # Errors
    /// `bad-request: …` or `limit: …`.
    pub fn read(
        r: job_request::Reader<'_>,
        bounds: ReadBounds,
        max_rules: usize,
    ) -> Result<Self, CellError> {
        let bad = CellError::bad_request;
        let path_text = |t: capnp::text::Reader<'_>| -> Result<String, CellError> {
            if t.len() > bounds.name_bytes {
                return Err(CellError::new(
                    Reason::Limit,
                    format!(
                        "a path of {} bytes (at most {})",
                        t.len(),
                        bounds.name_bytes
                    ),
                ));
            }
            text(t)
        };
        let code = match r.get_code().which().map_err(|e| bad(e.into()))? {
            job_request::code::Wasm(w) => JobCode::Wasm(W::from(w.map_err(bad)?)),
            job_request::code::Component(c) => JobCode::Component(c.map_err(bad)?),
            job_request::code::Path(p) => JobCode::Path(path_text(p.map_err(bad)?)?),
        };
        let (args, env) = read_args_env(
            r.get_args().map_err(bad)?,
            r.get_env().map_err(bad)?,
            bounds,
        )?;
        let network = if r.has_network() {
            Some(read_rules(r.get_network().map_err(bad)?, max_rules)?)
        } else {
            None
        };
        let list = r.get_dirs().map_err(bad)?;
        at_most(list.len(), "directories")?;
        let mut dirs = Vec::with_capacity(list.len() as usize);
        for d in list.iter() {
            dirs.push(JobDir {
                host: path_text(d.get_host().map_err(bad)?)?,
                guest: path_text(d.get_guest().map_err(bad)?)?,
                writable: d.get_writable(),
            });
        }
        let mut services = Vec::new();
        if r.has_services() {
            let list = r.get_services().map_err(bad)?;
            at_most(list.len(), "services")?;
            for s in list.iter() {
                services.push(ServiceGrant::read(s).map_err(CellError::from)?);
            }
        }
        let mut remotes = Vec::new();
        if r.has_remotes() {
            let list = r.get_remotes().map_err(bad)?;
            at_most(list.len(), "remotes")?;
            for name in list.iter() {
                remotes.push(path_text(name.map_err(bad)?)?);
            }
        }
        let mut components = Vec::new();
        if r.has_components() {
            let list = r.get_components().map_err(bad)?;
            at_most(list.len(), "components")?;
            for c in list.iter() {
                components.push(c.map_err(bad)?);
            }
        }
        let cwd = path_text(r.get_cwd().map_err(bad)?)?;
        let name = r.get_name().map_err(bad)?;
        Ok(JobRequest {
            code,
            name: cut(name.to_str().map_err(|e| bad(e.into()))?, bounds.name_bytes),
            args,
            env,
            cwd: (!cwd.is_empty()).then_some(cwd),
            network,
            dirs,
            limits: JobLimits::read(r.get_limits().map_err(bad)?),
            mode: r.get_mode().map_err(|e| bad(e.into()))?,
            attached: r.get_attached(),
            services,
            remotes,
            components,
            without_executor: r.get_without_executor(),
        })
    }
}

/// Refuses a list of more than [`MAX_NAMED_GRANTS`] entries before any is read.
fn at_most(len: u32, what: &str) -> Result<(), CellError> {
    if len as usize > MAX_NAMED_GRANTS {
        return Err(CellError::new(
            Reason::Limit,
            format!("{len} {what} (at most {MAX_NAMED_GRANTS} per job)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_rule;

    const BOUNDS: ReadBounds = ReadBounds {
        argv_env_bytes: 1024,
        argv_env_entries: 16,
        name_bytes: 64,
        with_wasm: true,
    };

    fn roundtrip(req: &JobRequest<Vec<u8>>) -> Result<JobRequest<Vec<u8>>, CellError> {
        let mut msg = capnp::message::Builder::new_default();
        req.write(msg.init_root())?;
        let r = msg.get_root_as_reader::<job_request::Reader<'_>>().unwrap();
        JobRequest::read(r, BOUNDS, 64)
    }

    #[test]
    fn a_request_survives_the_wire() {
        let mut req = JobRequest::new(JobCode::Wasm(b"\0asm".to_vec()));
        req.name = "app".into();
        req.args = vec!["-x".into()];
        req.env = vec![("K".into(), "V".into())];
        req.cwd = Some("/data".into());
        req.network = Some(vec![parse_rule("connect=127.0.0.1:80").unwrap()]);
        req.dirs = vec![JobDir {
            host: "/srv/data".into(),
            guest: "/data".into(),
            writable: true,
        }];
        req.limits.max_memory = Some(1 << 20);
        req.limits.max_sockets = Some(3);
        req.mode = JobMode::Plain;
        req.attached = true;
        req.remotes = vec!["b".into(), "gpu-node".into()];
        req.without_executor = true;
        let back = roundtrip(&req).unwrap();
        assert!(matches!(&back.code, JobCode::Wasm(w) if w == b"\0asm"));
        assert_eq!(back.name, "app");
        assert_eq!(back.args, req.args);
        assert_eq!(back.env, req.env);
        assert_eq!(back.cwd, req.cwd);
        assert_eq!(back.network, req.network);
        assert_eq!(back.dirs, req.dirs);
        assert_eq!(back.limits, req.limits);
        assert_eq!(back.mode, JobMode::Plain);
        assert!(back.attached);
        assert_eq!(back.remotes, req.remotes);
        assert!(back.without_executor);
        let mut none = JobRequest::new(JobCode::Path("/srv/a.wasm".into()));
        none.network = None;
        let back = roundtrip(&none).unwrap();
        assert!(back.network.is_none() && back.cwd.is_none());
        assert!(matches!(&back.code, JobCode::Path(p) if p == "/srv/a.wasm"));
    }

    #[test]
    fn oversized_parts_are_refused_not_cut() {
        let mut req = JobRequest::new(JobCode::Path(format!("/{}", "a".repeat(100))));
        let e = roundtrip(&req).err().unwrap();
        assert_eq!(e.reason, Reason::Limit);
        req.code = JobCode::Wasm(Vec::new());
        req.dirs = (0..=MAX_NAMED_GRANTS)
            .map(|i| JobDir {
                host: format!("/d{i}"),
                guest: format!("/g{i}"),
                writable: false,
            })
            .collect();
        assert_eq!(roundtrip(&req).err().unwrap().reason, Reason::Limit);
        req.dirs.clear();
        req.remotes = (0..=MAX_NAMED_GRANTS).map(|i| format!("r{i}")).collect();
        assert_eq!(roundtrip(&req).err().unwrap().reason, Reason::Limit);
        req.remotes = vec!["r".repeat(65)];
        assert_eq!(roundtrip(&req).err().unwrap().reason, Reason::Limit);
        req.remotes.clear();
        req.args = (0..17).map(|i| i.to_string()).collect();
        assert_eq!(roundtrip(&req).err().unwrap().reason, Reason::Limit);
    }

    #[test]
    fn too_many_services_are_refused_before_any_is_read() {
        let oversized = |init: fn(job_request::Builder<'_>)| {
            let mut msg = capnp::message::Builder::new_default();
            {
                let mut b = msg.init_root::<job_request::Builder<'_>>();
                b.reborrow().init_code().set_wasm(&[]);
                init(b);
            }
            let r = msg.get_root_as_reader::<job_request::Reader<'_>>().unwrap();
            JobRequest::<Vec<u8>>::read(r, BOUNDS, 64).err().unwrap()
        };
        let e = oversized(|b| {
            b.init_services(MAX_NAMED_GRANTS as u32 + 1);
        });
        assert_eq!(e.reason, Reason::Limit, "{e}");
        let e = oversized(|b| {
            b.init_components(MAX_NAMED_GRANTS as u32 + 1);
        });
        assert_eq!(e.reason, Reason::Limit, "{e}");
    }
}
