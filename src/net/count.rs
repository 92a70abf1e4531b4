//! How many sockets a process holds, on both paths — RPC sockets the host opened for it and
//! its own `wasi:sockets` — against one `--max-sockets`, and the descriptors the host keeps for
//! itself whatever the guests do.
//!
//! - RPC sockets hold a [`SocketPermit`] for as long as they are open.
//! - `wasi:sockets` sockets are counted when the guest creates or accepts one: cell shadows
//!   `create-tcp-socket`, `create-udp-socket` and `tcp-socket.accept` in the linker
//!   ([`add_to_linker`]), and each first forgets the sockets the guest has dropped since (a
//!   socket's table entry is gone once dropped), then refuses with `new-socket-limit` past the
//!   limit (an unaccepted connection waits in the kernel's backlog).
//! - **Descriptor reserve.** No socket is made for any guest, on either path, while fewer than
//!   [`FD_RESERVE`] descriptors remain below the host's `RLIMIT_NOFILE` (raised to its hard
//!   limit when cell starts, [`raise_fd_limit`]): the host can always still open its pipes,
//!   report and compile cache, and pid0's own sockets are not starved by its children's.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime_wasi::p2::bindings::sockets::network::{ErrorCode, IpAddressFamily};
use wasmtime_wasi::p2::bindings::sockets::{network, tcp, tcp_create_socket, udp_create_socket};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, SocketError, SocketResult, TcpSocket, UdpSocket,
};
use wasmtime_wasi::sockets::WasiSocketsCtxView;

/// Descriptors the host keeps for itself: no guest socket is made once fewer remain.
pub(crate) const FD_RESERVE: u64 = 256;

/// The sockets of one process, shared by its RPC connection and its store (hence atomics: the
/// store's data must be `Send`; both sides live on one thread).
#[derive(Debug)]
pub struct SocketTally {
    max: usize,
    rpc: AtomicUsize,
    wasi: AtomicUsize,
}

/// One open RPC socket; gives its slot back when dropped.
#[derive(Debug)]
#[must_use = "the slot is given back as soon as the permit is dropped"]
pub struct SocketPermit(Arc<SocketTally>);

impl SocketPermit {
    /// One more permit of the same process (a second descriptor for the same socket).
    ///
    /// # Errors
    /// Its `max-sockets` is reached, or the host's descriptor reserve is.
    pub fn another(&self) -> Result<SocketPermit, SocketLimit> {
        self.0.acquire()
    }
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.0.rpc.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why a socket was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SocketLimit {
    #[error("max-sockets {0} reached")]
    MaxSockets(usize),
    #[error("the host keeps its last {FD_RESERVE} file descriptors for itself")]
    Descriptors,
}

impl SocketTally {
    pub fn new(max: u32) -> Arc<Self> {
        Arc::new(SocketTally {
            max: max as usize,
            rpc: AtomicUsize::new(0),
            wasi: AtomicUsize::new(0),
        })
    }

    /// The sockets held now, on both paths.
    pub fn held(&self) -> usize {
        self.rpc.load(Ordering::Relaxed) + self.wasi.load(Ordering::Relaxed)
    }

    fn room(&self) -> Result<(), SocketLimit> {
        if self.held() >= self.max {
            return Err(SocketLimit::MaxSockets(self.max));
        }
        fd_room()
    }

    /// A permit for one more RPC socket.
    ///
    /// # Errors
    /// [`SocketLimit`] past `max-sockets` or into the descriptor reserve.
    pub fn acquire(self: &Arc<Self>) -> Result<SocketPermit, SocketLimit> {
        self.room()?;
        self.rpc.fetch_add(1, Ordering::Relaxed);
        Ok(SocketPermit(self.clone()))
    }
}

/// Raises this process's soft `RLIMIT_NOFILE` to its hard limit (guests then share the larger
/// budget, minus [`FD_RESERVE`]). Failing leaves the limit as it was.
pub(crate) fn raise_fd_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read and write the struct passed by pointer.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Fails when fewer than [`FD_RESERVE`] descriptors remain below the soft limit. Counts the
/// open descriptors (`/proc/self/fd`), so it sees every descriptor, whoever opened it; it runs
/// only when a guest asks for a new socket.
pub(crate) fn fd_room() -> Result<(), SocketLimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Ok(());
    }
    let Ok(open) = std::fs::read_dir("/proc/self/fd") else {
        return Ok(());
    };
    let open = open.count() as u64;
    if open + FD_RESERVE >= limit.rlim_cur {
        return Err(SocketLimit::Descriptors);
    }
    Ok(())
}

/// The `wasi:sockets` sockets one store created and has not dropped, by table index.
#[derive(Debug)]
pub struct WasiSockets {
    tally: Arc<SocketTally>,
    tcp: HashSet<u32>,
    udp: HashSet<u32>,
}

impl WasiSockets {
    pub fn new(tally: Arc<SocketTally>) -> Self {
        WasiSockets {
            tally,
            tcp: HashSet::new(),
            udp: HashSet::new(),
        }
    }
}

