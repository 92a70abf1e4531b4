//! Where `cell serve` listens: a unix socket (owner only) or a loopback TCP port (with a
//! token), and the checks made before binding — no socket in a directory others can write,
//! no second daemon on a live socket, nothing but a stale socket replaced.

use std::net::SocketAddr;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use thiserror::Error;

/// A `--listen` address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ListenAddr {
    /// `unix:PATH`.
    Unix(PathBuf),
    /// `tcp:IP:PORT` (`tcp:[::1]:PORT` for IPv6): TLS when the daemon has a certificate
    /// (`--tls-cert`) or the client trusts one (`--tls-ca`).
    Tcp(SocketAddr),
    /// `tls:IP:PORT`: TCP that must speak TLS (an error without the certificate flags).
    Tls(SocketAddr),
}

impl ListenAddr {
    /// The TCP address of a `tcp:` or `tls:` address.
    pub fn tcp(&self) -> Option<SocketAddr> {
        match self {
            ListenAddr::Unix(_) => None,
            ListenAddr::Tcp(a) | ListenAddr::Tls(a) => Some(*a),
        }
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
            ListenAddr::Tcp(a) => write!(f, "tcp:{a}"),
            ListenAddr::Tls(a) => write!(f, "tls:{a}"),
        }
    }
}

impl FromStr for ListenAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a path (unix:/run/cell/cell.sock)".into());
            }
            return Ok(ListenAddr::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            return addr.parse().map(ListenAddr::Tcp).map_err(|_| {
                format!("{addr:?} is not IP:PORT (tcp:127.0.0.1:7070, tcp:[::1]:7070)")
            });
        }
        if let Some(addr) = s.strip_prefix("tls:") {
            return addr.parse().map(ListenAddr::Tls).map_err(|_| {
                format!("{addr:?} is not IP:PORT (tls:10.0.0.5:7070, tls:[::1]:7070)")
            });
        }
        Err(format!(
            "{s:?}: expected unix:PATH, tcp:IP:PORT or tls:IP:PORT (e.g. unix:/run/cell/cell.sock)"
        ))
    }
}

/// Why a listener cannot be set up. Each is a clear error and exit 125.
#[derive(Debug, Error)]
pub(crate) enum ListenError {
    #[error("{path}: another daemon is listening on this socket")]
    InUse { path: PathBuf },
    #[error("{path} exists and is not a socket; refusing to replace it")]
    NotASocket { path: PathBuf },
    #[error(
        "{dir}: others can write to this directory (mode {mode:o}), so they could replace the \
         socket; put it in a directory only you can write (e.g. $XDG_RUNTIME_DIR or /run/cell)"
    )]
    SharedDir { dir: PathBuf, mode: u32 },
    #[error("{dir} belongs to uid {owner}, not to you (uid {me}) or root")]
    ForeignDir { dir: PathBuf, owner: u32, me: u32 },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("tcp:{addr}: only a loopback address may be used without TLS (--tls-cert, --tls-key)")]
    NotLoopback { addr: SocketAddr },
    #[error(
        "tcp:{addr} needs --token-file or --client-ca: a client must present the token or a \
         certificate before it gets anything"
    )]
    NoToken { addr: SocketAddr },
    #[error("tls:{addr} needs --tls-cert and --tls-key")]
    NoCertificate { addr: SocketAddr },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ListenError {
    let what = what.into();
    move |source| ListenError::Io { what, source }
}

/// A bound unix socket's file, as it was when bound (so only that file is removed at exit).
pub(crate) struct SocketFile {
    pub path: PathBuf,
    ino: (u64, u64),
}

