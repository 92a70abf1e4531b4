//! The sockets a process holds through RPC, as host objects: an open TCP stream, a listener,
//! a bound UDP socket with its bounded receive queue, and [`SocketGrant`], a socket handed to a
//! child. Each holds its [`SocketPermit`] (one of the process's `max-sockets`) until dropped.
//! The capability servers over them are in `rpc/tcp.rs` and `rpc/udp.rs`; the grants that
//! carry them are in [`crate::grants`].
//!
//! Owned by whoever holds the `Rc` (the servers issued for it, and the grants of children it was
//! passed to); the socket closes when the last holder lets go.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::Rc;

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Mutex, Notify};

use super::count::SocketPermit;
use super::policy::NetPolicy;
use crate::limits::{UDP_MAX_DATAGRAM, UDP_RECV_QUEUE};

/// An open TCP connection.
pub struct StreamInner {
    pub(crate) reader: Mutex<OwnedReadHalf>,
    /// `None` only while dropping (see the `Drop` impl).
    pub(crate) writer: Mutex<Option<OwnedWriteHalf>>,
    pub(crate) local: SocketAddr,
    pub(crate) peer: SocketAddr,
    _permit: SocketPermit,
}

impl StreamInner {
    /// Wraps a connected stream, holding `permit` until it is closed.
    ///
    /// # Errors
    /// The stream's addresses cannot be read (it was already reset).
    pub fn new(stream: TcpStream, permit: SocketPermit) -> std::io::Result<Self> {
        let local = stream.local_addr()?;
        let peer = stream.peer_addr()?;
        let _ = stream.set_nodelay(true);
        let (reader, writer) = stream.into_split();
        Ok(StreamInner {
            reader: Mutex::new(reader),
            writer: Mutex::new(Some(writer)),
            local,
            peer,
            _permit: permit,
        })
    }
}

/// A listening TCP socket.
/// Dropping a stream closes its descriptor, nothing more: tokio's write half would shut the
/// socket's sending side down on drop, which would cut off another holder of a duplicate of
/// it (a child on another shard, see [`SendSocket`]). The peer still sees the end of stream
/// once the last descriptor closes.
impl Drop for StreamInner {
    fn drop(&mut self) {
        if let Some(writer) = self.writer.get_mut().take() {
            writer.forget();
        }
    }
}

pub struct ListenerInner {
    pub(crate) listener: TcpListener,
    pub(crate) local: SocketAddr,
    _permit: SocketPermit,
}

impl ListenerInner {
    /// Binds and listens on `addr` (the policy was checked by the caller).
    ///
    /// # Errors
    /// The bind or listen system call failed (address in use, not local, ...).
    pub fn bind(addr: SocketAddr, backlog: u32, permit: SocketPermit) -> std::io::Result<Self> {
        let listener = super::bind::tcp_listener(addr, backlog)?;
        let local = listener.local_addr()?;
        Ok(ListenerInner {
            listener,
            local,
            _permit: permit,
        })
    }
}

/// Datagrams received but not yet read by the guest.
#[derive(Default)]
pub(crate) struct RecvQueue {
    pub(crate) datagrams: RefCell<VecDeque<(SocketAddr, Vec<u8>)>>,
    pub(crate) dropped: Cell<u64>,
    /// Set when the reading task stopped on an error, which `recv` then reports.
    pub(crate) error: RefCell<Option<String>>,
    pub(crate) ready: Notify,
}

impl RecvQueue {
    fn push(&self, from: SocketAddr, data: &[u8]) {
        let mut q = self.datagrams.borrow_mut();
        if q.len() >= UDP_RECV_QUEUE {
            self.dropped.set(self.dropped.get() + 1);
            return;
        }
        q.push_back((from, data.to_vec()));
        drop(q);
        self.ready.notify_one();
    }
}

/// A bound UDP socket and its receive queue.
pub struct UdpInner {
    pub(crate) socket: Rc<UdpSocket>,
    pub(crate) queue: Rc<RecvQueue>,
    pub(crate) policy: Rc<NetPolicy>,
    pub(crate) local: SocketAddr,
    reader: tokio::task::JoinHandle<()>,
    _permit: SocketPermit,
}

impl Drop for UdpInner {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl UdpInner {
    /// Binds `addr` (the policy was checked by the caller) and starts the receiving task.
    ///
    /// # Errors
    /// The bind failed.
    pub async fn bind(
        addr: SocketAddr,
        policy: Rc<NetPolicy>,
        permit: SocketPermit,
    ) -> std::io::Result<Rc<Self>> {
        Self::with_socket(super::bind::udp_socket(addr)?, policy, permit)
    }