/// The data the shadowed create functions see: the usual sockets view and the count.
pub struct CountedView<'a> {
    pub view: WasiSocketsCtxView<'a>,
    pub sockets: &'a mut WasiSockets,
}

impl CountedView<'_> {
    /// Forgets dropped sockets, then checks there is room for one more.
    fn room(&mut self) -> SocketResult<()> {
        let table = &*self.view.table;
        self.sockets
            .tcp
            .retain(|&rep| table.get(&Resource::<TcpSocket>::new_borrow(rep)).is_ok());
        self.sockets
            .udp
            .retain(|&rep| table.get(&Resource::<UdpSocket>::new_borrow(rep)).is_ok());
        let live = self.sockets.tcp.len() + self.sockets.udp.len();
        self.sockets.tally.wasi.store(live, Ordering::Relaxed);
        self.sockets
            .tally
            .room()
            .map_err(|_| ErrorCode::NewSocketLimit.into())
    }

    fn publish(&self) {
        let live = self.sockets.tcp.len() + self.sockets.udp.len();
        self.sockets.tally.wasi.store(live, Ordering::Relaxed);
    }
}

/// Errors convert as wasmtime-wasi's own view converts them.
impl network::Host for CountedView<'_> {
    fn convert_error_code(&mut self, error: SocketError) -> wasmtime::Result<ErrorCode> {
        network::Host::convert_error_code(&mut self.view, error)
    }

    fn network_error_code(
        &mut self,
        err: Resource<wasmtime_wasi::p2::bindings::sockets::network::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        network::Host::network_error_code(&mut self.view, err)
    }
}

impl network::HostNetwork for CountedView<'_> {
    fn drop(&mut self, this: Resource<network::Network>) -> wasmtime::Result<()> {
        network::HostNetwork::drop(&mut self.view, this)
    }
}

impl tcp_create_socket::Host for CountedView<'_> {
    fn create_tcp_socket(&mut self, family: IpAddressFamily) -> SocketResult<Resource<TcpSocket>> {
        self.room()?;
        let socket = tcp_create_socket::Host::create_tcp_socket(&mut self.view, family)?;
        self.sockets.tcp.insert(socket.rep());
        self.publish();
        Ok(socket)
    }
}

impl udp_create_socket::Host for CountedView<'_> {
    async fn create_udp_socket(
        &mut self,
        family: IpAddressFamily,
    ) -> SocketResult<Resource<UdpSocket>> {
        self.room()?;
        let socket = udp_create_socket::Host::create_udp_socket(&mut self.view, family).await?;
        self.sockets.udp.insert(socket.rep());
        self.publish();
        Ok(socket)
    }
}

/// The [`HasData`] marker of [`CountedView`].
pub(crate) struct Counted;

impl HasData for Counted {
    type Data<'a> = CountedView<'a>;
}

/// What `tcp-socket.accept` returns: the connection and its two streams.
type Accepted = (
    Resource<TcpSocket>,
    Resource<DynInputStream>,
    Resource<DynOutputStream>,
);

impl CountedView<'_> {
    /// `tcp-socket.accept`, counted like a created socket: refused with `new-socket-limit`
    /// before the connection is taken from the kernel's backlog when there is no room.
    fn accept(
        &mut self,
        this: Resource<TcpSocket>,
    ) -> wasmtime::Result<Result<Accepted, ErrorCode>> {
        if let Err(e) = self.room() {
            return Ok(Err(e.downcast()?));
        }
        match tcp::HostTcpSocket::accept(&mut self.view, this) {
            Ok(accepted) => {
                self.sockets.tcp.insert(accepted.0.rep());
                self.publish();
                Ok(Ok(accepted))
            }
            Err(e) => Ok(Err(e.downcast()?)),
        }
    }
}

/// The `wasi:sockets` version wasmtime-wasi defines (guests' 0.2.x imports resolve to it).
const TCP_INTERFACE: &str = "wasi:sockets/tcp@0.2.12";

/// Replaces wasmtime-wasi's two socket constructors and `tcp-socket.accept` in `linker` by the
/// counting ones.
///
/// # Errors
/// wasmtime refused the definitions.
pub(crate) fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    view: fn(&mut T) -> CountedView<'_>,
) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    tcp_create_socket::add_to_linker::<T, Counted>(linker, view)?;
    udp_create_socket::add_to_linker::<T, Counted>(linker, view)?;
    linker.instance(TCP_INTERFACE)?.func_wrap(
        "[method]tcp-socket.accept",
        move |mut store: wasmtime::StoreContextMut<'_, T>, (this,): (Resource<TcpSocket>,)| {
            view(store.data_mut()).accept(this).map(|r| (r,))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_and_wasi_sockets_share_one_limit() {
        let tally = SocketTally::new(2);
        let a = tally.acquire().unwrap();
        tally.wasi.store(1, Ordering::Relaxed);
        assert_eq!(tally.acquire().unwrap_err(), SocketLimit::MaxSockets(2));
        drop(a);
        assert!(tally.acquire().is_ok());
    }
}
