//! `Directory`: a host directory as a capability. Narrowing only: `open(subpath)` gives a
//! subtree (beneath this one, see [`crate::hostdir`]), `readOnly()` the same tree without
//! write rights. Granted to a child (`Grants.dirs`) it becomes one of the child's WASI
//! preopens and is re-issued on the child's connection.

use capnp::capability::Rc;
use cell_proto::Reason;

use crate::budget::Taken;
use crate::cell_capnp::directory;
use crate::hostdir::{DirError, HostDir};
use crate::net::audit::AuditEvent;
use crate::rpc::conn::Conn;
use crate::rpc::fail::failed;

/// The server of one `Directory` capability, issued on `conn`.
pub(crate) struct DirectoryServer {
    dir: HostDir,
    conn: Conn,
    /// One of the holder's `MAX_DIRS_HELD` slots, given back when the capability goes.
    _slot: Taken,
}

impl DirectoryServer {
    pub(crate) fn new(dir: HostDir, conn: Conn, slot: Taken) -> Self {
        DirectoryServer {
            dir,
            conn,
            _slot: slot,
        }
    }

    /// The directory behind this capability.
    pub(crate) fn dir(&self) -> &HostDir {
        &self.dir
    }
}

impl directory::Server for DirectoryServer {
    async fn open(
        self: Rc<Self>,
        params: directory::OpenParams,
        mut results: directory::OpenResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        self.conn.ensure_running()?;
        let path = params.get()?.get_path()?;
        let path = path
            .to_str()
            .map_err(|_| failed(Reason::BadRequest, "the path is not UTF-8"))?;
        // Each open directory holds a host descriptor: never the host's last ones.
        crate::net::count::fd_room().map_err(|e| failed(Reason::Limit, e))?;
        let opened = self.dir.open(path);
        let audited = match &opened {
            Ok(sub) => Ok(format!("{} {}", sub.rights(), sub.shown().display())),
            Err(e) => Err(e.to_string()),
        };
        let pid = self.conn.pid();
        self.conn
            .audit()
            .event(AuditEvent::directory(pid, "dir-open", path, audited));
        let sub = opened.map_err(|e| match e {
            DirError::NotBeneath(_) => failed(Reason::BadRequest, e),
            DirError::Io { .. } => failed(Reason::Io, e),
        })?;
        results.get().set_dir(self.conn.directory(sub)?);
        Ok(())
    }

    async fn read_only(
        self: Rc<Self>,
        _: directory::ReadOnlyParams,
        mut results: directory::ReadOnlyResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        self.conn.ensure_running()?;
        results
            .get()
            .set_dir(self.conn.directory(self.dir.read_only())?);
        Ok(())
    }

    async fn writable(
        self: Rc<Self>,
        _: directory::WritableParams,
        mut results: directory::WritableResults,
    ) -> Result<(), capnp::Error> {
        let _call = self.conn.gate().enter()?;
        results.get().set_writable(self.dir.writable());
        Ok(())
    }
}