    /// A bound socket with its own receive queue and reader task (on this thread).
    fn with_socket(
        socket: UdpSocket,
        policy: Rc<NetPolicy>,
        permit: SocketPermit,
    ) -> std::io::Result<Rc<Self>> {
        let socket = Rc::new(socket);
        let local = socket.local_addr()?;
        let queue = Rc::new(RecvQueue::default());
        let reader = tokio::task::spawn_local(receive(socket.clone(), queue.clone()));
        Ok(Rc::new(UdpInner {
            socket,
            queue,
            policy,
            local,
            reader,
            _permit: permit,
        }))
    }
}

/// Moves datagrams from the kernel into the bounded queue until the socket fails or the task
/// is aborted (when the socket is dropped).
async fn receive(socket: Rc<UdpSocket>, queue: Rc<RecvQueue>) {
    let mut buf = vec![0u8; UDP_MAX_DATAGRAM];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, from)) => queue.push(from, &buf[..n]),
            Err(e) => {
                *queue.error.borrow_mut() = Some(e.to_string());
                queue.ready.notify_waiters();
                queue.ready.notify_one();
                return;
            }
        }
    }
}

/// A socket handed from one process to another in `Grants.sockets`: the open socket itself,
/// shared by every process that holds it, and closed when the last holder lets go (at the
/// latest when the last holder exits).
#[derive(Clone)]
pub enum SocketGrant {
    TcpStream(Rc<StreamInner>),
    TcpListener(Rc<ListenerInner>),
    UdpSocket(Rc<UdpInner>),
}

impl std::fmt::Debug for SocketGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SocketGrant::TcpStream(s) => write!(f, "TcpStream({})", s.peer),
            SocketGrant::TcpListener(l) => write!(f, "TcpListener({})", l.local),
            SocketGrant::UdpSocket(u) => write!(f, "UdpSocket({})", u.local),
        }
    }
}

/// A granted socket on its way to another shard (`cell run --shards N`): a duplicate of its
/// descriptor — the same open socket, registered anew with that shard's reactor — holding a
/// permit of its own from the same process's `max-sockets` (the host then holds two
/// descriptors for it, and both are counted). Its data is shared the way a socket shared by
/// two processes' handles is: whichever reads first gets the bytes or the datagram.
pub(crate) enum SendSocket {
    TcpStream(std::net::TcpStream, SocketPermit),
    TcpListener(std::net::TcpListener, SocketPermit),
    Udp(std::net::UdpSocket, NetPolicy, SocketPermit),
}

impl SocketGrant {
    /// A duplicate for another shard, or `None` when one cannot be made now: a read or
    /// write of the stream is in progress, the process's `max-sockets` has no room for the
    /// second descriptor, or the host has none to spare. (The child then stays on its
    /// parent's shard, sharing this very socket.)
    pub(crate) fn to_send(&self) -> Option<SendSocket> {
        use std::os::fd::AsFd;
        match self {
            SocketGrant::TcpStream(s) => {
                let reader = s.reader.try_lock().ok()?;
                let _writer = s.writer.try_lock().ok()?;
                let fd = reader.as_ref().as_fd().try_clone_to_owned().ok()?;
                Some(SendSocket::TcpStream(fd.into(), s._permit.another().ok()?))
            }
            SocketGrant::TcpListener(l) => {
                let fd = l.listener.as_fd().try_clone_to_owned().ok()?;
                Some(SendSocket::TcpListener(
                    fd.into(),
                    l._permit.another().ok()?,
                ))
            }
            SocketGrant::UdpSocket(u) => {
                let fd = u.socket.as_fd().try_clone_to_owned().ok()?;
                let policy = NetPolicy::clone(&u.policy);
                Some(SendSocket::Udp(
                    fd.into(),
                    policy,
                    u._permit.another().ok()?,
                ))
            }
        }
    }
}

impl SendSocket {
    /// The grant on this shard (inside its runtime: the descriptor joins its reactor).
    ///
    /// # Errors
    /// The reactor refuses the descriptor.
    pub(crate) fn into_grant(self) -> std::io::Result<SocketGrant> {
        Ok(match self {
            SendSocket::TcpStream(std, permit) => {
                let stream = TcpStream::from_std(std)?;
                SocketGrant::TcpStream(Rc::new(StreamInner::new(stream, permit)?))
            }
            SendSocket::TcpListener(std, permit) => {
                let listener = TcpListener::from_std(std)?;
                let local = listener.local_addr()?;
                SocketGrant::TcpListener(Rc::new(ListenerInner {
                    listener,
                    local,
                    _permit: permit,
                }))
            }
            SendSocket::Udp(std, policy, permit) => {
                let socket = UdpSocket::from_std(std)?;
                SocketGrant::UdpSocket(UdpInner::with_socket(socket, Rc::new(policy), permit)?)
            }
        })
    }
}