impl SocketFile {
    /// Removes the socket file, if it is still the one bound.
    pub(crate) fn remove(&self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.ino {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Binds `path` as the daemon's socket, created mode 0600 (owner only).
///
/// # Errors
/// See [`ListenError`]: a directory others can write, a live socket, something else there.
pub(crate) fn bind_unix(
    path: &Path,
) -> Result<(tokio::net::UnixListener, SocketFile), ListenError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    check_dir(&dir)?;
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => return Err(ListenError::InUse { path: path.into() }),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!("{}: removing a stale socket", path.display());
                    std::fs::remove_file(path).map_err(io(path.display().to_string()))?;
                }
                Err(e) => return Err(io(path.display().to_string())(e)),
            }
        }
        Ok(_) => return Err(ListenError::NotASocket { path: path.into() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(path.display().to_string())(e)),
    }
    // The socket is created 0600: no moment where others could connect. umask is
    // process-wide, but nothing else creates files while the daemon starts.
    // SAFETY: umask has no memory-safety preconditions.
    let old = unsafe { libc::umask(0o177) };
    let bound = tokio::net::UnixListener::bind(path);
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(io(format!("cannot listen on {}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(path.display().to_string()))?;
    let meta = std::fs::symlink_metadata(path).map_err(io(path.display().to_string()))?;
    let file = SocketFile {
        path: path.into(),
        ino: (meta.dev(), meta.ino()),
    };
    Ok((listener, file))
}

/// The socket's directory must be writable by its owner alone, and that owner us or root.
fn check_dir(dir: &Path) -> Result<(), ListenError> {
    let meta = std::fs::metadata(dir).map_err(io(dir.display().to_string()))?;
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        return Err(ListenError::SharedDir {
            dir: dir.into(),
            mode,
        });
    }
    // SAFETY: geteuid cannot fail and has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        return Err(ListenError::ForeignDir {
            dir: dir.into(),
            owner: meta.uid(),
            me,
        });
    }
    Ok(())
}

/// How a TCP listener checks its clients.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TcpGuard {
    pub token: bool,
    pub tls: bool,
    /// Clients must show a certificate of `--client-ca` (implies `tls`).
    pub client_ca: bool,
}

/// Binds a TCP listener: loopback only unless it speaks TLS, and only with a token or
/// client certificates.
///
/// # Errors
/// A non-loopback address without TLS, neither token nor client CA, or the bind failing.
pub(crate) async fn bind_tcp(
    addr: SocketAddr,
    guard: TcpGuard,
) -> Result<tokio::net::TcpListener, ListenError> {
    if !addr.ip().is_loopback() && !guard.tls {
        return Err(ListenError::NotLoopback { addr });
    }
    if !guard.token && !guard.client_ca {
        return Err(ListenError::NoToken { addr });
    }
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(io(format!("cannot listen on tcp:{addr}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse() {
        assert_eq!(
            "unix:/run/c.sock".parse::<ListenAddr>().unwrap(),
            ListenAddr::Unix("/run/c.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:7070".parse::<ListenAddr>().unwrap(),
            ListenAddr::Tcp("127.0.0.1:7070".parse().unwrap())
        );
        assert!("tcp:localhost:1".parse::<ListenAddr>().is_err());
        assert_eq!(
            "tls:[::1]:7070".parse::<ListenAddr>().unwrap().to_string(),
            "tls:[::1]:7070"
        );
        assert!("tls:7070".parse::<ListenAddr>().is_err());
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("/run/c.sock".parse::<ListenAddr>().is_err());
    }

    #[tokio::test]
    async fn a_socket_is_owner_only_and_never_replaces_a_file_or_a_live_daemon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cell.sock");
        let (listener, _file) = bind_unix(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(matches!(bind_unix(&path), Err(ListenError::InUse { .. })));
        drop(listener);
        // Stale now: replaced.
        let (_listener, again) = bind_unix(&path).unwrap();
        again.remove();
        assert!(!path.exists());
        std::fs::write(&path, b"x").unwrap();
        assert!(matches!(
            bind_unix(&path),
            Err(ListenError::NotASocket { .. })
        ));
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(matches!(
            bind_unix(&shared.join("c.sock")),
            Err(ListenError::SharedDir { .. })
        ));
    }
}
